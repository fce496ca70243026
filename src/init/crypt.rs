//! The crypt stage: opens the LUKS2 containers of `[[crypt]]` once the disk's
//! partitions are there, maps the partitions inside them (what rpi-image-gen's
//! initramfs does with cryptsetup and `kpartx -a -p p`), and resolves the
//! members they hold. No process runs: the header, the keyslot and the
//! partition table are read here and the targets made through `Sys`.
//!
//! A container that does not open leaves its members unresolved, with an
//! error naming it: the persistent partition then falls back to tmpfs (never
//! to the raw, encrypted partition) and a system inside makes its slot
//! unusable. A container holding both systems that does not open ends the
//! boot ([`both_systems_lost`]): no slot is to blame, so none is marked bad.

use super::context::Boot;
use crate::config::{Config, CryptDevice, CryptSpec, PartSpec, Partitions};
use crate::crypt::{keys, kpartx, luks2};
use crate::disk::devices::{self, Partition, Resolved};
use crate::disk::gpt;
use crate::handoff::CryptRecord;
use crate::kernel::sys::{DmLine, Sys};
use crate::kind;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `partitions` without the members that are inside containers: what the
/// wait for the disk looks for, and what resolves among the disk's own
/// partitions.
pub(super) fn outer_names(config: &Config) -> Partitions {
    let mut names = config.partitions.clone();
    for c in &config.crypt {
        for m in &c.members {
            names.set_member(m, PartSpec::name(""));
        }
    }
    names
}

/// Opens every container and resolves the members inside into `resolved`.
/// `outer` are the disk's partitions; `boot_disk` the disk the firmware
/// booted from, where a container found by label must be.
pub(super) fn open_containers<S: Sys + ?Sized>(
    boot: &mut Boot<S>,
    outer: &[Partition],
    resolved: &mut Resolved,
) {
    let specs = boot.config.crypt.clone();
    let boot_disk = resolved.boot_disk.clone();
    for spec in &specs {
        let started = Instant::now();
        match open_one(boot.sys, spec, outer, boot_disk.as_deref()) {
            Ok((record, inside)) => {
                let ms = started.elapsed().as_millis();
                log::info!(
                    "crypt: {} ({}) unlocked in {ms} ms, {} partitions inside",
                    spec.name,
                    record.device,
                    inside.len()
                );
                resolve_inside(&boot.config, spec, &inside, resolved);
                boot.report.handoff.crypt.push(CryptRecord {
                    unlock_ms: Some(ms as u64),
                    ..record
                });
            }
            Err(cause) => {
                boot.report
                    .error(kind::CRYPT, format!("crypt {}: {cause}", spec.name));
                for m in &spec.members {
                    resolved.problems.push(format!(
                        "{m} is inside the container {}, which did not open",
                        spec.name
                    ));
                }
                boot.report.handoff.crypt.push(CryptRecord {
                    name: spec.name.clone(),
                    error: Some(cause),
                    ..CryptRecord::default()
                });
            }
        }
    }
}

/// The cause when a container that holds both systems did not open: no slot
/// can boot, and neither is to blame.
pub(super) fn both_systems_lost(config: &Config, resolved: &Resolved) -> Option<String> {
    config.crypt.iter().find_map(|c| {
        let holds = |m: &str| c.members.iter().any(|x| x == m);
        (holds("system_a")
            && holds("system_b")
            && resolved.system_a.is_none()
            && resolved.system_b.is_none())
        .then(|| {
            format!(
                "the container {} holds both systems and did not open; no slot can boot",
                c.name
            )
        })
    })
}

/// The members of `spec` among the partitions found inside it.
fn resolve_inside(
    config: &Config,
    spec: &CryptSpec,
    inside: &[Partition],
    resolved: &mut Resolved,
) {
    if !spec.partitioned {
        if let (Some(member), Some(part)) = (spec.members.first(), inside.first()) {
            resolved.set_member(member, Some(part.clone()));
        }
        return;
    }
    let mut names = Partitions::absent();
    for m in &spec.members {
        if let Some(s) = config.partitions.member(m) {
            names.set_member(m, s.clone());
        }
    }
    let found = devices::resolve(inside, &names);
    for m in &spec.members {
        resolved.set_member(m, found.member(m).cloned());
    }
    resolved.problems.extend(
        found
            .problems
            .into_iter()
            .map(|p| format!("inside {}: {p}", spec.name)),
    );
}

