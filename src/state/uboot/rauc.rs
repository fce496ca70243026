//! RAUC's U-Boot boot-state contract (`BOOT_ORDER`, `BOOT_<name>_LEFT`) as pure transitions over an [`Env`].
//!
//! The semantics are those of RAUC's `src/bootloaders/uboot.c` and its example
//! boot script `contrib/uboot.sh`:
//!
//! - `BOOT_ORDER` is a space-separated list of bootnames; `BOOT_<name>_LEFT`
//!   the attempts left, hex without `0x` (the script tests `0x${BOOT_A_LEFT}`,
//!   so a written `0x` would break it). Reading accepts a `0x` prefix and
//!   either case, as RAUC's `g_ascii_strtoull(.., 16)` does; writing is always
//!   lowercase hex without prefix, as RAUC's `"%x"`.
//! - Reading follows the script's prologue and loop: an empty or missing
//!   `BOOT_ORDER` is the default order (`test -n "${BOOT_ORDER}" || setenv
//!   BOOT_ORDER "A B"`), a missing or empty `BOOT_<name>_LEFT` is `attempts`
//!   (`test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3`), a name no slot has
//!   (RAUC's recovery `R`) matches no `elif` branch and is skipped, and a name
//!   listed twice was already decided at its first place. Unknown names and
//!   repeats are kept in [`State::order`] and written back as they were, as
//!   RAUC's `r_uboot_set_state`/`r_uboot_set_primary` (`src/bootloaders/uboot.c`)
//!   keep every word they do not move.
//! - The boot pick: the first slot in `BOOT_ORDER` with attempts left is
//!   decremented and booted. When none is left the script resets every
//!   counter and resets the board; slotinit cannot reboot into a fresh pick,
//!   so [`choose_and_decrement`] resets and then makes that pick at once (the
//!   first slot of the configured order, decremented), flagged
//!   [`Chosen::Exhausted`]. Unlike `contrib/uboot.sh`, which keeps
//!   `BOOT_ORDER` as it was, the reset also restores the configured order so
//!   that a slot marked bad earlier gets its chance again when nothing else
//!   boots; names of no configured slot stay after it.
//! - `mark-good` sets the slot's counter and leaves `BOOT_ORDER` alone;
//!   `mark-bad` zeroes it and removes the slot from the order; `mark-active`
//!   moves the slot to the front and sets its counter.
//!
//! Exactly one party may decrement per boot: if U-Boot runs the script, the
//! initramfs must only read this state, never call [`choose_and_decrement`].

use crate::types::Slot;
use std::collections::BTreeMap;
use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

use crate::state::uboot::envblock::{Env, EnvError};

/// Name of the variable holding the boot order.
pub(crate) const BOOT_ORDER: &str = "BOOT_ORDER";

/// RAUC's default for `boot-attempts` and `boot-attempts-primary`.
const DEFAULT_ATTEMPTS: u32 = 3;

/// Errors of reading, changing or writing the boot state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootStateError {
    #[error("variable {variable} is not set")]
    MissingVariable { variable: String },
    #[error("variable {variable} is not valid utf-8")]
    NotUtf8 { variable: String },
    #[error("variable {variable} has {value:?}, not a hex counter")]
    InvalidCounter {
        variable: String,
        value: String,
        #[source]
        source: ParseIntError,
    },
    #[error("invalid bootname {name:?}: {reason}")]
    InvalidBootname { name: String, reason: &'static str },
    #[error("no slots configured")]
    NoSlots,
    #[error("slot {name} is configured twice")]
    DuplicateConfiguredSlot { name: String },
    #[error("slot {name} is not part of the boot state")]
    NotInState { name: String },
    #[error("cannot set variable {variable}")]
    WriteVariable {
        variable: String,
        #[source]
        source: EnvError,
    },
}

/// A RAUC bootname such as `A` or `B`.
///
/// Restricted to ASCII letters, digits, `_`, `-` and `.` so that it is a word
/// of `BOOT_ORDER` and a fragment of a U-Boot variable name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bootname(String);

