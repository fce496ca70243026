//! The boot pipeline as PID 1 runs it: each stage is one call here, timed and
//! logged, and every failure ends in the configured fallback, never in a panic.

use crate::config::Commit;
use crate::config::Config;
use crate::disk::devices::{self};
use crate::disk::uevent;
use mounts::{mount_persistent, mount_root, unmount_beneath};
use report::{kind, Report};
use setup::{create_links, ensure_console, mount_api_filesystems, needs_uuids, write_handoff};
use state::{close_store, commit_good, decide, open_store};

mod mounts;
pub mod report;
mod setup;
mod state;
use crate::kernel::cmdline::{BootArgs, Cmdline};
use crate::kernel::{kmsg, modules, switch_root};
use crate::mount::plan::Roots;
use crate::paths::{CONFIG_PATH, RUN_CONFIG, RUN_DIR};
use crate::types::error_chain;
use crate::types::Slot;
use log::LevelFilter;
use std::path::Path;
use std::time::Duration;

/// PID 1's whole life in the initramfs. Never returns.
pub fn run() -> ! {
    let mut report = Report::new();
    mount_api_filesystems();
    ensure_console();
    let cmdline_text = std::fs::read("/proc/cmdline").unwrap_or_default();
    let cmdline = Cmdline::parse(&cmdline_text);
    let mut args = BootArgs::from_cmdline(&cmdline);
    // What the kernel really handed PID 1 (`single`, the words after `--`),
    // for the system's init; BootArgs' own list is the model of it.
    args.init_argv = crate::kernel::cmdline::kernel_init_argv(std::env::args_os());
    kmsg::init_kmsg(if args.debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    });
    install_panic_fallback();
    log::info!("starting (pid {})", std::process::id());
    for warning in &args.warnings {
        report.warn(kind::CMDLINE, warning.clone());
    }
    let config = match Config::load(Path::new(CONFIG_PATH)) {
        Ok(config) => {
            // The subcommands in the booted system read the config the init used.
            let _ = std::fs::create_dir_all(RUN_DIR);
            if let Err(e) = std::fs::copy(CONFIG_PATH, RUN_CONFIG) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("cannot copy {CONFIG_PATH} to {RUN_CONFIG}: {e}");
                }
            }
            config
        }
        // Fail closed: the built-in defaults would unlock what a production
        // config locks (`allow_override`, who counts), so an invalid config
        // boots nothing. initramfs/build refuses such a config; only a damaged
        // or tampered initramfs gets here. The reboot delay is the default's.
        Err(e) => fatal(
            &format!("config: {}; refusing to boot with it", error_chain(&e)),
            &args,
            &Config::default(),
            &mut report,
        ),
    };
    report.stage("setup");

    let listener = uevent::Listener::open();
    let loaded = modules::load_all_with(
        Path::new(crate::paths::LOAD_LIST),
        &cmdline.module_options(),
    );
    log::info!(
        "modules: {} loaded, {} already present, {} failed",
        loaded.loaded,
        loaded.present,
        loaded.failed.len()
    );
    for failed in &loaded.failed {
        // kernel::modules logged each failure with its cause.
        report.record_error(kind::MODULE, format!("module {failed}"));
    }
    report.stage("modules");

    // Bare partition numbers are on the disk the bootloader's word names.
    let boot_disk = devices::BootDiskHint::new(&cmdline, &config);
    let waited = uevent::wait_for(
        &listener,
        Path::new("/sys"),
        &uevent::Lookup {
            names: &config.partitions,
            hint: &boot_disk,
            gpt_dev: needs_uuids(&config, &cmdline).then_some(Path::new("/dev")),
            force_gpt: cmdline.force_gpt(),
        },
        Duration::from_millis(config.boot.device_timeout_ms),
        Duration::from_millis(config.boot.settle_ms),
    );
    drop(listener);
    if waited.timed_out {
        let message = format!(
            "timed out after {} ms waiting for the disk; {} partitions found",
            config.boot.device_timeout_ms,
            waited.partitions.len()
        );
        report.error(kind::DEVICE_TIMEOUT, message);
    }
    let resolved = devices::resolve_with(&waited.partitions, &config.partitions, &boot_disk);
    for problem in &resolved.problems {
        report.warn(kind::DEVICES, problem.clone());
    }
    report.handoff.devices = resolved.clone();
    report.stage("devices");

    let mut store = open_store(&config, &resolved, &mut report);
    report.stage("state");

    let roots = Roots::default();
    let init = args
        .init
        .clone()
        .unwrap_or_else(|| config.boot.init.clone());
    // Decide, commit the counters, mount; a slot that cannot be used is marked
    // bad and the other one is tried in this same boot.
    let mut failed: Vec<(Slot, String)> = Vec::new();
    let active = loop {
        let slot = match decide(
            &config,
            &args,
            &cmdline,
            &resolved,
            store.as_mut(),
            &failed,
            &mut report,
        ) {
            Ok(slot) => slot,
            Err(cause) => {
                close_store(store, &mut report);
                fatal(&cause, &args, &config, &mut report)
            }
        };
        report.stage("decision");
        create_links(&resolved, slot, &mut report);
        report.stage("links");
        match mount_root(&config, &roots, &resolved, slot, &init, &mut report) {
            Ok(()) => break slot,
            Err(cause) => {
                report.error(kind::SLOT_UNUSABLE, format!("slot {slot}: {cause}"));
                // What the root plan mounted: the sysroot and, for overlays,
                // the lower system and the tmpfs uppers under /run.
                unmount_beneath(&[
                    &roots.sysroot,
                    &roots.run_dir.join("lower"),
                    &roots.run_dir.join("overlay"),
                ]);
                failed.push((slot, cause));
            }
        }
    };
    if config.bootstate.commit == Commit::OnMount {
        commit_good(&config, store.as_mut(), active, &mut report);
    }
    close_store(store, &mut report);
    mount_persistent(&config, &roots, &resolved, active, &mut report);
    report.stage("mounts");

    report.handoff.init = Some(init.clone());
    report.handoff.init_args = args.init_argv.clone();
    let total = report.total_us();
    report.handoff.timings_us.push(("total".into(), total));
    report.handoff.vmhwm_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| crate::handoff::parse_vmhwm_kb(&s));
    if let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        let us = |t: nix::sys::time::TimeVal| (t.tv_sec() as u64) * 1_000_000 + t.tv_usec() as u64;
        report.handoff.cpu_user_us = Some(us(usage.user_time()));
        report.handoff.cpu_sys_us = Some(us(usage.system_time()));
    }
    write_handoff(&report.handoff);
    log::info!("switching to {init} after {total} us");
    let Err(e) = switch_root::switch_root(&roots.sysroot, &init, &args.init_argv);
    // The initramfs may be gone now: no shell to fall back to, only a reboot.
    fatal(&error_chain(&e), &args, &config, &mut report)
}