/// Finds, unlocks and maps one container; its record and the partitions
/// inside (the opened container itself when it has no table). Whatever it
/// mapped is removed again when a later step fails.
fn open_one<S: Sys + ?Sized>(
    sys: &mut S,
    spec: &CryptSpec,
    outer: &[Partition],
    boot_disk: Option<&str>,
) -> Result<(CryptRecord, Vec<Partition>), String> {
    let part = find_container(sys, spec, outer, boot_disk)?;
    let node = part.node();
    let what = format!("{} ({})", spec.name, node.display());
    let key_spec: keys::KeySpec = spec.key.parse().map_err(|e| format!("key: {e}"))?;
    // rpi-otp's id is that of the disk holding the container (hwkey's
    // `block-device-id $CRYPTTAB_SOURCE`).
    let passphrase =
        keys::passphrase(sys, &key_spec, Some(&part.disk)).map_err(|e| format!("{what}: {e}"))?;
    let mut disk = sys
        .open_disk(&node)
        .map_err(|e| format!("{}: open: {e}", node.display()))?;
    let header = luks2::read_header(&mut *disk, &what).map_err(|e| e.to_string())?;
    let limits = luks2::Limits {
        max_memory_kib: match spec.max_memory_kib {
            0 => half_of_ram_kib(sys),
            n => n,
        },
    };
    // Keyslot areas in aes-xts are decrypted here; others (adiantum) by a
    // temporary read-only dm-crypt mapping of the area, as cryptsetup does
    // without AF_ALG.
    let device = node.to_string_lossy().into_owned();
    let temporary = format!("{}-keyslot", spec.name);
    let mut areas = luks2::ViaKernel {
        device: &device,
        read_mapped: |table: &[DmLine], len: usize| read_mapped(sys, &temporary, table, len),
    };
    let unlocked = luks2::unlock_with(&header, &mut *disk, &passphrase, &limits, &mut areas)
        .map_err(|e| e.to_string())?;
    let bytes = disk
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("{}: size: {e}", node.display()))?;
    drop(disk);
    let mut table =
        luks2::crypt_table(&unlocked, &node.to_string_lossy(), bytes).map_err(|e| e.to_string())?;
    let unlocked_slot = unlocked.keyslot();
    drop(unlocked);
    let mapped = sys.dm_create(&spec.name, false, &table);
    // The table's copy of the volume key goes as soon as the kernel has it.
    for line in &mut table {
        zeroize::Zeroize::zeroize(&mut line.params);
    }
    let mapped = mapped.map_err(|e| format!("{what}: device-mapper: {e}"))?;
    mapper_link(sys, &spec.name, &mapped);
    let header_copy = match header.which() {
        luks2::Which::Primary => "primary",
        luks2::Which::Secondary => {
            log::warn!("{what}: the primary LUKS2 header is damaged; opened from the secondary");
            "secondary"
        }
    };
    let record = CryptRecord {
        name: spec.name.clone(),
        device: node.display().to_string(),
        unlock_ms: None,
        uuid: Some(header.uuid().to_string()),
        header: Some(header_copy.into()),
        keyslot: Some(unlocked_slot),
        error: None,
    };
    if !spec.partitioned {
        let whole = Partition {
            dev: format!("mapper/{}", spec.name),
            disk: spec.name.clone(),
            number: 0,
            name: None,
            uuid: None,
        };
        return Ok((record, vec![whole]));
    }
    match map_partitions(sys, &spec.name, &mapped) {
        Ok(inside) => Ok((record, inside)),
        Err(cause) => {
            if let Err(e) = sys.dm_remove(&spec.name) {
                log::warn!("cannot remove {}: {e}", spec.name);
            }
            Err(format!("{what}: {cause}"))
        }
    }
}

/// The first `len` bytes of a temporary read-only mapping `name` with
/// `table`, which is removed again whatever the read gave.
fn read_mapped<S: Sys + ?Sized>(
    sys: &mut S,
    name: &str,
    table: &[DmLine],
    len: usize,
) -> std::io::Result<zeroize::Zeroizing<Vec<u8>>> {
    let node = sys.dm_create(name, true, table)?;
    let mut buf = zeroize::Zeroizing::new(vec![0u8; len]);
    let read = sys
        .open_disk(&node)
        .and_then(|mut d| d.read_exact(&mut buf));
    let removed = sys.dm_remove(name);
    read?;
    removed?;
    Ok(buf)
}

