//! The boot pipeline as PID 1 runs it: each stage is one call here, timed and
//! logged, and every failure ends in the configured fallback, never in a panic.

use crate::cmdline::{BootArgs, Cmdline};
use crate::config::{Config, CONFIG_PATH};
use crate::devices::{self, Resolved};
use crate::executor::{self, MachineIdOutcome};
use crate::handoff::{Handoff, HANDOFF_PATH};
use crate::plan::{self, Roots, Step};
use crate::slot::{self, Slot};
use crate::sys::Real;
use crate::{kmsg, modules, switch_root, uevent};
use log::LevelFilter;
use nix::mount::MsFlags;
use std::path::Path;
use std::time::{Duration, Instant};

/// Times stages and records them for the log and the handoff.
struct Timer {
    start: Instant,
    last: Instant,
}

impl Timer {
    fn new() -> Self {
        let now = Instant::now();
        Timer {
            start: now,
            last: now,
        }
    }

    fn stage(&mut self, handoff: &mut Handoff, name: &str) {
        let now = Instant::now();
        let us = now.duration_since(self.last).as_micros() as u64;
        self.last = now;
        log::info!("{name}: {us} us");
        handoff.timings_us.push((name.to_string(), us));
    }

    fn total_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// PID 1's whole life in the initramfs. Never returns.
pub fn run() -> ! {
    let mut timer = Timer::new();
    let mut handoff = Handoff::new();
    mount_api_filesystems();
    ensure_console();
    let cmdline_text = std::fs::read("/proc/cmdline").unwrap_or_default();
    let cmdline = Cmdline::parse(&cmdline_text);
    let args = BootArgs::from_cmdline(&cmdline);
    kmsg::init_kmsg(if args.debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    });
    install_panic_fallback();
    log::info!("starting (pid {})", std::process::id());
    for warning in &args.warnings {
        log::warn!("{warning}");
        handoff.warnings.push(warning.clone());
    }
    let config = match Config::load(Path::new(CONFIG_PATH)) {
        Ok(config) => config,
        Err(e) => {
            let message = format!("config: {}; using the built-in defaults", error_chain(&e));
            log::error!("{message}");
            handoff.errors.push(message);
            Config::default()
        }
    };
    timer.stage(&mut handoff, "setup");

    let listener = uevent::Listener::open();
    let report = modules::load_all(Path::new(modules::LOAD_LIST));
    log::info!(
        "modules: {} loaded, {} already present, {} failed",
        report.loaded,
        report.present,
        report.failed.len()
    );
    handoff
        .errors
        .extend(report.failed.iter().map(|f| format!("module {f}")));
    timer.stage(&mut handoff, "modules");

    let waited = uevent::wait_for_partitions(
        &listener,
        Path::new("/sys"),
        &config.partitions,
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
        log::error!("{message}");
        handoff.errors.push(message);
    }
    let resolved = devices::resolve(&waited.partitions, &config.partitions);
    for problem in &resolved.problems {
        log::warn!("{problem}");
        handoff.warnings.push(problem.clone());
    }
    handoff.devices = resolved.clone();
    timer.stage(&mut handoff, "devices");

    let decision = slot::decide(args.slot_override, config.boot.default_slot);
    let active = decision.slot;
    log::info!("slot {active} ({:?})", decision.source);
    handoff.slot = Some(active);
    handoff.decision = Some(decision);
    timer.stage(&mut handoff, "decision");

    create_links(&resolved, active, &mut handoff);
    timer.stage(&mut handoff, "links");

    let roots = Roots::default();
    let init = args
        .init
        .clone()
        .unwrap_or_else(|| config.boot.init.clone());
    if let Err(cause) = mount_system(&config, &roots, &resolved, active, &init, &mut handoff) {
        fatal(&cause, &args, &config, &mut handoff);
    }
    timer.stage(&mut handoff, "mounts");

    handoff.init = Some(init.clone());
    let total = timer.total_us();
    handoff.timings_us.push(("total".into(), total));
    write_handoff(&handoff);
    log::info!("switching to {init} after {total} us");
    let Err(e) = switch_root::switch_root(&roots.sysroot, &init);
    // The initramfs may be gone now: no shell to fall back to, only a reboot.
    fatal(&error_chain(&e), &args, &config, &mut handoff)
}

