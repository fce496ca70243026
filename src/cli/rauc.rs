//! `slotinit rauc-backend`: RAUC's `custom` bootloader backend over the
//! [`Backend`](crate::state::Backend) trait, so RAUC marks slots through
//! slotinit's store whatever the chain (U-Boot env with any contract, the
//! Raspberry Pi firmware's tryboot, Arm FWU metadata).
//!
//! The protocol, as RAUC runs it (rauc/rauc, tag v1.8, `src/bootchooser.c`:
//! `custom_backend_get`, `custom_backend_set`, `custom_get_primary`,
//! `custom_get_state`; master `src/bootloaders/custom.c`, and
//! `r_custom_get_current_bootname` from 1.11 on):
//! - `get-primary`: print the bootname of the slot booted next. RAUC
//!   strips whitespace and compares it with each slot's `bootname=`
//!   exactly (`g_strcmp0`); an unknown name is RAUC's error.
//! - `get-state BOOTNAME`: print `good` or `bad`, nothing else.
//! - `set-primary BOOTNAME`, `set-state BOOTNAME good|bad`: RAUC reads no
//!   output (stdout is inherited), only the exit status.
//! - `get-current` (RAUC >= 1.11; 1.8 never runs it): print the booted
//!   slot's bootname on the first line.
//! - Any exit status but 0 is a failure for RAUC (`g_subprocess_get_exit_status`
//!   / `g_subprocess_wait_check`); ours are the CLI's (1 error, 2 usage,
//!   3 boot state corrupt or invalid, 4 locked, 5 refused), the reason on
//!   stderr, so stdout carries the protocol's answer alone.
//!
//! What the answers mean (RAUC's U-Boot backend, v1.8 `src/bootchooser.c`:
//! `uboot_get_primary` is the first BOOT_ORDER entry with BOOT_x_LEFT > 0,
//! `uboot_get_state` is good when the bootname is in BOOT_ORDER and its
//! BOOT_x_LEFT > 0), over the backend's [`Record`]:
//! - counters (`uboot-env`, `fwu-metadata`): the slots in `order` in the
//!   order the firmware tries them, `left` what remains of a trial (a slot
//!   `left` does not list is not counting down);
//! - `rpi-tryboot`: `order` is [committed, tryboot partition]; the tryboot
//!   partition is armed only while `left` lists it (the trial record), and
//!   then slotinit re-arms it at the next boot (its decision goes through
//!   `boot_next` and a tryboot restart), so the armed trial is primary. A
//!   slot neither committed nor armed is `bad`: the firmware never boots it
//!   without a new mark.
//!
//! RAUC's marks are slotinit's marks (`mark_run` in v1.8 `src/mark.c`):
//! set-state good = mark-good, bad = mark-bad (RAUC's `install.c` marks the
//! target bad before writing it), set-primary = mark-active (`mark_active`;
//! on a Pi it arms the trial). Marking the booted slot bad is RAUC's
//! "boot the other one next", without a restart; slotinit refuses it (exit
//! 5, nothing written) when no slot would be left to boot, as `mark-bad`
//! does without `--force` (on a Pi always for the committed slot: the
//! firmware has no second slot it falls back to by itself).

use super::{
    fail, hold_foreign_lock, load_config, load_handoff, mark_exit, open_store, Options,
    EXIT_CORRUPT, EXIT_ERROR, EXIT_LOCKED, EXIT_USAGE,
};
use crate::config::BACKEND_NONE;
use crate::kernel::sys::Real;
use crate::state::uboot::rauc::Bootnames;
use crate::state::{self, Mark, NextBoot, Record};
use crate::types::Slot;
use std::process::ExitCode;

pub(crate) const USAGE: &str =
    "usage: slotinit rauc-backend <command>   (RAUC's custom bootloader backend)
  get-primary              the bootname of the slot the firmware boots next
  get-state BOOTNAME       good or bad
  set-primary BOOTNAME     mark-active BOOTNAME
  set-state BOOTNAME good|bad
                           mark-good / mark-bad BOOTNAME
  get-current              the booted slot's bootname (from the handoff)";

/// One request of RAUC's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    GetPrimary,
    GetState(Slot),
    SetPrimary(Slot),
    SetState(Slot, bool),
    GetCurrent,
}

/// A [`Record`] in slots: the try order and what is left of each trial.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct View {
    pub(crate) order: Vec<Slot>,
    pub(crate) left: Vec<(Slot, u32)>,
}

