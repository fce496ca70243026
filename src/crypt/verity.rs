//! dm-verity for the system slots: the superblock `veritysetup format` writes
//! in front of a hash tree, where an appended tree starts (the size of the
//! ext4/erofs/squashfs filesystem before it), the root hash as configured, and
//! the `verity` table line the kernel checks every read against.
//!
//! Sources: cryptsetup's on-disk format (its DMVerity wiki page and
//! lib/verity/verity.c: `struct verity_sb`, `VERITY_read_sb`,
//! `VERITY_hash_offset_block`), the kernel's
//! Documentation/admin-guide/device-mapper/verity.rst (the table's fields)
//! and drivers/md/dm-verity-target.c (what its constructor refuses). Pure:
//! bytes in, values out; the init reads the blocks and creates the target.

use crate::kernel::sys::DmLine;

/// The superblock's size on disk; the tree starts at the next hash block.
pub(crate) const SUPERBLOCK_BYTES: usize = 512;

const SIGNATURE: &[u8; 8] = b"verity\0\0";

/// `sizeof(sb.salt)` in cryptsetup's `struct verity_sb`.
const MAX_SALT: usize = 256;

/// The largest data block the kernel takes: dm-verity-target.c's
/// `verity_ctr` refuses a data block size above `PAGE_SIZE` ("Invalid data
/// device block size"), and 4 KiB is the smallest page size of the arm64
/// kernels slotinit boots (the Pi 5's 16 KiB kernel takes more, the others do
/// not, so such a tree would boot on one kernel only). veritysetup's default
/// and rpi-image-gen's `system.verity` use 4096.
pub(crate) const MAX_DATA_BLOCK: u32 = 4096;

/// The largest hash block: the kernel takes any power of two, cryptsetup's
/// `VERITY_BLOCK_SIZE_OK` up to 512 KiB.
pub(crate) const MAX_HASH_BLOCK: u32 = 512 * 1024;

/// Where an appended tree starts is the filesystem's size rounded up to this
/// (the `hash = "appended"` convention; mksquashfs pads its images to it).
pub(crate) const APPENDED_ALIGN: u64 = 4096;

/// The hash algorithms slotinit sets up, by their kernel crypto API names (as
/// veritysetup writes them into the superblock), with their digest sizes.
/// The kernel must have the one a tree uses: Debian's arm64 kernels (6.1 and
/// 6.12) build sha1 and sha256 in; sha512 is a module on 6.1.
const ALGORITHMS: &[(&str, usize)] = &[
    ("sha1", 20),
    ("sha224", 28),
    ("sha256", 32),
    ("sha384", 48),
    ("sha512", 64),
];

fn digest_bytes(algorithm: &str) -> Option<usize> {
    ALGORITHMS
        .iter()
        .find(|(name, _)| *name == algorithm)
        .map(|(_, len)| *len)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VerityError {
    #[error("{what}: verity superblock cut short ({len} bytes, it has {SUPERBLOCK_BYTES})")]
    Short { what: String, len: usize },
    #[error("{what}: no verity superblock (no \"verity\" signature)")]
    Signature { what: String },
    #[error("{what}: verity superblock version {version} is not supported (only 1)")]
    Version { what: String, version: u32 },
    #[error("{what}: verity hash type {hash_type} is not supported (only 1; 0 is Chrome OS's)")]
    HashType { what: String, hash_type: u32 },
    #[error("{what}: verity {which} block size {size} is not a power of two from 512 to {max}")]
    BlockSize {
        what: String,
        which: &'static str,
        size: u32,
        max: u32,
    },
    #[error("{what}: verity hash algorithm {name:?} is not supported")]
    Algorithm { what: String, name: String },
    #[error("{what}: verity salt of {size} bytes (at most {MAX_SALT})")]
    SaltSize { what: String, size: usize },
    #[error("{what}: verity data blocks {blocks} of {block_size} bytes are not a device size")]
    DataBlocks {
        what: String,
        blocks: u64,
        block_size: u32,
    },
    #[error("{what}: no ext4, erofs or squashfs filesystem at its start")]
    UnknownFilesystem { what: String },
    #[error("{what}: {fs} superblock: {reason}")]
    Filesystem {
        what: String,
        fs: &'static str,
        reason: &'static str,
    },
    #[error("{what}: root hash {text:?}: {reason}")]
    RootHash {
        what: String,
        text: String,
        reason: &'static str,
    },
    #[error("{what}: root hash has {got} hex digits, {algorithm} needs {want}")]
    RootHashLength {
        what: String,
        algorithm: String,
        got: usize,
        want: usize,
    },
    #[error("{what}: the hash tree's top block does not hash to the root hash (a tampered or foreign superblock or tree)")]
    RootMismatch { what: String },
    #[error("{what}: verity top block of {got} bytes, the superblock says {want}")]
    RootBlockSize {
        what: String,
        got: usize,
        want: usize,
    },
    #[error("{what}: no {algorithm} digest to check the root hash with")]
    NoDigest { what: String, algorithm: String },
    #[error("{what}: verity superblock offset {offset} is not a multiple of 512")]
    Offset { what: String, offset: u64 },
    #[error(
        "{what}: the hash tree at byte {offset} overlaps the {data_bytes} bytes of data it verifies"
    )]
    Overlap {
        what: String,
        offset: u64,
        data_bytes: u64,
    },
    #[error("device {device:?} cannot go in a device-mapper table (empty or with blanks)")]
    Device { device: String },
}

/// The veritysetup superblock (cryptsetup's `struct verity_sb`, 512 bytes,
/// little-endian), checked as `VERITY_read_sb` and the kernel's constructor
/// check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Superblock {
    /// The table's `<version>`; always 1 here (the only format supported).
    pub(crate) hash_type: u32,
    /// As `veritysetup dump` prints it (uuid_unparse: lowercase, 8-4-4-4-12).
    pub(crate) uuid: String,
    /// Kernel crypto API name, one of [`ALGORITHMS`].
    pub(crate) algorithm: String,
    pub(crate) data_block_size: u32,
    pub(crate) hash_block_size: u32,
    pub(crate) data_blocks: u64,
    pub(crate) salt: Vec<u8>,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses the superblock at the start of `block` (at least 512 bytes);