/// The partition holding the container: by its LUKS2 label among the boot
/// disk's partitions (every disk's when none is known), or by reference.
fn find_container<S: Sys + ?Sized>(
    sys: &mut S,
    spec: &CryptSpec,
    outer: &[Partition],
    boot_disk: Option<&str>,
) -> Result<Partition, String> {
    let matching: Vec<&Partition> = match &spec.device {
        CryptDevice::Part(p) => {
            let r = p.reference();
            outer.iter().filter(|x| devices::matches(&r, x)).collect()
        }
        CryptDevice::Label { label } => outer
            .iter()
            .filter(|x| boot_disk.is_none_or(|d| x.disk == d))
            .filter(|x| luks_label(sys, &x.node()).as_deref() == Some(label.as_str()))
            .collect(),
    };
    let described = || match &spec.device {
        CryptDevice::Part(p) => format!("partition {}", p.reference()),
        CryptDevice::Label { label } => format!(
            "LUKS2 label {label:?} on {}",
            boot_disk.map_or("any disk".into(), |d| format!("the boot disk {d}"))
        ),
    };
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!("no {}", described())),
        many => Err(format!(
            "{} is ambiguous: {}; refusing to guess",
            described(),
            many.iter()
                .map(|p| p.node().display().to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        )),
    }
}

/// The label of a LUKS2 header at the start of `node`, if it has one.
fn luks_label<S: Sys + ?Sized>(sys: &mut S, node: &Path) -> Option<String> {
    let mut head = [0u8; 512];
    let mut disk = sys.open_disk(node).ok()?;
    disk.read_exact(&mut head).ok()?;
    luks2::peek_label(&head)
}

/// Maps the GPT inside the opened container `name` (node `mapped`) as
/// `<name>p<N>`; the partitions as the members resolve them.
fn map_partitions<S: Sys + ?Sized>(
    sys: &mut S,
    name: &str,
    mapped: &Path,
) -> Result<Vec<Partition>, String> {
    let dm = mapped
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lba = logical_block_size(sys, &dm);
    let mut disk = sys
        .open_disk(mapped)
        .map_err(|e| format!("{}: open: {e}", mapped.display()))?;
    let table = gpt::find_valid(&mut disk, lba, false)
        .map_err(|e| format!("its partition table ({lba} B blocks): {e}"))?;
    let bytes = disk
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("{}: size: {e}", mapped.display()))?;
    drop(disk);
    let parts = kpartx::partitions(name, &mapped.to_string_lossy(), &table.entries, lba, bytes)
        .map_err(|e| e.to_string())?;
    let mut made: Vec<String> = Vec::new();
    let mut inside = Vec::new();
    for p in parts {
        match sys.dm_create(&p.name, false, &p.table) {
            Ok(node) => {
                mapper_link(sys, &p.name, &node);
                made.push(p.name.clone());
                inside.push(Partition {
                    dev: format!("mapper/{}", p.name),
                    disk: name.to_string(),
                    number: p.number,
                    name: Some(p.part_name),
                    uuid: Some(p.uuid),
                });
            }
            Err(e) => {
                for m in made.iter().rev() {
                    if let Err(e) = sys.dm_remove(m) {
                        log::warn!("cannot remove {m}: {e}");
                    }
                }
                return Err(format!("partition {}: device-mapper: {e}", p.name));
            }
        }
    }
    Ok(inside)
}

/// The logical block size of `dm` (`dm-3`): 4096 when dm-crypt uses 4 KiB
/// sectors, which is the unit of the GPT inside; 512 when sysfs does not say.
fn logical_block_size<S: Sys + ?Sized>(sys: &mut S, dm: &str) -> u64 {
    let path = PathBuf::from(format!("/sys/block/{dm}/queue/logical_block_size"));
    sys.read_file(&path)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|n: &u64| n.is_power_of_two() && (512..=65536).contains(n))
        .unwrap_or(512)
}