/// The end of every boot that cannot continue: log the cause, then an emergency
/// shell if asked for and present, else a reboot after the configured delay.
fn fatal(cause: &str, args: &BootArgs, config: &Config, report: &mut Report) -> ! {
    report.error(kind::FATAL, format!("fatal: {cause}"));
    write_handoff(&report.handoff);
    if args.emergency_shell {
        for shell in ["/bin/sh", "/bin/busybox"] {
            if Path::new(shell).exists() {
                log::error!("starting emergency shell {shell}");
                let argv: [&std::ffi::CStr; 2] = [c"/bin/sh", c"-i"];
                if let Ok(path) = std::ffi::CString::new(shell) {
                    // The shell starts as the kernel would start it: no
                    // signal ignored or blocked by the Rust runtime.
                    if let Err(e) = crate::kernel::sys::reset_signals() {
                        log::warn!("cannot reset signals: {e}");
                    }
                    let e = nix::unistd::execv(&path, &argv);
                    log::error!("cannot exec {shell}: {e:?}");
                }
            }
        }
        log::error!("slotinit.emergency=shell, but the initramfs has no shell");
    }
    reboot_after(config.boot.reboot_delay_s)
}

fn reboot_after(delay_s: u64) -> ! {
    log::error!("rebooting in {delay_s} s");
    std::thread::sleep(Duration::from_secs(delay_s));
    nix::unistd::sync();
    let e = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    // PID 1 must not exit (the kernel would panic): wait for a human.
    log::error!("reboot failed: {e:?}; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A panic in PID 1 would become a kernel panic. With panic=abort the hook is the
/// last code that runs: log it and reboot instead.
fn install_panic_fallback() {
    std::panic::set_hook(Box::new(|info| {
        log::error!("internal error: {info}");
        reboot_after(10)
    }));
}
