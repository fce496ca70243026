//! The boot pipeline as PID 1 runs it: each stage is one call here, timed and
//! logged, and every failure ends in the configured fallback, never in a panic.
//! The stages take the boot context ([`context::Boot`]) and reach the kernel
//! only through its [`Sys`]: PID 1 runs them on [`Real`], the host tests on
//! the recording fake.

use crate::config::Commit;
use crate::kernel::sys::{Real, Sys};
use crate::kernel::{kmsg, switch_root};
use crate::kind;
use crate::state::Backend;
use crate::types::error_chain;
use crate::types::Slot;
use context::Boot;
use log::LevelFilter;
use mounts::{mount_persistent, mount_root, unmount_beneath};
use setup::{create_links, ensure_console, mount_api_filesystems, write_handoff};
use state::{close_store, commit_good, decide, open_store, Inputs};
use std::ffi::CString;
use std::io;
use std::path::Path;
use std::time::Duration;

mod context;
mod devices;
mod mounts;
mod report;
mod setup;
mod state;
#[cfg(test)]
mod tests;

/// PID 1's whole life in the initramfs. Never returns.
pub fn run() -> ! {
    let mut sys = Real;
    let mut boot = Boot::new(&mut sys);
    mount_api_filesystems(boot.sys);
    ensure_console(boot.sys);
    setup::read_cmdline(&mut boot, std::env::args_os());
    kmsg::init_kmsg(if boot.args.debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    });
    install_panic_fallback();
    log::info!("starting (pid {})", std::process::id());
    if let Err(cause) = setup::load_config(&mut boot) {
        fatal(&mut boot, &cause)
    }
    boot.report.stage("setup");

    let listener = crate::disk::uevent::listen(boot.sys);
    devices::load_modules(&mut boot);
    boot.report.stage("modules");
    devices::find_devices(&mut boot, &listener);
    drop(listener);
    boot.report.stage("devices");

    let mut store = open_store(boot.sys, &boot.config, &boot.resolved, &mut boot.report);
    boot.report.stage("state");

    let init = boot.init_path();
    let active = match mount_a_slot(&mut boot, store.as_mut(), &init) {
        Ok(Next::Mount(slot)) => slot,
        Ok(Next::Restart(slot)) => {
            let cause = restart_into(&mut boot, store, slot);
            fatal(&mut boot, &cause)
        }
        Err(cause) => {
            close_store(boot.sys, store, &mut boot.report);
            fatal(&mut boot, &cause)
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
    mount_persistent(&mut boot, active);
    boot.report.stage("mounts");

    let total = setup::finish_handoff(&mut boot, &init);
    write_handoff(boot.sys, &boot.report.handoff);
    log::info!("switching to {init} after {total} us");
    let sysroot = boot.roots.sysroot.clone();
    let Err(e) = switch_root::switch_root(boot.sys, &sysroot, &init, &boot.args.init_argv);
    // The initramfs may be gone now: no shell to fall back to, only a reboot.
    fatal(&mut boot, &error_chain(&e))
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
        boot.report.stage("decision");
        if !state::coherent(&boot.config, slot, &mut boot.report) {
            return Ok(Next::Restart(slot));
        }
        create_links(boot, slot);
        boot.report.stage("links");
        match mount_root(boot, slot, init) {
            Ok(()) => return Ok(Next::Mount(slot)),
            Err(cause) => {
                boot.report
                    .error(kind::SLOT_UNUSABLE, format!("slot {slot}: {cause}"));
                // What the root plan mounted: the sysroot and, for overlays,
                // the lower system and the tmpfs uppers under /run.
                let roots = &boot.roots;
                unmount_beneath(
                    boot.sys,
                    &[
                        &roots.sysroot,
                        &roots.run_dir.join("lower"),
                        &roots.run_dir.join("overlay"),
                    ],
                );
                failed.push((slot, cause));
            }
        }
    }
}

/// Makes the firmware boot `slot` next (the backend writes what it reads)
/// and restarts with the backend's argument; returns why that failed (the
/// cause of a fatal end, whose plain reboot lets the firmware choose again).
fn restart_into<S: Sys>(boot: &mut Boot<S>, store: Option<Box<dyn Backend>>, slot: Slot) -> String {
    let mut store = store;
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
    halt(boot.sys, &e)
}

/// [`fatal`] up to the reboot call: what it returns is why the reboot failed.
fn fatal_until_reboot<S: Sys + ?Sized>(boot: &mut Boot<S>, cause: &str) -> io::Error {
    boot.report.error(kind::FATAL, format!("fatal: {cause}"));
    write_handoff(boot.sys, &boot.report.handoff);
    if boot.args.emergency_shell {
        emergency_shell(boot.sys);
        log::error!("slotinit.emergency=shell, but the initramfs has no shell");
    }
    reboot_after(boot.sys, boot.config.boot.reboot_delay_s)
}

/// Execs the initramfs's shell; returns when there is none or it cannot run.
fn emergency_shell<S: Sys + ?Sized>(sys: &mut S) {
    for shell in ["/bin/sh", "/bin/busybox"] {
        if !sys.exists(Path::new(shell)) {
            continue;
        }
        log::error!("starting emergency shell {shell}");
        let argv = [c"/bin/sh".to_owned(), c"-i".to_owned()];
        if let Ok(path) = CString::new(shell) {
            // The shell starts as the kernel would start it: no
            // signal ignored or blocked by the Rust runtime.
            if let Err(e) = sys.reset_signals() {
                log::warn!("cannot reset signals: {e}");
            }
            let e = sys.execv(&path, &argv);
            log::error!("cannot exec {shell}: {e}");
        }
    }
}

/// Waits `delay_s`, syncs and reboots; returns why the reboot failed.
fn reboot_after<S: Sys + ?Sized>(sys: &mut S, delay_s: u64) -> io::Error {
    log::error!("rebooting in {delay_s} s");
    sys.sleep(Duration::from_secs(delay_s));
    sys.reboot()
}

/// PID 1 must not exit (the kernel would panic): wait for a human.
fn halt<S: Sys + ?Sized>(sys: &mut S, e: &io::Error) -> ! {
    log::error!("reboot failed: {e}; halting here");
    loop {
        sys.sleep(Duration::from_secs(3600));
    }
}

/// A panic in PID 1 would become a kernel panic. With panic=abort the hook is the
/// last code that runs: log it and reboot instead.
fn install_panic_fallback() {
    std::panic::set_hook(Box::new(|info| {
        log::error!("internal error: {info}");
        let e = reboot_after(&mut Real, 10);
        halt(&mut Real, &e)
    }));
}
