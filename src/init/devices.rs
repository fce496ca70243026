//! The modules and devices stages: load the listed modules, then wait for the
//! layout's partitions and resolve its members.

use super::context::Boot;
use super::crypt;
use super::setup::needs_uuids;
use crate::disk::devices::{self, Partition};
use crate::disk::slotmap;
use crate::disk::uevent;
use crate::kernel::cmdline::ModuleOption;
use crate::kernel::modules::{self, Job, LoadReport, Loading, Scope};
use crate::kernel::sys::{enoent, read_text, Listener, Sys};
use crate::kind;
use std::path::Path;
use std::time::Duration;

/// The initramfs's modules, loading since before the config was read.
pub(super) struct Modules {
    loading: Loading,
    report: LoadReport,
    /// How many of `report.errors` are in the boot's report already.
    reported: usize,
}

/// Starts loading the modules of the initramfs's list, with their cmdline
/// options: the disk's and watchdog's drivers first, the rest while the
/// config is read and the disk is waited for.
pub(super) fn start_modules<S: Sys + ?Sized>(boot: &mut Boot<S>) -> Modules {
    let options = boot.cmdline.module_options();
    let jobs = read_plan(boot.sys, Path::new(crate::paths::LOAD_LIST), &options);
    Modules {
        loading: boot.sys.load_modules(jobs, boot.args.module_threads),
        report: LoadReport::default(),
        reported: 0,
    }
}

/// Reads the list at `path` and plans its jobs; no list, no modules.
fn read_plan<S: Sys + ?Sized>(sys: &mut S, path: &Path, options: &[ModuleOption]) -> Vec<Job> {
    match read_text(sys, path).and_then(|text| text.ok_or_else(enoent)) {
        Ok(text) => modules::plan(&text, options),
        Err(e) => {
            log::warn!("no module list {}: {e}; loading no modules", path.display());
            Vec::new()
        }
    }
}

/// Waits for the modules of `scope` (at most the config's device timeout: a
/// driver whose init hangs must not hold the boot); each one that failed is an
/// error in the report (kernel::modules logged its cause).
pub(super) fn wait_modules<S: Sys + ?Sized>(
    boot: &mut Boot<S>,
    modules: &mut Modules,
    scope: Scope,
) {
    let timeout = Duration::from_millis(boot.config.boot.device_timeout_ms);
    let ended = boot.sys.wait_modules(&mut modules.loading, scope, timeout);
    let r = &mut modules.report;
    r.add(modules.loading.jobs(), &ended);
    for error in &r.errors[modules.reported..] {
        boot.report
            .record_error(kind::MODULE, format!("module {error}"));
    }
    modules.reported = r.errors.len();
    if scope == Scope::All {
        log::info!(
            "modules: {} loaded, {} already present, {} optional not loaded, {} failed",
            r.loaded,
            r.present,
            r.skipped,
            r.failed
        );
        let total = modules.loading.jobs().len();
        if r.ended() < total {
            let message = format!(
                "{} of {total} modules still loading after {} ms; going on without them",
                total - r.ended(),
                timeout.as_millis()
            );
            boot.report.record_error(kind::MODULE, message);
        }
    }
}

/// Waits for the layout's partitions (woken by `listener`); a timeout is an
/// error.
pub(super) fn wait_for_disk<S: Sys + ?Sized>(
    boot: &mut Boot<S>,
    listener: &Listener,
) -> Vec<Partition> {
    apply_slot_map(boot);
    // The members inside containers appear only once the containers are
    // open: the wait and the first resolution look for the others.
    let outer = crypt::outer_names(&boot.config);
    let config = &boot.config;
    // Bare partition numbers are on the disk the bootloader's word names.
    let boot_disk = devices::BootDiskHint::new(&boot.cmdline, crate::state::boot_devices(config));
    let waited = uevent::wait_for(
        boot.sys,
        listener,
        Path::new("/sys"),
        &uevent::Lookup {
            names: &outer,
            hint: &boot_disk,
            gpt_dev: needs_uuids(config, &boot.cmdline).then_some(Path::new("/dev")),
            force_gpt: boot.cmdline.force_gpt(),
        },
        Duration::from_millis(config.boot.device_timeout_ms),
        Duration::from_millis(config.boot.settle_ms),
        boot.watchdog.as_ref(),
    );
    if waited.end == uevent::WaitEnd::TimedOut {
        let message = format!(
            "timed out after {} ms waiting for the disk; {} partitions found",
            config.boot.device_timeout_ms,
            waited.partitions.len()
        );
        boot.report.error(kind::DEVICE_TIMEOUT, message);
    }
    waited.partitions
}

/// Resolves the layout's members among `partitions` (and inside the
/// containers it opens) into `boot.resolved`; a member's problem is a
/// warning.
pub(super) fn resolve<S: Sys + ?Sized>(boot: &mut Boot<S>, partitions: &[Partition]) {
    let outer = crypt::outer_names(&boot.config);
    let boot_disk =
        devices::BootDiskHint::new(&boot.cmdline, crate::state::boot_devices(&boot.config));
    let mut resolved = devices::resolve_with(partitions, &outer, &boot_disk);
    if !boot.config.crypt.is_empty() {
        crypt::open_containers(boot, partitions, &mut resolved);
    }
    for problem in &resolved.problems {
        boot.report.warn(kind::DEVICES, problem.clone());
    }
    boot.report.handoff.devices = resolved.clone();
    boot.resolved = resolved;
}

/// `partitions.slot_map`: rpi-image-gen's static map (its `rpi-slot-static`)
/// names the slots' boot and system partitions in place of the GPT names, on
/// the disk the firmware booted from (device tree `boot-mode`: 1 mmcblk0, 6
/// nvme0n1), as its `RPI_ONBOOTDEV` rule keeps to that disk. A map that is
/// missing or unreadable, or a boot-mode that names no disk, leaves the
/// configured members, with an error naming the file.
fn apply_slot_map<S: Sys + ?Sized>(boot: &mut Boot<S>) {
    let path = boot.config.partitions.slot_map.clone();
    if path.is_empty() {
        return;
    }
    let text = match boot.sys.read_file(Path::new(&path)) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(None) => {
            let message = format!("slot map {path} missing; the configured partition names stand");
            return boot.report.error(kind::DEVICES, message);
        }
        Err(e) => {
            let message = format!("slot map {path}: {e}; the configured partition names stand");
            return boot.report.error(kind::DEVICES, message);
        }
    };
    let map = match slotmap::parse(&text) {
        Ok(map) => map,
        Err(e) => {
            let message = format!("slot map {path}: {e}; the configured partition names stand");
            return boot.report.error(kind::DEVICES, message);
        }
    };
    let mode = boot
        .sys
        .read_file(Path::new(crate::paths::DT_BOOT_MODE))
        .ok()
        .flatten()
        .and_then(|b| crate::state::sources::parse_dt_u32(&b));
    let Some(disk) = mode.and_then(slotmap::boot_disk) else {
        let message = format!(
            "slot map {path}: the device tree's boot-mode ({}) names no boot disk \
             (1: SD/eMMC, 6: NVMe); the configured partition names stand",
            mode.map_or("absent".into(), |m| m.to_string())
        );
        return boot.report.error(kind::DEVICES, message);
    };
    let refs = slotmap::to_refs(&map, disk);
    log::info!("slot map {path}: {refs:?} on {disk}");
    boot.config.partitions = boot.config.partitions.with_refs(&refs);
}
