//! The watchdog stage and its handover: armed once the modules are loaded
//! (its driver is one of them), fed at every stage's end and inside the wait
//! for the disk, and left running into the system, whose init takes it over
//! (systemd: `RuntimeWatchdogSec=`).

use super::context::Boot;
use crate::handoff::WatchdogRecord;
use crate::kernel::sys::Sys;
use crate::kernel::watchdog;
use crate::kind;
use crate::types::error_chain;
use std::path::PathBuf;

/// Arms the watchdog when `slotinit.watchdog=` or `boot.watchdog_s` asks
/// for it (the cmdline first; 0 is off). A device that cannot be opened is
/// a warning and the boot goes on without it. True when one was asked for.
pub(super) fn arm<S: Sys + ?Sized>(boot: &mut Boot<S>) -> bool {
    let configured = boot.config.boot.watchdog_s;
    let seconds = boot.args.watchdog_s.unwrap_or(configured);
    if seconds == 0 {
        if configured != 0 {
            log::warn!("watchdog off: slotinit.watchdog=0 on the cmdline");
        }
        return false;
    }
    let device = PathBuf::from(&boot.config.boot.watchdog_device);
    let mut record = WatchdogRecord {
        device: device.display().to_string(),
        requested_s: seconds,
        ..WatchdogRecord::default()
    };
    match watchdog::arm(boot.sys, &device, seconds) {
        Ok(armed) => {
            for warning in armed.warnings {
                boot.report.warn(kind::WATCHDOG, warning);
            }
            let w = armed.watchdog;
            let timeout = w
                .timeout_s
                .map_or("its own timeout".into(), |t| format!("{t} s"));
            log::info!(
                "watchdog {} ({}) armed: {timeout}; last reset: {}",
                device.display(),
                w.info.identity,
                w.last_reset
            );
            record.timeout_s = w.timeout_s;
            record.identity = Some(w.info.identity.clone()).filter(|i| !i.is_empty());
            record.last_reset = w.last_reset;
            record.running = true;
            boot.watchdog = Some(w);
        }
        Err(e) => {
            let message = error_chain(&e);
            boot.report.warn(kind::WATCHDOG, message.clone());
            record.error = Some(message);
        }
    }
    boot.report.handoff.watchdog = Some(record);
    true
}

/// Right before switch_root: the last keepalive, then the device is closed
/// without the magic `V`, so the watchdog keeps running through the exec
/// until the system's init opens it again.
pub(super) fn hand_over<S: Sys + ?Sized>(boot: &mut Boot<S>) {
    if let Some(w) = boot.watchdog.take() {
        log::info!(
            "leaving the watchdog {} running for the system",
            w.device.display()
        );
        w.leave_running(boot.sys);
    }
}

/// For the emergency shell a human asked for: stop the watchdog (the magic
/// `V`) so that it does not reset the device under them; a driver or kernel
/// with nowayout keeps it running regardless.
pub(super) fn stop_for_shell<S: Sys + ?Sized>(boot: &mut Boot<S>) {
    if let Some(w) = boot.watchdog.take() {
        log::warn!(
            "stopping the watchdog {} for the emergency shell (unless nowayout)",
            w.device.display()
        );
        w.stop(boot.sys);
        if let Some(r) = &mut boot.report.handoff.watchdog {
            r.running = false;
        }
    }
}

/// The timeout of a watchdog left running (held or handed over), for the
/// fatal path's last words.
pub(super) fn running_timeout<S: Sys + ?Sized>(boot: &Boot<S>) -> Option<u32> {
    let r = boot
        .report
        .handoff
        .watchdog
        .as_ref()
        .filter(|r| r.running)?;
    Some(r.timeout_s.unwrap_or(r.requested_s))
}
