//! Waiting for the disk, woken by kernel uevents (netlink), never by a sleep loop:
//! every event triggers a fresh read of sysfs, which is the authority on what exists.

use crate::config::Partitions;
use crate::disk::devices::{self, BootDiskHint, Partition};
use crate::kernel::sys::{Listener, Sys};
use crate::kernel::watchdog::Watchdog;
use std::path::Path;
use std::time::{Duration, Instant};

/// Subscribes to the kernel's uevents. Open it before loading the disk driver
/// so no announcement is missed; without it only rescans see new devices.
pub(crate) fn listen<S: Sys + ?Sized>(sys: &mut S) -> Listener {
    sys.uevent_listen().unwrap_or_else(|e| {
        log::error!("cannot listen to uevents: {e}; only the first sysfs scan counts");
        Listener::none()
    })
}

/// What the wait found, and how it ended.
pub(crate) struct WaitResult {
    pub(crate) partitions: Vec<Partition>,
    pub(crate) end: WaitEnd,
}

/// Why the wait for the disk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitEnd {
    /// Every member of the layout is present.
    Complete,
    /// A system partition is present and the block layer stayed quiet for
    /// `settle`: what is missing is absent.
    Settled,
    /// The timeout passed first.
    TimedOut,
}

/// What the wait looks for.
pub(crate) struct Lookup<'a> {
    pub(crate) names: &'a Partitions,
    /// Which disk bare partition numbers are on ([`devices::boot_disk`]).
    pub(crate) hint: &'a BootDiskHint,
    /// Where the disks' nodes are, when PARTUUIDs must be read from their GPTs.
    pub(crate) gpt_dev: Option<&'a Path>,
    /// `gpt` on the kernel cmdline ([`crate::kernel::cmdline::Cmdline::force_gpt`]): the
    /// kernel then uses the alternate GPT when the primary is invalid.
    pub(crate) force_gpt: bool,
}