impl Bootname {
    pub fn new(name: &str) -> Result<Self, BootStateError> {
        let reason = if name.is_empty() {
            "empty"
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            "only ascii letters, digits, '_', '-' and '.' are allowed"
        } else {
            return Ok(Self(name.to_owned()));
        };
        Err(BootStateError::InvalidBootname {
            name: name.to_owned(),
            reason,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// `BOOT_<name>_LEFT`.
    pub(super) fn left_variable(&self) -> String {
        format!("BOOT_{}_LEFT", self.0)
    }
}

impl FromStr for Bootname {
    type Err = BootStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Bootname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The slots and attempt counts of this device (RAUC's `system.conf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Every slot, in the default boot order.
    pub slots: Vec<Bootname>,
    /// RAUC `boot-attempts`: counter after mark-good and after a reset.
    pub attempts: u32,
    /// RAUC `boot-attempts-primary`: counter after mark-active.
    pub attempts_primary: u32,
}

impl Config {
    /// Checks that there is at least one slot and no slot twice.
    pub fn new(
        slots: Vec<Bootname>,
        attempts: u32,
        attempts_primary: u32,
    ) -> Result<Self, BootStateError> {
        if slots.is_empty() {
            return Err(BootStateError::NoSlots);
        }
        for (i, slot) in slots.iter().enumerate() {
            if slots[..i].contains(slot) {
                return Err(BootStateError::DuplicateConfiguredSlot {
                    name: slot.to_string(),
                });
            }
        }
        Ok(Self {
            slots,
            attempts,
            attempts_primary,
        })
    }
}

impl Default for Config {
    /// Order `A B`, 3 attempts: RAUC's and `contrib/uboot.sh`'s defaults.
    fn default() -> Self {
        Self {
            slots: vec![Bootname("A".into()), Bootname("B".into())],
            attempts: DEFAULT_ATTEMPTS,
            attempts_primary: DEFAULT_ATTEMPTS,
        }
    }
}

/// The boot state: the order and every configured slot's attempts left.
///
/// `order` is `BOOT_ORDER` word by word, as written: names of no configured
/// slot and repeated names included, so that writing it back keeps them; use
/// [`State::walk`] for the slots the boot script would try. `left` holds
/// slots that are not in `order` too: a slot marked bad keeps its
/// `BOOT_<name>_LEFT=0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub order: Vec<Bootname>,
    pub left: BTreeMap<Bootname, u32>,
}

impl State {
    /// The state of a fresh device: configured order, full counters.
    pub(super) fn initial(config: &Config) -> Self {
        Self {
            order: config.slots.clone(),
            left: config
                .slots
                .iter()
                .map(|s| (s.clone(), config.attempts))
                .collect(),
        }
    }

    /// Reads `BOOT_ORDER` and `BOOT_<slot>_LEFT` of every configured slot the
    /// way RAUC's `contrib/uboot.sh` does (see the module docs): an empty or
    /// missing order is the configured order, a missing or empty counter is
    /// `attempts`, unknown and repeated names are kept. Fails with
    /// [`BootStateError::MissingVariable`] for `BOOT_ORDER` when not one of the
    /// variables is set (an env RAUC never wrote), and on a counter that is
    /// not hex.
    pub fn read(env: &Env, config: &Config) -> Result<Self, BootStateError> {
        let mut any = env.get(BOOT_ORDER).is_some();
        let order_text = match env.get(BOOT_ORDER) {
            Some(_) => read_str(env, BOOT_ORDER)?,
            None => "",
        };
        let mut left = BTreeMap::new();
        for slot in &config.slots {
            let variable = slot.left_variable();
            let count = match env.get(&variable) {
                None => config.attempts,
                Some(_) => {
                    any = true;
                    let value = read_str(env, &variable)?;
                    if value.trim_ascii().is_empty() {
                        config.attempts
                    } else {
                        parse_counter(&variable, value)?
                    }
                }
            };
            left.insert(slot.clone(), count);
        }
        if !any {
            return Err(BootStateError::MissingVariable {
                variable: BOOT_ORDER.into(),
            });
        }
        // Any word is kept as it is (a bootname of another tool may use
        // characters a configured one may not); it only has to round-trip.
        let mut order: Vec<Bootname> = order_text
            .split_ascii_whitespace()
            .map(|w| Bootname(w.to_owned()))
            .collect();
        if order.is_empty() {
            // The script's `setenv BOOT_ORDER "A B"`, saved by its next saveenv.
            order = config.slots.clone();
        }
        Ok(Self { order, left })
    }

    /// The configured slots of the order as the boot script tries them: each
    /// once, at its first place; unknown names skipped; an empty order is the
    /// configured one.
    pub fn walk(&self, config: &Config) -> Vec<Bootname> {
        if self.order.is_empty() {
            return config.slots.clone();
        }
        let mut walk: Vec<Bootname> = Vec::new();
        for name in &self.order {
            if config.slots.contains(name) && !walk.contains(name) {
                walk.push(name.clone());
            }
        }
        walk
    }

    /// The slots of [`State::walk`] with attempts left, in that order.
    pub(crate) fn bootable(&self, config: &Config) -> Vec<Bootname> {
        self.walk(config)
            .into_iter()
            .filter(|s| self.left(s) > 0)
            .collect()
    }

    /// The words of the order that name no configured slot, each once.
    fn unknown(&self, config: &Config) -> Vec<Bootname> {
        let mut unknown: Vec<Bootname> = Vec::new();
        for name in &self.order {
            if !config.slots.contains(name) && !unknown.contains(name) {
                unknown.push(name.clone());
            }
        }
        unknown
    }

    /// Attempts left for `slot` (0 for a slot the state does not know).
    pub fn left(&self, slot: &Bootname) -> u32 {
        self.left.get(slot).copied().unwrap_or(0)
    }

    fn require(&self, slot: &Bootname) -> Result<(), BootStateError> {
        if self.left.contains_key(slot) {
            Ok(())
        } else {
            Err(BootStateError::NotInState {
                name: slot.to_string(),
            })
        }
    }
}

fn read_str<'a>(env: &'a Env, variable: &str) -> Result<&'a str, BootStateError> {
    let bytes = env
        .get(variable)
        .ok_or_else(|| BootStateError::MissingVariable {
            variable: variable.into(),
        })?;
    std::str::from_utf8(bytes).map_err(|_| BootStateError::NotUtf8 {
        variable: variable.into(),
    })
}

/// Hex counter, lenient on a `0x` prefix, case and surrounding blanks.
fn parse_counter(variable: &str, value: &str) -> Result<u32, BootStateError> {
    let trimmed = value.trim_ascii();
    let digits = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .unwrap_or(trimmed);
    let invalid = |source| BootStateError::InvalidCounter {
        variable: variable.into(),
        value: value.into(),
        source,
    };
    // A "-" fails here; a "+" passes, as with RAUC's g_ascii_strtoull.
    u32::from_str_radix(digits, 16).map_err(invalid)
}

/// How [`choose_and_decrement`] picked the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chosen {
    /// The first slot in the order with attempts left; `skipped` had none.
    Attempt {
        left_before: u32,
        skipped: Vec<Bootname>,
    },
    /// No slot had attempts left: all counters were reset to `reset_to` and
    /// the order to the configured one before picking. The caller should log
    /// this as an error: every slot failed to boot.
    Exhausted { reset_to: u32 },
}

