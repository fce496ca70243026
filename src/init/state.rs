//! The boot-state stage: open the configured backend, decide the slot with
//! its count committed durably before the slot is used, commit on mount,
//! close. Only the `state::Backend` trait is used here, and the kernel only
//! through the boot's [`Sys`].

use super::report::Report;
use crate::config::Config;
use crate::disk::devices::Resolved;
use crate::kernel::cmdline::{BootArgs, Cmdline};
use crate::kernel::sys::Sys;
use crate::kind;
use crate::paths::STATE_MOUNT;
use crate::state::decision::{self, Coherence, DecideCtx, Hint, Line};
use crate::state::sources;
use crate::state::{self, Backend};
use crate::types::error_chain;
use crate::types::Slot;
use std::path::Path;

/// Opens the boot-state backend; one that cannot be opened is logged and the
/// boot goes on without counters. A `[bootstate]` the backend refuses opens
/// nothing: [`decide`] then fails closed, as for any invalid config.
pub(super) fn open_store<S: Sys>(
    sys: &mut S,
    config: &Config,
    resolved: &Resolved,
    report: &mut Report,
) -> Option<Box<dyn Backend>> {
    let checked = state::check(config).ok()?;
    for warning in checked.deprecated {
        report.warn(kind::CONFIG_DEPRECATED, warning);
    }
    match state::open(sys, config, resolved, Path::new(STATE_MOUNT)) {
        Ok(Some(backend)) => {
            let record = backend.record();
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
            Some(backend)
        }
        Ok(None) => None,
        Err(e) => {
            let message = format!("{}; booting without counters", error_chain(&e));
            report.error(e.kind(), message);
            None
        }
    }
}

/// What a slot decision is made from, besides the store.
pub(super) struct Inputs<'a> {
    pub(crate) config: &'a Config,
    pub(crate) args: &'a BootArgs,
    pub(crate) cmdline: &'a Cmdline,
    pub(crate) resolved: &'a Resolved,
    /// The slots tried this boot and why they could not be used.
    pub(crate) failed: &'a [(Slot, String)],
}