/// Waits until every member of the layout is present (bare numbers on the boot
/// disk), or until a system partition is present and the block layer stayed
/// quiet for `settle` (what is missing then is absent), or until `timeout`.
/// An armed `watchdog` is fed at least every [`Watchdog::interval`] while it
/// waits: the timeout may be longer than the watchdog's.
pub(crate) fn wait_for<S: Sys + ?Sized>(
    sys: &mut S,
    listener: &Listener,
    sysfs: &Path,
    lookup: &Lookup,
    timeout: Duration,
    settle: Duration,
    watchdog: Option<&Watchdog>,
) -> WaitResult {
    let names = lookup.names;
    let deadline = Instant::now() + timeout;
    // The block layer has been quiet since: the last uevent, or the start.
    let mut quiet_since = Instant::now();
    let mut gpt_cache = std::collections::HashMap::new();
    loop {
        let mut partitions = devices::list_partitions(sys, sysfs).unwrap_or_else(|e| {
            log::warn!("cannot list {}/class/block: {e}", sysfs.display());
            Vec::new()
        });
        // PARTUUIDs are not in uevents: read them from the GPTs when needed.
        if let Some(dev) = lookup.gpt_dev {
            devices::read_uuids(sys, &mut partitions, dev, lookup.force_gpt, &mut gpt_cache);
        }
        if devices::all_present_with(&partitions, names, lookup.hint) {
            return WaitResult {
                partitions,
                end: WaitEnd::Complete,
            };
        }
        let now = Instant::now();
        if now >= deadline {
            return WaitResult {
                partitions,
                end: WaitEnd::TimedOut,
            };
        }
        let left = deadline - now;
        let found_system = devices::any_system_present_with(&partitions, names, lookup.hint);
        let quiet = now.duration_since(quiet_since);
        if found_system && quiet >= settle {
            return WaitResult {
                partitions,
                end: WaitEnd::Settled,
            };
        }
        let wait = if found_system {
            (settle - quiet).min(left)
        } else {
            left
        };
        let wait = watchdog.map_or(wait, |w| wait.min(w.interval()));
        if sys.uevent_wait(listener, wait) {
            quiet_since = Instant::now();
        }
        if let Some(w) = watchdog {
            w.feed(sys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs tree with `disk` holding partitions 1..=n (no names).
    fn add_disk(sys: &Path, disk: &str, sep: &str, n: u32) {
        let dir = sys.join("devices/platform").join(disk);
        let class = sys.join("class/block");
        std::fs::create_dir_all(&class).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("uevent"),
            format!("DEVNAME={disk}\nDEVTYPE=disk\n"),
        )
        .unwrap();
        std::os::unix::fs::symlink(&dir, class.join(disk)).unwrap();
        for i in 1..=n {
            let part = format!("{disk}{sep}{i}");
            std::fs::create_dir_all(dir.join(&part)).unwrap();
            std::fs::write(
                dir.join(&part).join("uevent"),
                format!("DEVNAME={part}\nDEVTYPE=partition\nPARTN={i}\n"),
            )
            .unwrap();
            std::os::unix::fs::symlink(dir.join(&part), class.join(&part)).unwrap();
        }
    }

    fn mapio() -> Partitions {
        crate::config::Config::parse(
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/mapio.toml")),
            "mapio.toml",
        )
        .unwrap()
        .partitions
    }

    /// A wait longer than the watchdog's timeout: no single wait is longer
    /// than half of it, and every wait is followed by a keepalive.
    #[test]
    fn a_long_wait_feeds_the_watchdog() {
        use crate::kernel::fake::Fake;
        let mut sys = Fake::default();
        sys.watchdog.max_timeout = 1;
        let dog = crate::kernel::watchdog::arm(&mut sys, Path::new("/dev/watchdog"), 30)
            .unwrap()
            .watchdog;
        assert_eq!(dog.interval(), Duration::from_millis(500));
        sys.calls.clear();
        let names = mapio();
        let hint = BootDiskHint::default();
        let lookup = Lookup {
            names: &names,
            hint: &hint,
            gpt_dev: None,
            force_gpt: false,
        };
        let waited = wait_for(
            &mut sys,
            &Listener::none(),
            Path::new("/sys"),
            &lookup,
            Duration::from_millis(1200),
            Duration::from_millis(300),
            Some(&dog),
        );
        assert_eq!(waited.end, WaitEnd::TimedOut);
        let waits: Vec<u64> = sys
            .calls_starting("uevent-wait ")
            .iter()
            .map(|c| {
                c["uevent-wait ".len()..]
                    .trim_end_matches("ms")
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(waits.len() > 2, "{waits:?}");
        assert_eq!(waits[0], 500, "the first wait is cut to the interval");
        assert!(waits.iter().all(|w| *w <= 500), "{waits:?}");
        for (i, call) in sys.calls.iter().enumerate() {
            if call.starts_with("uevent-wait") {
                assert_eq!(sys.calls[i + 1], "watchdog-keepalive ioctl", "after #{i}");
            }
        }
        // Without a watchdog the same wait is one long one.
        let mut sys = Fake::default();
        wait_for(
            &mut sys,
            &Listener::none(),
            Path::new("/sys"),
            &lookup,
            Duration::from_millis(900),
            Duration::from_millis(10),
            None,
        );
        let first = sys.calls_starting("uevent-wait ")[0];
        let ms: u64 = first["uevent-wait ".len()..]
            .trim_end_matches("ms")
            .parse()
            .unwrap();
        assert!(ms > 500, "{first}: not cut without a watchdog");
        assert!(sys.calls_starting("watchdog").is_empty());
    }

    /// MAPIO's members by number with a USB stick of two partitions: the wait
    /// completes on the eMMC alone and every member resolves there.
    #[test]
    fn second_disk_does_not_confuse_the_wait() {
        let sys = tempfile::tempdir().unwrap();
        add_disk(sys.path(), "mmcblk0", "p", 4);
        add_disk(sys.path(), "sda", "", 2);
        let names = mapio();
        let hint = BootDiskHint::default();
        let lookup = Lookup {
            names: &names,
            hint: &hint,
            gpt_dev: None,
            force_gpt: false,
        };
        let listener = Listener::none();
        let waited = wait_for(
            &mut crate::kernel::sys::Real,
            &listener,
            sys.path(),
            &lookup,
            Duration::from_millis(200),
            Duration::from_millis(10),
            None,
        );
        assert_eq!(waited.end, WaitEnd::Complete);
        let r = devices::resolve_with(&waited.partitions, &names, &hint);
        assert_eq!(r.system_a.map(|p| p.dev).as_deref(), Some("mmcblk0p2"));
        assert_eq!(r.system_b.map(|p| p.dev).as_deref(), Some("mmcblk0p3"));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    /// A system partition is there but the rest of the layout is not: once
    /// the block layer stays quiet for `settle`, the wait ends long before
    /// the timeout, as settled, with what it found.
    #[test]
    fn wait_settles_when_a_system_partition_is_present() {
        let sys = tempfile::tempdir().unwrap();
        add_disk(sys.path(), "mmcblk0", "p", 2);
        let names = mapio();
        let hint = BootDiskHint {
            root: Some("/dev/mmcblk0p2".into()),
            ..BootDiskHint::default()
        };
        let lookup = Lookup {
            names: &names,
            hint: &hint,
            gpt_dev: None,
            force_gpt: false,
        };
        let waited = wait_for(
            &mut crate::kernel::sys::Real,
            &Listener::none(),
            sys.path(),
            &lookup,
            Duration::from_secs(30),
            Duration::from_millis(10),
            None,
        );
        assert_eq!(waited.end, WaitEnd::Settled);
        let r = devices::resolve_with(&waited.partitions, &names, &hint);
        assert_eq!(r.system_a.map(|p| p.dev).as_deref(), Some("mmcblk0p2"));
        assert_eq!(r.system_b, None);
    }

    /// root= names a disk that is not there: the wait does not settle on the
    /// disk that is, and ends at the timeout with nothing resolved.
    #[test]
    fn wait_holds_out_for_the_disk_root_names() {
        let sys = tempfile::tempdir().unwrap();
        add_disk(sys.path(), "sda", "", 4);
        let names = mapio();
        let hint = BootDiskHint {
            root: Some("/dev/mmcblk0p2".into()),
            ..BootDiskHint::default()
        };
        let lookup = Lookup {
            names: &names,
            hint: &hint,
            gpt_dev: None,
            force_gpt: false,
        };
        let waited = wait_for(
            &mut crate::kernel::sys::Real,
            &Listener::none(),
            sys.path(),
            &lookup,
            Duration::from_millis(120),
            Duration::from_millis(10),
            None,
        );
        assert_eq!(waited.end, WaitEnd::TimedOut);
        let r = devices::resolve_with(&waited.partitions, &names, &hint);
        assert_eq!(r.system_a, None);
        assert_eq!(r.system_b, None);
    }
}