/// `what` names the device (or file) in errors. Field offsets: signature 0,
/// version 8, hash_type 12, uuid 16, algorithm 32 (32 bytes, NUL-padded),
/// data_block_size 64, hash_block_size 68, data_blocks 72, salt_size 80,
/// salt 88 (256 bytes).
pub(crate) fn parse_superblock(block: &[u8], what: &str) -> Result<Superblock, VerityError> {
    let what = what.to_string();
    if block.len() < SUPERBLOCK_BYTES {
        return Err(VerityError::Short {
            what,
            len: block.len(),
        });
    }
    if &block[..8] != SIGNATURE {
        return Err(VerityError::Signature { what });
    }
    let version = le32(block, 8);
    if version != 1 {
        return Err(VerityError::Version { what, version });
    }
    // Type 0 (Chrome OS: salt appended, digests not padded) is refused:
    // nothing slotinit boots makes it (veritysetup writes 1 unless told
    // `--format=0`), and one format is one the QEMU tests prove.
    let hash_type = le32(block, 12);
    if hash_type != 1 {
        return Err(VerityError::HashType { what, hash_type });
    }
    let u = &block[16..32];
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        hex(&u[..4]),
        hex(&u[4..6]),
        hex(&u[6..8]),
        hex(&u[8..10]),
        hex(&u[10..])
    );
    let name = &block[32..64];
    let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
    let algorithm = String::from_utf8_lossy(name).into_owned();
    if digest_bytes(&algorithm).is_none() {
        return Err(VerityError::Algorithm {
            what,
            name: algorithm,
        });
    }
    let data_block_size = le32(block, 64);
    let hash_block_size = le32(block, 68);
    for (which, size, max) in [
        ("data", data_block_size, MAX_DATA_BLOCK),
        ("hash", hash_block_size, MAX_HASH_BLOCK),
    ] {
        if !size.is_power_of_two() || !(512..=max).contains(&size) {
            return Err(VerityError::BlockSize {
                what,
                which,
                size,
                max,
            });
        }
    }
    let data_blocks = le64(block, 72);
    // The table's length is data_blocks * data_block_size / 512 sectors: it
    // must be a device size (the kernel refuses a count that overflows).
    if data_blocks == 0
        || data_blocks
            .checked_mul(u64::from(data_block_size))
            .is_none_or(|b| b > i64::MAX as u64)
    {
        return Err(VerityError::DataBlocks {
            what,
            blocks: data_blocks,
            block_size: data_block_size,
        });
    }
    let salt_size = usize::from(le16(block, 80));
    if salt_size > MAX_SALT {
        return Err(VerityError::SaltSize {
            what,
            size: salt_size,
        });
    }
    Ok(Superblock {
        hash_type,
        uuid,
        algorithm,
        data_block_size,
        hash_block_size,
        data_blocks,
        salt: block[88..88 + salt_size].to_vec(),
    })
}

impl Superblock {
    /// Bytes of data the tree covers (the target's size).
    pub(crate) fn data_bytes(&self) -> u64 {
        // Checked in parse_superblock.
        self.data_blocks
            .saturating_mul(u64::from(self.data_block_size))
    }

    /// The table's `<salt>`: hex, or `-` for none (as libcryptsetup's
    /// `get_dm_verity_params` writes it).
    pub(crate) fn salt_hex(&self) -> String {
        if self.salt.is_empty() {
            "-".to_string()
        } else {
            hex(&self.salt)
        }
    }

    fn digest_bytes(&self) -> usize {
        digest_bytes(&self.algorithm).unwrap_or(0)
    }

    /// `<hash_start_block>`: the tree's first block, in hash blocks from the
    /// start of the hash device, for a superblock at byte `superblock_offset`
    /// (`VERITY_hash_offset_block`: the 512-byte superblock, then the tree at
    /// the next hash-block boundary).
    pub(crate) fn hash_start_block(&self, superblock_offset: u64) -> u64 {
        let hbs = u64::from(self.hash_block_size);
        superblock_offset.saturating_add(SUPERBLOCK_BYTES as u64 + hbs - 1) / hbs
    }

    /// Blocks of the tree (`veritysetup dump`'s "Hash blocks"), level by
    /// level as dm-verity-target.c lays it out: each hash block holds the
    /// largest power of two of digests that fits (format 1 pads each digest to
    /// a power of two), levels are added until one block covers the level
    /// below.
    pub(crate) fn hash_blocks(&self) -> u64 {
        let per_block = u64::from(self.hash_block_size) / self.digest_bytes().max(1) as u64;
        let bits = 63 - per_block.max(1).leading_zeros();
        let mut levels = 0u32;
        while bits * levels < 64 && (self.data_blocks - 1) >> (bits * levels) != 0 {
            levels += 1;
        }
        (0..levels)
            .map(|i| {
                let shift = bits * (i + 1);
                if shift >= 64 {
                    1
                } else {
                    (self.data_blocks >> shift) + u64::from(self.data_blocks % (1 << shift) != 0)
                }
            })
            .sum()
    }

    /// The byte of the hash device after the tree of a superblock at
    /// `superblock_offset`: a hash device (or partition) shorter than this
    /// cuts the tree short.
    pub(crate) fn tree_end(&self, superblock_offset: u64) -> u64 {
        (self
            .hash_start_block(superblock_offset)
            .saturating_add(self.hash_blocks()))
        .saturating_mul(u64::from(self.hash_block_size))
    }

    /// Checks a root hash (already [`parse_root_hash`]d) against this
    /// superblock's algorithm; returns it lowercased.
    pub(crate) fn check_root_hash(
        &self,
        root_hash: &str,
        what: &str,
    ) -> Result<String, VerityError> {
        let root = parse_root_hash(root_hash, what)?;
        let want = self.digest_bytes() * 2;
        if root.len() != want {
            return Err(VerityError::RootHashLength {
                what: what.to_string(),
                algorithm: self.algorithm.clone(),
                got: root.len(),
                want,
            });
        }
        Ok(root)
    }
}

/// Where the block that hashes to the root hash is: the tree's top level is
/// its first block, at `hash_start_block` of the hash device
/// (dm-verity-target.c stores the levels root first); a tree of no level
/// (one data block) hashes that data block itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopBlock {
    /// On the data device (one data block) or the hash device.
    pub(crate) on_data_dev: bool,
    /// Its byte offset there.
    pub(crate) offset: u64,
    /// Its length in bytes.
    pub(crate) len: usize,
}

