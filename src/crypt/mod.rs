//! Encrypted and verified block devices: LUKS2 containers (rpi-image-gen's
//! `crypt`, `cryptslots` and `cryptdata` provisioning maps), the partitions
//! inside them, and dm-verity system slots. The parsers and table builders
//! here are pure; the init's stages set the targets up through `Sys`.

pub(crate) mod keys;
pub(crate) mod kpartx;
pub(crate) mod luks2;
pub(crate) mod verity;

/// The parsers over bytes, for the fuzz targets (`fuzz/src/crypt.rs`) and
/// their replay under `cargo test` (`tests/fuzz_regressions.rs`): what a
/// compromised system may write where the init reads it (a container's
/// header, the tree after a filesystem). Each returns a summary of what it
/// accepted, or the error the init would report.
pub mod bytes {
    use super::{kpartx, luks2, verity};
    use std::io::Cursor;

    /// A LUKS2 header read from `image` (the start of a partition): its
    /// label, UUID and which copy, or the error.
    pub fn luks2_header(image: &[u8]) -> Result<String, String> {
        let c = luks2::read_header(&mut Cursor::new(image), "fuzz").map_err(|e| e.to_string())?;
        Ok(format!("{} {} {:?}", c.label(), c.uuid(), c.which()))
    }

    /// [`luks2_header`], then an unlock with `passphrase` whose argon2 may
    /// use at most `max_memory_kib`, keyslot areas in process; on success
    /// the dm-crypt table's target and length for an `image`-sized device.
    pub fn luks2_unlock(
        image: &[u8],
        passphrase: &[u8],
        max_memory_kib: u64,
    ) -> Result<String, String> {
        let mut dev = Cursor::new(image);
        let c = luks2::read_header(&mut dev, "fuzz").map_err(|e| e.to_string())?;
        let limits = luks2::Limits { max_memory_kib };
        let u = luks2::unlock_with(&c, &mut dev, passphrase, &limits, &mut luks2::InProcess)
            .map_err(|e| e.to_string())?;
        let table =
            luks2::crypt_table(&u, "/dev/fuzz", image.len() as u64).map_err(|e| e.to_string())?;
        Ok(table
            .iter()
            .map(|l| format!("{} {} {}", l.start, l.length, l.target))
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// The verity superblock at the start of `block` and the table for a
    /// tree right after it on one device, or the error; `root_hash` as the
    /// cmdline would give it.
    pub fn verity_table(
        block: &[u8],
        offset: u64,
        root_hash: &str,
    ) -> Result<(u64, String), String> {
        let sb = verity::parse_superblock(block, "fuzz").map_err(|e| e.to_string())?;
        let root = verity::parse_root_hash(root_hash, "fuzz").map_err(|e| e.to_string())?;
        let params = verity::Params {
            data_dev: "/dev/fuzz",
            hash_dev: "/dev/fuzz",
            superblock_offset: offset,
            root_hash: &root,
            on_corruption: verity::OnCorruption::Restart,
        };
        let table = verity::table(&sb, &params).map_err(|e| e.to_string())?;
        let line = table.first().ok_or("no line")?;
        if line.length != sb.data_bytes() / 512 {
            return Err(format!(
                "length {} for {} data bytes",
                line.length,
                sb.data_bytes()
            ));
        }
        Ok((sb.tree_end(offset), line.params.clone()))
    }

    /// The size of the filesystem starting at `head`, where an appended tree
    /// starts, or the error.
    pub fn fs_size(head: &[u8]) -> Result<u64, String> {
        verity::fs_size(head, "fuzz").map_err(|e| e.to_string())
    }

    /// The partitions kpartx maps for the GPT entries of `disk` (a whole
    /// container image with `lba` byte blocks), or the error.
    pub fn kpartx(disk: &[u8], lba: u64) -> Result<Vec<(String, String)>, String> {
        let table = crate::disk::gpt::find_valid(&mut Cursor::new(disk), lba, false)
            .map_err(|e| e.to_string())?;
        let parts = kpartx::partitions("fuzz", "/dev/fuzz", &table.entries, lba, disk.len() as u64)
            .map_err(|e| e.to_string())?;
        Ok(parts
            .into_iter()
            .map(|p| {
                let line = p
                    .table
                    .first()
                    .map(|l| l.params.clone())
                    .unwrap_or_default();
                (p.name, line)
            })
            .collect())
    }
}
