//! Device resolution: the partitions the kernel announced, matched against the
//! layout's names. Pure matching over a list; a thin reader builds the list from sysfs.

use crate::config::{PartRef, Partitions};
use crate::kernel::cmdline::Cmdline;
use crate::kernel::sys::Sys;
use crate::types::Slot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
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
    pub(crate) system_a: Option<Partition>,
    pub(crate) system_b: Option<Partition>,
    pub(crate) boot_a: Option<Partition>,
    pub(crate) boot_b: Option<Partition>,
    pub(crate) bootconfig: Option<Partition>,
    pub(crate) persistent: Option<Partition>,
    /// The disk bare partition numbers were taken from, and what named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) boot_disk: Option<String>,
    /// Members that could not be resolved and why (missing, ambiguous).
    pub(crate) problems: Vec<String>,
}

impl Resolved {
    pub(crate) fn system(&self, slot: Slot) -> Option<&Partition> {
        match slot {
            Slot::A => self.system_a.as_ref(),
            Slot::B => self.system_b.as_ref(),
        }
    }

    /// The member `role` (`system_a`, `persistent`, ...).
    pub(crate) fn member(&self, role: &str) -> Option<&Partition> {
        match role {
            "system_a" => self.system_a.as_ref(),
            "system_b" => self.system_b.as_ref(),
            "boot_a" => self.boot_a.as_ref(),
            "boot_b" => self.boot_b.as_ref(),
            "bootconfig" => self.bootconfig.as_ref(),
            "persistent" => self.persistent.as_ref(),
            _ => None,
        }
    }

    /// Sets the member `role`; an unknown role changes nothing.
    pub(crate) fn set_member(&mut self, role: &str, part: Option<Partition>) {
        let slot = match role {
            "system_a" => &mut self.system_a,
            "system_b" => &mut self.system_b,
            "boot_a" => &mut self.boot_a,
            "boot_b" => &mut self.boot_b,
            "bootconfig" => &mut self.bootconfig,
            "persistent" => &mut self.persistent,
            _ => return,
        };
        *slot = part;
    }

    pub(crate) fn boot(&self, slot: Slot) -> Option<&Partition> {
        match slot {
            Slot::A => self.boot_a.as_ref(),
            Slot::B => self.boot_b.as_ref(),
        }
    }
}

/// True if `part` is the partition `r` names.
pub(crate) fn matches(r: &PartRef, part: &Partition) -> bool {
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

/// What tells which disk the system booted from. A bare partition number in
/// the layout (`{ number = 2 }`, as MAPIO's config has) means a partition of
/// that disk, never of any disk: a second disk with a partition 2 must not
/// make the member ambiguous, nor be taken for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BootDiskHint {
    /// `root=` as the bootloader passed it (`PARTUUID=`, `PARTLABEL=`, `/dev/`),
    /// unless it was given twice with different values.
    pub(crate) root: Option<String>,
    /// The devices the config's `bootstate.fw_env` lines name: the bootloader's
    /// env lives on the disk it booted from.
    pub(super) env_devices: Vec<String>,
}

impl BootDiskHint {
    /// `env_devices`: the block devices the boot-state backend's config names
    /// (`state::boot_devices`).
    pub(crate) fn new(cmdline: &Cmdline, env_devices: Vec<String>) -> Self {
        let root = match crate::kernel::cmdline::conflict(cmdline, "root") {
            Some(_) => None,
            None => cmdline.get("root").map(str::to_string),
        };
        BootDiskHint { root, env_devices }
    }
}

/// Which disk bare partition numbers refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BootDisk {
    /// The disk (`mmcblk0`) and what named it.
    Known { disk: String, why: String },
    /// The bootloader named a partition that is not (yet) there: bare numbers
    /// wait for it rather than resolve on another disk.
    Pending(String),
    /// Nothing names it.
    Unknown,
}