/// Mounts the active system, then the persistent partition with its binds and
/// machine-id; a persistent partition that cannot be used degrades to tmpfs.
fn mount_system(
    config: &Config,
    roots: &Roots,
    resolved: &Resolved,
    active: Slot,
    init: &str,
    handoff: &mut Handoff,
) -> Result<(), String> {
    let system = resolved.system(active).ok_or_else(|| {
        format!(
            "the system partition {:?} of slot {active} was not found",
            config.partitions.system(active)
        )
    })?;
    let mut sys = Real;
    if let Err(e) = std::fs::create_dir_all(&roots.sysroot) {
        log::warn!("cannot create {}: {e}", roots.sysroot.display());
    }
    let root_steps = plan::root_plan(config, roots, system);
    executor::run(&mut sys, &roots.sysroot, &root_steps).map_err(|e| error_chain(&e))?;
    record_mounts(handoff, &root_steps);
    if !switch_root::is_executable_in(&roots.sysroot, init) {
        return Err(format!(
            "no executable {init} in the system of slot {active} ({})",
            system.node().display()
        ));
    }
    let slot_dir = config.partitions.system(active).to_lowercase();
    handoff.slot_dir = Some(slot_dir.clone());
    let persistent = match &resolved.persistent {
        Some(part) => {
            let steps = plan::persistent_plan(config, roots, part, &slot_dir);
            match executor::run(&mut sys, &roots.sysroot, &steps) {
                Ok(outcome) => {
                    record_mounts(handoff, &steps);
                    Ok(outcome)
                }
                Err(e) => {
                    // Undo what the failed plan mounted (binds, then the partition)
                    // so the fallback starts from a clean tree.
                    unmount_beneath(&roots.sysroot);
                    Err(format!(
                        "persistent partition {}: {}",
                        part.node().display(),
                        error_chain(&e)
                    ))
                }
            }
        }
        None => Err(format!(
            "no persistent partition {:?}",
            config.partitions.persistent
        )),
    };
    let outcome = match persistent {
        Ok(outcome) => outcome,
        Err(cause) => {
            let message = format!("{cause}; booting with /var on tmpfs and a transient machine-id");
            log::error!("{message}");
            handoff.errors.push(message);
            handoff.persistent_degraded = true;
            let steps = plan::fallback_plan(config, roots, &slot_dir);
            match executor::run(&mut sys, &roots.sysroot, &steps) {
                Ok(outcome) => {
                    record_mounts(handoff, &steps);
                    outcome
                }
                Err(e) => {
                    // Even this failing leaves a bootable, read-only system.
                    let message = format!("fallback mounts: {}", error_chain(&e));
                    log::error!("{message}");
                    handoff.errors.push(message);
                    Default::default()
                }
            }
        }
    };
    match outcome.machine_id {
        Some(MachineIdOutcome::Kept(id)) => {
            log::info!("machine-id {id} (kept)");
            handoff.machine_id = Some(id);
            handoff.machine_id_source = Some("persistent".into());
        }
        Some(MachineIdOutcome::Generated { id, replaced }) => {
            let source = if handoff.persistent_degraded {
                "transient"
            } else {
                "persistent"
            };
            log::info!("machine-id {id} (generated, {source}; was {replaced})");
            handoff.machine_id = Some(id);
            handoff.machine_id_source = Some(format!("generated-{source}"));
        }
        None => {}
    }
    Ok(())
}

/// Unmounts everything below `root` (deepest first), keeping `root` itself.
fn unmount_beneath(root: &Path) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(root) && Path::new(p) != root)
        .collect();
    points.reverse();
    for p in points {
        log::debug!("umount {p}");
        if let Err(e) = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH) {
            log::warn!("cannot unmount {p}: {e}");
        }
    }
}

fn record_mounts(handoff: &mut Handoff, steps: &[Step]) {
    for step in steps {
        match step {
            Step::Mount {
                source,
                target,
                fstype,
                readonly,
                options,
            } => handoff.mounts.push(format!(
                "{source} {} {fstype} {}{}{options}",
                target.display(),
                if *readonly { "ro" } else { "rw" },
                if options.is_empty() { "" } else { "," }
            )),
            Step::BindBeneath { root, path, target } => handoff.mounts.push(format!(
                "{} {} bind",
                root.join(path).display(),
                target.display()
            )),
            _ => {}
        }
    }
}

/// /proc, /sys, /dev and /run; each failure is logged and the boot goes on, as
/// the later stages report precisely what is missing.
fn mount_api_filesystems() {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mounts: [(&str, &str, MsFlags, &str); 4] = [
        ("proc", "/proc", nosuid_nodev_noexec, ""),
        ("sysfs", "/sys", nosuid_nodev_noexec, ""),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, "mode=0755"),
        (
            "tmpfs",
            "/run",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=0755",
        ),
    ];
    for (fstype, target, flags, data) in mounts {
        let _ = std::fs::create_dir_all(target);
        let data = (!data.is_empty()).then_some(data);
        if let Err(e) = nix::mount::mount(Some(fstype), target, Some(fstype), flags, data) {
            // Logging is not up yet (it needs /dev); the console may be.
            eprintln!("slotinit: cannot mount {fstype} on {target}: {e}");
        }
    }
}

/// Without /dev/console in the initramfs the kernel starts PID 1 with no stdio;
/// the system's init inherits ours, so give it the console.
fn ensure_console() {
    if Path::new("/proc/self/fd/0").exists() {
        return;
    }
    for _ in 0..3 {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
        {
            // Lowest free descriptors: 0, 1, 2. They live as long as PID 1.
            Ok(f) => std::mem::forget(f),
            Err(_) => return,
        }
    }
}

fn create_links(resolved: &Resolved, active: Slot, handoff: &mut Handoff) {
    for (link, target) in devices::by_slot_links(resolved, active) {
        let path = Path::new("/dev").join(&link);
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .and_then(|_| std::os::unix::fs::symlink(&target, &path));
        match result {
            Ok(()) => log::debug!("link {} -> {}", path.display(), target.display()),
            Err(e) => {
                let message = format!("cannot create {}: {e}", path.display());
                log::warn!("{message}");
                handoff.warnings.push(message);
            }
        }
    }
}

fn write_handoff(handoff: &Handoff) {
    let path = Path::new(HANDOFF_PATH);
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(path, handoff.to_json()));
    if let Err(e) = result {
        log::error!("cannot write {}: {e}", path.display());
    }
}

/// The end of every boot that cannot continue: log the cause, then an emergency
/// shell if asked for and present, else a reboot after the configured delay.
fn fatal(cause: &str, args: &BootArgs, config: &Config, handoff: &mut Handoff) -> ! {
    log::error!("fatal: {cause}");
    handoff.errors.push(format!("fatal: {cause}"));
    write_handoff(handoff);
    if args.emergency_shell {
        for shell in ["/bin/sh", "/bin/busybox"] {
            if Path::new(shell).exists() {
                log::error!("starting emergency shell {shell}");
                let argv: [&std::ffi::CStr; 2] = [c"/bin/sh", c"-i"];
                if let Ok(path) = std::ffi::CString::new(shell) {
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

/// `error: cause: cause` in one line, for kmsg and the handoff.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
