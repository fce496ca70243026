//! The modules and devices stages: load the listed modules, then wait for the
//! layout's partitions and resolve its members.

use super::context::Boot;
use super::crypt;
use super::setup::needs_uuids;
use crate::disk::devices;
use crate::disk::slotmap;
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
    let mut resolved = devices::resolve_with(&waited.partitions, &outer, &boot_disk);
    if !boot.config.crypt.is_empty() {
        crypt::open_containers(boot, &waited.partitions, &mut resolved);
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