/// The partition reference a `root=` value makes, if it tells partitions apart.
fn root_ref(root: &str) -> Option<PartRef> {
    if let Some(label) = root.strip_prefix("PARTLABEL=") {
        Some(PartRef::Name(label.to_string()))
    } else if let Some(uuid) = root.strip_prefix("PARTUUID=") {
        Some(PartRef::Uuid(uuid.to_ascii_lowercase()))
    } else if root.starts_with("/dev/") {
        Some(PartRef::Device(root.to_string()))
    } else {
        None
    }
}

/// The disks holding a partition `r` names, or (for a `/dev/` path naming a
/// whole disk, or an eMMC boot area `mmcblkNbootM`) the disk itself.
fn disks_named(found: &[Partition], r: &PartRef) -> BTreeSet<String> {
    let mut disks: BTreeSet<String> = found
        .iter()
        .filter(|p| matches(r, p))
        .map(|p| p.disk.clone())
        .collect();
    if let PartRef::Device(d) = r {
        let name = d.trim_start_matches("/dev/");
        let whole = match name
            .strip_prefix("mmcblk")
            .and_then(|n| n.split_once("boot"))
        {
            Some((unit, area)) if !unit.is_empty() && area.chars().all(|c| c.is_ascii_digit()) => {
                format!("mmcblk{unit}")
            }
            _ => name.to_string(),
        };
        disks.extend(
            found
                .iter()
                .filter(|p| p.disk == whole)
                .map(|p| p.disk.clone()),
        );
    }
    disks
}

/// The boot disk, from the first of these that names exactly one disk:
/// 1. the bootloader's `root=` (the disk of the partition it names; if that
///    partition is not there, the disk is [`BootDisk::Pending`]);
/// 2. the `bootstate.fw_env` devices;
/// 3. the members the config names other than by a bare number, when all that
///    were found are on one disk;
/// 4. the one disk holding every bare-numbered member, when only one does.
///
/// The device tree's boot partition is a number, not a disk, and says nothing here.
fn boot_disk(found: &[Partition], names: &Partitions, hint: &BootDiskHint) -> BootDisk {
    if let Some((root, r)) = hint
        .root
        .as_deref()
        .and_then(|root| Some((root, root_ref(root)?)))
    {
        let disks = disks_named(found, &r);
        let mut it = disks.iter();
        match (it.next(), it.next()) {
            (Some(disk), None) => {
                return BootDisk::Known {
                    disk: disk.clone(),
                    why: format!("root={root} is on it"),
                }
            }
            (None, _) => return BootDisk::Pending(format!("root={root} names no partition found")),
            // A PARTLABEL on two disks names neither.
            (Some(_), Some(_)) => {}
        }
    }
    let env: BTreeSet<String> = hint
        .env_devices
        .iter()
        .filter(|d| d.starts_with("/dev/"))
        .flat_map(|d| disks_named(found, &PartRef::Device(d.clone())))
        .collect();
    if env.len() == 1 {
        if let Some(disk) = env.into_iter().next() {
            return BootDisk::Known {
                disk,
                why: "bootstate.fw_env names it".into(),
            };
        }
    }
    let refs = names.refs();
    if let Some(known) = disk_of_named(found, &refs) {
        return known;
    }
    disk_holding_numbers(found, &refs)
}

/// Rule 3 of [`boot_disk`]: the one disk that the members named other than by
/// a bare number are found on.
fn disk_of_named(found: &[Partition], refs: &[(&str, PartRef)]) -> Option<BootDisk> {
    let mut named = BTreeSet::new();
    let mut by = Vec::new();
    for (role, r) in refs {
        if matches!(r, PartRef::Absent | PartRef::Number { disk: None, .. }) {
            continue;
        }
        let disks = disks_named(found, r);
        if disks.len() == 1 {
            named.extend(disks);
            by.push(*role);
        }
    }
    if named.len() != 1 {
        return None;
    }
    let disk = named.into_iter().next()?;
    Some(BootDisk::Known {
        disk,
        why: format!("partitions.{} is on it", by.join(", partitions.")),
    })
}

