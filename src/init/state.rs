//! The boot-state stage: open the store, decide the slot with its count
//! committed durably before the slot is used, commit on mount, close.

use super::report::{kind, Report};
use crate::config::Config;
use crate::config::Counter;
use crate::decide::slot::{self, Inputs};
use crate::decide::sources;
use crate::disk::devices::Resolved;
use crate::kernel::cmdline::{BootArgs, Cmdline};
use crate::paths::STATE_MOUNT;
use crate::state::uboot::store::{self, Store};
use crate::types::error_chain;
use crate::types::Slot;
use std::path::Path;

/// Opens the boot-state store; a store that cannot be opened is logged and the
/// boot goes on without counters.
pub(super) fn open_store(
    config: &Config,
    resolved: &Resolved,
    report: &mut Report,
) -> Option<Store> {
    let bs = &config.bootstate;
    let partition = store::member(resolved, &bs.partition);
    match store::open(bs, partition, Path::new(STATE_MOUNT)) {
        Ok(Some(store)) => {
            let record = store.record();
            match &record.error {
                Some(e) => {
                    let message = format!(
                        "boot state {} unusable: {e}; booting the default slot, not writing it",
                        record.location
                    );
                    report.error(kind::BOOTSTATE_UNUSABLE, message);
                }
                None => log::info!("boot state {}: {}", record.location, record.health),
            }
            report.handoff.bootstate = Some(record);
            Some(store)
        }
        Ok(None) => None,
        Err(e) => {
            let message = format!("{}; booting without counters", error_chain(&e));
            report.error(kind::BOOTSTATE_UNAVAILABLE, message);
            None
        }
    }
}

/// One slot decision, with its state committed durably before the slot is used.
pub(super) fn decide(
    config: &Config,
    args: &BootArgs,
    cmdline: &Cmdline,
    resolved: &Resolved,
    store: Option<&mut Store>,
    failed: &[(Slot, String)],
    report: &mut Report,
) -> Result<Slot, String> {
    let bs = &config.bootstate;
    let names = store::bootnames(bs).map_err(|e| format!("bootstate config: {e}"))?;
    let rauc = store::rauc_config(bs).map_err(|e| format!("bootstate config: {e}"))?;
    let state = store.as_deref().and_then(|s| s.state(bs));
    // What the medium holds now: the fallback if this boot's count cannot be
    // written. A fresh store holds nothing.
    let on_disk = store.as_deref().and_then(|s| match &s.contents {
        store::Contents::State(st) => Some(st.clone()),
        _ => None,
    });
    // Without a store there is nothing to count: the bootloader's word decides.
    let counter = match bs.backend {
        crate::config::Backend::None => Counter::Bootloader,
        crate::config::Backend::UbootEnv => bs.counter,
    };
    let dt_partition = std::fs::read(crate::paths::DT_PARTITION)
        .ok()
        .and_then(|b| sources::parse_dt_u32(&b));
    let (hint, asked) = sources::find(
        &config.boot.sources,
        &sources::Facts {
            cmdline,
            rauc_key: &bs.cmdline_key,
            names: &names,
            resolved,
            dt_partition,
        },
    );
    if counter == Counter::Bootloader {
        for line in &asked {
            log::info!("{line}");
        }
    }
    report.handoff.hint = hint.clone();
    let override_slot = match args.slot_override {
        Some(slot) if !config.boot.allow_override => {
            let message = format!("ignoring slotinit.slot={slot}: boot.allow_override is false");
            report.warn(kind::OVERRIDE_REFUSED, message);
            None
        }
        other => other,
    };
    let inputs = Inputs {
        override_slot,
        default_slot: config.boot.default_slot,
        counter,
        hint: hint.as_ref(),
        state: state.as_ref(),
        names: &names,
        config: &rauc,
        failed,
    };
    let mut outcome = slot::decide(&inputs)?;
    for note in &outcome.notes {
        log::info!("{note}");
    }
    for error in &outcome.errors {
        report.error(kind::DECISION, error.clone());
    }
    if let Some(store) = store {
        let written = match &outcome.state {
            Some(new) => store
                .commit(new, outcome.fallback.as_deref())
                .map(|()| true)
                .map_err(|e| error_chain(&e)),
            None => store.repair().map_err(|e| error_chain(&e)),
        };
        // Store::commit takes the new state as its contents once it is on the
        // medium; what fails after that (repairing the other copy) loses no count.
        let durable = |store: &Store| {
            matches!((&outcome.state, &store.contents),
                (Some(new), store::Contents::State(now)) if new == now)
        };
        match written {
            Ok(true) => log::info!("boot state committed: {}", store.loaded.health),
            Ok(false) => {}
            Err(e) if outcome.counted && !durable(store) => {
                outcome = slot::uncounted(&inputs, &outcome, on_disk.as_ref(), &e);
                for error in &outcome.errors {
                    report.error(kind::BOOTSTATE_WRITE, error.clone());
                }
            }
            Err(e) => {
                let message = if durable(store) {
                    format!("boot state committed, but {e}")
                } else {
                    format!("boot state not written: {e}")
                };
                let repair_or_write = if durable(store) {
                    kind::BOOTSTATE_REPAIR
                } else {
                    kind::BOOTSTATE_WRITE
                };
                report.error(repair_or_write, message);
            }
        }
        report.handoff.bootstate = Some(store.record());
    }
    let decision = outcome.decision.clone();
    log::info!("slot {} ({:?})", decision.slot, decision.source);
    if outcome.fallback.is_some() {
        report.handoff.fallback = outcome.fallback;
    }
    report.handoff.slot = Some(decision.slot);
    report.handoff.decision = Some(decision.clone());
    Ok(decision.slot)
}

