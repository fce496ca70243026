//! The modules and devices stages: load the listed modules, then wait for the
//! layout's partitions and resolve its members.

use super::context::Boot;
use super::setup::needs_uuids;
use crate::disk::devices;
use crate::disk::uevent;
use crate::kernel::modules;
use crate::kernel::sys::{Listener, Sys};
use crate::kind;
use std::path::Path;
use std::time::Duration;

/// Loads the modules of the initramfs's list, with their cmdline options; each
/// one that fails is an error in the report (kernel::modules logged its cause).
pub(super) fn load_modules<S: Sys + ?Sized>(boot: &mut Boot<S>) {
    let options = boot.cmdline.module_options();
    let loaded = modules::load_all_with(boot.sys, Path::new(crate::paths::LOAD_LIST), &options);
    log::info!(
        "modules: {} loaded, {} already present, {} failed",
        loaded.loaded,
        loaded.present,
        loaded.failed.len()
    );
    for failed in &loaded.failed {
        boot.report
            .record_error(kind::MODULE, format!("module {failed}"));
    }
}

/// Waits for the layout's partitions (woken by `listener`) and resolves the
/// members into `boot.resolved`; a timeout is an error, a member's problem a
/// warning.
pub(super) fn find_devices<S: Sys + ?Sized>(boot: &mut Boot<S>, listener: &Listener) {
    let config = &boot.config;
    // Bare partition numbers are on the disk the bootloader's word names.
    let boot_disk = devices::BootDiskHint::new(&boot.cmdline, crate::state::boot_devices(config));
    let waited = uevent::wait_for(
        boot.sys,
        listener,
        Path::new("/sys"),
        &uevent::Lookup {
            names: &config.partitions,
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
    let resolved = devices::resolve_with(&waited.partitions, &boot.config.partitions, &boot_disk);
    for problem in &resolved.problems {
        boot.report.warn(kind::DEVICES, problem.clone());
    }
    boot.report.handoff.devices = resolved.clone();
    boot.resolved = resolved;
}