/// The slot to boot this time and the state to commit before booting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub slot: Bootname,
    pub state: State,
    pub how: Chosen,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.how {
            Chosen::Attempt {
                left_before,
                skipped,
            } => {
                write!(
                    f,
                    "booting slot {} ({} attempts left before this one",
                    self.slot, left_before
                )?;
                if !skipped.is_empty() {
                    let names: Vec<&str> = skipped.iter().map(Bootname::as_str).collect();
                    write!(f, ", skipped {} with none left", names.join(" "))?;
                }
                f.write_str(")")
            }
            Chosen::Exhausted { reset_to } => write!(
                f,
                "no slot had attempts left; reset all to {} and booting slot {}",
                reset_to, self.slot
            ),
        }
    }
}

/// The bootloader script's pick, done by the initramfs (`counter = "init"`).
pub fn choose_and_decrement(state: &State, config: &Config) -> Result<Choice, BootStateError> {
    let mut skipped = Vec::new();
    for slot in state.walk(config) {
        let left_before = state.left(&slot);
        if left_before == 0 {
            skipped.push(slot);
            continue;
        }
        let mut next = state.clone();
        next.left.insert(slot.clone(), left_before - 1);
        if next.order.is_empty() {
            // What the script saves after its `setenv BOOT_ORDER "A B"`; an
            // empty order would leave RAUC without a primary slot.
            next.order = config.slots.clone();
        }
        return Ok(Choice {
            slot,
            state: next,
            how: Chosen::Attempt {
                left_before,
                skipped,
            },
        });
    }
    let mut next = State::initial(config);
    // Names of other tools (RAUC's recovery `R`) survive the reset.
    next.order.extend(state.unknown(config));
    let slot = config
        .slots
        .first()
        .cloned()
        .ok_or(BootStateError::NoSlots)?;
    // The reset plus this boot are what the script's reset-and-reboot amounts
    // to, so this boot uses one of the fresh attempts.
    next.left
        .insert(slot.clone(), config.attempts.saturating_sub(1));
    Ok(Choice {
        slot,
        state: next,
        how: Chosen::Exhausted {
            reset_to: config.attempts,
        },
    })
}