impl Superblock {
    /// Where [`check_top_block`]'s block is, for a superblock at
    /// `superblock_offset` of the hash device.
    pub(crate) fn top_block(&self, superblock_offset: u64) -> TopBlock {
        if self.hash_blocks() == 0 {
            TopBlock {
                on_data_dev: true,
                offset: 0,
                len: self.data_block_size as usize,
            }
        } else {
            TopBlock {
                on_data_dev: false,
                offset: self
                    .hash_start_block(superblock_offset)
                    .saturating_mul(u64::from(self.hash_block_size)),
                len: self.hash_block_size as usize,
            }
        }
    }
}

/// Checks the tree's top block (read where [`Superblock::top_block`] says)
/// against the trusted root hash before the target is set up: format 1's
/// root hash is the digest of the salt followed by that block (verity.rst:
/// "the salt is prepended when hashing"; cryptsetup's verity_hash.c). The
/// kernel checks it only when the first read reaches the top, which under
/// `restart_on_corruption` restarts the machine in the middle of the boot;
/// here a tampered superblock (salt, sizes, offset) or a tree made for other
/// data is refused at activation, with a message, and the slot can be marked
/// bad. `digest(algorithm, parts)` hashes the concatenated parts with the
/// superblock's algorithm (the caller's sha1/sha2; None for one it lacks).
pub(crate) fn check_top_block<D: Fn(&str, &[&[u8]]) -> Option<Vec<u8>>>(
    sb: &Superblock,
    root_hash: &str,
    top: &[u8],
    what: &str,
    digest: D,
) -> Result<(), VerityError> {
    let root = sb.check_root_hash(root_hash, what)?;
    let want = if sb.hash_blocks() == 0 {
        sb.data_block_size
    } else {
        sb.hash_block_size
    } as usize;
    if top.len() != want {
        return Err(VerityError::RootBlockSize {
            what: what.to_string(),
            got: top.len(),
            want,
        });
    }
    let got = digest(&sb.algorithm, &[&sb.salt, top]).ok_or_else(|| VerityError::NoDigest {
        what: what.to_string(),
        algorithm: sb.algorithm.clone(),
    })?;
    if hex(&got) != root {
        return Err(VerityError::RootMismatch {
            what: what.to_string(),
        });
    }
    Ok(())
}

/// The digest [`check_top_block`] takes: `algorithm` (a superblock's) over
/// the concatenated `parts`, with RustCrypto's sha1 and sha2.
pub(crate) fn digest(algorithm: &str, parts: &[&[u8]]) -> Option<Vec<u8>> {
    fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
        let mut d = D::new();
        for p in parts {
            d.update(p);
        }
        d.finalize().to_vec()
    }
    Some(match algorithm {
        "sha1" => run::<sha1::Sha1>(parts),
        "sha224" => run::<sha2::Sha224>(parts),
        "sha256" => run::<sha2::Sha256>(parts),
        "sha384" => run::<sha2::Sha384>(parts),
        "sha512" => run::<sha2::Sha512>(parts),
        _ => return None,
    })
}

/// A root hash as configured (the cmdline's `roothash=`, a roothash file):
/// hex, surrounding whitespace trimmed, as long as the digest of one of the
/// supported algorithms; returned lowercase. [`Superblock::check_root_hash`]
/// checks it against the superblock's algorithm.
pub(crate) fn parse_root_hash(text: &str, what: &str) -> Result<String, VerityError> {
    let trimmed = text.trim();
    let fail = |reason| VerityError::RootHash {
        what: what.to_string(),
        text: trimmed.chars().take(140).collect(),
        reason,
    };
    if trimmed.is_empty() {
        return Err(fail("empty"));
    }
    if !trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(fail("not hexadecimal"));
    }
    if !ALGORITHMS.iter().any(|(_, len)| len * 2 == trimmed.len()) {
        return Err(fail(
            "not the length of a sha1/sha224/sha256/sha384/sha512 digest",
        ));
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// Which filesystem [`fs_size`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filesystem {
    Ext4,
    Erofs,
    Squashfs,
}

const EXT4_MAGIC: u16 = 0xef53;
const EXT4_INCOMPAT_64BIT: u32 = 0x80;
const EROFS_MAGIC: u32 = 0xe0f5_e1e2;
const EROFS_INCOMPAT_48BIT: u32 = 0x80;
const SQUASHFS_MAGIC: u32 = 0x7371_7368;

/// The filesystem at the start of `head` and its exact size in bytes, from
/// its superblock:
/// - ext2/3/4 (superblock at 1024, e2fsprogs lib/ext2fs/ext2_fs.h): magic at
///   0x38, `s_blocks_count_lo` at 0x04, `s_log_block_size` at 0x18 (block =
///   1024 << it), `s_blocks_count_hi` at 0x150 when `s_feature_incompat`
///   (0x60) has 64bit (0x80);
/// - erofs (superblock at 1024, fs/erofs/erofs_fs.h): magic at 0,
///   `blkszbits` at 12, `blocks_lo` at 36, `blocks_hi` at 14 when
///   `feature_incompat` (80) has 48BIT (0x80);
/// - squashfs 4 (superblock at 0, squashfs_fs.h): magic `hsqs` at 0,
///   `s_major` at 28, `bytes_used` at 40.
pub(crate) fn filesystem(head: &[u8], what: &str) -> Result<(Filesystem, u64), VerityError> {
    let bad = |fs, reason| VerityError::Filesystem {
        what: what.to_string(),
        fs,
        reason,
    };
    if head.len() >= 96 && le32(head, 0) == SQUASHFS_MAGIC {
        if le16(head, 28) != 4 {
            return Err(bad("squashfs", "not version 4"));
        }
        let bytes = le64(head, 40);
        if bytes == 0 || bytes > i64::MAX as u64 {
            return Err(bad("squashfs", "bytes_used is not a size"));
        }
        return Ok((Filesystem::Squashfs, bytes));
    }
    let sb = head.get(1024..).unwrap_or(&[]);
    if sb.len() >= 0x154 && le16(sb, 0x38) == EXT4_MAGIC {
        let log = le32(sb, 0x18);
        if log > 6 {
            return Err(bad("ext4", "block size above 64 KiB"));
        }
        let mut blocks = u64::from(le32(sb, 0x04));
        if le32(sb, 0x60) & EXT4_INCOMPAT_64BIT != 0 {
            blocks |= u64::from(le32(sb, 0x150)) << 32;
        }
        return match blocks.checked_mul(1024 << log) {
            Some(bytes) if bytes > 0 && bytes <= i64::MAX as u64 => Ok((Filesystem::Ext4, bytes)),
            _ => Err(bad("ext4", "block count is not a size")),
        };
    }
    if sb.len() >= 84 && le32(sb, 0) == EROFS_MAGIC {
        let bits = u32::from(sb[12]);
        if !(9..=16).contains(&bits) {
            return Err(bad("erofs", "block size outside 512 bytes to 64 KiB"));
        }
        let mut blocks = u64::from(le32(sb, 36));
        if le32(sb, 80) & EROFS_INCOMPAT_48BIT != 0 {
            blocks |= u64::from(le16(sb, 14)) << 32;
        }
        return match blocks.checked_mul(1 << bits) {
            Some(bytes) if bytes > 0 && bytes <= i64::MAX as u64 => Ok((Filesystem::Erofs, bytes)),
            _ => Err(bad("erofs", "block count is not a size")),
        };
    }
    Err(VerityError::UnknownFilesystem {
        what: what.to_string(),
    })
}

