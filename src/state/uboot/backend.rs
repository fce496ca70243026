//! The U-Boot env as a [`Backend`]: the store, RAUC's decision over the state
//! the configured contract reads from it, with this boot's count committed
//! before the slot is used, and the marks.

use super::config::UbootEnvConfig;
use super::contract::Contract;
use super::decide::{self, Inputs};
use super::envstore::EnvStoreError;
use super::rauc::{self, Bootnames, Change, State};
use super::store::{self, Contents, Store};
use crate::config::Config;
use crate::disk::devices::Resolved;
use crate::kernel::sys::Sys;
use crate::state::decision::{DecideCtx, DecideError, Line, Outcome, Problem};
use crate::state::{
    Backend, BootStatus, CheckError, CommitError, Mark, MarkError, NextBoot, OpenError, Record,
};
use crate::types::{error_chain, Slot};
use std::path::Path;

/// An open U-Boot env store with its variable contract.
struct UbootEnv {
    config: UbootEnvConfig,
    names: Bootnames,
    rauc: rauc::Config,
    store: Store,
}

/// The registry's `open`.
pub(super) fn open(
    sys: &mut dyn Sys,
    config: &Config,
    resolved: &Resolved,
    mount_dir: &Path,
) -> Result<Box<dyn Backend>, OpenError> {
    let parsed = UbootEnvConfig::from_bootstate(&config.bootstate).map_err(super::check_error)?;
    Ok(Box::new(UbootEnv::open(
        sys,
        parsed.config,
        resolved,
        mount_dir,
    )?))
}

impl UbootEnv {
    pub(crate) fn open(
        sys: &mut dyn Sys,
        config: UbootEnvConfig,
        resolved: &Resolved,
        mount_dir: &Path,
    ) -> Result<Self, OpenError> {
        let invalid = |e: rauc::BootStateError| OpenError::Config(CheckError::Backend(Box::new(e)));
        let names = config.bootnames().map_err(invalid)?;
        let rauc = config.rauc().map_err(invalid)?;
        let partition = resolved.member(&config.partition);
        let store = store::open(sys, &config, partition, mount_dir)
            .map_err(|e| OpenError::Backend(Box::new(e)))?;
        Ok(UbootEnv {
            config,
            names,
            rauc,
            store,
        })
    }
}