/// The slot of `bootname`, exactly as RAUC's `bootname=` spells it.
fn exact(names: &Bootnames, bootname: &str) -> Result<Slot, String> {
    if bootname == names.a.as_str() {
        Ok(Slot::A)
    } else if bootname == names.b.as_str() {
        Ok(Slot::B)
    } else {
        Err(format!(
            "unknown bootname {bootname:?}: slotinit's bootnames are {:?} (slot a) and {:?} \
             (slot b), from [bootstate.uboot-env] bootname_a / bootname_b; RAUC's system.conf \
             must give its slots the same bootname=",
            names.a.as_str(),
            names.b.as_str()
        ))
    }
}

/// Parses RAUC's arguments (the words after `rauc-backend`).
pub(crate) fn parse(words: &[&str], names: &Bootnames) -> Result<Request, String> {
    match words {
        ["get-primary"] => Ok(Request::GetPrimary),
        ["get-current"] => Ok(Request::GetCurrent),
        ["get-state", b] => Ok(Request::GetState(exact(names, b)?)),
        ["set-primary", b] => Ok(Request::SetPrimary(exact(names, b)?)),
        ["set-state", b, "good"] => Ok(Request::SetState(exact(names, b)?, true)),
        ["set-state", b, "bad"] => Ok(Request::SetState(exact(names, b)?, false)),
        ["set-state", _, other] => Err(format!("set-state: expected good or bad, not {other:?}")),
        [] => Err("no command".into()),
        _ => Err(format!("unknown request {:?}", words.join(" "))),
    }
}

/// The record's names as slots: bootnames (U-Boot env) or `a`/`b`.
pub(crate) fn view(record: &Record, names: &Bootnames) -> Result<View, String> {
    let slot = |name: &str| {
        names.slot(name).ok_or_else(|| {
            format!(
                "boot state {}: {name:?} is no slot's name (bootnames {:?} and {:?})",
                record.location,
                names.a.as_str(),
                names.b.as_str()
            )
        })
    };
    let mut view = View::default();
    for name in &record.order {
        let s = slot(name)?;
        if !view.order.contains(&s) {
            view.order.push(s);
        }
    }
    for (name, left) in &record.left {
        view.left.push((slot(name)?, *left));
    }
    Ok(view)
}

impl View {
    fn left(&self, slot: Slot) -> Option<u32> {
        self.left.iter().find(|(s, _)| *s == slot).map(|(_, l)| *l)
    }

    /// Whether the firmware (with slotinit) boots `slot` without a new mark.
    pub(crate) fn good(&self, rule: NextBoot, slot: Slot) -> bool {
        match rule {
            NextBoot::InOrder => {
                self.order.contains(&slot) && self.left(slot).is_none_or(|l| l > 0)
            }
            NextBoot::Tryboot => self.order.first() == Some(&slot) || self.left(slot) > Some(0),
        }
    }

    /// The slot booted next.
    pub(crate) fn primary(&self, rule: NextBoot) -> Option<Slot> {
        match rule {
            NextBoot::InOrder => self.order.iter().copied().find(|s| self.good(rule, *s)),
            NextBoot::Tryboot => self
                .left
                .iter()
                .find(|(s, l)| *l > 0 && Some(s) != self.order.first())
                .map(|(s, _)| *s)
                .or_else(|| self.order.first().copied()),
        }
    }
}

/// The mark a set request is.
pub(crate) fn mark_of(request: &Request) -> Option<(Mark, Slot)> {
    match *request {
        Request::SetPrimary(s) => Some((Mark::Active, s)),
        Request::SetState(s, true) => Some((Mark::Good, s)),
        Request::SetState(s, false) => Some((Mark::Bad, s)),
        _ => None,
    }
}

/// A get request's answer from the store's record: the line to print.
pub(crate) fn answer(
    request: &Request,
    rule: NextBoot,
    record: &Record,
    names: &Bootnames,
) -> Result<String, String> {
    if let Some(e) = &record.error {
        return Err(format!("boot state {}: {e}", record.location));
    }
    let view = view(record, names)?;
    if view.order.is_empty() {
        return Err(format!(
            "boot state {} names no slot ({})",
            record.location, record.health
        ));
    }
    match request {
        Request::GetPrimary => view
            .primary(rule)
            .map(|s| names.of(s).to_string())
            .ok_or_else(|| {
                format!(
                    "boot state {}: no slot would boot (order {:?}, left {:?})",
                    record.location, record.order, record.left
                )
            }),
        Request::GetState(s) => Ok(if view.good(rule, *s) { "good" } else { "bad" }.into()),
        other => Err(format!("{other:?} is not answered from the record")),
    }
}

fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    fail(EXIT_USAGE, format!("rauc-backend: {message}\n{USAGE}"))
}

/// `slotinit rauc-backend WORDS`.
/// (`help` never reaches here: the CLI's option loop answers it.)
pub(super) fn main(opts: &Options, words: &[&str]) -> ExitCode {
    let config = match load_config(opts) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_ERROR, format!("rauc-backend: {e}")),
    };
    let names = match state::slot_names(&config) {
        Ok((names, _)) => names,
        Err(e) => return fail(EXIT_ERROR, format!("rauc-backend: bootstate config: {e}")),
    };
    let request = match parse(words, &names) {
        Ok(r) => r,
        Err(e) => return usage_error(e),
    };
    let handoff = load_handoff(opts);
    if request == Request::GetCurrent {
        return match handoff.as_ref().map(|h| h.slot) {
            Some(Some(slot)) => {
                println!("{}", names.of(slot));
                ExitCode::SUCCESS
            }
            Some(None) => fail(
                EXIT_ERROR,
                format!(
                    "rauc-backend get-current: {} names no booted slot",
                    opts.handoff.display()
                ),
            ),
            None => fail(
                EXIT_ERROR,
                format!(
                    "rauc-backend get-current: no booted slot known: {} unreadable \
                     (not booted by slotinit?)",
                    opts.handoff.display()
                ),
            ),
        };
    }
    if config.bootstate.backend == BACKEND_NONE {
        return fail(
            EXIT_ERROR,
            "rauc-backend: backend is \"none\" in the config: slotinit keeps no boot state \
             to report or mark; give RAUC the bootloader's own backend (bootloader=uboot)",
        );
    };
    // A set request writes: the foreign writers' lock first (see mark).
    let lock = match mark_of(&request) {
        Some(_) => match hold_foreign_lock(&config) {
            Ok(lock) => lock,
            Err(e) => return fail(EXIT_LOCKED, format!("rauc-backend: {e}")),
        },
        None => None,
    };
    let mut store = match open_store(&config, handoff.as_ref()) {
        Ok(s) => s,
        Err((_, e)) => return fail(EXIT_ERROR, format!("rauc-backend: {e}")),
    };
    let code = match mark_of(&request) {
        Some((how, slot)) => match store.mark(&mut Real, how, slot, false) {
            // stdout is RAUC's; what was done goes with the errors.
            Ok(message) => {
                eprintln!("slotinit rauc-backend: {message}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(
                mark_exit(&e),
                format!("rauc-backend: mark-{}: {e}", how.verb()),
            ),
        },
        None => match answer(&request, store.next_boot(), &store.record(), &names) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_CORRUPT, format!("rauc-backend: {e}")),
        },
    };
    store.close(&mut Real);
    drop(lock);
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::uboot::rauc::Bootname;

    fn names(a: &str, b: &str) -> Bootnames {
        Bootnames {
            a: Bootname::new(a).unwrap(),
            b: Bootname::new(b).unwrap(),
        }
    }

    fn record(order: &[&str], left: &[(&str, u32)]) -> Record {
        Record {
            location: "env".into(),
            health: "ok".into(),
            order: order.iter().map(|s| s.to_string()).collect(),
            left: left.iter().map(|(s, l)| (s.to_string(), *l)).collect(),
            ..Record::default()
        }
    }

    fn ask(w: &[&str], rule: NextBoot, r: &Record) -> Result<String, String> {
        let n = names("A", "B");
        answer(&parse(w, &n).unwrap(), rule, r, &n)
    }

    #[test]
    fn requests_are_parsed_with_exact_bootnames() {
        let n = names("A", "B");
        assert_eq!(parse(&["get-primary"], &n), Ok(Request::GetPrimary));
        assert_eq!(parse(&["get-current"], &n), Ok(Request::GetCurrent));
        assert_eq!(
            parse(&["get-state", "B"], &n),
            Ok(Request::GetState(Slot::B))
        );
        assert_eq!(
            parse(&["set-primary", "A"], &n),
            Ok(Request::SetPrimary(Slot::A))
        );
        assert_eq!(
            parse(&["set-state", "B", "bad"], &n),
            Ok(Request::SetState(Slot::B, false))
        );
        assert_eq!(
            parse(&["set-state", "A", "good"], &n),
            Ok(Request::SetState(Slot::A, true))
        );
        // RAUC compares bootnames exactly: "b" is not "B", a mismatch of
        // system.conf and slotinit's config must fail, not guess.
        let e = parse(&["get-state", "b"], &n).unwrap_err();
        assert!(e.contains("\"b\"") && e.contains("bootname_a"), "{e}");
        assert!(parse(&["set-state", "A", "Good"], &n).is_err());
        assert!(parse(&["set-state", "A"], &n).is_err());
        assert!(parse(&["get-primary", "A"], &n).is_err());
        assert!(parse(&[], &n).is_err());
        // Mender's bootnames are partition numbers.
        let m = names("2", "3");
        assert_eq!(
            parse(&["get-state", "3"], &m),
            Ok(Request::GetState(Slot::B))
        );
    }

    #[test]
    fn marks_are_slotinits() {
        assert_eq!(
            mark_of(&Request::SetPrimary(Slot::B)),
            Some((Mark::Active, Slot::B))
        );
        assert_eq!(
            mark_of(&Request::SetState(Slot::A, true)),
            Some((Mark::Good, Slot::A))
        );
        assert_eq!(
            mark_of(&Request::SetState(Slot::B, false)),
            Some((Mark::Bad, Slot::B))
        );
        assert_eq!(mark_of(&Request::GetPrimary), None);
        assert_eq!(mark_of(&Request::GetCurrent), None);
    }

    /// RAUC's own U-Boot rules (uboot_get_primary, uboot_get_state) on the
    /// env slotinit keeps.
    #[test]
    fn counters_answer_as_raucs_uboot_backend() {
        let c = NextBoot::InOrder;
        let r = record(&["A", "B"], &[("A", 3), ("B", 3)]);
        assert_eq!(ask(&["get-primary"], c, &r).unwrap(), "A");
        assert_eq!(ask(&["get-state", "B"], c, &r).unwrap(), "good");
        // After RAUC's install: B first with its attempts.
        let r = record(&["B", "A"], &[("A", 3), ("B", 3)]);
        assert_eq!(ask(&["get-primary"], c, &r).unwrap(), "B");
        // B's trial used up: A boots, B is bad though still in BOOT_ORDER.
        let r = record(&["B", "A"], &[("A", 3), ("B", 0)]);
        assert_eq!(ask(&["get-primary"], c, &r).unwrap(), "A");
        assert_eq!(ask(&["get-state", "B"], c, &r).unwrap(), "bad");
        assert_eq!(ask(&["get-state", "A"], c, &r).unwrap(), "good");
        // Marked bad: out of BOOT_ORDER.
        let r = record(&["A"], &[("A", 3), ("B", 3)]);
        assert_eq!(ask(&["get-state", "B"], c, &r).unwrap(), "bad");
        // No slot left: an error, not a guess.
        let r = record(&["A", "B"], &[("A", 0), ("B", 0)]);
        let e = ask(&["get-primary"], c, &r).unwrap_err();
        assert!(e.contains("no slot would boot"), "{e}");
        // FWU: a bank not counting down (accepted) is good; invalid is absent.
        let r = record(&["b", "a"], &[("b", 3)]);
        assert_eq!(ask(&["get-primary"], c, &r).unwrap(), "B");
        assert_eq!(ask(&["get-state", "A"], c, &r).unwrap(), "good");
        let r = record(&["a"], &[]);
        assert_eq!(ask(&["get-state", "B"], c, &r).unwrap(), "bad");
    }

    #[test]
    fn tryboot_primary_is_the_armed_trial() {
        let t = NextBoot::Tryboot;
        // Committed a, autoboot.txt's tryboot partition b, nothing armed.
        let r = record(&["a", "b"], &[]);
        assert_eq!(ask(&["get-primary"], t, &r).unwrap(), "A");
        assert_eq!(ask(&["get-state", "A"], t, &r).unwrap(), "good");
        assert_eq!(ask(&["get-state", "B"], t, &r).unwrap(), "bad");
        // set-primary B armed it: the next boot is B's trial.
        let r = record(&["a", "b"], &[("b", 3)]);
        assert_eq!(ask(&["get-primary"], t, &r).unwrap(), "B");
        assert_eq!(ask(&["get-state", "B"], t, &r).unwrap(), "good");
        assert_eq!(ask(&["get-state", "A"], t, &r).unwrap(), "good");
        // Its tries used up: the firmware boots a, slotinit gives b up.
        let r = record(&["a", "b"], &[("b", 0)]);
        assert_eq!(ask(&["get-primary"], t, &r).unwrap(), "A");
        assert_eq!(ask(&["get-state", "B"], t, &r).unwrap(), "bad");
        // Committed b.
        let r = record(&["b", "a"], &[]);
        assert_eq!(ask(&["get-primary"], t, &r).unwrap(), "B");
    }

    #[test]
    fn an_unusable_record_is_an_error() {
        let mut r = record(&["A"], &[("A", 3)]);
        r.error = Some("both copies fail their CRC".into());
        let e = ask(&["get-primary"], NextBoot::InOrder, &r).unwrap_err();
        assert!(e.contains("both copies fail their CRC"), "{e}");
        let fresh = Record {
            location: "env".into(),
            health: "no environment yet".into(),
            ..Record::default()
        };
        let e = ask(&["get-state", "A"], NextBoot::InOrder, &fresh).unwrap_err();
        assert!(e.contains("no environment yet"), "{e}");
        let odd = record(&["A", "C"], &[]);
        let e = ask(&["get-primary"], NextBoot::InOrder, &odd).unwrap_err();
        assert!(e.contains("\"C\" is no slot's name"), "{e}");
    }

    /// The Pi's record as the rpi-tryboot backend writes it (on the
    /// recording fake), through RAUC's install: target bad, then primary.
    #[test]
    fn a_pi_answers_through_raucs_install() {
        use crate::config::Config;
        use crate::disk::devices::{Partition, Resolved};
        use crate::kernel::fake::Fake;
        use std::path::Path;
        let part = |n: u32, name: &str| {
            Some(Partition {
                dev: format!("mmcblk0p{n}"),
                disk: "mmcblk0".into(),
                number: n,
                name: Some(name.into()),
                uuid: None,
            })
        };
        let resolved = Resolved {
            bootconfig: part(1, "bootconfig"),
            boot_a: part(2, "boot_a"),
            boot_b: part(3, "boot_b"),
            system_a: part(4, "system_a"),
            system_b: part(5, "system_b"),
            ..Resolved::default()
        };
        let dir = Path::new("/run/slotinit/bootstate");
        let mut sys = Fake::default();
        // rpi-image-gen's autoboot.txt: committed partition 2 (slot a).
        sys.files.insert(
            dir.join("autoboot.txt"),
            b"[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n".to_vec(),
        );
        let dt = Path::new("/proc/device-tree/chosen/bootloader");
        sys.files
            .insert(dt.join("partition"), 2u32.to_be_bytes().to_vec());
        sys.files
            .insert(dt.join("tryboot"), 0u32.to_be_bytes().to_vec());
        let config = Config::parse("[bootstate]\nbackend = \"rpi-tryboot\"\n", "t").unwrap();
        let n = names("A", "B");
        let mut store = state::open(&mut sys, &config, &resolved, dir)
            .unwrap()
            .unwrap();
        let rule = store.next_boot();
        assert_eq!(rule, NextBoot::Tryboot);
        let get = |store: &dyn state::Backend, w: &[&str]| {
            answer(&parse(w, &n).unwrap(), rule, &store.record(), &n).unwrap()
        };
        assert_eq!(get(&*store, &["get-primary"]), "A");
        assert_eq!(get(&*store, &["get-state", "A"]), "good");
        assert_eq!(get(&*store, &["get-state", "B"]), "bad");
        for w in [&["set-state", "B", "bad"][..], &["set-primary", "B"]] {
            let (how, slot) = mark_of(&parse(w, &n).unwrap()).unwrap();
            store.mark(&mut sys, how, slot, false).unwrap();
        }
        assert_eq!(get(&*store, &["get-primary"]), "B");
        assert_eq!(get(&*store, &["get-state", "B"]), "good");
        assert_eq!(get(&*store, &["get-state", "A"]), "good");
        // RAUC's mark-bad of the committed slot: refused, nothing to fall to.
        let (how, slot) = mark_of(&parse(&["set-state", "A", "bad"], &n).unwrap()).unwrap();
        assert!(matches!(
            store.mark(&mut sys, how, slot, false),
            Err(state::MarkError::Refused(_))
        ));
        // Giving the trial up (RAUC's mark-bad of B): A again.
        store.mark(&mut sys, Mark::Bad, Slot::B, false).unwrap();
        assert_eq!(get(&*store, &["get-primary"]), "A");
        assert_eq!(get(&*store, &["get-state", "B"]), "bad");
        store.close(&mut sys);
    }
}
