//! udev's half of the `/dev/disk/by-slot` links: which links a block device gets in
//! the booted system, from the handoff record the initramfs left
//! (`slotinit udev-links DEVNAME`, called by udev/60-slotinit-by-slot.rules).
//!
//! The initramfs makes the links before switch_root; systemd-udevd then owns
//! /dev/disk and recomputes a device's links on every event, so its rule asks
//! this module for them each time. The names come from the same list the
//! initramfs used ([`devices::by_slot_links`]) and the active slot is the
//! slot that booted (`handoff.slot`), never guessed again from /proc/cmdline or
//! the boot state, which may already name the next boot's slot.

use crate::disk::devices::{self, Partition};
use crate::handoff::Handoff;
use crate::paths::HANDOFF_PATH;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub(super) const USAGE: &str = "usage: slotinit udev-links DEVNAME [--handoff FILE] [--sys DIR]
  prints the /dev/disk/by-slot link names (relative to /dev, space-separated) of the
  block device DEVNAME (a kernel name: vda5, mmcblk0p2) for udev's
  PROGRAM=\"/usr/bin/slotinit udev-links $kernel\", SYMLINK+=\"%c\"
  --handoff FILE  the init's handoff record (default /run/slotinit/handoff.json)
  --sys DIR       sysfs root (default /sys), to check the partition is the one recorded
exit codes: 0 links printed, 1 no link for DEVNAME (or no usable handoff record), 2 usage";

const EXIT_NONE: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// The by-slot link names (relative to /dev, e.g. `disk/by-slot/active/system`)
/// that the block device `devname` gets for the boot the handoff describes.
/// `devname` is a kernel name (`vda5`); a `/dev/` prefix is accepted. Empty
/// when the record names no booted slot or `devname` is none of its members.
fn links_for(handoff: &Handoff, devname: &str) -> Vec<String> {
    let devname = devname.strip_prefix("/dev/").unwrap_or(devname);
    let Some(active) = handoff.slot else {
        return Vec::new();
    };
    if devname.is_empty() {
        return Vec::new();
    }
    devices::by_slot_links(&handoff.devices, active)
        .into_iter()
        .filter(|(_, target)| target.file_name().is_some_and(|f| f == devname))
        .map(|(link, _)| link.display().to_string())
        .collect()
}

/// Like [`links_for`], but only if the partition the kernel now calls `devname`
/// is still the one recorded at boot (same partition number and GPT name): a
/// disk removed and another one plugged in can reuse the kernel name.
fn links_for_partition(handoff: &Handoff, now: &Partition) -> Vec<String> {
    let members = [
        &handoff.devices.system_a,
        &handoff.devices.system_b,
        &handoff.devices.boot_a,
        &handoff.devices.boot_b,
        &handoff.devices.bootconfig,
        &handoff.devices.persistent,
    ];
    let same = members.iter().filter_map(|m| m.as_ref()).any(|recorded| {
        recorded.dev == now.dev && recorded.number == now.number && recorded.name == now.name
    });
    if same {
        links_for(handoff, &now.dev)
    } else {
        Vec::new()
    }
}

/// What the kernel says about `devname` now, from `{sys}/class/block/{devname}/uevent`.
/// None when it cannot be read or is not a partition.
fn partition_now(sys: &Path, devname: &str) -> Option<Partition> {
    let dir = sys.join("class/block").join(devname);
    let text = std::fs::read_to_string(dir.join("uevent")).ok()?;
    let disk = std::fs::canonicalize(&dir)
        .ok()
        .and_then(|real| real.parent()?.file_name()?.to_str().map(str::to_string))
        .unwrap_or_default();
    Partition::from_uevent(&text, &disk)
}

struct Args {
    devname: String,
    handoff: PathBuf,
    sys: PathBuf,
}

fn parse_args(args: Vec<String>) -> Result<Args, String> {
    let mut devname = None;
    let mut handoff = PathBuf::from(HANDOFF_PATH);
    let mut sys = PathBuf::from("/sys");
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--handoff" | "--sys" => {
                let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
                if arg == "--handoff" {
                    handoff = value.into();
                } else {
                    sys = value.into();
                }
            }
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg:?}")),
            _ if devname.is_none() => devname = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let devname = devname.ok_or("DEVNAME is missing")?;
    Ok(Args {
        devname,
        handoff,
        sys,
    })
}

