//! The boot pipeline as PID 1 runs it: each stage is one call here, timed and
//! logged, and every failure ends in the configured fallback, never in a panic.
//! The stages take the boot context ([`context::Boot`]) and reach the kernel
//! only through its [`Sys`]: PID 1 runs them on [`Real`], the host tests on
//! the recording fake.

use crate::config::Commit;
use crate::kernel::modules::Scope;
use crate::kernel::sys::{Real, Sys};
use crate::kernel::{kmsg, switch_root};
use crate::kind;
use crate::state::Backend;
use crate::types::error_chain;
use crate::types::Slot;
use context::Boot;
use log::LevelFilter;
use mounts::{mount_persistent, mount_root, unmount_root};
use setup::{create_links, ensure_console, mount_api_filesystems, write_handoff};
use state::{close_store, commit_good, decide, open_store, Inputs};
use std::ffi::CString;
use std::io;
use std::path::Path;
use std::time::Duration;

mod context;
mod crypt;
mod devices;
mod mounts;
mod report;
mod setup;
mod state;
#[cfg(test)]
mod tests;
mod verity;
mod watchdog;

/// PID 1's whole life in the initramfs. Never returns.
pub fn run() -> ! {
    let mut sys = Real;
    let mut boot = Boot::new(&mut sys);
    let cause = boot_system(&mut boot, std::env::args_os(), |args| {
        kmsg::init_kmsg(if args.debug {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
        install_panic_fallback();
    });
    fatal(&mut boot, &cause)
}

/// The stages, in order, up to the exec of the system's init; returns only
/// when the boot cannot go on: the cause of the fatal end. `logging` starts
/// the log once the cmdline is read (PID 1: kmsg and the panic hook).
fn boot_system<S: Sys>(
    boot: &mut Boot<S>,
    own_argv: impl IntoIterator<Item = std::ffi::OsString>,
    logging: impl FnOnce(&crate::kernel::cmdline::BootArgs),
) -> String {
    mount_api_filesystems(boot.sys);
    ensure_console(boot.sys);
    setup::read_cmdline(boot, own_argv);
    logging(&boot.args);
    log::info!("starting (pid {})", std::process::id());
    // Listening before any driver loads: no uevent of the disk is missed.
    let listener = crate::disk::uevent::listen(boot.sys);
    // The modules load while the config is read and the disk is waited for.
    let mut modules = devices::start_modules(boot);
    if let Err(cause) = setup::load_config(boot) {
        return cause;
    }
    boot.stage("setup");

    devices::wait_modules(boot, &mut modules, Scope::Early);
    boot.stage("modules");
    if watchdog::arm(boot) {
        boot.stage("watchdog");
    }
    let partitions = devices::wait_for_disk(boot, &listener);
    drop(listener);
    boot.stage("devices");
    // Everything after needs them: the filesystems, device-mapper, the ciphers.
    devices::wait_modules(boot, &mut modules, Scope::All);
    boot.stage("modules-late");
    devices::resolve(boot, &partitions);
    if !boot.config.crypt.is_empty() {
        boot.stage("crypt");
    }
    if let Some(cause) = crypt::both_systems_lost(&boot.config, &boot.resolved) {
        return cause;
    }

    let mut store = open_store(boot.sys, &boot.config, &boot.resolved, &mut boot.report);
    boot.stage("state");

    let init = boot.init_path();
    let active = match mount_a_slot(boot, store.as_mut(), &init) {
        Ok(Next::Mount(slot)) => slot,
        Ok(Next::Restart(slot)) => return restart_into(boot, store, slot),
        Err(cause) => {
            close_store(boot.sys, store, &mut boot.report);
            return cause;
        }
    };
    if boot.config.bootstate.commit == Commit::OnMount {
        commit_good(
            boot.sys,
            &boot.config,
            store.as_mut(),
            active,
            &mut boot.report,
        );
    }
    close_store(boot.sys, store, &mut boot.report);
    mount_persistent(boot, active);
    boot.stage("mounts");

    let total = setup::finish_handoff(boot, &init);
    write_handoff(boot.sys, &boot.report.handoff);
    log::info!("switching to {init} after {total} us");
    watchdog::hand_over(boot);
    let sysroot = boot.roots.sysroot.clone();
    let Err(e) = switch_root::switch_root(boot.sys, &sysroot, &init, &boot.args.init_argv);
    // The initramfs may be gone now: no shell to fall back to, only a reboot.
    error_chain(&e)
}

/// What the boot does after the state stage.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The slot's system is mounted at the sysroot.
    Mount(Slot),
    /// The decided slot's kernel is not the one running: the firmware boots it.
    Restart(Slot),
}

/// Decides, commits the counters and mounts the slot's system; a slot that
/// cannot be used is marked bad and the other one is tried in this same boot
/// where both slots share the running kernel, else through the firmware
/// ([`Next::Restart`]). Err when no slot is left to decide on (the cause of a
/// fatal end).
fn mount_a_slot<S: Sys>(
    boot: &mut Boot<S>,
    mut store: Option<&mut Box<dyn Backend>>,
    init: &str,
) -> Result<Next, String> {
    let mut failed: Vec<(Slot, String)> = Vec::new();
    loop {
        let inputs = Inputs {
            config: &boot.config,
            args: &boot.args,
            cmdline: &boot.cmdline,
            resolved: &boot.resolved,
            failed: &failed,
        };
        let slot = decide(boot.sys, &inputs, store.as_deref_mut(), &mut boot.report)?;
        boot.stage("decision");
        if !state::coherent(&boot.config, slot, &mut boot.report) {
            return Ok(Next::Restart(slot));
        }
        create_links(boot, slot);
        boot.stage("links");
        match mount_root(boot, slot, init) {
            Ok(()) => return Ok(Next::Mount(slot)),
            Err(cause) => {
                boot.report
                    .error(kind::SLOT_UNUSABLE, format!("slot {slot}: {cause}"));
                unmount_root(boot);
                failed.push((slot, cause));
            }
        }
    }
}

/// Makes the firmware boot `slot` next (the backend writes what it reads)
/// and restarts with the backend's argument; returns why that failed (the
/// cause of a fatal end, whose plain reboot lets the firmware choose again).
fn restart_into<S: Sys>(
    boot: &mut Boot<S>,
    mut store: Option<Box<dyn Backend>>,
    slot: Slot,
) -> String {
    let arg = match store.as_mut() {
        Some(backend) => backend.boot_next(boot.sys, slot),
        None => Ok(None),
    };
    close_store(boot.sys, store, &mut boot.report);
    let arg = match arg {
        Ok(arg) => arg,
        Err(e) => return format!("cannot make the firmware boot slot {slot}: {e}"),
    };
    let how = arg
        .as_deref()
        .map_or("a plain restart".into(), |a| format!("restart {a:?}"));
    log::warn!("slot {slot} boots through the firmware: {how}");
    write_handoff(boot.sys, &boot.report.handoff);
    let e = match arg.map(CString::new) {
        Some(Ok(arg)) => boot.sys.restart(&arg),
        Some(Err(_)) => return format!("restart argument for slot {slot} holds a NUL byte"),
        None => boot.sys.reboot(),
    };
    boot.report.error(
        kind::SLOT_KERNEL,
        format!("restart into slot {slot} failed: {e}"),
    );
    format!("restart into slot {slot} failed: {e}")
}

/// The end of every boot that cannot continue: log the cause, then an emergency
/// shell if asked for and present, else a reboot after the configured delay.
fn fatal<S: Sys + ?Sized>(boot: &mut Boot<S>, cause: &str) -> ! {
    let e = fatal_until_reboot(boot, cause);
    let watchdog = watchdog::running_timeout(boot);
    halt(boot.sys, &e, watchdog)
}

/// [`fatal`] up to the reboot call: what it returns is why the reboot failed.
/// An armed watchdog is fed through the reboot delay, so the delay is the
/// configured one.
fn fatal_until_reboot<S: Sys + ?Sized>(boot: &mut Boot<S>, cause: &str) -> io::Error {
    boot.report.error(kind::FATAL, format!("fatal: {cause}"));
    write_handoff(boot.sys, &boot.report.handoff);
    if boot.args.emergency_shell {
        emergency_shell(boot);
        log::error!("slotinit.emergency=shell, but the initramfs has no shell");
    }
    reboot_after(
        boot.sys,
        boot.config.boot.reboot_delay_s,
        boot.watchdog.as_ref(),
    )
}

/// Execs the initramfs's shell (the watchdog stopped first); returns when
/// there is none or it cannot run.
fn emergency_shell<S: Sys + ?Sized>(boot: &mut Boot<S>) {
    for shell in ["/bin/sh", "/bin/busybox"] {
        if !boot.sys.exists(Path::new(shell)) {
            continue;
        }
        log::error!("starting emergency shell {shell}");
        watchdog::stop_for_shell(boot);
        let argv = [c"/bin/sh".to_owned(), c"-i".to_owned()];
        if let Ok(path) = CString::new(shell) {
            // The shell starts as the kernel would start it: no
            // signal ignored or blocked by the Rust runtime.
            if let Err(e) = boot.sys.reset_signals() {
                log::warn!("cannot reset signals: {e}");
            }
            let e = boot.sys.execv(&path, &argv);
            log::error!("cannot exec {shell}: {e}");
        }
    }
}

/// Waits `delay_s` (feeding `watchdog` meanwhile), syncs and reboots;
/// returns why the reboot failed.
fn reboot_after<S: Sys + ?Sized>(
    sys: &mut S,
    delay_s: u64,
    watchdog: Option<&crate::kernel::watchdog::Watchdog>,
) -> io::Error {
    log::error!("rebooting in {delay_s} s");
    let delay = Duration::from_secs(delay_s);
    match watchdog {
        None => sys.sleep(delay),
        Some(w) => {
            let mut left = delay;
            while !left.is_zero() {
                let slice = left.min(w.interval());
                sys.sleep(slice);
                w.feed(sys);
                left -= slice;
            }
        }
    }
    sys.reboot()
}

/// PID 1 must not exit (the kernel would panic): wait for a human. A
/// watchdog left running is no longer fed here: it resets the device.
fn halt<S: Sys + ?Sized>(sys: &mut S, e: &io::Error, watchdog_s: Option<u32>) -> ! {
    log::error!("reboot failed: {e}; halting here");
    if let Some(s) = watchdog_s {
        log::error!("the watchdog is no longer fed: it resets the device within {s} s");
    }
    loop {
        sys.sleep(Duration::from_secs(3600));
    }
}

/// A panic in PID 1 would become a kernel panic. With panic=abort the hook is the
/// last code that runs: log it and reboot instead.
fn install_panic_fallback() {
    std::panic::set_hook(Box::new(|info| {
        log::error!("internal error: {info}");
        let e = reboot_after(&mut Real, 10, None);
        halt(&mut Real, &e, None)
    }));
}