/// Where a hash tree appended to the filesystem at the start of `head` (its
/// first 4 KiB or more) starts: the filesystem's size in bytes rounded up to
/// [`APPENDED_ALIGN`]. `what` names the device in errors; an unknown
/// filesystem is one.
pub(crate) fn fs_size(head: &[u8], what: &str) -> Result<u64, VerityError> {
    let (_, bytes) = filesystem(head, what)?;
    Ok(bytes.div_ceil(APPENDED_ALIGN) * APPENDED_ALIGN)
}

/// What a corrupted block does (the table's optional parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnCorruption {
    /// `restart_on_corruption`: the kernel restarts the machine, and the
    /// restart counts against the slot's trial.
    Restart,
    /// No option: the read fails with EIO (the tests).
    Eio,
}

/// Where the data and the tree are, and what to trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params<'a> {
    /// The device the table verifies (the system partition).
    pub(crate) data_dev: &'a str,
    /// The device holding the superblock and tree (the same one when appended).
    pub(crate) hash_dev: &'a str,
    /// Where the superblock is, in bytes of `hash_dev`.
    pub(crate) superblock_offset: u64,
    /// The trusted root hash (hex), from the cmdline or a roothash file.
    pub(crate) root_hash: &'a str,
    pub(crate) on_corruption: OnCorruption,
}

fn table_device(device: &str) -> Result<&str, VerityError> {
    if device.is_empty() || device.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(VerityError::Device {
            device: device.to_string(),
        });
    }
    Ok(device)
}