/// Whether a mark changed anything; `Unchanged` lets the caller skip a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Changed {
        left_before: u32,
        order_before: Vec<Bootname>,
    },
}

/// The state after a mark and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub state: State,
    pub change: Change,
}

fn marked(before: &State, slot: &Bootname, after: State) -> Marked {
    let change = if after == *before {
        Change::Unchanged
    } else {
        Change::Changed {
            left_before: before.left(slot),
            order_before: before.order.clone(),
        }
    };
    Marked {
        state: after,
        change,
    }
}

/// RAUC `mark-good`: counter back to `attempts`; the order is left alone.
pub fn mark_good(state: &State, slot: &Bootname, attempts: u32) -> Result<Marked, BootStateError> {
    state.require(slot)?;
    let mut next = state.clone();
    next.left.insert(slot.clone(), attempts);
    Ok(marked(state, slot, next))
}

/// RAUC `mark-bad`: counter 0 and out of the order (every place it has;
/// other words stay, as in `r_uboot_set_state`).
pub fn mark_bad(state: &State, slot: &Bootname) -> Result<Marked, BootStateError> {
    state.require(slot)?;
    let mut next = state.clone();
    next.left.insert(slot.clone(), 0);
    next.order.retain(|s| s != slot);
    Ok(marked(state, slot, next))
}

/// RAUC `mark-active`: first in the order with `attempts_primary` attempts.
pub fn mark_active(
    state: &State,
    slot: &Bootname,
    attempts_primary: u32,
) -> Result<Marked, BootStateError> {
    state.require(slot)?;
    let mut next = state.clone();
    next.order.retain(|s| s != slot);
    next.order.insert(0, slot.clone());
    next.left.insert(slot.clone(), attempts_primary);
    Ok(marked(state, slot, next))
}

/// `slot` first in `BOOT_ORDER`, every counter kept: what the boot script
/// walks next time, for a decision the running kernel cannot carry out. A
/// slot already first is unchanged.
pub fn put_first(state: &State, slot: &Bootname) -> Result<Marked, BootStateError> {
    state.require(slot)?;
    let mut next = state.clone();
    next.order.retain(|s| s != slot);
    next.order.insert(0, slot.clone());
    Ok(marked(state, slot, next))
}

/// RAUC's "good" test (`r_uboot_get_state` in `src/bootloaders/uboot.c`): in
/// the order and attempts left. What the boot script would boot is
/// [`State::bootable`], which also reads an empty order as the default one.
pub fn is_bootable(state: &State, slot: &Bootname) -> bool {
    state.order.contains(slot) && state.left(slot) > 0
}

/// Writes `BOOT_ORDER` and every `BOOT_<slot>_LEFT`; other variables stay untouched.
pub fn apply(state: &State, env: &mut Env) -> Result<(), BootStateError> {
    let order: Vec<&str> = state.order.iter().map(Bootname::as_str).collect();
    set(env, BOOT_ORDER, &order.join(" "))?;
    for (slot, left) in &state.left {
        set(env, &slot.left_variable(), &format!("{left:x}"))?;
    }
    Ok(())
}

fn set(env: &mut Env, variable: &str, value: &str) -> Result<(), BootStateError> {
    env.set(variable, value)
        .map(drop)
        .map_err(|source| BootStateError::WriteVariable {
            variable: variable.into(),
            source,
        })
}

/// `base` with the initial boot state applied, for a store that is fresh or
/// whose every copy is corrupt.
///
/// `base` should be the board's U-Boot default environment (e.g. from
/// `env export` shipped in the image): U-Boot only falls back to its built-in
/// default env while the stored one has a bad CRC, so writing an env without
/// `bootcmd` and friends would leave a board that no longer boots by itself.
pub fn default_env(config: &Config, base: &Env) -> Result<Env, BootStateError> {
    let mut env = base.clone();
    apply(&State::initial(config), &mut env)?;
    Ok(env)
}