impl Backend for UbootEnv {
    #[cfg(test)]
    fn name(&self) -> &'static str {
        super::config::NAME
    }

    fn record(&self) -> Record {
        self.store.record()
    }

    fn decide(&mut self, sys: &mut dyn Sys, ctx: &DecideCtx) -> Result<Outcome, DecideError> {
        let state = self.store.state(&self.config);
        // What the medium holds now: the fallback if this boot's count cannot be
        // written. A fresh store holds nothing.
        let on_disk = match &self.store.contents {
            Contents::State(st) => Some(st.clone()),
            _ => None,
        };
        let inputs = Inputs {
            override_slot: ctx.override_slot,
            default_slot: ctx.default_slot,
            counter: self.config.counter,
            hint: ctx.hint,
            state: state.as_ref(),
            names: &self.names,
            config: &self.rauc,
            failed: ctx.failed,
        };
        let mut outcome = decide::decide(&inputs)?;
        let mut lines: Vec<Line> = outcome.notes.iter().cloned().map(Line::Note).collect();
        lines.extend(outcome.errors.iter().cloned().map(Line::Problem));
        let store = &mut self.store;
        let written = match &outcome.state {
            Some(new) => store
                .commit(sys, new, outcome.fallback.as_deref())
                .map(|()| true)
                .map_err(|e| error_chain(&e)),
            None => store.repair(sys).map_err(|e| error_chain(&e)),
        };
        // Store::commit takes the new state as its contents once it is on the
        // medium; what fails after that (repairing the other copy) loses no count.
        let durable = |store: &Store| {
            matches!((&outcome.state, &store.contents),
                (Some(new), Contents::State(now)) if new == now)
        };
        match written {
            Ok(true) => lines.push(Line::Note(format!(
                "boot state committed: {}",
                store.loaded.health
            ))),
            Ok(false) => {}
            Err(e) if outcome.counted && !durable(store) => {
                outcome = decide::uncounted(&inputs, &outcome, on_disk.as_ref(), &e);
                lines.extend(outcome.errors.iter().cloned().map(Line::Problem));
            }
            Err(e) if durable(store) => lines.push(Line::Problem(Problem::RepairFailed(e))),
            Err(e) => lines.push(Line::Problem(Problem::NotWritten(e))),
        }
        Ok(Outcome {
            decision: outcome.decision,
            fallback: outcome.fallback,
            lines,
        })
    }

    fn commit_good(&mut self, sys: &mut dyn Sys, slot: Slot) -> Result<bool, CommitError> {
        let Some(state) = self.store.state(&self.config) else {
            return Ok(false);
        };
        rauc::mark_good(&state, self.names.of(slot), self.rauc.attempts)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                self.store
                    .commit(sys, &m.state, None)
                    .map_err(|e| error_chain(&e))
            })
            .map(|()| true)
            .map_err(|message| CommitError { slot, message })
    }

    fn mark(
        &mut self,
        sys: &mut dyn Sys,
        how: Mark,
        slot: Slot,
        force: bool,
    ) -> Result<String, MarkError> {
        let (rauc, store) = (&self.rauc, &mut self.store);
        let overwrite = matches!(store.contents, Contents::Unusable(_)) && force;
        let state = match (&store.contents, force) {
            (Contents::State(s), _) => s.clone(),
            (Contents::Fresh, _) => State::initial(rauc),
            (Contents::Unusable(why), true) => {
                eprintln!("slotinit: overwriting the unusable boot state ({why}) as --force asks");
                State::initial(rauc)
            }
            (Contents::Unusable(why), false) => {
                return Err(MarkError::Unusable(format!(
                    "boot state {} is unusable ({why}); nothing written. \
                     `slotinit mark-active <slot> --force` writes a fresh state",
                    store.record().location
                )))
            }
        };
        let name = self.names.of(slot);
        let marked = match how {
            Mark::Good => rauc::mark_good(&state, name, rauc.attempts),
            Mark::Bad => rauc::mark_bad(&state, name),
            Mark::Active => rauc::mark_active(&state, name, rauc.attempts_primary),
        }
        .map_err(|e| MarkError::Invalid(e.to_string()))?;
        let verb = how.verb();
        let contract = self.config.contract;
        // A mark-bad the contract's variables cannot hold (Mender: the slot
        // not booted; a slot the article's counter already holds at 0)
        // writes nothing new: said as it is, never reported as written.
        if how == Mark::Bad && marked.change != Change::Unchanged {
            if let Some(before) = &store.loaded.env {
                let mut after = before.clone();
                if contract.apply(&marked.state, rauc, &mut after).is_ok() && after == *before {
                    if !contract.reachable(&state, rauc, name) {
                        return Ok(format!("slot {slot} ({name}) already marked {verb}"));
                    }
                    return Err(MarkError::Refused(format!(
                        "the {} contract has no variable that marks slot {slot} ({name}) bad \
                         while {}; nothing written",
                        contract.name(),
                        contract.describe(&state, rauc)
                    )));
                }
            }
        }
        if let Change::Unchanged = marked.change {
            if !overwrite && !matches!(store.contents, Contents::Fresh) {
                return Ok(format!("slot {slot} ({name}) already marked {verb}"));
            }
        }
        // What boots next is what the boot script (or the init) makes of the
        // state: with no slot it would boot, every counter is reset and a slot
        // that was just marked bad boots again.
        if how == Mark::Bad && marked.state.bootable(rauc).is_empty() {
            let consequence = format!(
                "the next boot finds no slot with attempts left, resets every counter \
                 and boots slot {} first",
                rauc.slots.first().map_or("?", |s| s.as_str())
            );
            if !force {
                return Err(MarkError::Refused(format!(
                    "refusing to mark slot {slot} ({name}) bad: no other slot of {} \
                     would have attempts left, so {consequence}; nothing written. \
                     `--force` marks it anyway",
                    state_text(contract, &marked.state, rauc),
                )));
            }
            eprintln!("slotinit: --force: marking slot {slot} bad; {consequence}");
        }
        // Over an unusable store, on top of the bootloader's own variables (the
        // last valid copy or bootstate.base_env), never in their place.
        let written = if overwrite {
            store.force_commit(sys, &marked.state)
        } else {
            store.commit(sys, &marked.state, None)
        };
        written.map_err(|e| mark_error(&e))?;
        Ok(format!(
            "slot {slot} ({name}) marked {verb}: {}",
            state_text(contract, &marked.state, rauc)
        ))
    }

    fn boot_next(&mut self, sys: &mut dyn Sys, slot: Slot) -> Result<Option<String>, MarkError> {
        // The boot script walks BOOT_ORDER: the slot goes first, its count
        // as this boot's decision left it (never reset here: a firmware that
        // does not follow BOOT_ORDER then costs the slot one attempt per
        // restart, and the walk moves on when they are used up).
        let Contents::State(state) = &self.store.contents else {
            return Ok(None);
        };
        let marked = rauc::put_first(state, self.names.of(slot))
            .map_err(|e| MarkError::Invalid(e.to_string()))?;
        if let Change::Changed { .. } = marked.change {
            self.store
                .commit(sys, &marked.state, None)
                .map_err(|e| mark_error(&e))?;
        }
        Ok(None)
    }

    fn next_boot(&self) -> NextBoot {
        NextBoot::InOrder
    }

    fn status(&self, booted: Option<Slot>) -> BootStatus {
        let record = self.store.record();
        let attempts_left = booted.and_then(|s| {
            record
                .left
                .iter()
                .find(|(b, _)| b == self.names.of(s).as_str())
                .map(|(_, l)| *l)
        });
        let boot = match attempts_left {
            Some(l) if l >= self.rauc.attempts => "committed",
            Some(_) => "trial",
            None => "unknown",
        };
        BootStatus {
            boot,
            attempts_left,
        }
    }

    fn close(self: Box<Self>, sys: &mut dyn Sys) {
        self.store.close(sys);
    }
}

