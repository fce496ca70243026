//! What PID 1 sets up around the stages: the API file systems, the console,
//! the by-slot links, the handoff file.

use super::report::{kind, Report};
use crate::config::Config;
use crate::disk::devices::{self, Resolved};
use crate::handoff::Handoff;
use crate::kernel::cmdline::Cmdline;
use crate::paths::HANDOFF_PATH;
use crate::types::Slot;
use nix::mount::MsFlags;
use std::path::Path;

/// /proc, /sys, /dev and /run; each failure is logged and the boot goes on, as
/// the later stages report precisely what is missing.
pub(super) fn mount_api_filesystems() {
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
pub(super) fn ensure_console() {
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

pub(super) fn create_links(resolved: &Resolved, active: Slot, report: &mut Report) {
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
                report.warn(kind::LINK, message);
            }
        }
    }
}

pub(super) fn write_handoff(handoff: &Handoff) {
    let path = Path::new(HANDOFF_PATH);
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(path, handoff.to_json()));
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