/// The one `verity` line (verity.rst "Construction Parameters"):
/// `0 <data_blocks * data_block_size / 512> verity <version> <dev> <hash_dev>
/// <data_block_size> <hash_block_size> <num_data_blocks> <hash_start_block>
/// <algorithm> <digest> <salt> [1 restart_on_corruption]`, the fields in the
/// order and spelling libcryptsetup's `get_dm_verity_params` gives them.
///
/// No `ignore_zero_blocks`: it skips verifying blocks whose expected digest
/// is a zero block's and returns zeroes, which only helps images flashed
/// sparsely (Android's); slot images are written whole, and the table stays
/// the one `veritysetup open` makes by default. No `check_at_most_once`
/// either: it would let a block changed online after its first read pass.
pub(crate) fn table(sb: &Superblock, p: &Params) -> Result<Vec<DmLine>, VerityError> {
    let data_dev = table_device(p.data_dev)?;
    let hash_dev = table_device(p.hash_dev)?;
    let root = sb.check_root_hash(p.root_hash, data_dev)?;
    // VERITY_read_sb refuses other offsets.
    if p.superblock_offset % 512 != 0 {
        return Err(VerityError::Offset {
            what: hash_dev.to_string(),
            offset: p.superblock_offset,
        });
    }
    // verity.rst: on one device, the tree must lie outside the data; a
    // superblock claiming more data than precedes it is refused here, before
    // the kernel would hash its own tree as data.
    if data_dev == hash_dev && p.superblock_offset < sb.data_bytes() {
        return Err(VerityError::Overlap {
            what: data_dev.to_string(),
            offset: p.superblock_offset,
            data_bytes: sb.data_bytes(),
        });
    }
    let options = match p.on_corruption {
        OnCorruption::Restart => " 1 restart_on_corruption",
        OnCorruption::Eio => "",
    };
    Ok(vec![DmLine {
        start: 0,
        length: sb.data_bytes() / 512,
        target: "verity".to_string(),
        params: format!(
            "{} {data_dev} {hash_dev} {} {} {} {} {} {root} {}{options}",
            sb.hash_type,
            sb.data_block_size,
            sb.hash_block_size,
            sb.data_blocks,
            sb.hash_start_block(p.superblock_offset),
            sb.algorithm,
            sb.salt_hex(),
        ),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{Read, Seek, SeekFrom};
    use std::path::Path;

    /// Runs a real tool; a missing or failing tool fails the test, naming
    /// the package that brings it (tools/install-deps).
    fn tool(name: &str, args: &[&str]) -> String {
        let run = |path: &str| std::process::Command::new(path).args(args).output();
        let out = match run(name) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => run(&format!("/usr/sbin/{name}")),
            other => other,
        }
        .unwrap_or_else(|e| {
            panic!(
                "{name} could not run ({e}); it comes with cryptsetup-bin, e2fsprogs, \
                 erofs-utils or squashfs-tools (tools/install-deps)"
            )
        });
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} {args:?} failed: {text}");
        text
    }

    /// `Key: value` lines (veritysetup dump/format, dump.erofs, dumpe2fs).
    fn fields(text: &str) -> HashMap<String, String> {
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
        let mut f = std::fs::File::open(path).unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).unwrap();
        buf
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// A sparse file of `bytes`.
    fn sized(path: &Path, bytes: u64) {
        std::fs::File::create(path).unwrap().set_len(bytes).unwrap();
    }

    /// `veritysetup format` with `args`, then our parse of the superblock at
    /// `offset` of `hash` against `veritysetup dump`; returns the superblock
    /// and format's root hash.
    fn format_and_parse(
        args: &[&str],
        data: &Path,
        hash: &Path,
        offset: u64,
    ) -> (Superblock, String) {
        let off = format!("--hash-offset={offset}");
        let mut all = vec!["format", off.as_str()];
        all.extend_from_slice(args);
        all.extend([s(data), s(hash)]);
        let format = fields(&tool("veritysetup", &all));
        let root = format["Root hash"].clone();
        let sb = parse_superblock(&read_at(hash, offset, 512), "test").unwrap();
        let dump = fields(&tool("veritysetup", &["dump", &off, s(hash)]));
        assert_eq!(sb.uuid, dump["UUID"]);
        assert_eq!(sb.hash_type.to_string(), dump["Hash type"]);
        assert_eq!(sb.data_blocks.to_string(), dump["Data blocks"]);
        assert_eq!(sb.data_block_size.to_string(), dump["Data block size"]);
        assert_eq!(sb.hash_block_size.to_string(), dump["Hash block size"]);
        assert_eq!(sb.algorithm, dump["Hash algorithm"]);
        assert_eq!(sb.salt_hex(), dump["Salt"]);
        assert_eq!(sb.hash_blocks().to_string(), dump["Hash blocks"]);
        (sb, root)
    }

    /// The table's fields against veritysetup's own: its debug line
    /// "Hash verification <alg>, data device <d>, data blocks <n>,
    /// hash_device <h>, offset <hash_start_block>." when it verifies the
    /// device through the superblock, and a second verification without the
    /// superblock from nothing but the table's numbers (the tree is found at
    /// exactly our hash_start_block, the salt and root hash are ours).
    fn check_table(line: &DmLine, sb: &Superblock, data: &Path, hash: &Path, offset: u64) {
        let p: Vec<&str> = line.params.split(' ').collect();
        assert_eq!(line.start, 0);
        assert_eq!(line.target, "verity");
        assert_eq!(p[..3], ["1", s(data), s(hash)]);
        let (root, salt) = (p[8], p[9]);
        let debug = tool(
            "veritysetup",
            &[
                "--debug",
                "verify",
                &format!("--hash-offset={offset}"),
                s(data),
                s(hash),
                root,
            ],
        );
        let said = debug
            .lines()
            .find_map(|l| l.strip_prefix("# Hash verification "))
            .unwrap_or_else(|| panic!("no verification line in {debug}"));
        let want = format!(
            "{}, data device {}, data blocks {}, hash_device {}, offset {}.",
            p[7], p[1], p[5], p[2], p[6]
        );
        assert_eq!(said, want);
        // The target's size: the data it verifies, in sectors.
        let sectors = debug
            .lines()
            .find_map(|l| l.strip_prefix("# Data device size required: "))
            .and_then(|l| l.strip_suffix(" bytes."))
            .unwrap()
            .parse::<u64>()
            .unwrap()
            / 512;
        assert_eq!(line.length, sectors);
        tool(
            "veritysetup",
            &[
                "verify",
                "--no-superblock",
                &format!("--format={}", p[0]),
                &format!("--data-block-size={}", p[3]),
                &format!("--hash-block-size={}", p[4]),
                &format!("--data-blocks={}", p[5]),
                &format!(
                    "--hash-offset={}",
                    p[6].parse::<u64>().unwrap() * u64::from(sb.hash_block_size)
                ),
                &format!("--hash={}", p[7]),
                &format!("--salt={salt}"),
                s(data),
                s(hash),
                root,
            ],
        );
    }

    fn params<'a>(data: &'a Path, hash: &'a Path, offset: u64, root: &'a str) -> Params<'a> {
        Params {
            data_dev: s(data),
            hash_dev: s(hash),
            superblock_offset: offset,
            root_hash: root,
            on_corruption: OnCorruption::Restart,
        }
    }

    /// An 8 MiB ext4 (4 KiB blocks, 64bit) with its tree appended: the size
    /// as dumpe2fs reads it, the superblock as veritysetup dumps it, the
    /// table as veritysetup verifies with it, the tree ending the file.
    #[test]
    fn ext4_with_appended_tree() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("system.img");
        sized(&img, 8 << 20);
        tool(
            "mkfs.ext4",
            &["-q", "-F", "-b", "4096", "-O", "64bit", s(&img)],
        );
        let e2 = fields(&tool("dumpe2fs", &["-h", s(&img)]));
        let bytes: u64 =
            e2["Block count"].parse::<u64>().unwrap() * e2["Block size"].parse::<u64>().unwrap();
        assert!(e2["Filesystem features"].contains("64bit"));
        let head = read_at(&img, 0, 4096);
        assert_eq!(filesystem(&head, "t").unwrap(), (Filesystem::Ext4, bytes));
        let offset = fs_size(&head, "t").unwrap();
        assert_eq!(offset, bytes);
        let (sb, root) = format_and_parse(&[], &img, &img, offset);
        assert_eq!((sb.algorithm.as_str(), sb.salt.len()), ("sha256", 32));
        let lines = table(&sb, &params(&img, &img, offset, &root.to_uppercase())).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].params.ends_with(" 1 restart_on_corruption"),
            "{lines:?}"
        );
        assert!(
            lines[0].params.contains(&root),
            "the root hash is lowercased"
        );
        check_table(&lines[0], &sb, &img, &img, offset);
        assert_eq!(std::fs::metadata(&img).unwrap().len(), sb.tree_end(offset));
    }

    /// ext4 with 1 KiB blocks, without 64bit, of a size that is no multiple
    /// of 4 KiB: the tree starts at the size rounded up, the padding counted
    /// as data (`--data-blocks`).
    #[test]
    fn ext4_small_blocks_rounds_up() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("system.img");
        // mke2fs trims a last group this small to one block: 8193 blocks.
        sized(&img, 8300 * 1024);
        tool(
            "mkfs.ext4",
            &["-q", "-F", "-b", "1024", "-O", "^64bit", s(&img)],
        );
        let e2 = fields(&tool("dumpe2fs", &["-h", s(&img)]));
        assert!(!e2["Filesystem features"].contains("64bit"));
        let bytes: u64 =
            e2["Block count"].parse::<u64>().unwrap() * e2["Block size"].parse::<u64>().unwrap();
        assert_ne!(bytes % 4096, 0, "{bytes}");
        let head = read_at(&img, 0, 4096);
        assert_eq!(filesystem(&head, "t").unwrap(), (Filesystem::Ext4, bytes));
        let offset = fs_size(&head, "t").unwrap();
        assert_eq!(offset, bytes.div_ceil(4096) * 4096);
        sized_keep(&img, offset);
        let blocks = format!("--data-blocks={}", offset / 4096);
        let (sb, root) = format_and_parse(&[&blocks], &img, &img, offset);
        let lines = table(&sb, &params(&img, &img, offset, &root)).unwrap();
        check_table(&lines[0], &sb, &img, &img, offset);
        assert_eq!(std::fs::metadata(&img).unwrap().len(), sb.tree_end(offset));
    }

    /// Grows a file, keeping its content.
    fn sized_keep(path: &Path, bytes: u64) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(bytes)
            .unwrap();
    }

    fn tree(dir: &Path) -> std::path::PathBuf {
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/os-release"), "ID=test\n").unwrap();
        // Incompressible, so the image spans many blocks.
        let noise: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(root.join("noise"), noise).unwrap();
        root
    }

    /// erofs with its tree in a file of its own (superblock at 0, tree at
    /// block 1), the size as dump.erofs reads it.
    #[test]
    fn erofs_with_separate_hash_file() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("system.erofs");
        let hash = dir.path().join("system.verity");
        tool("mkfs.erofs", &["--quiet", s(&img), s(&tree(dir.path()))]);
        let dump = fields(&tool("dump.erofs", &["-s", s(&img)]));
        let bytes = dump["Filesystem blocks"].parse::<u64>().unwrap() * 4096;
        let len = std::fs::metadata(&img).unwrap().len();
        assert_eq!(bytes, len);
        let head = read_at(&img, 0, 4096);
        assert_eq!(filesystem(&head, "t").unwrap(), (Filesystem::Erofs, bytes));
        assert_eq!(fs_size(&head, "t").unwrap(), len);
        let (sb, root) = format_and_parse(&[], &img, &hash, 0);
        let p = Params {
            on_corruption: OnCorruption::Eio,
            ..params(&img, &hash, 0, &root)
        };
        let lines = table(&sb, &p).unwrap();
        assert_eq!(lines[0].params.split(' ').nth(6), Some("1"));
        assert!(
            lines[0].params.ends_with(&sb.salt_hex()),
            "no options for Eio"
        );
        check_table(&lines[0], &sb, &img, &hash, 0);
        assert_eq!(std::fs::metadata(&hash).unwrap().len(), sb.tree_end(0));
    }

    /// squashfs: `bytes_used` as unsquashfs reads it; mksquashfs pads the
    /// image to 4 KiB, which is where the appended tree goes.
    #[test]
    fn squashfs_with_appended_tree() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("system.sqfs");
        tool(
            "mksquashfs",
            &[
                s(&tree(dir.path())),
                s(&img),
                "-quiet",
                "-noappend",
                "-no-progress",
            ],
        );
        let info = tool("unsquashfs", &["-s", s(&img)]);
        let bytes: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("Filesystem size "))
            .and_then(|l| l.split(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        let head = read_at(&img, 0, 4096);
        assert_eq!(
            filesystem(&head, "t").unwrap(),
            (Filesystem::Squashfs, bytes)
        );
        let padded = std::fs::metadata(&img).unwrap().len();
        assert_ne!(bytes, padded);
        let offset = fs_size(&head, "t").unwrap();
        assert_eq!(offset, padded);
        let (sb, root) = format_and_parse(&[], &img, &img, offset);
        let lines = table(&sb, &params(&img, &img, offset, &root)).unwrap();
        check_table(&lines[0], &sb, &img, &img, offset);
    }

    /// Other sizes and algorithms, no salt, and a superblock not on a hash
    /// block boundary: the tree starts at the next boundary after its 512
    /// bytes.
    #[test]
    fn small_blocks_sha512_no_salt_odd_offset() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("data");
        let hash = dir.path().join("hash");
        std::fs::write(
            &img,
            (0..300 * 512u32)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        sized(&hash, 0);
        let args = [
            "--hash=sha512",
            "--salt=-",
            "--data-block-size=512",
            "--hash-block-size=1024",
        ];
        let (sb, root) = format_and_parse(&args, &img, &hash, 1536);
        assert_eq!(sb.salt_hex(), "-");
        assert_eq!(sb.hash_start_block(1536), 2);
        let lines = table(&sb, &params(&img, &hash, 1536, &root)).unwrap();
        assert_eq!(lines[0].params.split(' ').nth(9), Some("-"));
        check_table(&lines[0], &sb, &img, &hash, 1536);
        let args = [
            "--hash=sha1",
            "--data-block-size=4096",
            "--hash-block-size=512",
        ];
        let img4 = dir.path().join("data4");
        sized(&img4, 4096 * 300);
        let (sb, root) = format_and_parse(&args, &img4, &hash, 4096);
        assert_eq!(sb.hash_start_block(4096), 9);
        let lines = table(&sb, &params(&img4, &hash, 4096, &root)).unwrap();
        check_table(&lines[0], &sb, &img4, &hash, 4096);
    }

    /// Hash blocks larger than a page are the kernel's to take (only data
    /// blocks are bounded by PAGE_SIZE).
    #[test]
    fn large_hash_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let (img, hash) = (dir.path().join("d"), dir.path().join("h"));
        sized(&img, 4096 * 3000);
        let (sb, root) = format_and_parse(&["--hash-block-size=65536"], &img, &hash, 0);
        assert_eq!(sb.hash_start_block(0), 1);
        let lines = table(&sb, &params(&img, &hash, 0, &root)).unwrap();
        check_table(&lines[0], &sb, &img, &hash, 0);
        assert_eq!(std::fs::metadata(&hash).unwrap().len(), sb.tree_end(0));
    }

    /// The high halves of the block counts, which filesystems this small
    /// never set (mke2fs cannot make a 16 TiB filesystem in a test, nor
    /// mkfs.erofs 1.5 a 48-bit one): counted only with their feature bit.
    #[test]
    fn block_count_high_halves() {
        let mut ext4 = vec![0u8; 4096];
        let sb = &mut ext4[1024..];
        sb[0x38..0x3a].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        sb[0x04..0x08].copy_from_slice(&5u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(filesystem(&ext4, "t").unwrap().1, 5 * 4096);
        ext4[1024 + 0x60] = 0x80;
        assert_eq!(filesystem(&ext4, "t").unwrap().1, ((1 << 32) + 5) * 4096);
        let mut erofs = vec![0u8; 4096];
        let sb = &mut erofs[1024..];
        sb[..4].copy_from_slice(&EROFS_MAGIC.to_le_bytes());
        sb[12] = 12;
        sb[14..16].copy_from_slice(&3u16.to_le_bytes());
        sb[36..40].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(filesystem(&erofs, "t").unwrap().1, 7 * 4096);
        erofs[1024 + 80] = 0x80;
        assert_eq!(filesystem(&erofs, "t").unwrap().1, ((3 << 32) + 7) * 4096);
        assert_eq!(fs_size(&erofs, "t").unwrap(), ((3 << 32) + 7) * 4096);
    }

    /// `openssl dgst` as the digest, so the check is tested against a hash
    /// the real tool computes.
    fn openssl(dir: &Path) -> impl Fn(&str, &[&[u8]]) -> Option<Vec<u8>> + '_ {
        move |alg, parts| {
            let input = dir.join("digest-input");
            std::fs::write(&input, parts.concat()).unwrap();
            let out = std::process::Command::new("openssl")
                .args(["dgst", &format!("-{alg}"), "-binary", s(&input)])
                .output()
                .unwrap_or_else(|e| panic!("openssl could not run ({e}): install openssl"));
            assert!(out.status.success(), "{out:?}");
            Some(out.stdout)
        }
    }

    /// The top block veritysetup wrote hashes (salted, by openssl) to the
    /// root hash veritysetup printed; a salt, offset or tree that is not the
    /// one the root hash was made for is refused before activation.
    #[test]
    fn top_block_against_the_root_hash() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("system.img");
        sized(&img, 4 << 20);
        tool("mkfs.ext4", &["-q", "-F", "-b", "4096", s(&img)]);
        let offset = fs_size(&read_at(&img, 0, 4096), "t").unwrap();
        let (sb, root) = format_and_parse(&[], &img, &img, offset);
        let top = sb.top_block(offset);
        assert_eq!(
            top,
            TopBlock {
                on_data_dev: false,
                offset: offset + 4096,
                len: 4096
            }
        );
        let block = read_at(&img, top.offset, top.len);
        let digest = openssl(dir.path());
        check_top_block(&sb, &root, &block, "/dev/vda4", &digest).unwrap();
        // The salt changed in the superblock.
        let mut sb_bytes = read_at(&img, offset, 512);
        sb_bytes[88] ^= 1;
        let tampered = parse_superblock(&sb_bytes, "t").unwrap();
        assert_eq!(
            check_top_block(&tampered, &root, &block, "/dev/vda4", &digest)
                .unwrap_err()
                .to_string(),
            "/dev/vda4: the hash tree's top block does not hash to the root hash \
             (a tampered or foreign superblock or tree)"
        );
        // The wrong block (the next one), and a block of the wrong size.
        let next = read_at(&img, top.offset + 4096, 4096);
        assert!(matches!(
            check_top_block(&sb, &root, &next, "x", &digest),
            Err(VerityError::RootMismatch { .. })
        ));
        assert!(matches!(
            check_top_block(&sb, &root, &block[..512], "x", &digest),
            Err(VerityError::RootBlockSize {
                got: 512,
                want: 4096,
                ..
            })
        ));
        assert!(matches!(
            check_top_block(&sb, &root, &block, "x", |_, _| None),
            Err(VerityError::NoDigest { .. })
        ));
        // Other algorithms and sizes: sha1, sha512, no salt, 1 KiB hash blocks.
        for args in [
            &["--hash=sha1", "--hash-block-size=1024"][..],
            &["--hash=sha512", "--salt=-"][..],
        ] {
            let hash = dir.path().join("hash");
            sized(&hash, 0);
            let (sb, root) = format_and_parse(args, &img, &hash, 0);
            let top = sb.top_block(0);
            check_top_block(
                &sb,
                &root,
                &read_at(&hash, top.offset, top.len),
                "x",
                &digest,
            )
            .unwrap();
        }
        // One data block: no tree, the root hash is that block's.
        let one = dir.path().join("one");
        std::fs::write(&one, vec![7u8; 4096]).unwrap();
        let hash = dir.path().join("hash1");
        let (sb, root) = format_and_parse(&[], &one, &hash, 0);
        assert_eq!(sb.hash_blocks(), 0);
        let top = sb.top_block(0);
        assert_eq!(
            top,
            TopBlock {
                on_data_dev: true,
                offset: 0,
                len: 4096
            }
        );
        check_top_block(&sb, &root, &read_at(&one, 0, 4096), "x", &digest).unwrap();
    }

    /// Chrome OS's format, as `veritysetup format --format=0` writes it, is
    /// refused by name.
    #[test]
    fn hash_type_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (img, hash) = (dir.path().join("d"), dir.path().join("h"));
        sized(&img, 64 * 4096);
        tool("veritysetup", &["format", "--format=0", s(&img), s(&hash)]);
        let err = parse_superblock(&read_at(&hash, 0, 512), "/dev/vda5").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/vda5: verity hash type 0 is not supported (only 1; 0 is Chrome OS's)"
        );
    }

    /// A superblock veritysetup wrote, edited field by field.
    #[test]
    fn bad_superblocks_are_refused_naming_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let (img, hash) = (dir.path().join("d"), dir.path().join("h"));
        sized(&img, 64 * 4096);
        tool("veritysetup", &["format", s(&img), s(&hash)]);
        let good = read_at(&hash, 0, 512);
        assert!(parse_superblock(&good, "x").is_ok());
        let edit = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            parse_superblock(&b, "/dev/vda5").unwrap_err().to_string()
        };
        assert_eq!(
            edit(0, b"Verity"),
            "/dev/vda5: no verity superblock (no \"verity\" signature)"
        );
        assert_eq!(
            edit(8, &2u32.to_le_bytes()),
            "/dev/vda5: verity superblock version 2 is not supported (only 1)"
        );
        for (at, size, which, max) in [
            (64, 256u32, "data", 4096),
            (64, 3000, "data", 4096),
            (64, 8192, "data", 4096),
            (68, 0, "hash", 524288),
            (68, 1 << 20, "hash", 524288),
        ] {
            assert_eq!(
                edit(at, &size.to_le_bytes()),
                format!("/dev/vda5: verity {which} block size {size} is not a power of two from 512 to {max}")
            );
        }
        assert_eq!(
            edit(32, b"md5\0\0\0\0"),
            "/dev/vda5: verity hash algorithm \"md5\" is not supported"
        );
        assert_eq!(
            edit(80, &257u16.to_le_bytes()),
            "/dev/vda5: verity salt of 257 bytes (at most 256)"
        );
        assert_eq!(
            edit(72, &0u64.to_le_bytes()),
            "/dev/vda5: verity data blocks 0 of 4096 bytes are not a device size"
        );
        assert!(edit(72, &(u64::MAX / 1024).to_le_bytes()).contains("not a device size"));
        assert_eq!(
            parse_superblock(&good[..511], "/dev/vda5")
                .unwrap_err()
                .to_string(),
            "/dev/vda5: verity superblock cut short (511 bytes, it has 512)"
        );
        assert_eq!(
            parse_superblock(&[0u8; 4096], "/dev/vda5").unwrap_err(),
            VerityError::Signature {
                what: "/dev/vda5".into()
            }
        );
    }

    #[test]
    fn unknown_or_broken_filesystems_are_refused() {
        assert_eq!(
            fs_size(&[0u8; 4096], "/dev/vda3").unwrap_err().to_string(),
            "/dev/vda3: no ext4, erofs or squashfs filesystem at its start"
        );
        assert!(fs_size(&[], "x").is_err());
        // An ext4 magic with a block count of zero.
        let mut head = vec![0u8; 4096];
        head[1024 + 0x38..1024 + 0x3a].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        assert_eq!(
            fs_size(&head, "/dev/vda3").unwrap_err().to_string(),
            "/dev/vda3: ext4 superblock: block count is not a size"
        );
        let mut head = vec![0u8; 4096];
        head[..4].copy_from_slice(&SQUASHFS_MAGIC.to_le_bytes());
        head[28] = 3;
        assert_eq!(
            fs_size(&head, "/dev/vda3").unwrap_err().to_string(),
            "/dev/vda3: squashfs superblock: not version 4"
        );
    }

    #[test]
    fn root_hashes_as_configured() {
        let h = "918618B3104EC792c27f78d95aa295dca92e2416e6dce81e29633d968d4efba8";
        assert_eq!(
            parse_root_hash(&format!("  {h}\n"), "x").unwrap(),
            h.to_ascii_lowercase()
        );
        assert_eq!(parse_root_hash(&"ab".repeat(20), "x").unwrap().len(), 40);
        for (text, reason) in [
            ("", "empty"),
            (" \n", "empty"),
            ("xyz", "not hexadecimal"),
            ("ab cd", "not hexadecimal"),
            (
                "abcd",
                "not the length of a sha1/sha224/sha256/sha384/sha512 digest",
            ),
        ] {
            match parse_root_hash(text, "roothash-a") {
                Err(VerityError::RootHash {
                    what, reason: r, ..
                }) => {
                    assert_eq!((what.as_str(), r), ("roothash-a", reason), "{text:?}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let sb = Superblock {
            hash_type: 1,
            uuid: String::new(),
            algorithm: "sha256".into(),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: 2048,
            salt: vec![],
        };
        assert_eq!(
            sb.check_root_hash(&"ab".repeat(20), "/dev/vda4")
                .unwrap_err()
                .to_string(),
            "/dev/vda4: root hash has 40 hex digits, sha256 needs 64"
        );
    }

    /// verity.rst's "Example": `dmsetup create vroot --readonly --table "0
    /// 2097152 verity 1 /dev/sda1 /dev/sda2 4096 4096 262144 1 sha256
    /// 4392712b... 1234000..."` for `veritysetup format /dev/sda1 /dev/sda2`
    /// (the superblock at the start of /dev/sda2, no option: EIO).
    #[test]
    fn the_kernel_docs_example() {
        let mut salt = vec![0u8; 32];
        salt[..2].copy_from_slice(&[0x12, 0x34]);
        let sb = Superblock {
            hash_type: 1,
            uuid: String::new(),
            algorithm: "sha256".into(),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: 262144,
            salt,
        };
        let root = "4392712ba01368efdf14b05c76f9e4df0d53664630b5d48632ed17a137f39076";
        let p = Params {
            data_dev: "/dev/sda1",
            hash_dev: "/dev/sda2",
            superblock_offset: 0,
            root_hash: root,
            on_corruption: OnCorruption::Eio,
        };
        let line = &table(&sb, &p).unwrap()[0];
        assert_eq!(
            format!(
                "{} {} {} {}",
                line.start, line.length, line.target, line.params
            ),
            "0 2097152 verity 1 /dev/sda1 /dev/sda2 4096 4096 262144 1 sha256 \
             4392712ba01368efdf14b05c76f9e4df0d53664630b5d48632ed17a137f39076 \
             1234000000000000000000000000000000000000000000000000000000000000"
        );
    }

    #[test]
    fn tables_that_cannot_work_are_refused() {
        let sb = Superblock {
            hash_type: 1,
            uuid: String::new(),
            algorithm: "sha256".into(),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: 2048,
            salt: vec![0x12, 0x34],
        };
        let root = "00".repeat(32);
        let p = Params {
            data_dev: "/dev/vda4",
            hash_dev: "/dev/vda4",
            superblock_offset: 8 << 20,
            root_hash: &root,
            on_corruption: OnCorruption::Restart,
        };
        let line = &table(&sb, &p).unwrap()[0];
        assert_eq!(
            (line.length, line.params.as_str()),
            (
                16384,
                format!("1 /dev/vda4 /dev/vda4 4096 4096 2048 2049 sha256 {root} 1234 1 restart_on_corruption")
                    .as_str()
            )
        );
        let err = table(
            &sb,
            &Params {
                superblock_offset: (8 << 20) - 4096,
                ..p
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/vda4: the hash tree at byte 8384512 overlaps the 8388608 bytes of data it verifies"
        );
        // In a device of its own, the tree may start anywhere.
        assert!(table(
            &sb,
            &Params {
                hash_dev: "/dev/vda5",
                superblock_offset: 0,
                ..p
            }
        )
        .is_ok());
        assert!(matches!(
            table(
                &sb,
                &Params {
                    superblock_offset: (8 << 20) + 100,
                    ..p
                }
            ),
            Err(VerityError::Offset { .. })
        ));
        for bad in ["", "/dev/my disk", "/dev/vda4\n"] {
            assert_eq!(
                table(&sb, &Params { data_dev: bad, ..p }),
                Err(VerityError::Device { device: bad.into() })
            );
        }
    }
}