/// `slotinit udev-links DEVNAME [--handoff FILE] [--sys DIR]` (`args`: what follows
/// `udev-links`). Prints the names on one line for udev's `%c`; exit 1 with nothing
/// printed when the device gets no link, so the rule does not match.
pub(super) fn udev_main(args: Vec<String>) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("slotinit: udev-links: {e}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let handoff = match Handoff::load(&args.handoff) {
        Ok(h) => h,
        Err(e) => {
            eprintln!(
                "slotinit: udev-links: no handoff record ({}: {e}); no by-slot links",
                args.handoff.display()
            );
            return ExitCode::from(EXIT_NONE);
        }
    };
    let devname = args
        .devname
        .strip_prefix("/dev/")
        .unwrap_or(&args.devname)
        .to_string();
    let links = match partition_now(&args.sys, &devname) {
        Some(now) => links_for_partition(&handoff, &now),
        // Not in sysfs (a record checked on another machine): the name alone.
        None => links_for(&handoff, &devname),
    };
    if links.is_empty() {
        return ExitCode::from(EXIT_NONE);
    }
    println!("{}", links.join(" "));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Partitions;
    use crate::types::Slot;

    /// A partition as the kernel announces it (so the tests follow new fields).
    fn part(dev: &str, number: u32, name: &str) -> Partition {
        let uevent = format!("DEVNAME={dev}\nDEVTYPE=partition\nPARTN={number}\nPARTNAME={name}\n");
        Partition::from_uevent(&uevent, "vda").unwrap()
    }

    /// The record of a boot of `slot` from qemu/mkdisk's layout (vda1..vda6).
    fn booted(slot: Option<Slot>) -> Handoff {
        let found = crate::disk::devices::fixtures::rpi_disk("vda");
        let mut h = Handoff::new();
        h.slot = slot;
        h.devices = devices::resolve(&found, &Partitions::default());
        h
    }

    #[test]
    fn each_member_gets_its_links_for_each_slot() {
        let table: [(Slot, &str, &[&str]); 12] = [
            (Slot::A, "vda1", &["disk/by-slot/bootconfig"]),
            (Slot::A, "vda2", &["disk/by-slot/active/boot"]),
            (Slot::A, "vda3", &["disk/by-slot/other/boot"]),
            (Slot::A, "vda4", &["disk/by-slot/active/system"]),
            (Slot::A, "vda5", &["disk/by-slot/other/system"]),
            (Slot::A, "vda6", &["disk/by-slot/persistent"]),
            (Slot::B, "vda1", &["disk/by-slot/bootconfig"]),
            (Slot::B, "vda2", &["disk/by-slot/other/boot"]),
            (Slot::B, "vda3", &["disk/by-slot/active/boot"]),
            (Slot::B, "vda4", &["disk/by-slot/other/system"]),
            (Slot::B, "vda5", &["disk/by-slot/active/system"]),
            (Slot::B, "vda6", &["disk/by-slot/persistent"]),
        ];
        for (slot, dev, expect) in table {
            assert_eq!(
                links_for(&booted(Some(slot)), dev),
                expect,
                "{slot:?} {dev}"
            );
        }
    }

    #[test]
    fn the_same_names_as_the_initramfs_made() {
        for slot in Slot::ALL {
            let h = booted(Some(slot));
            let mut from_udev: Vec<String> = (1..=6)
                .flat_map(|n| links_for(&h, &format!("vda{n}")))
                .collect();
            let mut from_init: Vec<String> = devices::by_slot_links(&h.devices, slot)
                .iter()
                .map(|(l, _)| l.display().to_string())
                .collect();
            from_udev.sort();
            from_init.sort();
            assert_eq!(from_udev, from_init);
        }
    }

    #[test]
    fn other_devices_and_whole_disks_get_nothing() {
        let h = booted(Some(Slot::A));
        for dev in ["vda", "vda7", "vdb4", "sda1", "", "vda44", "da4", "loop0"] {
            assert!(links_for(&h, dev).is_empty(), "{dev}");
        }
    }

    #[test]
    fn a_dev_prefix_is_accepted() {
        let h = booted(Some(Slot::A));
        assert_eq!(links_for(&h, "/dev/vda4"), ["disk/by-slot/active/system"]);
    }

    #[test]
    fn no_booted_slot_means_no_links() {
        // An empty or foreign record: nothing is guessed.
        assert!(links_for(&booted(None), "vda4").is_empty());
        assert!(links_for(&Handoff::default(), "vda4").is_empty());
    }

    #[test]
    fn unresolved_members_get_no_link_and_the_rest_still_do() {
        let mut h = booted(Some(Slot::A));
        h.devices.system_b = None;
        h.devices.persistent = None;
        assert!(links_for(&h, "vda5").is_empty());
        assert!(links_for(&h, "vda6").is_empty());
        assert_eq!(links_for(&h, "vda4"), ["disk/by-slot/active/system"]);
    }

    #[test]
    fn one_device_in_two_roles_gets_both_links() {
        // A layout whose boot files live on the system partition (MAPIO-like
        // configs name the same partition twice): one line, space-separated.
        let mut h = booted(Some(Slot::A));
        h.devices.boot_a = h.devices.system_a.clone();
        assert_eq!(
            links_for(&h, "vda4"),
            ["disk/by-slot/active/boot", "disk/by-slot/active/system"]
        );
    }

    #[test]
    fn reads_the_record_the_init_writes() {
        let text = booted(Some(Slot::B)).to_json();
        let h = Handoff::parse(&text).unwrap();
        assert_eq!(links_for(&h, "vda5"), ["disk/by-slot/active/system"]);
        assert_eq!(links_for(&h, "vda2"), ["disk/by-slot/other/boot"]);
    }

    #[test]
    fn a_reused_kernel_name_is_not_linked() {
        let h = booted(Some(Slot::A));
        assert_eq!(
            links_for_partition(&h, &part("vda4", 4, "system_a")),
            ["disk/by-slot/active/system"]
        );
        // Another disk now called vda: same kernel name, other partition.
        assert!(links_for_partition(&h, &part("vda4", 4, "rootfs")).is_empty());
        assert!(links_for_partition(&h, &part("vda4", 2, "system_a")).is_empty());
        let unnamed = Partition::from_uevent("DEVNAME=vda4\nDEVTYPE=partition\nPARTN=4\n", "vda");
        assert!(links_for_partition(&h, &unnamed.unwrap()).is_empty());
    }

    fn sysfs_with(dir: &Path, dev: &str, uevent: &str) {
        let devices = dir.join("devices/virtio/block/vda").join(dev);
        std::fs::create_dir_all(&devices).unwrap();
        std::fs::write(devices.join("uevent"), uevent).unwrap();
        let class = dir.join("class/block");
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(&devices, class.join(dev)).unwrap();
    }

    #[test]
    fn partition_now_reads_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        sysfs_with(
            sys.path(),
            "vda5",
            "MAJOR=254\nMINOR=5\nDEVNAME=vda5\nDEVTYPE=partition\nPARTN=5\nPARTNAME=system_b\n",
        );
        assert_eq!(
            partition_now(sys.path(), "vda5"),
            Some(part("vda5", 5, "system_b"))
        );
        assert_eq!(partition_now(sys.path(), "vda6"), None);
    }

    #[test]
    fn arguments() {
        let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let a = parse_args(words("vda5 --handoff /tmp/h.json --sys /tmp/sys")).unwrap();
        assert_eq!(a.devname, "vda5");
        assert_eq!(a.handoff, PathBuf::from("/tmp/h.json"));
        assert_eq!(a.sys, PathBuf::from("/tmp/sys"));
        let a = parse_args(words("--handoff x vda1")).unwrap();
        assert_eq!(
            (a.devname.as_str(), a.sys.as_path()),
            ("vda1", Path::new("/sys"))
        );
        assert_eq!(
            parse_args(words("vda1")).unwrap().handoff,
            PathBuf::from(HANDOFF_PATH)
        );
        assert!(parse_args(words("")).is_err());
        assert!(parse_args(words("vda1 vda2")).is_err());
        assert!(parse_args(words("vda1 --handoff")).is_err());
        assert!(parse_args(words("vda1 --json")).is_err());
    }

    #[test]
    fn udev_main_prints_for_a_record_file_and_exits_1_without_links() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("handoff.json");
        std::fs::write(&record, booted(Some(Slot::A)).to_json()).unwrap();
        let sys = dir.path().join("sys");
        sysfs_with(
            &sys,
            "vda4",
            "DEVNAME=vda4\nDEVTYPE=partition\nPARTN=4\nPARTNAME=system_a\n",
        );
        let run = |dev: &str, record: &Path| {
            udev_main(vec![
                dev.into(),
                "--handoff".into(),
                record.display().to_string(),
                "--sys".into(),
                sys.display().to_string(),
            ])
        };
        assert_eq!(run("vda4", &record), ExitCode::SUCCESS);
        // Not in this sysfs: the kernel name alone decides.
        assert_eq!(run("vda5", &record), ExitCode::SUCCESS);
        assert_eq!(run("vda9", &record), ExitCode::from(EXIT_NONE));
        assert_eq!(
            run("vda4", &dir.path().join("missing.json")),
            ExitCode::from(EXIT_NONE)
        );
        assert_eq!(udev_main(vec![]), ExitCode::from(EXIT_USAGE));
    }
}