/// One slot decision, with its state committed durably before the slot is used.
pub(super) fn decide<S: Sys>(
    sys: &mut S,
    inputs: &Inputs,
    store: Option<&mut Box<dyn Backend>>,
    report: &mut Report,
) -> Result<Slot, String> {
    let config = inputs.config;
    // Fail closed on a [bootstate] the backend refuses, as on any invalid config.
    state::check(config)
        .map_err(|e| format!("config: {}; refusing to boot with it", error_chain(&e)))?;
    let hint = find_hint(sys, inputs)?;
    report.handoff.hint = hint.clone();
    let ctx = DecideCtx {
        override_slot: override_slot(config, inputs.args, report),
        default_slot: config.boot.default_slot,
        hint: hint.as_ref(),
        failed: inputs.failed,
    };
    let outcome = match store {
        Some(backend) => {
            let outcome = backend.decide(sys, &ctx);
            report.handoff.bootstate = Some(backend.record());
            outcome
        }
        None => state::decide_unopened(config, &ctx),
    }
    .map_err(|e| error_chain(&e))?;
    for line in &outcome.lines {
        match line {
            Line::Note(note) => log::info!("{note}"),
            Line::Problem(p) => report.error(p.kind(), p.to_string()),
        }
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

/// Slot coherence ([`decision::coherence`]): true when this boot mounts the
/// decided `slot`; false when the running kernel is the other slot's, so
/// the firmware must boot it.
pub(super) fn coherent(config: &Config, slot: Slot, report: &mut Report) -> bool {
    let running = report.handoff.hint.as_ref().and_then(|h| h.slot);
    match decision::coherence(slot, running, config.kernels_per_slot()) {
        Coherence::Mount => true,
        Coherence::MountUnknownKernel => {
            let message = format!(
                "kernels are per slot but no slot source said which one runs; \
                 mounting slot {slot} under this kernel"
            );
            report.warn(kind::SLOT_KERNEL, message);
            true
        }
        Coherence::Restart { running } => {
            log::warn!(
                "slot {slot} decided, but the running kernel is slot {running}'s: \
                 never mounting slot {slot}'s system under it"
            );
            false
        }
    }
}

/// What the slot sources say (the cmdline, the device tree's partition, ...);
/// logged where the bootloader's word decides.
fn find_hint<S: Sys>(sys: &mut S, inputs: &Inputs) -> Result<Option<Hint>, String> {
    let config = inputs.config;
    let (names, cmdline_key) =
        state::slot_names(config).map_err(|e| format!("bootstate config: {e}"))?;
    let dt_partition = sys
        .read_file(Path::new(crate::paths::DT_PARTITION))
        .ok()
        .flatten()
        .and_then(|b| sources::parse_dt_u32(&b));
    let (hint, asked) = sources::find(
        &config.boot.sources,
        &sources::Facts {
            cmdline: inputs.cmdline,
            rauc_key: &cmdline_key,
            names: &names,
            resolved: inputs.resolved,
            dt_partition,
        },
    );
    // Without a store there is nothing to count: the bootloader's word decides.
    if state::bootloader_decides(config) {
        for line in &asked {
            log::info!("{line}");
        }
    }
    Ok(hint)
}

/// `slotinit.slot=`, unless the config refuses overrides (a warning).
fn override_slot(config: &Config, args: &BootArgs, report: &mut Report) -> Option<Slot> {
    match args.slot_override {
        Some(slot) if !config.boot.allow_override => {
            let message = format!("ignoring slotinit.slot={slot}: boot.allow_override is false");
            report.warn(kind::OVERRIDE_REFUSED, message);
            None
        }
        other => other,
    }
}

/// commit = "on-mount": the slot mounted and has an init, so it is good.
pub(super) fn commit_good<S: Sys>(
    sys: &mut S,
    _config: &Config,
    store: Option<&mut Box<dyn Backend>>,
    slot: Slot,
    report: &mut Report,
) {
    let Some(store) = store else {
        return;
    };
    match store.commit_good(sys, slot) {
        Ok(true) => log::info!("slot {slot} committed on mount"),
        Ok(false) => return,
        Err(e) => report.error(e.kind(), e.to_string()),
    }
    report.handoff.bootstate = Some(store.record());
}

pub(super) fn close_store<S: Sys>(
    sys: &mut S,
    store: Option<Box<dyn Backend>>,
    report: &mut Report,
) {
    if let Some(store) = store {
        report.handoff.bootstate = Some(store.record());
        store.close(sys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::sys::Real;
    use crate::state::uboot::envblock::{self, Env, Header};
    use std::path::PathBuf;

    /// A store holding `pairs` in `dir/sub/uboot.env`, opened, whose every
    /// later write fails: `dir/sub` is then a regular file (ENOTDIR), which
    /// stops root too, unlike a chmod.
    fn failing_store(dir: &Path, pairs: &[(&str, &str)]) -> (Config, Box<dyn Backend>, PathBuf) {
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let file = sub.join("uboot.env");
        let env = Env::from_pairs(pairs.iter().copied()).unwrap();
        let block = envblock::serialize(&env, 0x4000, Header::Single).unwrap();
        std::fs::write(&file, &block).unwrap();
        let text = format!(
            "[bootstate]\nbackend = \"uboot-env\"\n[bootstate.uboot-env]\nfw_env = [\"{} 0x0 0x4000\"]\n",
            file.display()
        );
        let config = Config::parse(&text, "t").unwrap();
        let store = state::open(&mut Real, &config, &Resolved::default(), dir)
            .unwrap()
            .unwrap();
        let kept = dir.join("kept");
        std::fs::rename(&sub, &kept).unwrap();
        std::fs::write(&sub, b"not a directory").unwrap();
        (config, store, kept.join("uboot.env"))
    }

    fn decide_on(
        config: &Config,
        store: &mut Box<dyn Backend>,
    ) -> (Result<Slot, String>, crate::handoff::Handoff) {
        let cmdline = Cmdline::parse(b"");
        let args = BootArgs::from_cmdline(&cmdline);
        let mut report = Report::new();
        let slot = decide(
            &mut Real,
            &Inputs {
                config,
                args: &args,
                cmdline: &cmdline,
                resolved: &Resolved::default(),
                failed: &[],
            },
            Some(store),
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
        let (slot, handoff) = decide_on(&config, &mut store);
        assert_eq!(slot, Ok(Slot::A), "{:?}", handoff.errors);
        assert_eq!(
            handoff.decision.as_ref().map(|d| d.source),
            Some(crate::state::decision::Source::Fallback)
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
        let (slot, handoff) = decide_on(&config, &mut store);
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

    /// A `[bootstate]` its backend refuses boots nothing, as any invalid
    /// config, and nothing is opened or written.
    #[test]
    fn invalid_bootstate_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uboot.env");
        for keys in ["size = 1", "countr = 1", "counter = \"uboot\""] {
            let text = format!(
                "[bootstate]\nbackend = \"uboot-env\"\n[bootstate.uboot-env]\nfw_env = [\"{} 0x0 0x4000\"]\n{keys}\n",
                file.display()
            );
            let config = Config::parse(&text, "t").unwrap();
            let mut report = Report::new();
            assert!(open_store(&mut Real, &config, &Resolved::default(), &mut report).is_none());
            let cmdline = Cmdline::parse(b"");
            let args = BootArgs::from_cmdline(&cmdline);
            let slot = decide(
                &mut Real,
                &Inputs {
                    config: &config,
                    args: &args,
                    cmdline: &cmdline,
                    resolved: &Resolved::default(),
                    failed: &[],
                },
                None,
                &mut report,
            );
            let err = slot.unwrap_err();
            assert!(
                err.starts_with("config: ") && err.contains("refusing to boot"),
                "{err}"
            );
            assert!(!file.exists(), "{keys}");
        }
    }

    #[test]
    fn deprecated_spelling_boots_with_a_warning_of_its_kind() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uboot.env");
        for (text, warned) in [
            (
                format!(
                    "[bootstate]\nbackend = \"uboot-env\"\nfw_env = [\"{} 0x0 0x4000\"]\n",
                    file.display()
                ),
                true,
            ),
            (
                format!(
                    "[bootstate]\nbackend = \"uboot-env\"\n[bootstate.uboot-env]\nfw_env = [\"{} 0x0 0x4000\"]\n",
                    file.display()
                ),
                false,
            ),
        ] {
            let config = Config::parse(&text, "t").unwrap();
            let mut report = Report::new();
            let store = open_store(&mut Real, &config, &Resolved::default(), &mut report);
            assert!(store.is_some());
            assert_eq!(
                report.kinds().contains(&kind::CONFIG_DEPRECATED),
                warned,
                "{text}"
            );
            close_store(&mut Real, store, &mut report);
        }
    }

    /// The store cannot be opened: an error of its kind, and counter = "init"
    /// boots the default slot, not the cmdline's word.
    #[test]
    fn unavailable_store_is_reported_and_the_default_boots() {
        let config = Config::parse("[bootstate]\nbackend = \"uboot-env\"\n", "t").unwrap();
        let mut report = Report::new();
        assert!(open_store(&mut Real, &config, &Resolved::default(), &mut report).is_none());
        assert_eq!(report.kinds(), ["bootstate-unavailable"]);
        let cmdline = Cmdline::parse(b"rauc.slot=B");
        let args = BootArgs::from_cmdline(&cmdline);
        let slot = decide(
            &mut Real,
            &Inputs {
                config: &config,
                args: &args,
                cmdline: &cmdline,
                resolved: &Resolved::default(),
                failed: &[],
            },
            None,
            &mut report,
        );
        assert_eq!(slot, Ok(Slot::A));
        assert_eq!(
            report.handoff.decision.map(|d| d.source),
            Some(crate::state::decision::Source::Default)
        );
    }

    fn partition(dev: &str, number: u32) -> crate::disk::devices::Partition {
        crate::disk::devices::Partition {
            dev: dev.into(),
            disk: "vda".into(),
            number,
            name: None,
            uuid: None,
        }
    }

    /// The whole stage on the recording fake: the bootconfig partition
    /// mounted read-only, read-write only while this boot's count and the
    /// commit on mount are written, unmounted at close.
    #[test]
    fn the_state_stage_on_the_fake_mounts_read_only_and_writes_between_remounts() {
        let mut sys = crate::kernel::fake::Fake::default();
        let config = Config::parse("[bootstate]\nbackend = \"uboot-env\"\n", "t").unwrap();
        let resolved = Resolved {
            bootconfig: Some(partition("vda3", 3)),
            ..Resolved::default()
        };
        let mut report = Report::new();
        let mut store = open_store(&mut sys, &config, &resolved, &mut report);
        assert!(store.is_some(), "{:?}", report.handoff.errors);
        let cmdline = Cmdline::parse(b"");
        let args = BootArgs::from_cmdline(&cmdline);
        let inputs = Inputs {
            config: &config,
            args: &args,
            cmdline: &cmdline,
            resolved: &resolved,
            failed: &[],
        };
        let slot = decide(&mut sys, &inputs, store.as_mut(), &mut report);
        assert_eq!(slot, Ok(Slot::A));
        commit_good(&mut sys, &config, store.as_mut(), Slot::A, &mut report);
        close_store(&mut sys, store, &mut report);
        assert!(
            report.handoff.errors.is_empty(),
            "{:?}",
            report.handoff.errors
        );
        let record = report.handoff.bootstate.unwrap();
        assert_eq!(record.left, [("A".into(), 3), ("B".into(), 3)]);
        let mounts: Vec<&str> = sys
            .calls
            .iter()
            .map(String::as_str)
            .filter(|c| c.contains("mount "))
            .collect();
        let (rw, ro) = (
            "remount /run/slotinit/bootstate rw,nosuid,nodev,noexec",
            "remount /run/slotinit/bootstate ro,nosuid,nodev,noexec",
        );
        assert_eq!(
            mounts,
            [
                "mount /dev/vda3 /run/slotinit/bootstate vfat ro,nosuid,nodev,noexec ",
                // This boot's count, then the commit on mount.
                rw,
                ro,
                rw,
                ro,
                "umount /run/slotinit/bootstate",
            ]
        );
    }

    /// The Raspberry Pi firmware's partition number is read through the
    /// boot's Sys (the device tree under /proc).
    #[test]
    fn the_device_tree_partition_is_read_through_sys() {
        let config = Config::parse(
            "[boot]\nsources = [\"devicetree\"]\n[bootstate]\nbackend = \"none\"\n",
            "t",
        )
        .unwrap();
        let resolved = Resolved {
            boot_a: Some(partition("vda2", 2)),
            boot_b: Some(partition("vda3", 3)),
            ..Resolved::default()
        };
        let cmdline = Cmdline::parse(b"");
        let args = BootArgs::from_cmdline(&cmdline);
        let inputs = Inputs {
            config: &config,
            args: &args,
            cmdline: &cmdline,
            resolved: &resolved,
            failed: &[],
        };
        let dt = crate::paths::DT_PARTITION;
        for (cell, slot) in [(Some(3u32), Slot::B), (Some(2), Slot::A), (None, Slot::A)] {
            let mut sys = crate::kernel::fake::Fake::default();
            if let Some(n) = cell {
                sys.files.insert(dt.into(), n.to_be_bytes().to_vec());
            }
            let mut report = Report::new();
            assert_eq!(decide(&mut sys, &inputs, None, &mut report), Ok(slot));
            assert_eq!(sys.calls, [format!("read-file {dt}")]);
            let hint = report.handoff.hint.map(|h| h.source);
            match cell {
                Some(n) => assert_eq!(hint, Some(format!("device-tree boot partition {n}"))),
                None => assert_eq!(hint, None),
            }
        }
    }

    /// The kinds the state module gives its errors are the report's kinds.
    #[test]
    fn state_kinds_are_the_report_kinds() {
        use crate::state::decision::{DecideError, Problem};
        let write = Problem::NotWritten("x".into());
        assert_eq!(write.kind(), kind::BOOTSTATE_WRITE);
        assert_eq!(
            Problem::RepairFailed("x".into()).kind(),
            kind::BOOTSTATE_REPAIR
        );
        assert_eq!(Problem::NoHint.kind(), kind::DECISION);
        assert_eq!(DecideError::BothFailed.kind(), kind::DECISION);
        let commit = crate::state::CommitError {
            slot: Slot::A,
            message: "x".into(),
        };
        assert_eq!(commit.kind(), kind::COMMIT);
        let unavailable = crate::state::OpenError::Backend("x".into());
        assert_eq!(unavailable.kind(), kind::BOOTSTATE_UNAVAILABLE);
        let config = crate::state::parse("[bootstate]\nbackend = \"uboot-env\"\nsize = 1\n", "t")
            .unwrap_err();
        assert_eq!(config.kind(), kind::CONFIG);
    }
}
