//! What PID 1 sets up around the stages: the API file systems, the console,
//! the cmdline and the config, the by-slot links, the handoff file.

use super::context::Boot;
use super::report::Report;
use crate::config::Config;
use crate::disk::devices;
use crate::handoff::Handoff;
use crate::kernel::cmdline::{BootArgs, Cmdline};
use crate::kernel::sys::Sys;
use crate::kind;
use crate::paths::{CONFIG_PATH, HANDOFF_PATH, RUN_CONFIG, RUN_DIR};
use crate::types::{error_chain, Slot};
use nix::mount::MsFlags;
use std::ffi::OsString;
use std::path::Path;

/// /proc, /sys, /dev and /run; each failure is logged and the boot goes on, as
/// the later stages report precisely what is missing.
pub(super) fn mount_api_filesystems<S: Sys + ?Sized>(sys: &mut S) {
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
        let _ = sys.create_dir_all(Path::new(target));
        let data = (!data.is_empty()).then_some(data);
        if let Err(e) = sys.mount_follow(fstype, Path::new(target), Some(fstype), flags, data) {
            // Logging is not up yet (it needs /dev); the console may be.
            eprintln!("slotinit: cannot mount {fstype} on {target}: {e}");
        }
    }
}

/// Without /dev/console in the initramfs the kernel starts PID 1 with no stdio;
/// the system's init inherits ours, so give it the console.
pub(super) fn ensure_console<S: Sys + ?Sized>(sys: &mut S) {
    if sys.exists(Path::new("/proc/self/fd/0")) {
        return;
    }
    // Lowest free descriptors: 0, 1, 2. They live as long as PID 1.
    for _ in 0..3 {
        if sys.open_console().is_err() {
            return;
        }
    }
}

/// Reads /proc/cmdline into the boot; `own_argv` is what the kernel handed
/// PID 1 (`single`, the words after `--`), for the system's init.
pub(super) fn read_cmdline<S: Sys + ?Sized>(
    boot: &mut Boot<S>,
    own_argv: impl IntoIterator<Item = OsString>,
) {
    let text = boot
        .sys
        .read_file(Path::new("/proc/cmdline"))
        .ok()
        .flatten()
        .unwrap_or_default();
    boot.cmdline = Cmdline::parse(&text);
    boot.args = BootArgs::from_cmdline(&boot.cmdline);
    // BootArgs' own list is the model of it.
    boot.args.init_argv = crate::kernel::cmdline::kernel_init_argv(own_argv);
}

/// Records the cmdline's warnings and loads the config, copying it to /run
/// for the subcommands in the booted system. An invalid config is the cause
/// of a fatal end (Err).
pub(super) fn load_config<S: Sys>(boot: &mut Boot<S>) -> Result<(), String> {
    for warning in boot.args.warnings.clone() {
        boot.report.warn(kind::CMDLINE, warning);
    }
    let path = Path::new(CONFIG_PATH);
    // Fail closed: the built-in defaults would unlock what a production
    // config locks (`allow_override`, who counts), so an invalid config
    // boots nothing. initramfs/build refuses such a config; only a damaged
    // or tampered initramfs gets here. The boot-state backend checks its
    // own table: fail closed on it too. No file is the defaults.
    boot.config = crate::state::load(boot.sys, path)
        .map(|(config, _)| config)
        .map_err(|e| format!("config: {}; refusing to boot with it", error_chain(&e)))?;
    // The subcommands in the booted system read the config the init used.
    let _ = boot.sys.create_dir_all(Path::new(RUN_DIR));
    if let Err(e) = boot.sys.copy_file(path, Path::new(RUN_CONFIG)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!("cannot copy {CONFIG_PATH} to {RUN_CONFIG}: {e}");
        }
    }
    Ok(())
}

/// The /dev/disk/by-slot links for a boot of `active`; one that cannot be made
/// is a warning.
pub(super) fn create_links<S: Sys + ?Sized>(boot: &mut Boot<S>, active: Slot) {
    let mut links = devices::by_slot_links(&boot.resolved, active);
    // rpi-image-gen's crypt rule: /dev/disk/by-slot/<container> names the
    // partition holding the LUKS2 container (by its label).
    for c in &boot.report.handoff.crypt {
        if c.error.is_none() && !c.device.is_empty() {
            links.push((
                Path::new("disk/by-slot").join(&c.name),
                std::path::PathBuf::from(&c.device),
            ));
        }
    }
    for (link, target) in links {
        let path = Path::new("/dev").join(&link);
        match replace_link(boot.sys, &path, &target) {
            Ok(()) => log::debug!("link {} -> {}", path.display(), target.display()),
            Err(e) => {
                let message = format!("cannot create {}: {e}", path.display());
                boot.report.warn(kind::LINK, message);
            }
        }
    }
}

/// Makes `path` a symlink to `target`, in place of what is there.
pub(super) fn replace_link<S: Sys + ?Sized>(
    sys: &mut S,
    path: &Path,
    target: &Path,
) -> std::io::Result<()> {
    path.parent()
        .map_or(Ok(()), |p| sys.create_dir_all(p))
        .and_then(|_| match sys.remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .and_then(|_| sys.symlink(target, path))
}

/// What the handoff says beyond the stages' own records: the init, the total
/// time, the memory and CPU PID 1 used.
pub(super) fn finish_handoff<S: Sys + ?Sized>(boot: &mut Boot<S>, init: &str) -> u64 {
    let report: &mut Report = &mut boot.report;
    report.handoff.init = Some(init.to_string());
    report.handoff.init_args = boot.args.init_argv.clone();
    let total = report.total_us();
    report.handoff.timings_us.push(("total".into(), total));
    report.handoff.vmhwm_kb = boot
        .sys
        .read_file(Path::new("/proc/self/status"))
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| crate::handoff::parse_vmhwm_kb(&s));
    if let Ok((user, system)) = boot.sys.cpu_times_us() {
        report.handoff.cpu_user_us = Some(user);
        report.handoff.cpu_sys_us = Some(system);
    }
    total
}

pub(super) fn write_handoff<S: Sys + ?Sized>(sys: &mut S, handoff: &Handoff) {
    let path = Path::new(HANDOFF_PATH);
    let result = path
        .parent()
        .map_or(Ok(()), |p| sys.create_dir_all(p))
        .and_then(|_| sys.write_file(path, handoff.to_json().as_bytes()));
    if let Err(e) = result {
        log::error!("cannot write {}: {e}", path.display());
    }
}

/// PARTUUIDs cost a read of each disk's GPT: only when a member or `root=` uses one.
pub(super) fn needs_uuids(config: &Config, cmdline: &Cmdline) -> bool {
    config
        .partitions
        .refs()
        .iter()
        .any(|(_, r)| matches!(r, crate::config::PartRef::Uuid(_)))
        || cmdline
            .get("root")
            .is_some_and(|r| r.starts_with("PARTUUID="))
}