/// Rule 4 of [`boot_disk`]: the one disk holding every bare-numbered member.
fn disk_holding_numbers(found: &[Partition], refs: &[(&str, PartRef)]) -> BootDisk {
    let numbers: BTreeSet<u32> = refs
        .iter()
        .filter_map(|(_, r)| match r {
            PartRef::Number { disk: None, number } => Some(*number),
            _ => None,
        })
        .collect();
    if numbers.is_empty() {
        return BootDisk::Unknown;
    }
    let disks: BTreeSet<&str> = found.iter().map(|p| p.disk.as_str()).collect();
    let holding: Vec<&str> = disks
        .into_iter()
        .filter(|d| {
            numbers
                .iter()
                .all(|n| found.iter().any(|p| p.disk == *d && p.number == *n))
        })
        .collect();
    match holding.as_slice() {
        [disk] => BootDisk::Known {
            disk: disk.to_string(),
            why: format!(
                "the only disk with partitions {}",
                numbers
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        _ => BootDisk::Unknown,
    }
}

/// The partitions `r` may mean: a bare number only on the boot disk when it is
/// known, none while the disk the bootloader named is missing.
fn candidates<'a>(found: &'a [Partition], r: &PartRef, boot: &BootDisk) -> Vec<&'a Partition> {
    match (r, boot) {
        (PartRef::Number { disk: None, number }, BootDisk::Known { disk, .. }) => found
            .iter()
            .filter(|p| p.disk == *disk && p.number == *number)
            .collect(),
        (PartRef::Number { disk: None, .. }, BootDisk::Pending(_)) => Vec::new(),
        _ => found.iter().filter(|p| matches(r, p)).collect(),
    }
}

/// Matches the layout's members against the partitions found. A reference that
/// fits two partitions (a name on two disks) is not guessed at: the member stays
/// unresolved and both devices are named in the problem. An absent member (not
/// in this layout) is no problem. Bare partition numbers are taken from no
/// boot disk: see [`resolve_with`].
pub fn resolve(found: &[Partition], names: &Partitions) -> Resolved {
    resolve_with(found, names, &BootDiskHint::default())
}