/// The RAUC bootname of each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootnames {
    pub a: Bootname,
    pub b: Bootname,
}

impl Bootnames {
    pub(crate) fn of(&self, slot: Slot) -> &Bootname {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }

    /// The slot whose bootname is exactly `name`, as the boot script compares.
    pub(crate) fn exact(&self, name: &Bootname) -> Option<Slot> {
        if *name == self.a {
            Some(Slot::A)
        } else if *name == self.b {
            Some(Slot::B)
        } else {
            None
        }
    }

    /// The slot of a bootname, or of `a`/`b` typed by a person.
    pub fn slot(&self, name: &str) -> Option<Slot> {
        if name == self.a.as_str() {
            Some(Slot::A)
        } else if name == self.b.as_str() {
            Some(Slot::B)
        } else {
            Slot::parse(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(name: &str) -> Bootname {
        Bootname::new(name).unwrap()
    }

    fn state(order: &str, left: &[(&str, u32)]) -> State {
        State {
            order: order.split_whitespace().map(b).collect(),
            left: left.iter().map(|(n, l)| (b(n), *l)).collect(),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn bootname_validation() {
        for good in ["A", "B", "system0", "rootfs.1", "a_b-c"] {
            assert_eq!(b(good).as_str(), good);
        }
        for bad in ["", "A B", "A=B", "Ä", "A\0"] {
            assert!(
                matches!(
                    Bootname::new(bad),
                    Err(BootStateError::InvalidBootname { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(b("A").left_variable(), "BOOT_A_LEFT");
        assert_eq!("B".parse::<Bootname>().unwrap(), b("B"));
    }

    #[test]
    fn config_validation_and_default() {
        assert_eq!(Config::new(vec![], 3, 3), Err(BootStateError::NoSlots));
        assert!(matches!(
            Config::new(vec![b("A"), b("A")], 3, 3),
            Err(BootStateError::DuplicateConfiguredSlot { .. })
        ));
        let d = Config::default();
        assert_eq!(d, Config::new(vec![b("A"), b("B")], 3, 3).unwrap());
    }

    #[test]
    fn read_accepts() {
        let cfg = Config::default();
        let cases: &[(&[(&str, &str)], State)] = &[
            (
                &[
                    ("BOOT_ORDER", "A B"),
                    ("BOOT_A_LEFT", "3"),
                    ("BOOT_B_LEFT", "3"),
                ],
                state("A B", &[("A", 3), ("B", 3)]),
            ),
            (
                &[
                    ("BOOT_ORDER", "B"),
                    ("BOOT_A_LEFT", "0"),
                    ("BOOT_B_LEFT", "0x1f"),
                ],
                state("B", &[("A", 0), ("B", 31)]),
            ),
            (
                &[
                    ("BOOT_ORDER", "  B   A "),
                    ("BOOT_A_LEFT", "A"),
                    ("BOOT_B_LEFT", " 0XfF\n"),
                ],
                state("B A", &[("A", 10), ("B", 255)]),
            ),
            // rauc writes an empty order when it marks the last slot bad; the
            // script reads it as the default order and lets the counters decide.
            (
                &[
                    ("BOOT_ORDER", ""),
                    ("BOOT_A_LEFT", "0"),
                    ("BOOT_B_LEFT", "2"),
                ],
                state("A B", &[("A", 0), ("B", 2)]),
            ),
            (
                &[("BOOT_A_LEFT", "1"), ("BOOT_B_LEFT", "0")],
                state("A B", &[("A", 1), ("B", 0)]),
            ),
            // RAUC's recovery slot and a repeated name are kept as written.
            (
                &[
                    ("BOOT_ORDER", "B R A B"),
                    ("BOOT_A_LEFT", "3"),
                    ("BOOT_B_LEFT", "1"),
                ],
                state("B R A B", &[("A", 3), ("B", 1)]),
            ),
            // rauc 1.8's mark-active on a fresh env: only BOOT_B_LEFT.
            (
                &[("BOOT_ORDER", "B"), ("BOOT_B_LEFT", "3")],
                state("B", &[("A", 3), ("B", 3)]),
            ),
            (
                &[
                    ("BOOT_ORDER", "A B"),
                    ("BOOT_A_LEFT", " "),
                    ("BOOT_B_LEFT", "1"),
                ],
                state("A B", &[("A", 3), ("B", 1)]),
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(State::read(&env(pairs), &cfg).unwrap(), *want, "{pairs:?}");
        }
    }

    /// Words that are not valid configured bootnames still round-trip.
    #[test]
    fn read_keeps_any_word_of_the_order() {
        let cfg = Config::default();
        let e = env(&[("BOOT_ORDER", "A rescue=1 Ä B"), ("BOOT_A_LEFT", "3")]);
        let s = State::read(&e, &cfg).unwrap();
        assert_eq!(s.walk(&cfg), vec![b("A"), b("B")]);
        let mut out = Env::new();
        apply(&s, &mut out).unwrap();
        assert_eq!(out.get("BOOT_ORDER"), Some("A rescue=1 Ä B".as_bytes()));
    }

    #[test]
    fn walk_skips_unknown_and_repeated_names() {
        let cfg = Config::default();
        let cases: &[(&str, &[&str])] = &[
            ("A B", &["A", "B"]),
            ("R B", &["B"]),
            ("B R A", &["B", "A"]),
            ("A A B A", &["A", "B"]),
            ("R", &[]),
            ("", &["A", "B"]),
        ];
        for (order, want) in cases {
            let s = state(order, &[("A", 3), ("B", 3)]);
            let want: Vec<Bootname> = want.iter().map(|n| b(n)).collect();
            assert_eq!(s.walk(&cfg), want, "{order:?}");
        }
        let s = state("B A B", &[("A", 2), ("B", 0)]);
        assert_eq!(s.bootable(&cfg), vec![b("A")]);
    }

    #[test]
    fn read_rejects_naming_the_variable() {
        let cfg = Config::default();
        let ok = [
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3"),
        ];
        let with = |name: &str, value: Option<&str>| {
            let mut e = env(&ok);
            match value {
                Some(v) => {
                    e.set(name, v).unwrap();
                }
                None => {
                    e.remove(name);
                }
            }
            e
        };
        let cases: Vec<(Env, &str)> = vec![
            (env(&[("bootcmd", "run x")]), "BOOT_ORDER"),
            (with("BOOT_B_LEFT", Some("three")), "BOOT_B_LEFT"),
            (with("BOOT_B_LEFT", Some("-1")), "BOOT_B_LEFT"),
            (with("BOOT_B_LEFT", Some("0x")), "BOOT_B_LEFT"),
            (with("BOOT_B_LEFT", Some("100000000")), "BOOT_B_LEFT"),
        ];
        for (e, variable) in cases {
            let err = State::read(&e, &cfg).unwrap_err();
            assert!(
                err.to_string().contains(variable),
                "{err} should name {variable}"
            );
        }
        let mut e = env(&ok);
        e.set_bytes(b"BOOT_ORDER", b"\xff").unwrap();
        assert_eq!(
            State::read(&e, &cfg),
            Err(BootStateError::NotUtf8 {
                variable: "BOOT_ORDER".into()
            })
        );
    }

    #[test]
    fn choose_and_decrement_cases() {
        let cfg = Config::default();
        struct Case {
            what: &'static str,
            before: State,
            slot: &'static str,
            after: State,
            how: Chosen,
        }
        let cases = [
            Case {
                what: "first in order",
                before: state("A B", &[("A", 3), ("B", 3)]),
                slot: "A",
                after: state("A B", &[("A", 2), ("B", 3)]),
                how: Chosen::Attempt {
                    left_before: 3,
                    skipped: vec![],
                },
            },
            Case {
                what: "order is respected, not names",
                before: state("B A", &[("A", 3), ("B", 1)]),
                slot: "B",
                after: state("B A", &[("A", 3), ("B", 0)]),
                how: Chosen::Attempt {
                    left_before: 1,
                    skipped: vec![],
                },
            },
            Case {
                what: "falls back past an exhausted slot",
                before: state("B A", &[("A", 3), ("B", 0)]),
                slot: "A",
                after: state("B A", &[("A", 2), ("B", 0)]),
                how: Chosen::Attempt {
                    left_before: 3,
                    skipped: vec![b("B")],
                },
            },
            Case {
                what: "a slot out of the order is never picked",
                before: state("B", &[("A", 3), ("B", 0)]),
                slot: "A",
                after: state("A B", &[("A", 2), ("B", 3)]),
                how: Chosen::Exhausted { reset_to: 3 },
            },
            Case {
                what: "all zero: reset, default order, first decremented",
                before: state("B A", &[("A", 0), ("B", 0)]),
                slot: "A",
                after: state("A B", &[("A", 2), ("B", 3)]),
                how: Chosen::Exhausted { reset_to: 3 },
            },
            Case {
                what: "empty order (both marked bad)",
                before: state("", &[("A", 0), ("B", 0)]),
                slot: "A",
                after: state("A B", &[("A", 2), ("B", 3)]),
                how: Chosen::Exhausted { reset_to: 3 },
            },
            Case {
                what: "empty order is the default order: the counters decide",
                before: state("", &[("A", 0), ("B", 3)]),
                slot: "B",
                after: state("A B", &[("A", 0), ("B", 2)]),
                how: Chosen::Attempt {
                    left_before: 3,
                    skipped: vec![b("A")],
                },
            },
            Case {
                what: "an unknown name is skipped and kept",
                before: state("R B A", &[("A", 3), ("B", 3)]),
                slot: "B",
                after: state("R B A", &[("A", 3), ("B", 2)]),
                how: Chosen::Attempt {
                    left_before: 3,
                    skipped: vec![],
                },
            },
            Case {
                what: "a repeated name counts at its first place",
                before: state("A B A", &[("A", 0), ("B", 1)]),
                slot: "B",
                after: state("A B A", &[("A", 0), ("B", 0)]),
                how: Chosen::Attempt {
                    left_before: 1,
                    skipped: vec![b("A")],
                },
            },
            Case {
                what: "the reset keeps unknown names after the configured order",
                before: state("R B", &[("A", 0), ("B", 0)]),
                slot: "A",
                after: state("A B R", &[("A", 2), ("B", 3)]),
                how: Chosen::Exhausted { reset_to: 3 },
            },
        ];
        for c in cases {
            let choice = choose_and_decrement(&c.before, &cfg).unwrap();
            assert_eq!(choice.slot, b(c.slot), "{}", c.what);
            assert_eq!(choice.state, c.after, "{}", c.what);
            assert_eq!(choice.how, c.how, "{}", c.what);
        }
    }

    #[test]
    fn three_failed_boots_then_fallback_then_reset() {
        let cfg = Config::default();
        let mut s = state("B A", &[("A", 3), ("B", 3)]);
        let mut picks = Vec::new();
        for _ in 0..7 {
            let c = choose_and_decrement(&s, &cfg).unwrap();
            picks.push((
                c.slot.to_string(),
                matches!(c.how, Chosen::Exhausted { .. }),
            ));
            s = c.state;
        }
        let want = [
            ("B", false),
            ("B", false),
            ("B", false),
            ("A", false),
            ("A", false),
            ("A", false),
            ("A", true),
        ];
        let got: Vec<(&str, bool)> = picks.iter().map(|(n, e)| (n.as_str(), *e)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn choice_display() {
        let cfg = Config::default();
        let c = choose_and_decrement(&state("B A", &[("A", 3), ("B", 0)]), &cfg).unwrap();
        assert_eq!(
            c.to_string(),
            "booting slot A (3 attempts left before this one, skipped B with none left)"
        );
        let c = choose_and_decrement(&state("", &[("A", 0), ("B", 0)]), &cfg).unwrap();
        assert_eq!(
            c.to_string(),
            "no slot had attempts left; reset all to 3 and booting slot A"
        );
    }

    #[test]
    fn marks() {
        type Op = fn(&State, &Bootname) -> Result<Marked, BootStateError>;
        let good: Op = |s, n| mark_good(s, n, 3);
        let bad: Op = |s, n| mark_bad(s, n);
        let active: Op = |s, n| mark_active(s, n, 5);
        let cases: &[(&str, Op, State, &str, State, bool)] = &[
            (
                "good resets counter",
                good,
                state("A B", &[("A", 1), ("B", 3)]),
                "A",
                state("A B", &[("A", 3), ("B", 3)]),
                true,
            ),
            (
                "good is a no-op when already good",
                good,
                state("A B", &[("A", 3), ("B", 3)]),
                "A",
                state("A B", &[("A", 3), ("B", 3)]),
                false,
            ),
            (
                "good leaves the order alone",
                good,
                state("B", &[("A", 0), ("B", 3)]),
                "A",
                state("B", &[("A", 3), ("B", 3)]),
                true,
            ),
            (
                "bad removes from order",
                bad,
                state("A B", &[("A", 3), ("B", 3)]),
                "B",
                state("A", &[("A", 3), ("B", 0)]),
                true,
            ),
            (
                "bad twice is a no-op",
                bad,
                state("A", &[("A", 3), ("B", 0)]),
                "B",
                state("A", &[("A", 3), ("B", 0)]),
                false,
            ),
            (
                "active moves to front",
                active,
                state("A B", &[("A", 3), ("B", 0)]),
                "B",
                state("B A", &[("A", 3), ("B", 5)]),
                true,
            ),
            (
                "active re-adds a bad slot",
                active,
                state("A", &[("A", 3), ("B", 0)]),
                "B",
                state("B A", &[("A", 3), ("B", 5)]),
                true,
            ),
        ];
        for (what, op, before, slot, after, changed) in cases {
            let m = op(before, &b(slot)).unwrap();
            assert_eq!(m.state, *after, "{what}");
            assert_eq!(m.change != Change::Unchanged, *changed, "{what}");
        }
        let s = state("A B", &[("A", 1), ("B", 3)]);
        assert_eq!(
            mark_good(&s, &b("A"), 3).unwrap().change,
            Change::Changed {
                left_before: 1,
                order_before: vec![b("A"), b("B")]
            }
        );
        for op in [good, bad, active] {
            assert_eq!(
                op(&s, &b("C")),
                Err(BootStateError::NotInState { name: "C".into() })
            );
        }
    }

    #[test]
    fn bootable() {
        let cfg = Config::default();
        let s = state("B", &[("A", 3), ("B", 2)]);
        assert!(is_bootable(&s, &b("B")));
        assert!(!is_bootable(&s, &b("A")), "not in order");
        assert_eq!(s.bootable(&cfg), vec![b("B")]);
        let s = state("A B", &[("A", 0), ("B", 2)]);
        assert!(!is_bootable(&s, &b("A")), "no attempts left");
        assert!(!is_bootable(&s, &b("C")));
        assert_eq!(s.bootable(&cfg), vec![b("B")]);
        let s = state("", &[("A", 0), ("B", 2)]);
        assert_eq!(s.bootable(&cfg), vec![b("B")], "empty order: the default");
    }

    #[test]
    fn marks_keep_unknown_names_and_drop_every_repeat() {
        let s = state("R B A B", &[("A", 3), ("B", 3)]);
        assert_eq!(
            mark_bad(&s, &b("B")).unwrap().state.order,
            vec![b("R"), b("A")]
        );
        assert_eq!(
            mark_active(&s, &b("A"), 3).unwrap().state.order,
            vec![b("A"), b("R"), b("B"), b("B")]
        );
    }

    #[test]
    fn apply_writes_lowercase_hex_and_keeps_other_variables() {
        let mut e = env(&[("bootcmd", "run x"), ("BOOT_A_LEFT", "0x3")]);
        apply(&state("B A", &[("A", 10), ("B", 255)]), &mut e).unwrap();
        assert_eq!(
            e,
            env(&[
                ("bootcmd", "run x"),
                ("BOOT_ORDER", "B A"),
                ("BOOT_A_LEFT", "a"),
                ("BOOT_B_LEFT", "ff"),
            ])
        );
        apply(&state("", &[("A", 0), ("B", 0)]), &mut e).unwrap();
        assert_eq!(e.get("BOOT_ORDER"), Some(&b""[..]));
    }

    #[test]
    fn apply_then_read_round_trips() {
        let cfg = Config::default();
        let s = state("B", &[("A", 0), ("B", 0x1234)]);
        let mut e = Env::new();
        apply(&s, &mut e).unwrap();
        assert_eq!(State::read(&e, &cfg).unwrap(), s);
    }

    #[test]
    fn default_env_layers_on_base() {
        let base = env(&[("bootcmd", "run distro_bootcmd"), ("BOOT_ORDER", "B")]);
        let e = default_env(&Config::default(), &base).unwrap();
        assert_eq!(
            e,
            env(&[
                ("bootcmd", "run distro_bootcmd"),
                ("BOOT_ORDER", "A B"),
                ("BOOT_A_LEFT", "3"),
                ("BOOT_B_LEFT", "3"),
            ])
        );
        assert_eq!(
            State::read(&e, &Config::default()).unwrap(),
            State::initial(&Config::default())
        );
    }
}
