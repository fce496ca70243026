//! dm-verity over the slot's system (`[verity]`): the tree veritysetup
//! appended after the filesystem, checked against the slot's root hash.
//!
//! The target is made in dm-verity's EIO mode and its first block read
//! before the mount: a wrong root hash or a tampered superblock is found
//! here, the slot is unusable with a reason starting `verity_corrupted`
//! (Android's name for it), and the other slot boots (through the firmware
//! where kernels are per slot). Once the system is mounted and has its init,
//! the table is swapped for one with `restart_on_corruption` (unless
//! `on_corruption = "eio"`): a tampered block the running system reads
//! restarts the machine, and in a trial that restart counts against it, as
//! the counter was committed before the mount.

use super::context::Boot;
use crate::config::{OnCorruptionConfig, VerityMode};
use crate::crypt::verity::{self, OnCorruption, Params};
use crate::disk::devices::Partition;
use crate::handoff::VerityRecord;
use crate::kernel::sys::{Disk, DmLine, Sys};
use crate::types::Slot;
use std::io::{Read, SeekFrom};
use std::path::Path;
use std::time::Instant;

/// The reason a slot's verity refuses it, as the fallback records it.
pub(super) const CORRUPTED: &str = "verity_corrupted";
/// Verity required, and the slot has no valid verity data.
pub(super) const MISSING: &str = "verity_missing";

/// A verified system: the partition to mount in place of the raw one.
pub(super) struct Verified {
    pub(super) name: String,
    pub(super) partition: Partition,
    /// The table that goes live once the system is known to boot
    /// (`restart_on_corruption`); None: the EIO table stays.
    restart_table: Option<Vec<DmLine>>,
    record: VerityRecord,
}

/// Sets up verity over `system` for `slot` as `[verity]` asks: Ok(None) when
/// it is off, or optional and the slot has no root hash; Err(cause) when the
/// slot must not be mounted.
pub(super) fn setup<S: Sys + ?Sized>(
    boot: &mut Boot<S>,
    slot: Slot,
    system: &Partition,
) -> Result<Option<Verified>, String> {
    let mode = boot.config.verity.mode;
    if mode == VerityMode::Off {
        return Ok(None);
    }
    let started = Instant::now();
    let (root_hash, source) = match root_hash(boot, slot)? {
        Some(found) => found,
        None if mode == VerityMode::Required => {
            return Err(format!(
                "{MISSING}: verity is required and slot {slot} has no root hash \
                 (roothash=, slotinit.roothash= or verity.roothash_file)"
            ))
        }
        None => {
            log::info!("verity: slot {slot} has no root hash; mounting it unverified (optional)");
            return Ok(None);
        }
    };
    let node = system.node();
    let data = node.to_string_lossy().into_owned();
    let mut disk = boot
        .sys
        .open_disk(&node)
        .map_err(|e| format!("{MISSING}: {data}: open: {e}"))?;
    let (sb, offset) = read_superblock(&mut *disk, &data).map_err(|e| format!("{MISSING}: {e}"))?;
    // The tree's top block against the root hash before anything is mapped:
    // a tampered superblock or tree, or a root hash for other data, is
    // refused here with its reason.
    check_top(&mut *disk, &data, &sb, offset, &root_hash)
        .map_err(|e| format!("{CORRUPTED}: {e} (root hash from {source})"))?;
    drop(disk);
    let params = |on_corruption| Params {
        data_dev: &data,
        hash_dev: &data,
        superblock_offset: offset,
        root_hash: &root_hash,
        on_corruption,
    };
    let eio =
        verity::table(&sb, &params(OnCorruption::Eio)).map_err(|e| format!("{MISSING}: {e}"))?;
    let restart_table = match boot.config.verity.on_corruption {
        OnCorruptionConfig::Restart => Some(
            verity::table(&sb, &params(OnCorruption::Restart))
                .map_err(|e| format!("{MISSING}: {e}"))?,
        ),
        OnCorruptionConfig::Eio => None,
    };
    let name = format!("system_{slot}_verity");
    let mapped = boot
        .sys
        .dm_create(&name, true, &eio)
        .map_err(|e| format!("{CORRUPTED}: {data}: device-mapper refused its verity table: {e}"))?;
    // A read through the target checks the block against the tree up to the
    // root hash: a wrong root hash or a tampered block 0 fails it.
    if let Err(e) = read_first_block(boot.sys, &mapped) {
        remove(boot.sys, &name);
        return Err(format!(
            "{CORRUPTED}: {data}: block 0 does not match root hash {root_hash} ({source}): {e}"
        ));
    }
    super::crypt::mapper_link(boot.sys, &name, &mapped);
    let record = VerityRecord {
        name: name.clone(),
        device: data.clone(),
        root_hash: root_hash.clone(),
        root_hash_source: source,
        on_corruption: match restart_table {
            Some(_) => "restart".into(),
            None => "eio".into(),
        },
        setup_ms: started.elapsed().as_millis() as u64,
    };
    log::info!(
        "verity: slot {slot}: {data} verified as {name} ({}) in {} ms",
        mapped.display(),
        record.setup_ms
    );
    Ok(Some(Verified {
        partition: Partition {
            dev: format!("mapper/{name}"),
            disk: system.disk.clone(),
            number: system.number,
            name: system.name.clone(),
            uuid: system.uuid.clone(),
        },
        name,
        restart_table,
        record,
    }))
}