/// [`resolve`], with bare partition numbers on the boot disk ([`boot_disk`]).
pub(crate) fn resolve_with(
    found: &[Partition],
    names: &Partitions,
    hint: &BootDiskHint,
) -> Resolved {
    let boot = boot_disk(found, names, hint);
    let mut problems = Vec::new();
    let mut find = |role: &str| -> Option<Partition> {
        let r = names.reference(role);
        if r == PartRef::Absent {
            return None;
        }
        let bare = matches!(r, PartRef::Number { disk: None, .. });
        let matching = candidates(found, &r, &boot);
        match (matching.as_slice(), &boot) {
            ([], BootDisk::Pending(why)) if bare => {
                problems.push(format!(
                    "{r} ({role}) is on the boot disk, which is not there: {why}"
                ));
                None
            }
            ([], BootDisk::Known { disk, why }) if bare => {
                problems.push(format!(
                    "{r} ({role}) is not on the boot disk {disk} ({why})"
                ));
                None
            }
            ([], _) => {
                problems.push(format!("no partition {r} ({role})"));
                None
            }
            ([one], _) => Some((*one).clone()),
            (many, _) => {
                let devs: Vec<String> = many
                    .iter()
                    .map(|p| p.node().display().to_string())
                    .collect();
                let why = if bare {
                    "; nothing names the boot disk (root=PARTUUID=..., or \
                     { disk = \"...\", number = N } in the config)"
                } else {
                    ""
                };
                problems.push(format!(
                    "{r} ({role}) is ambiguous: {}{why}; refusing to guess",
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
        boot_disk: match &boot {
            BootDisk::Known { disk, .. } => Some(disk.clone()),
            _ => None,
        },
        problems,
    }
}

/// True when every member of the layout is present.
pub fn all_present(found: &[Partition], names: &Partitions) -> bool {
    all_present_with(found, names, &BootDiskHint::default())
}

/// True when every member of the layout is present, bare numbers on the boot disk.
pub(super) fn all_present_with(
    found: &[Partition],
    names: &Partitions,
    hint: &BootDiskHint,
) -> bool {
    let boot = boot_disk(found, names, hint);
    names
        .refs()
        .iter()
        .filter(|(_, r)| *r != PartRef::Absent)
        .all(|(_, r)| !candidates(found, r, &boot).is_empty())
}

/// True when any system partition is present: the disk is there, and what is
/// still missing may never come.
pub fn any_system_present(found: &[Partition], names: &Partitions) -> bool {
    any_system_present_with(found, names, &BootDiskHint::default())
}

/// [`any_system_present`], bare numbers on the boot disk.
pub(super) fn any_system_present_with(
    found: &[Partition],
    names: &Partitions,
    hint: &BootDiskHint,
) -> bool {
    let boot = boot_disk(found, names, hint);
    ["system_a", "system_b"]
        .iter()
        .any(|role| !candidates(found, &names.reference(role), &boot).is_empty())
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
/// per disk; `cache` keeps what was read). Disks without a GPT keep None. The
/// table is the one the kernel used ([`crate::disk::gpt::find_valid`]): the
/// alternate when the primary is invalid and `force_gpt` (`gpt` on the cmdline).
pub(super) fn read_uuids<S: Sys + ?Sized>(
    sys: &mut S,
    found: &mut [Partition],
    dev: &Path,
    force_gpt: bool,
    cache: &mut std::collections::HashMap<String, Vec<crate::disk::gpt::Entry>>,
) {
    for part in found.iter_mut() {
        if !cache.contains_key(&part.disk) {
            let size = format!("/sys/block/{}/queue/logical_block_size", part.disk);
            let sector = sys
                .read_file(Path::new(&size))
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(512);
            match crate::disk::gpt::read_as_kernel(sys, &dev.join(&part.disk), sector, force_gpt) {
                Ok(table) => {
                    if table.which == crate::disk::gpt::Which::Alternate {
                        log::warn!(
                            "{}: primary GPT is invalid, using the alternate, as the kernel does",
                            part.disk
                        );
                    }
                    cache.insert(part.disk.clone(), table.entries);
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
pub(super) fn list_partitions<S: Sys + ?Sized>(
    sys: &mut S,
    sysfs: &Path,
) -> std::io::Result<Vec<Partition>> {
    let mut found = Vec::new();
    let class = sysfs.join("class/block");
    let entries = match sys.read_dir(&class) {
        Ok(entries) => entries,
        // No block class yet: no block driver has registered.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for path in entries {
        // A partition's sysfs directory sits inside its disk's directory.
        let disk = sys
            .canonicalize(&path)
            .ok()
            .and_then(|real| real.parent()?.file_name()?.to_str().map(str::to_string))
            .unwrap_or_default();
        // A device can vanish between readdir and read: skip it.
        let text = sys
            .read_file(&path.join("uevent"))
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok());
        if let Some(text) = text {
            found.extend(Partition::from_uevent(&text, &disk));
        }
    }
    found.sort_by(|a, b| a.dev.cmp(&b.dev));
    Ok(found)
}

/// The partition whose GPT name is `name` on the boot disk: the disk
/// `resolved` took its bare numbers from, else the disk of its members
/// (they are on one disk); with neither known, the one partition of that
/// name on any disk. For partitions outside the layout that the firmware
/// finds by name (FWU metadata's `metadata1` / `metadata2`).
pub(crate) fn find_named<S: Sys + ?Sized>(
    sys: &mut S,
    sysfs: &Path,
    resolved: &Resolved,
    name: &str,
) -> Result<Partition, String> {
    let disk = resolved.boot_disk.clone().or_else(|| {
        [
            &resolved.system_a,
            &resolved.system_b,
            &resolved.boot_a,
            &resolved.boot_b,
            &resolved.bootconfig,
            &resolved.persistent,
        ]
        .into_iter()
        .flatten()
        .map(|p| p.disk.clone())
        .next()
    });
    let found = list_partitions(sys, sysfs)
        .map_err(|e| format!("cannot list partitions under {}: {e}", sysfs.display()))?;
    let mut named: Vec<Partition> = found
        .into_iter()
        .filter(|p| p.name.as_deref() == Some(name))
        .filter(|p| disk.as_ref().is_none_or(|d| &p.disk == d))
        .collect();
    let on = disk
        .as_deref()
        .map_or("any disk".to_string(), |d| format!("disk {d}"));
    match named.len() {
        0 => Err(format!("no partition named {name:?} on {on}")),
        1 => Ok(named.remove(0)),
        _ => Err(format!(
            "partition name {name:?} is ambiguous on {on}: {}; refusing to guess",
            named
                .iter()
                .map(|p| p.dev.as_str())
                .collect::<Vec<_>>()
                .join(" and ")
        )),
    }
}

/// Partitions for the stage tests: qemu/mkdisk's layout, as the kernel names it.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::Partition;

    pub(crate) fn part(dev: &str, disk: &str, number: u32, name: Option<&str>) -> Partition {
        Partition {
            dev: dev.into(),
            disk: disk.into(),
            number,
            name: name.map(str::to_string),
            uuid: None,
        }
    }

    /// rpi-image-gen's gpt/ab_userdata on `disk`: `<disk>1` .. `<disk>6`.
    pub(crate) fn rpi_disk(disk: &str) -> Vec<Partition> {
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
    use crate::kernel::sys::Real;

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

    /// MAPIO's layout: members by bare number.
    fn mapio() -> Partitions {
        crate::config::Config::parse(
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/mapio.toml")),
            "mapio.toml",
        )
        .unwrap()
        .partitions
    }

    /// A disk with partitions 1..=n and no names (eMMC tables often carry none).
    fn numbered(disk: &str, sep: &str, n: u32) -> Vec<Partition> {
        (1..=n)
            .map(|i| fixtures::part(&format!("{disk}{sep}{i}"), disk, i, None))
            .collect()
    }

    fn devs(r: &Resolved) -> [Option<&str>; 4] {
        [&r.bootconfig, &r.system_a, &r.system_b, &r.persistent]
            .map(|p| p.as_ref().map(|p| p.dev.as_str()))
    }

    const EMMC: [Option<&str>; 4] = [
        Some("mmcblk0p1"),
        Some("mmcblk0p2"),
        Some("mmcblk0p3"),
        Some("mmcblk0p4"),
    ];

    /// A second disk with two partitions used to make partitions 1 and 2
    /// ambiguous (system_a unresolved, B boots): bare numbers are the boot
    /// disk's, the only disk holding all of 1-4 here.
    #[test]
    fn bare_numbers_are_on_the_boot_disk() {
        let mut found = numbered("mmcblk0", "p", 4);
        found.extend(numbered("sda", "", 2));
        let none = BootDiskHint::default();
        let r = resolve_with(&found, &mapio(), &none);
        assert_eq!(devs(&r), EMMC, "{:?}", r.problems);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.boot_disk.as_deref(), Some("mmcblk0"));
        assert!(all_present_with(&found, &mapio(), &none));
        // Whichever disk the kernel lists first.
        found.reverse();
        assert_eq!(devs(&resolve(&found, &mapio())), EMMC);
    }

    /// Two disks that both hold 1-4: the bootloader's root= names the disk;
    /// without any word, nothing is picked and the problem says why.
    #[test]
    fn root_names_the_boot_disk_of_two_full_ones() {
        let mut found = numbered("sda", "", 4);
        found.extend(numbered("mmcblk0", "p", 4));
        let r = resolve(&found, &mapio());
        assert_eq!(devs(&r), [None; 4]);
        assert_eq!(r.boot_disk, None);
        assert!(
            r.problems[0].contains("/dev/sda2 and /dev/mmcblk0p2")
                && r.problems[0].contains("nothing names the boot disk"),
            "{:?}",
            r.problems
        );
        for root in ["/dev/mmcblk0p3", "/dev/mmcblk0"] {
            let hint = BootDiskHint {
                root: Some(root.into()),
                ..BootDiskHint::default()
            };
            let r = resolve_with(&found, &mapio(), &hint);
            assert_eq!(devs(&r), EMMC, "{root}: {:?}", r.problems);
        }
        // By PARTUUID, as U-Boot's ${uuid} gives it.
        found[5].uuid = Some("11111111-2222-3333-4444-555555555555".into());
        let hint = BootDiskHint {
            root: Some("PARTUUID=11111111-2222-3333-4444-555555555555".into()),
            ..BootDiskHint::default()
        };
        assert_eq!(devs(&resolve_with(&found, &mapio(), &hint)), EMMC);
        // An eMMC boot area holding the env names its disk.
        let hint = BootDiskHint {
            env_devices: vec!["/dev/mmcblk0boot1".into()],
            ..BootDiskHint::default()
        };
        assert_eq!(devs(&resolve_with(&found, &mapio(), &hint)), EMMC);
    }

    /// root= naming a partition that is not there yet: bare numbers wait for
    /// it instead of resolving on the disk that is.
    #[test]
    fn missing_boot_disk_is_waited_for() {
        let found = numbered("sda", "", 4);
        let hint = BootDiskHint {
            root: Some("/dev/mmcblk0p2".into()),
            ..BootDiskHint::default()
        };
        assert!(!all_present_with(&found, &mapio(), &hint));
        assert!(!any_system_present_with(&found, &mapio(), &hint));
        let r = resolve_with(&found, &mapio(), &hint);
        assert_eq!(devs(&r), [None; 4]);
        assert!(
            r.problems[0].contains("root=/dev/mmcblk0p2 names no partition found"),
            "{:?}",
            r.problems
        );
        // Once it is there, only it counts.
        let mut found = found;
        found.extend(numbered("mmcblk0", "p", 3));
        assert!(!all_present_with(&found, &mapio(), &hint));
        let r = resolve_with(&found, &mapio(), &hint);
        assert_eq!(r.persistent, None);
        assert_eq!(r.system_a.unwrap().dev, "mmcblk0p2");
        assert!(
            r.problems[0].contains("partition 4 (persistent) is not on the boot disk mmcblk0"),
            "{:?}",
            r.problems
        );
    }

    /// A member named by GPT name puts the boot disk where it is; members
    /// by number then come from that disk.
    #[test]
    fn named_member_names_the_boot_disk() {
        let mut names = mapio();
        names.system_a = crate::config::PartSpec::name("rootfs-a");
        let mut found = numbered("sda", "", 4);
        let mut emmc = numbered("mmcblk0", "p", 4);
        emmc[1].name = Some("rootfs-a".into());
        found.extend(emmc);
        let r = resolve_with(&found, &names, &BootDiskHint::default());
        assert_eq!(devs(&r), EMMC, "{:?}", r.problems);
        assert_eq!(r.boot_disk.as_deref(), Some("mmcblk0"));
    }

    /// The disk image of tests/fixtures/gpt/corrupt-primary.gpt at `path`.
    fn write_corrupt_primary_disk(path: &Path) {
        let stored = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gpt/corrupt-primary.gpt"
        ))
        .unwrap();
        let mut disk = vec![0u8; 8192 * 512];
        disk[..34 * 512].copy_from_slice(&stored[..34 * 512]);
        let tail = disk.len() - 33 * 512;
        disk[tail..].copy_from_slice(&stored[34 * 512..]);
        std::fs::write(path, disk).unwrap();
    }

    /// With a corrupt primary GPT and `gpt` on the cmdline the kernel made the
    /// partitions from the alternate table: their PARTUUIDs are read from it.
    #[test]
    fn partuuids_from_the_alternate_gpt() {
        let dev = tempfile::tempdir().unwrap();
        // A disk name no host has, so the sector size defaults to 512.
        let disk = "slotinit-test-vdz";
        write_corrupt_primary_disk(&dev.path().join(disk));
        let fresh = || -> Vec<Partition> {
            (1..=3)
                .map(|n| fixtures::part(&format!("{disk}{n}"), disk, n, None))
                .collect()
        };
        let want: Vec<String> = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gpt/corrupt-primary.partuuids"
        ))
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
        let mut found = fresh();
        read_uuids(
            &mut Real,
            &mut found,
            dev.path(),
            true,
            &mut Default::default(),
        );
        let got: Vec<String> = found.iter().filter_map(|p| p.uuid.clone()).collect();
        assert_eq!(got, want);
        // Without `gpt` the kernel reads no table of this disk, nor does slotinit.
        let mut found = fresh();
        read_uuids(
            &mut Real,
            &mut found,
            dev.path(),
            false,
            &mut Default::default(),
        );
        assert!(found.iter().all(|p| p.uuid.is_none()));
    }

    #[test]
    fn hint_from_cmdline_and_env_devices() {
        let devices = vec!["/dev/mmcblk0boot1".to_string()];
        let c = Cmdline::parse(b"root=/dev/mmcblk0p2 ro");
        let h = BootDiskHint::new(&c, devices.clone());
        assert_eq!(h.root.as_deref(), Some("/dev/mmcblk0p2"));
        assert_eq!(h.env_devices, ["/dev/mmcblk0boot1"]);
        // Two parties disagreeing on root= name no disk.
        let c = Cmdline::parse(b"root=/dev/mmcblk0p2 root=/dev/sda2");
        assert_eq!(BootDiskHint::new(&c, devices).root, None);
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
        let found = list_partitions(&mut Real, sys.path()).unwrap();
        assert_eq!(found, vec![part("vda1", "vda", 1, "bootconfig")]);
    }

    #[test]
    fn finds_a_partition_by_name_on_the_boot_disk() {
        let sys = tempfile::tempdir().unwrap();
        let class = sys.path().join("class/block");
        std::fs::create_dir_all(&class).unwrap();
        for (disk, n, name) in [
            ("vda", 3, "metadata1"),
            ("vda", 4, "metadata2"),
            ("vdb", 1, "metadata1"),
        ] {
            let dev = format!("{disk}{n}");
            let dir = sys
                .path()
                .join("devices/virtio/block")
                .join(disk)
                .join(&dev);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("uevent"),
                format!("DEVNAME={dev}\nDEVTYPE=partition\nPARTN={n}\nPARTNAME={name}\n"),
            )
            .unwrap();
            std::os::unix::fs::symlink(&dir, class.join(&dev)).unwrap();
        }
        let mut on_vda = Resolved {
            boot_disk: Some("vda".into()),
            ..Default::default()
        };
        let p = find_named(&mut Real, sys.path(), &on_vda, "metadata1").unwrap();
        assert_eq!((p.dev.as_str(), p.number), ("vda3", 3));
        let err = find_named(&mut Real, sys.path(), &on_vda, "metadata9").unwrap_err();
        assert_eq!(err, "no partition named \"metadata9\" on disk vda");
        // No boot disk: the members' disk.
        on_vda.boot_disk = None;
        on_vda.system_a = Some(part("vdb2", "vdb", 2, "rootfs-a"));
        let p = find_named(&mut Real, sys.path(), &on_vda, "metadata1").unwrap();
        assert_eq!(p.dev, "vdb1");
        // Nothing known: the name must be unique across the disks.
        let err = find_named(&mut Real, sys.path(), &Resolved::default(), "metadata1").unwrap_err();
        assert!(
            err.contains("ambiguous") && err.contains("vda3 and vdb1"),
            "{err}"
        );
        let p = find_named(&mut Real, sys.path(), &Resolved::default(), "metadata2").unwrap();
        assert_eq!(p.dev, "vda4");
    }

    #[test]
    fn no_block_class_is_an_empty_list() {
        let sys = tempfile::tempdir().unwrap();
        assert!(list_partitions(&mut Real, sys.path()).unwrap().is_empty());
    }
}