/// `/dev/mapper/<name>` -> the node, as udev's dm rules name it: the slot
/// map's `mapper:` entries, the by-slot links and the system use that name.
pub(super) fn mapper_link<S: Sys + ?Sized>(sys: &mut S, name: &str, node: &Path) {
    let link = Path::new("/dev/mapper").join(name);
    let target = Path::new("..").join(node.file_name().unwrap_or_default());
    if let Err(e) = super::setup::replace_link(sys, &link, &target) {
        log::warn!("cannot create {}: {e}", link.display());
    }
}

/// Half of MemTotal, the limit on an argon2 keyslot's memory when the config
/// sets none (libcryptsetup caps its own default the same way).
fn half_of_ram_kib<S: Sys + ?Sized>(sys: &mut S) -> u64 {
    sys.read_file(Path::new("/proc/meminfo"))
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(512 * 1024, |kib| kib / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::devices::fixtures::part;

    fn config(text: &str) -> Config {
        Config::parse(text, "t").unwrap()
    }

    const CRYPT: &str =
        "[[crypt]]\nname = \"osdata_crypt\"\ndevice = { label = \"OSDATA_CRYPT\" }\n\
        members = [\"system_a\", \"system_b\", \"persistent\"]\nkey = \"file:/k\"\n";

    #[test]
    fn the_wait_looks_for_the_members_outside_containers_only() {
        let c = config(CRYPT);
        let outer = outer_names(&c);
        for inside in ["system_a", "system_b", "persistent"] {
            assert_eq!(
                outer.reference(inside),
                crate::config::PartRef::Absent,
                "{inside}"
            );
        }
        assert_eq!(outer.reference("boot_a"), c.partitions.reference("boot_a"));
        assert_eq!(
            outer.reference("bootconfig"),
            c.partitions.reference("bootconfig")
        );
    }

    #[test]
    fn members_resolve_among_the_containers_partitions_only() {
        let c = config(CRYPT);
        let mut resolved = Resolved::default();
        let inside = vec![
            part("mapper/osdata_cryptp1", "osdata_crypt", 1, Some("system_a")),
            part("mapper/osdata_cryptp2", "osdata_crypt", 2, Some("system_b")),
            part(
                "mapper/osdata_cryptp3",
                "osdata_crypt",
                3,
                Some("persistent"),
            ),
        ];
        resolve_inside(&c, &c.crypt[0], &inside, &mut resolved);
        assert_eq!(
            resolved.system_b.as_ref().unwrap().dev,
            "mapper/osdata_cryptp2"
        );
        assert_eq!(
            resolved.persistent.as_ref().unwrap().node(),
            Path::new("/dev/mapper/osdata_cryptp3")
        );
        assert!(resolved.problems.is_empty(), "{:?}", resolved.problems);
        // A member missing inside is a problem naming the container.
        let mut resolved = Resolved::default();
        resolve_inside(&c, &c.crypt[0], &inside[..2], &mut resolved);
        assert!(resolved.persistent.is_none());
        assert!(
            resolved.problems[0].starts_with("inside osdata_crypt: "),
            "{:?}",
            resolved.problems
        );
    }

    #[test]
    fn a_container_holding_both_systems_that_did_not_open_ends_the_boot() {
        let c = config(CRYPT);
        let cause = both_systems_lost(&c, &Resolved::default()).unwrap();
        assert!(cause.contains("osdata_crypt"), "{cause}");
        // cryptdata: the systems are outside, persistent inside.
        let data = config(
            "[[crypt]]\nname = \"userdata_crypt\"\ndevice = { label = \"USERDATA_CRYPT\" }\n\
             members = [\"persistent\"]\nkey = \"file:/k\"\n",
        );
        assert_eq!(both_systems_lost(&data, &Resolved::default()), None);
    }

    #[test]
    fn a_luks2_label_is_read_from_the_binary_header_only() {
        let mut head = [0u8; 512];
        head[..6].copy_from_slice(b"LUKS\xba\xbe");
        head[6..8].copy_from_slice(&[0, 2]);
        head[24..36].copy_from_slice(b"OSDATA_CRYPT");
        assert_eq!(luks2::peek_label(&head).as_deref(), Some("OSDATA_CRYPT"));
        head[7] = 1; // LUKS1 has no label there
        assert_eq!(luks2::peek_label(&head), None);
        assert_eq!(luks2::peek_label(&[0u8; 512]), None);
    }
}