/// The system mounted and has its init: the restart table goes live.
/// A swap that fails leaves the EIO table (a warning): the system still
/// reads only verified blocks.
pub(super) fn arm<S: Sys + ?Sized>(boot: &mut Boot<S>, verified: Verified) {
    if let Some(table) = &verified.restart_table {
        if let Err(e) = boot.sys.dm_reload(&verified.name, true, table) {
            boot.report.warn(
                crate::kind::VERITY,
                format!(
                    "{}: cannot switch to restart_on_corruption ({e}); corrupted blocks read as I/O errors",
                    verified.name
                ),
            );
        }
    }
    boot.report.handoff.verity = Some(verified.record);
}

/// Takes the target down again (its slot was not used). A filesystem just
/// detached (`umount -l`) may hold it a moment longer: EBUSY is retried for
/// up to half a second.
pub(super) fn remove<S: Sys + ?Sized>(sys: &mut S, name: &str) {
    for _ in 0..25 {
        match sys.dm_remove(name) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                sys.sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => return log::warn!("cannot remove {name}: {e}"),
            Ok(()) => return,
        }
    }
    log::warn!("cannot remove {name}: still busy after 0.5 s");
}

/// The slot's root hash and where it came from. The cmdline speaks for the
/// slot whose kernel runs: every slot this boot mounts where kernels are per
/// slot, else the slot the bootloader named. Then `verity.roothash_file`.
fn root_hash<S: Sys + ?Sized>(
    boot: &mut Boot<S>,
    slot: Slot,
) -> Result<Option<(String, String)>, String> {
    let hinted = boot.report.handoff.hint.as_ref().and_then(|h| h.slot);
    let cmdline_speaks = boot.config.kernels_per_slot() || hinted == Some(slot);
    if cmdline_speaks {
        for key in ["slotinit.roothash", "roothash"] {
            if let Some(text) = boot.cmdline.get(key) {
                let hash =
                    verity::parse_root_hash(text, key).map_err(|e| format!("{MISSING}: {e}"))?;
                return Ok(Some((hash, format!("cmdline {key}="))));
            }
        }
    }
    let template = &boot.config.verity.roothash_file;
    if template.is_empty() {
        return Ok(None);
    }
    let path = template.replace("{slot}", slot.letter());
    match boot.sys.read_file(Path::new(&path)) {
        Ok(Some(bytes)) => {
            let text = String::from_utf8_lossy(&bytes);
            let hash =
                verity::parse_root_hash(&text, &path).map_err(|e| format!("{MISSING}: {e}"))?;
            Ok(Some((hash, path)))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(format!("{MISSING}: {path}: {e}")),
    }
}

/// veritysetup's superblock right after the filesystem (at its size rounded
/// up to 4 KiB), and that offset.
fn read_superblock(disk: &mut dyn Disk, what: &str) -> Result<(verity::Superblock, u64), String> {
    let mut head = vec![0u8; 4096];
    disk.read_exact(&mut head)
        .map_err(|e| format!("{what}: reading its filesystem's superblock: {e}"))?;
    // Already rounded up to 4 KiB: where an appended tree starts.
    let offset = verity::fs_size(&head, what).map_err(|e| e.to_string())?;
    let mut block = vec![0u8; 4096];
    disk.seek(SeekFrom::Start(offset))
        .and_then(|_| disk.read_exact(&mut block))
        .map_err(|e| {
            format!("{what}: no verity superblock at {offset} (after the filesystem): {e}")
        })?;
    let sb = verity::parse_superblock(&block, &format!("{what} at {offset}"))
        .map_err(|e| e.to_string())?;
    let bytes = disk
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("{what}: size: {e}"))?;
    if bytes < sb.tree_end(offset) {
        return Err(format!(
            "{what}: its hash tree ends at {} bytes, beyond the partition's {bytes}",
            sb.tree_end(offset)
        ));
    }
    Ok((sb, offset))
}

/// [`verity::check_top_block`] of the tree at `offset` of `disk` (`what`).
fn check_top(
    disk: &mut dyn Disk,
    what: &str,
    sb: &verity::Superblock,
    offset: u64,
    root_hash: &str,
) -> Result<(), String> {
    let top = sb.top_block(offset);
    let mut block = vec![0u8; top.len];
    disk.seek(SeekFrom::Start(top.offset))
        .and_then(|_| disk.read_exact(&mut block))
        .map_err(|e| {
            format!(
                "{what}: reading the tree's top block at {}: {e}",
                top.offset
            )
        })?;
    verity::check_top_block(sb, root_hash, &block, what, verity::digest).map_err(|e| e.to_string())
}

fn read_first_block<S: Sys + ?Sized>(sys: &mut S, node: &Path) -> std::io::Result<()> {
    let mut disk = sys.open_disk(node)?;
    let mut block = vec![0u8; 4096];
    disk.read_exact(&mut block)
}
