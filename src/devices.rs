//! Device resolution: the partitions the kernel announced, matched against the
//! layout's names. Pure matching over a list; a thin reader builds the list from sysfs.

use crate::config::{PartRef, Partitions};
use crate::slot::Slot;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One partition as the kernel describes it in sysfs (`uevent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// Kernel device name, e.g. `vda5`; the node is `/dev/<dev>`.
    pub dev: String,
    /// The whole disk it belongs to, e.g. `vda`.
    pub disk: String,
    /// Partition number on the disk.
    pub number: u32,
    /// GPT partition name (PARTNAME), if the table has one.
    pub name: Option<String>,
    /// Unique partition GUID (PARTUUID), when the GPT was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

impl Partition {
    /// Builds a partition from a sysfs `uevent` file's text; `disk` comes from the
    /// sysfs path. None for whole disks and anything that is not a partition.
    pub fn from_uevent(text: &str, disk: &str) -> Option<Partition> {
        let mut dev = None;
        let mut is_partition = false;
        let mut number = None;
        let mut name = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("DEVNAME", v)) => dev = Some(v.to_string()),
                Some(("DEVTYPE", v)) => is_partition = v == "partition",
                Some(("PARTN", v)) => number = v.parse().ok(),
                Some(("PARTNAME", v)) => name = Some(v.to_string()),
                _ => {}
            }
        }
        if !is_partition {
            return None;
        }
        Some(Partition {
            dev: dev?,
            disk: disk.to_string(),
            number: number?,
            name,
            uuid: None,
        })
    }

    pub fn node(&self) -> PathBuf {
        Path::new("/dev").join(&self.dev)
    }
}

/// The partitions of both slots and the shared ones, as found for this boot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resolved {
    pub system_a: Option<Partition>,
    pub system_b: Option<Partition>,
    pub boot_a: Option<Partition>,
    pub boot_b: Option<Partition>,
    pub bootconfig: Option<Partition>,
    pub persistent: Option<Partition>,
    /// Members that could not be resolved and why (missing, ambiguous).
    pub problems: Vec<String>,
}

impl Resolved {
    pub fn system(&self, slot: Slot) -> Option<&Partition> {
        match slot {
            Slot::A => self.system_a.as_ref(),
            Slot::B => self.system_b.as_ref(),
        }
    }

    pub fn boot(&self, slot: Slot) -> Option<&Partition> {
        match slot {
            Slot::A => self.boot_a.as_ref(),
            Slot::B => self.boot_b.as_ref(),
        }
    }
}

/// True if `part` is the partition `r` names.
pub fn matches(r: &PartRef, part: &Partition) -> bool {
    match r {
        PartRef::Absent => false,
        PartRef::Name(n) => part.name.as_deref() == Some(n.as_str()),
        PartRef::Uuid(u) => part
            .uuid
            .as_deref()
            .is_some_and(|x| x.eq_ignore_ascii_case(u)),
        PartRef::Device(d) => d.strip_prefix("/dev/") == Some(part.dev.as_str()),
        PartRef::Number { disk, number } => {
            part.number == *number && disk.as_ref().is_none_or(|d| *d == part.disk)
        }
    }
}

/// Matches the layout's members against the partitions found. A reference that
/// fits two partitions (a name on two disks) is not guessed at: the member stays
/// unresolved and both devices are named in the problem. An absent member (not
/// in this layout) is no problem.
pub fn resolve(found: &[Partition], names: &Partitions) -> Resolved {
    let mut problems = Vec::new();
    let mut find = |role: &str| -> Option<Partition> {
        let r = names.reference(role);
        if r == PartRef::Absent {
            return None;
        }
        let matching: Vec<&Partition> = found.iter().filter(|p| matches(&r, p)).collect();
        match matching.as_slice() {
            [] => {
                problems.push(format!("no partition {r} ({role})"));
                None
            }
            [one] => Some((*one).clone()),
            many => {
                let devs: Vec<String> = many
                    .iter()
                    .map(|p| p.node().display().to_string())
                    .collect();
                problems.push(format!(
                    "{r} ({role}) is ambiguous: {}; refusing to guess",
                    devs.join(" and ")
                ));
                None
            }
        }
    };
    Resolved {
        system_a: find("system_a"),
        system_b: find("system_b"),
        boot_a: find("boot_a"),
        boot_b: find("boot_b"),
        bootconfig: find("bootconfig"),
        persistent: find("persistent"),
        problems,
    }
}

/// True when every member of the layout is present.
pub fn all_present(found: &[Partition], names: &Partitions) -> bool {
    names
        .refs()
        .iter()
        .filter(|(_, r)| *r != PartRef::Absent)
        .all(|(_, r)| found.iter().any(|p| matches(r, p)))
}

/// True when any system partition is present: the disk is there, and what is
/// still missing may never come.
pub fn any_system_present(found: &[Partition], names: &Partitions) -> bool {
    ["system_a", "system_b"]
        .iter()
        .any(|role| found.iter().any(|p| matches(&names.reference(role), p)))
}

/// The slot's directory on the persistent partition: its system partition's GPT
/// name lowercased (`system_a`), as rpi-image-gen does; `system_<slot>` when the
/// partition has no name usable as one path component (empty, `.`, `..`, a `/`).
/// Two slots never share a directory, whatever their names: when both come out
/// the same (members by number, as MAPIO's are, may carry one name twice), each
/// slot takes its role name, `system_a` and `system_b`.
pub fn slot_dir(resolved: &Resolved, slot: Slot) -> String {
    let candidate = |s: Slot| {
        resolved
            .system(s)
            .and_then(|p| p.name.as_deref())
            .filter(|n| !matches!(*n, "" | "." | "..") && !n.contains(['/', '\0']))
            .map_or_else(|| format!("system_{s}"), str::to_lowercase)
    };
    let mine = candidate(slot);
    if mine == candidate(slot.other()) {
        format!("system_{slot}")
    } else {
        mine
    }
}

/// Fills in the PARTUUIDs of the partitions from their disks' GPTs (read once
/// per disk; `cache` keeps what was read). Disks without a GPT keep None.
pub fn read_uuids(
    found: &mut [Partition],
    dev: &Path,
    cache: &mut std::collections::HashMap<String, Vec<crate::gpt::Entry>>,
) {
    for part in found.iter_mut() {
        if !cache.contains_key(&part.disk) {
            let sector = std::fs::read_to_string(format!(
                "/sys/block/{}/queue/logical_block_size",
                part.disk
            ))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(512);
            match crate::gpt::read(&dev.join(&part.disk), sector) {
                Ok(entries) => {
                    cache.insert(part.disk.clone(), entries);
                }
                Err(e) => log::debug!("no PARTUUIDs for {}: {e}", part.disk),
            }
        }
        if let Some(entries) = cache.get(&part.disk) {
            part.uuid = entries
                .iter()
                .find(|e| e.number == part.number)
                .map(|e| e.uuid.clone());
        }
    }
}

/// The `/dev/disk/by-slot` links for a boot of `active`: (link path relative to
/// /dev, relative target). Members that were not resolved get no link.
pub fn by_slot_links(resolved: &Resolved, active: Slot) -> Vec<(PathBuf, PathBuf)> {
    let mut links = Vec::new();
    let mut add = |link: &str, part: Option<&Partition>| {
        if let Some(p) = part {
            let depth = link.matches('/').count();
            let target = "../".repeat(depth) + &p.dev;
            links.push((PathBuf::from(link), PathBuf::from(target)));
        }
    };
    let other = active.other();
    add("disk/by-slot/active/boot", resolved.boot(active));
    add("disk/by-slot/active/system", resolved.system(active));
    add("disk/by-slot/other/boot", resolved.boot(other));
    add("disk/by-slot/other/system", resolved.system(other));
    add("disk/by-slot/bootconfig", resolved.bootconfig.as_ref());
    add("disk/by-slot/persistent", resolved.persistent.as_ref());
    links
}

/// Lists the partitions under a sysfs root (`/sys` in the init, a temp dir in tests).
pub fn list_partitions(sys: &Path) -> std::io::Result<Vec<Partition>> {
    let mut found = Vec::new();
    let class = sys.join("class/block");
    let entries = match std::fs::read_dir(&class) {
        Ok(entries) => entries,
        // No block class yet: no block driver has registered.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        // A partition's sysfs directory sits inside its disk's directory.
        let disk = std::fs::canonicalize(&path)
            .ok()
            .and_then(|real| real.parent()?.file_name()?.to_str().map(str::to_string))
            .unwrap_or_default();
        // A device can vanish between readdir and read: skip it.
        if let Ok(text) = std::fs::read_to_string(path.join("uevent")) {
            found.extend(Partition::from_uevent(&text, &disk));
        }
    }
    found.sort_by(|a, b| a.dev.cmp(&b.dev));
    Ok(found)
}

/// Partitions for the stage tests: qemu/mkdisk's layout, as the kernel names it.
#[cfg(test)]
pub mod fixtures {
    use super::Partition;

    pub fn part(dev: &str, disk: &str, number: u32, name: Option<&str>) -> Partition {
        Partition {
            dev: dev.into(),
            disk: disk.into(),
            number,
            name: name.map(str::to_string),
            uuid: None,
        }
    }

    /// rpi-image-gen's gpt/ab_userdata on `disk`: `<disk>1` .. `<disk>6`.
    pub fn rpi_disk(disk: &str) -> Vec<Partition> {
        [
            "bootconfig",
            "boot_a",
            "boot_b",
            "system_a",
            "system_b",
            "persistent",
        ]
        .iter()
        .enumerate()
        .map(|(i, n)| part(&format!("{disk}{}", i + 1), disk, i as u32 + 1, Some(n)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::rpi_disk;
    use super::*;

    fn part(dev: &str, disk: &str, number: u32, name: &str) -> Partition {
        fixtures::part(dev, disk, number, Some(name))
    }

    #[test]
    fn uevent_of_a_partition() {
        let text = "MAJOR=254\nMINOR=4\nDEVNAME=vda4\nDEVTYPE=partition\nDISKSEQ=1\nPARTN=4\nPARTNAME=system_a\n";
        assert_eq!(
            Partition::from_uevent(text, "vda"),
            Some(part("vda4", "vda", 4, "system_a"))
        );
    }

    #[test]
    fn uevent_of_a_disk_or_unnamed_partition() {
        assert_eq!(
            Partition::from_uevent("DEVNAME=vda\nDEVTYPE=disk\n", ""),
            None
        );
        let p =
            Partition::from_uevent("DEVNAME=sda1\nDEVTYPE=partition\nPARTN=1\n", "sda").unwrap();
        assert_eq!(p.name, None);
        // A partition with no number is malformed, not a partition 0.
        assert_eq!(
            Partition::from_uevent("DEVNAME=sda1\nDEVTYPE=partition\n", "sda"),
            None
        );
    }

    #[test]
    fn resolves_the_rpi_layout() {
        let r = resolve(&rpi_disk("vda"), &Partitions::default());
        assert_eq!(r.system_a.as_ref().unwrap().dev, "vda4");
        assert_eq!(r.system_b.as_ref().unwrap().dev, "vda5");
        assert_eq!(r.persistent.as_ref().unwrap().dev, "vda6");
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(all_present(&rpi_disk("vda"), &Partitions::default()));
    }

    #[test]
    fn missing_member_is_a_problem_not_a_failure() {
        let mut disk = rpi_disk("vda");
        disk.retain(|p| p.name.as_deref() != Some("persistent"));
        let r = resolve(&disk, &Partitions::default());
        assert!(r.persistent.is_none());
        assert!(r.system_a.is_some());
        assert_eq!(
            r.problems,
            vec!["no partition PARTNAME=\"persistent\" (persistent)".to_string()]
        );
        assert!(!all_present(&disk, &Partitions::default()));
        assert!(any_system_present(&disk, &Partitions::default()));
    }

    #[test]
    fn duplicate_names_on_two_disks_are_refused() {
        let mut found = rpi_disk("vda");
        found.extend(rpi_disk("vdb"));
        let r = resolve(&found, &Partitions::default());
        assert!(r.system_a.is_none());
        assert!(r.persistent.is_none());
        assert_eq!(r.problems.len(), 6);
        assert!(
            r.problems[0].contains("/dev/vda4 and /dev/vdb4"),
            "{}",
            r.problems[0]
        );
    }

    #[test]
    fn links_for_each_active_slot() {
        let r = resolve(&rpi_disk("vda"), &Partitions::default());
        let links = by_slot_links(&r, Slot::B);
        let as_str: Vec<(String, String)> = links
            .iter()
            .map(|(l, t)| (l.display().to_string(), t.display().to_string()))
            .collect();
        let expect = [
            ("disk/by-slot/active/boot", "../../../vda3"),
            ("disk/by-slot/active/system", "../../../vda5"),
            ("disk/by-slot/other/boot", "../../../vda2"),
            ("disk/by-slot/other/system", "../../../vda4"),
            ("disk/by-slot/bootconfig", "../../vda1"),
            ("disk/by-slot/persistent", "../../vda6"),
        ];
        assert_eq!(
            as_str,
            expect
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn lists_partitions_from_a_sysfs_tree() {
        let sys = tempfile::tempdir().unwrap();
        let devices = sys.path().join("devices/virtio/block/vda");
        std::fs::create_dir_all(devices.join("vda1")).unwrap();
        std::fs::write(devices.join("uevent"), "DEVNAME=vda\nDEVTYPE=disk\n").unwrap();
        std::fs::write(
            devices.join("vda1/uevent"),
            "DEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=bootconfig\n",
        )
        .unwrap();
        let class = sys.path().join("class/block");
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(&devices, class.join("vda")).unwrap();
        std::os::unix::fs::symlink(devices.join("vda1"), class.join("vda1")).unwrap();
        let found = list_partitions(sys.path()).unwrap();
        assert_eq!(found, vec![part("vda1", "vda", 1, "bootconfig")]);
    }

    #[test]
    fn no_block_class_is_an_empty_list() {
        let sys = tempfile::tempdir().unwrap();
        assert!(list_partitions(sys.path()).unwrap().is_empty());
    }
}