/// commit = "on-mount": the slot mounted and has an init, so it is good.
pub(super) fn commit_good(
    config: &Config,
    store: Option<&mut Store>,
    slot: Slot,
    report: &mut Report,
) {
    let Some(store) = store else {
        return;
    };
    let bs = &config.bootstate;
    let (Some(state), Ok(names)) = (store.state(bs), store::bootnames(bs)) else {
        return;
    };
    let result = crate::state::uboot::rauc::mark_good(&state, names.of(slot), bs.attempts)
        .map_err(|e| e.to_string())
        .and_then(|m| store.commit(&m.state, None).map_err(|e| error_chain(&e)));
    match result {
        Ok(()) => log::info!("slot {slot} committed on mount"),
        Err(e) => {
            let message = format!("cannot commit slot {slot}: {e}");
            report.error(kind::COMMIT, message);
        }
    }
    report.handoff.bootstate = Some(store.record());
}

pub(super) fn close_store(store: Option<Store>, report: &mut Report) {
    if let Some(store) = store {
        report.handoff.bootstate = Some(store.record());
        store.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::uboot::envblock::{self, Env, Header};
    use std::path::PathBuf;

    /// A store holding `pairs` in `dir/sub/uboot.env`, opened, whose every
    /// later write fails: `dir/sub` is then a regular file (ENOTDIR), which
    /// stops root too, unlike a chmod.
    fn failing_store(dir: &Path, pairs: &[(&str, &str)]) -> (Config, Store, PathBuf) {
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let file = sub.join("uboot.env");
        let env = Env::from_pairs(pairs.iter().copied()).unwrap();
        let block = envblock::serialize(&env, 0x4000, Header::Single).unwrap();
        std::fs::write(&file, &block).unwrap();
        let mut config = Config::default();
        config.bootstate.fw_env = vec![format!("{} 0x0 0x4000", file.display())];
        let store = store::open(&config.bootstate, None, dir).unwrap().unwrap();
        let kept = dir.join("kept");
        std::fs::rename(&sub, &kept).unwrap();
        std::fs::write(&sub, b"not a directory").unwrap();
        (config, store, kept.join("uboot.env"))
    }

    fn decide_with(
        config: &Config,
        store: &mut Store,
    ) -> (Result<Slot, String>, crate::handoff::Handoff) {
        let cmdline = Cmdline::parse(b"");
        let args = BootArgs::from_cmdline(&cmdline);
        let mut report = Report::new();
        let slot = decide(
            config,
            &args,
            &cmdline,
            &Resolved::default(),
            Some(store),
            &[],
            &mut report,
        );
        (slot, report.handoff)
    }

    #[test]
    fn trial_whose_count_cannot_be_written_does_not_boot() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = [
            ("bootcmd", "run distro_bootcmd"),
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "2"),
        ];
        let (config, mut store, kept) = failing_store(dir.path(), &pairs);
        let before = std::fs::read(&kept).unwrap();
        let (slot, handoff) = decide_with(&config, &mut store);
        assert_eq!(slot, Ok(Slot::A), "{:?}", handoff.errors);
        assert_eq!(
            handoff.decision.as_ref().map(|d| d.source),
            Some(slot::Source::Fallback)
        );
        assert!(
            handoff.errors.iter().any(|e| e.kind == "bootstate-write"
                && e.message.contains("slot b would boot uncounted")),
            "{:?}",
            handoff.errors
        );
        assert!(handoff.fallback.is_some());
        assert_eq!(std::fs::read(&kept).unwrap(), before);
    }

    #[test]
    fn uncountable_boot_without_another_slot_boots_loudly() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = [
            ("BOOT_ORDER", "B"),
            ("BOOT_A_LEFT", "0"),
            ("BOOT_B_LEFT", "3"),
        ];
        let (config, mut store, _) = failing_store(dir.path(), &pairs);
        let (slot, handoff) = decide_with(&config, &mut store);
        assert_eq!(slot, Ok(Slot::B));
        assert!(
            handoff
                .errors
                .iter()
                .any(|e| e.kind == "bootstate-write" && e.message.contains("UNCOUNTED")),
            "{:?}",
            handoff.errors
        );
    }
}