/// A mark's failed write, by what stopped it.
fn mark_error(e: &store::CommitError) -> MarkError {
    let message = error_chain(e);
    match e {
        store::CommitError::Store(EnvStoreError::Locked { .. }) => MarkError::Locked(message),
        store::CommitError::Store(EnvStoreError::AllCorrupt) => MarkError::Unusable(message),
        _ => MarkError::Write(message),
    }
}

/// The state in the contract's variables: RAUC's as it always read
/// (`BOOT_ORDER="A B" BOOT_A_LEFT=3 ...`), the others as written.
fn state_text(contract: Contract, state: &State, config: &rauc::Config) -> String {
    match contract {
        Contract::Rauc => format!("BOOT_ORDER=\"{}\" {}", order_text(state), left_text(state)),
        _ => contract.describe(state, config),
    }
}

fn order_text(state: &State) -> String {
    state
        .order
        .iter()
        .map(|b| b.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn left_text(state: &State) -> String {
    state
        .left
        .iter()
        .map(|(b, l)| format!("{}={l}", b.left_variable()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::disk::devices::Resolved;
    use crate::kernel::sys::Real;
    use crate::state::uboot::envblock::{self, Env, Header};
    use crate::state::{open, Backend, Mark, MarkError};
    use crate::types::Slot;
    use std::path::Path;

    fn backend(
        dir: &Path,
        contract: &str,
        names: (&str, &str),
        vars: &[(&str, &str)],
    ) -> Box<dyn Backend> {
        let file = dir.join("uboot.env");
        let env = Env::from_pairs(vars.iter().copied()).unwrap();
        std::fs::write(
            &file,
            envblock::serialize(&env, 0x4000, Header::Single).unwrap(),
        )
        .unwrap();
        let text = format!(
            "[bootstate]\nbackend = \"uboot-env\"\n[bootstate.uboot-env]\ncontract = \"{contract}\"\n\
             counter = \"bootloader\"\nbootname_a = \"{}\"\nbootname_b = \"{}\"\nattempts = {}\n\
             attempts_primary = {}\nfw_env = [\"{} 0x0 0x4000\"]\n",
            names.0,
            names.1,
            if contract == "mender" { 1 } else { 3 },
            if contract == "mender" { 1 } else { 3 },
            file.display()
        );
        let config = Config::parse(&text, "t").unwrap();
        open(&mut Real, &config, &Resolved::default(), dir)
            .unwrap()
            .unwrap()
    }

    fn read(dir: &Path, name: &str) -> String {
        let bytes = std::fs::read(dir.join("uboot.env")).unwrap();
        let env = envblock::parse_single(&bytes).unwrap();
        String::from_utf8_lossy(env.get(name).unwrap_or(b"-")).into_owned()
    }

    #[test]
    fn mender_through_the_trait() {
        let dir = tempfile::tempdir().unwrap();
        let trial = [
            ("bootlimit", "1"),
            ("altbootcmd", "run mender_altbootcmd; run bootcmd"),
            ("mender_boot_part", "3"),
            ("mender_boot_part_hex", "3"),
            ("upgrade_available", "1"),
            ("bootcount", "1"),
        ];
        let mut b = backend(dir.path(), "mender", ("2", "3"), &trial);
        assert_eq!(b.next_boot(), crate::state::NextBoot::InOrder);
        let s = b.status(Some(Slot::B));
        assert_eq!((s.boot, s.attempts_left), ("trial", Some(0)));
        // The slot not booted: Mender has no variable for it.
        match b.mark(&mut Real, Mark::Bad, Slot::A, false) {
            Err(MarkError::Refused(m)) => assert!(m.contains("mender contract"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(read(dir.path(), "mender_boot_part"), "3");
        // The trial itself: the rollback.
        let m = b.mark(&mut Real, Mark::Bad, Slot::B, false).unwrap();
        assert!(m.contains("mender_boot_part=2"), "{m}");
        assert_eq!(
            [
                "mender_boot_part",
                "upgrade_available",
                "bootcount",
                "bootlimit",
                "altbootcmd"
            ]
            .map(|k| read(dir.path(), k)),
            ["2", "0", "0", "1", "run mender_altbootcmd; run bootcmd"]
        );
        // Committed on A now: U-Boot never boots B (altbootcmd runs only in a
        // trial), so B is as good as bad: what RAUC's install asks before it
        // writes B succeeds and writes nothing.
        let before = std::fs::read(dir.path().join("uboot.env")).unwrap();
        let m = b.mark(&mut Real, Mark::Bad, Slot::B, false).unwrap();
        assert!(m.contains("already marked bad"), "{m}");
        assert_eq!(std::fs::read(dir.path().join("uboot.env")).unwrap(), before);
        b.close(&mut Real);

        let mut b = backend(dir.path(), "mender", ("2", "3"), &trial);
        assert!(b.commit_good(&mut Real, Slot::B).unwrap());
        assert_eq!(
            ["mender_boot_part", "upgrade_available", "bootcount"].map(|k| read(dir.path(), k)),
            ["3", "0", "0"]
        );
        assert_eq!(b.status(Some(Slot::B)).boot, "committed");
        let m = b.mark(&mut Real, Mark::Active, Slot::A, false).unwrap();
        assert!(m.contains("upgrade_available=1"), "{m}");
        // boot_next of the running slot during that trial: back to 3, committed.
        assert_eq!(b.boot_next(&mut Real, Slot::B).unwrap(), None);
        assert_eq!(
            ["mender_boot_part", "upgrade_available"].map(|k| read(dir.path(), k)),
            ["3", "0"]
        );
        b.close(&mut Real);
    }

    #[test]
    fn article_through_the_trait() {
        let dir = tempfile::tempdir().unwrap();
        let vars = [
            ("bootcmd", "run distro_bootcmd"),
            ("boot_slot", "b"),
            ("boot_a_left", "3"),
            ("boot_b_left", "2"),
        ];
        let mut b = backend(dir.path(), "article", ("a", "b"), &vars);
        let s = b.status(Some(Slot::B));
        assert_eq!((s.boot, s.attempts_left), ("trial", Some(2)));
        assert!(b.commit_good(&mut Real, Slot::B).unwrap());
        assert_eq!(read(dir.path(), "boot_b_left"), "3");
        assert_eq!(b.status(Some(Slot::B)).boot, "committed");
        // boot_next: boot_slot only, the counters kept.
        assert_eq!(b.boot_next(&mut Real, Slot::A).unwrap(), None);
        assert_eq!(
            ["boot_slot", "boot_a_left", "boot_b_left"].map(|k| read(dir.path(), k)),
            ["a", "3", "3"]
        );
        assert_eq!(b.boot_next(&mut Real, Slot::B).unwrap(), None);
        let m = b.mark(&mut Real, Mark::Bad, Slot::B, false).unwrap();
        assert!(m.contains("boot_slot=a"), "{m}");
        // The last bootable slot: refused without --force.
        match b.mark(&mut Real, Mark::Bad, Slot::A, false) {
            Err(MarkError::Refused(m)) => assert!(m.contains("boot_a_left=0"), "{m}"),
            other => panic!("{other:?}"),
        }
        // b at 0: marking it bad again writes nothing and says so.
        let m = b.mark(&mut Real, Mark::Bad, Slot::B, false).unwrap();
        assert!(m.contains("already marked bad"), "{m}");
        assert_eq!(
            ["boot_slot", "boot_a_left", "boot_b_left", "bootcmd"].map(|k| read(dir.path(), k)),
            ["a", "3", "0", "run distro_bootcmd"]
        );
        b.close(&mut Real);
    }
}
