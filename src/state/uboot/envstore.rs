//! Loads and stores the U-Boot environment on files or block devices, power-safely where the medium allows.
//!
//! Thin I/O around [`crate::state::uboot::envblock`]: read every copy, judge it, and write
//! back in the one order that keeps a valid env on the medium at every instant.
//!
//! - Redundant pair (two files, or two regions of a device): the copy that is
//!   *not* current is overwritten in place with flags = current + 1 and synced;
//!   only once the sync returns does it become current. A torn write leaves a
//!   bad CRC on that copy, and readers (U-Boot, libubootenv, slotinit) fall
//!   back to the untouched one.
//! - Single copy in a file that holds just the env: a temp file in the same
//!   directory is written and fsynced, renamed over the env, and the directory
//!   fsynced. On ext4 and similar that rename is atomic. Not on vfat (where
//!   the env usually lives): FAT has no journal, and freeing the old file's
//!   clusters, moving the directory entry and dropping the temp entry are
//!   separate writes in no fixed order; the power-cut campaign
//!   (tests/qemu/powercut.py) left directory entries on freed clusters within
//!   a dozen cuts. So on FAT an existing full-size env file is overwritten in
//!   place, on its own clusters: no FAT or directory change, and only a torn
//!   write of the data itself (one 16 KiB request) can hurt it. A missing file
//!   is still created through a temp file and a rename (no target to free).
//!   A device that must survive power cuts during every commit needs a
//!   redundant pair, the default. The temp name (`.NAME.slotinit-tmp`) needs
//!   long names, i.e. vfat, not msdos.
//! - Single copy on a block device (or inside a larger file): written in place
//!   and synced. This cannot be power-safe: a torn write leaves a bad CRC and
//!   U-Boot falls back to its built-in default env.
//!
//! Which copy is current is decided exactly as U-Boot (env/common.c
//! `env_import_redund`) and libubootenv (src/uboot_env.c `libuboot_load`)
//! decide it: a copy is valid when it was read whole and its CRC matches;
//! of two valid copies the higher flags win, 0x00 beats 0xFF (wrap-around),
//! equal flags pick the first. The entries play no part: a valid copy whose
//! data area holds something slotinit's strict parser rejects is still the
//! bootloader's env, read with [`envblock::parse_data_lenient`] and its
//! oddities reported in [`LoadedEnv::anomalies`] (issue 11, item 14).
//!
//! Never write back what failed its checks: a load where every copy is
//! corrupt yields no env ([`Health::AllCorrupt`]) and [`store`] refuses to
//! write after it unless told [`IfAllCorrupt::Overwrite`]. A copy that fails
//! the configured layout's CRC but passes the other layout's (U-Boot's usual
//! single-copy `uboot.env` where the config names a pair) makes [`load`] fail
//! with [`EnvStoreError::WrongLayout`] when no copy is valid: the config is
//! wrong, and no write may follow (issue 11, item 15).
//!
//! The env size is bounded ([`envblock::MIN_SIZE`]..=[`envblock::MAX_SIZE`])
//! before anything is allocated, and two copies on one medium must not
//! overlap once offsets from the end are resolved (issue 11, item 17).
//!
//! Writers exclude each other with `flock` (non-blocking; [`EnvStoreError::Locked`]):
//! on the device for [`Medium::Device`], on the directory of the first copy
//! for [`Medium::File`] (the file itself is replaced by rename, so a lock on it
//! would be left behind on the old inode). libubootenv's `fw_setenv` locks
//! `/var/lock/fw_printenv.lock` instead and does not see this lock (the
//! subcommands that write also hold that one across their load and store:
//! `fw_lock`, `cli::hold_foreign_lock`); to catch
//! at least a writer that ran between [`load`] and [`store`], the store
//! re-reads every copy under the lock and refuses ([`EnvStoreError::Changed`])
//! if anything differs from what the load saw (one that writes during the
//! store itself is not caught). [`load`] itself takes no lock: a torn read shows up as a
//! corrupt copy, and the re-read in [`store`] catches it.
//!
//! A caller that can write a copy better than through the filesystem (the
//! FAT bootconfig, see [`crate::state::uboot::store`]) splits [`store`] in two: [`plan`]
//! (checks under the lock, the copy to write and its block), its own write
//! onto the file's blocks on the device ([`map_file`]: FIBMAP; then
//! [`check_extents`], [`write_extents`]), and [`Planned::confirm`], which
//! reads every copy back through the filesystem.
//!
//! MTD flash (character devices, erase before write) is not supported.
//!
//! Every kernel call goes through [`Sys`] (the opens, with O_DIRECT and
//! O_EXCL for the device, flock, statfs, FIBMAP/FIGETBSZ, fsync, rename,
//! unlink); reads and writes then use the File that [`Sys::open`] returned.
//! [`load`], [`store`] and [`read_config`] are [`load_with`], [`store_with`]
//! and [`read_config_with`] on the real kernel, for callers outside the init
//! and the CLI (the interoperability tests).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::kernel::sys::{enoent, errno_of, FileKind, FileLock, Real, Sys};
use crate::state::uboot::envblock::{self, CopyIndex, Env, EnvError, Header, Layout};
use crate::state::uboot::fwenv::{self, FwEnvConfig, FwEnvError};

/// Errors of loading or storing the environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvStoreError {
    #[error("cannot read {}", .path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid {}", .path.display())]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: FwEnvError,
    },
    #[error("cannot open {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot stat {}", .path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is a character device (mtd?); only files and block devices are supported", .path.display())]
    Unsupported { path: PathBuf },
    #[error("cannot find the size of {}", .path.display())]
    Size {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("offset {offset} lies outside the {len} bytes of {}", .path.display())]
    OffsetOutOfRange {
        path: PathBuf,
        offset: i64,
        len: u64,
    },
    #[error("cannot read {} at offset {offset}", .path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock {}", .path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{} is locked by another writer", .path.display())]
    Locked { path: PathBuf },
    #[error("{} changed since the environment was loaded", .path.display())]
    Changed { path: PathBuf },
    #[error(
        "refusing to write: every copy was corrupt when loaded and overwriting was not requested"
    )]
    AllCorrupt,
    #[error("the location differs from the one the environment was loaded from")]
    LocationMismatch,
    #[error(
        "environment size {size:#x} is outside {min:#x}..={max:#x} bytes",
        min = envblock::MIN_SIZE,
        max = envblock::MAX_SIZE
    )]
    InvalidSize { size: usize },
    #[error("the two copies overlap in {}: offsets {first} and {second}, {size:#x} bytes each", .path.display())]
    Overlap {
        path: PathBuf,
        first: u64,
        second: u64,
        size: usize,
    },
    /// No copy is valid as the layout configured, and `path` holds a valid
    /// env of the other layout: the config does not describe the medium.
    /// Nothing may be written (it would destroy the bootloader's env).
    #[error("{} at offset {offset} holds a valid {found}, not the {expected} the config names", .path.display())]
    WrongLayout {
        path: PathBuf,
        offset: u64,
        found: Layout,
        expected: Layout,
    },
    #[error("cannot encode the environment for {}", .path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: EnvError,
    },
    #[error("cannot write {} at offset {offset}", .path.display())]
    Write {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot sync {}", .path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create {}", .path.display())]
    CreateTemp {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot rename {} to {}", .from.display(), .to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot sync directory {}", .path.display())]
    SyncDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot map {} to the blocks of its device", .path.display())]
    Map {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} does not lie on its device as whole blocks", .path.display())]
    Unmappable {
        path: PathBuf,
        #[source]
        source: ExtentError,
    },
    /// The blocks FIBMAP named do not hold the file's bytes.
    #[error(
        "{} at offset {device_offset} does not hold what {} holds at offset {file_offset}",
        .device.display(),
        .path.display()
    )]
    Mismatch {
        device: PathBuf,
        device_offset: u64,
        path: PathBuf,
        file_offset: u64,
    },
    /// After a write onto the copy's sectors, the filesystem reads something else.
    #[error("{} does not read back what was written to its sectors", .path.display())]
    NotWritten { path: PathBuf },
}

/// Why a file's blocks cannot be written as they were mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtentError {
    #[error("block size {0} is not a power of two of at least 512 bytes")]
    BlockSize(u32),
    #[error("{len} bytes are not whole blocks of {block_size} bytes")]
    PartialBlock { len: u64, block_size: u32 },
    #[error("{got} blocks mapped for {len} bytes")]
    Count { got: usize, len: u64 },
    #[error("block {logical} has no place on the device (a hole)")]
    Hole { logical: usize },
    #[error("an extent ends at byte {end}, past the {len} bytes of the copy")]
    Beyond { end: u64, len: u64 },
}

/// What the copies live on; decides locking, creation and the write strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Medium {
    /// Files on a mounted filesystem (typically vfat): a missing file is a
    /// missing copy, and may be created by [`store`].
    File,
    /// A block device (or an image file standing in for one): never created,
    /// never renamed, always written in place.
    Device,
}

/// Where one copy lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyLocation {
    pub(crate) path: PathBuf,
    /// Byte offset; negative counts from the end of the device or file.
    pub(crate) offset: i64,
}

/// Where the environment lives: one copy, or a redundant pair, of `size` bytes each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvLocation {
    pub(crate) medium: Medium,
    pub(crate) size: usize,
    pub(crate) first: CopyLocation,
    pub(crate) second: Option<CopyLocation>,
}

impl EnvLocation {
    /// A file holding exactly one env (U-Boot's `ENV_IS_IN_FAT` without redundancy).
    pub(super) fn single_file(path: impl Into<PathBuf>, size: usize) -> Self {
        Self {
            medium: Medium::File,
            size,
            first: CopyLocation {
                path: path.into(),
                offset: 0,
            },
            second: None,
        }
    }

    /// Two files, each holding one copy (U-Boot's `ENV_FAT_FILE_REDUND`).
    pub(super) fn redundant_files(
        first: impl Into<PathBuf>,
        second: impl Into<PathBuf>,
        size: usize,
    ) -> Self {
        Self {
            medium: Medium::File,
            size,
            first: CopyLocation {
                path: first.into(),
                offset: 0,
            },
            second: Some(CopyLocation {
                path: second.into(),
                offset: 0,
            }),
        }
    }

    /// One or two regions of a block device.
    pub(crate) fn device(
        path: impl Into<PathBuf>,
        offset: i64,
        second_offset: Option<i64>,
        size: usize,
    ) -> Self {
        let path = path.into();
        Self {
            medium: Medium::Device,
            size,
            second: second_offset.map(|offset| CopyLocation {
                path: path.clone(),
                offset,
            }),
            first: CopyLocation { path, offset },
        }
    }

    /// From `fw_env.config`: paths under `/dev/` are devices, anything else a
    /// file, which is how libubootenv tells them apart too (it only singles
    /// out `/dev/mtd` and `/dev/ubi`, which slotinit refuses at open).
    pub fn from_fwenv(config: &FwEnvConfig) -> Self {
        let copy = |e: &fwenv::FwEnvEntry| CopyLocation {
            path: e.device.clone(),
            offset: e.offset,
        };
        let (first, second) = match config {
            FwEnvConfig::Single(a) => (copy(a), None),
            FwEnvConfig::Redundant(a, b) => (copy(a), Some(copy(b))),
        };
        let medium = if first.path.starts_with("/dev") {
            Medium::Device
        } else {
            Medium::File
        };
        Self {
            medium,
            size: config.size(),
            first,
            second,
        }
    }

    /// Single or redundant block layout.
    pub(crate) fn layout(&self) -> Layout {
        if self.second.is_some() {
            Layout::Redundant
        } else {
            Layout::Single
        }
    }

    /// The copies, first then (if any) second.
    pub(crate) fn copies(&self) -> Vec<(CopyIndex, &CopyLocation)> {
        let mut out = vec![(CopyIndex::First, &self.first)];
        if let Some(second) = &self.second {
            out.push((CopyIndex::Second, second));
        }
        out
    }

    fn copy(&self, index: CopyIndex) -> &CopyLocation {
        match (index, &self.second) {
            (CopyIndex::Second, Some(second)) => second,
            _ => &self.first,
        }
    }
}

/// [`read_config_with`] on the real kernel, for the tools and tests that
/// read an `fw_env.config` of their own.
pub fn read_config(path: &Path) -> Result<FwEnvConfig, EnvStoreError> {
    read_config_with(&mut Real, path)
}

/// Reads and parses `fw_env.config`.
fn read_config_with(sys: &mut dyn Sys, path: &Path) -> Result<FwEnvConfig, EnvStoreError> {
    let read_error = |source| EnvStoreError::ReadConfig {
        path: path.to_owned(),
        source,
    };
    let text = crate::kernel::sys::read_text(sys, path)
        .and_then(|text| text.ok_or_else(enoent))
        .map_err(read_error)?;
    fwenv::parse(&text).map_err(|source| EnvStoreError::ParseConfig {
        path: path.to_owned(),
        source,
    })
}

/// Why one copy holds no usable env.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyFault {
    #[error("{} does not exist", .path.display())]
    Missing { path: PathBuf },
    #[error("{} holds only {got} of the {size} bytes at offset {offset}", .path.display())]
    Truncated {
        path: PathBuf,
        offset: u64,
        got: usize,
        size: usize,
    },
    #[error("invalid environment in {} at offset {offset}", .path.display())]
    Invalid {
        path: PathBuf,
        offset: u64,
        #[source]
        source: EnvError,
    },
    /// The CRC fails for the configured layout but matches the other one.
    #[error("{} at offset {offset} holds a {found}, not the {expected} the config names", .path.display())]
    OtherLayout {
        path: PathBuf,
        offset: u64,
        found: Layout,
        expected: Layout,
    },
}

/// The verdict of a [`load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The only copy is valid.
    SingleGood,
    /// Both copies are valid; `current` won the flags comparison.
    BothGood { current: CopyIndex },
    /// One copy is unusable (`corrupt`, because of `fault`); the other is used.
    OneCorrupt {
        current: CopyIndex,
        corrupt: CopyIndex,
        fault: CopyFault,
    },
    /// No copy is usable; there is no env. One fault per copy, in copy order.
    AllCorrupt { faults: Vec<CopyFault> },
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SingleGood => f.write_str("environment valid"),
            Self::BothGood { current } => write!(f, "both copies valid, using the {current}"),
            Self::OneCorrupt {
                current,
                corrupt,
                fault,
            } => write!(
                f,
                "{corrupt} unusable ({}), using the {current}",
                chain(fault)
            ),
            Self::AllCorrupt { faults } => {
                f.write_str("no usable copy")?;
                for fault in faults {
                    write!(f, "; {}", chain(fault))?;
                }
                Ok(())
            }
        }
    }
}

/// `error: cause: cause`, for one-line log messages.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// What one copy looked like on the medium.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Raw {
    Missing,
    /// Up to `size` bytes from `offset`; fewer when the medium of `len`
    /// bytes ended early.
    Bytes {
        len: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
}

/// A copy judged: its fault or its env, and the flags U-Boot would compare
/// (any CRC-valid redundant copy has them, even if its entries are malformed).
struct Judged {
    crc_flags: Option<u8>,
    verdict: Result<Env, CopyFault>,
    /// What [`envblock::parse_data_lenient`] skipped in a CRC-valid copy.
    anomalies: Vec<EnvError>,
}

/// The result of [`load`]: the env (absent when every copy is corrupt), the
/// verdict, and what was read, so that [`store`] can pick the copy to write
/// and notice a concurrent writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedEnv {
    /// `None` exactly when `health` is [`Health::AllCorrupt`].
    pub env: Option<Env>,
    pub health: Health,
    /// Entries of the current copy that the bootloader skips or treats as
    /// deletions (see [`envblock::parse_data_lenient`]); empty normally.
    pub anomalies: Vec<EnvError>,
    location: EnvLocation,
    raws: Vec<Raw>,
    crc_flags: Vec<Option<u8>>,
}

impl LoadedEnv {
    /// True when no copy was usable and there is no env.
    pub fn is_all_corrupt(&self) -> bool {
        matches!(self.health, Health::AllCorrupt { .. })
    }

    /// Flags of the current copy of a redundant pair.
    pub fn current_flags(&self) -> Option<u8> {
        let current = match &self.health {
            Health::BothGood { current } | Health::OneCorrupt { current, .. } => *current,
            Health::SingleGood | Health::AllCorrupt { .. } => return None,
        };
        self.crc_flags.get(current.index()).copied().flatten()
    }
}

/// Whether [`store`] may write after a load that found every copy corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfAllCorrupt {
    Refuse,
    Overwrite,
}

/// [`load_with`] on the real kernel (the tools and tests outside the init
/// and the CLI).
pub fn load(location: &EnvLocation) -> Result<LoadedEnv, EnvStoreError> {
    load_with(&mut Real, location)
}

/// Reads and judges every copy.
///
/// I/O errors other than a missing file are errors: they say nothing about
/// what is on the medium, and treating them as corruption could lead a caller
/// to overwrite a good env.
///
/// A medium where no copy is valid as configured but one holds a valid env of
/// the other layout (a single-copy `uboot.env` where the config names a pair,
/// or the reverse) is [`EnvStoreError::WrongLayout`]: that env is the
/// bootloader's, and the config must change before anything is written.
pub(super) fn load_with(
    sys: &mut dyn Sys,
    location: &EnvLocation,
) -> Result<LoadedEnv, EnvStoreError> {
    let raws = read_all(sys, location)?;
    let loaded = judge(location, raws);
    if let Health::AllCorrupt { faults } = &loaded.health {
        if let Some(CopyFault::OtherLayout {
            path,
            offset,
            found,
            expected,
        }) = faults
            .iter()
            .find(|f| matches!(f, CopyFault::OtherLayout { .. }))
        {
            return Err(EnvStoreError::WrongLayout {
                path: path.clone(),
                offset: *offset,
                found: *found,
                expected: *expected,
            });
        }
    }
    Ok(loaded)
}

/// Refuses a size no bootloader uses before anything is allocated for it.
fn check_size(size: usize) -> Result<(), EnvStoreError> {
    if (envblock::MIN_SIZE..=envblock::MAX_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(EnvStoreError::InvalidSize { size })
    }
}

fn read_all(sys: &mut dyn Sys, location: &EnvLocation) -> Result<Vec<Raw>, EnvStoreError> {
    check_size(location.size)?;
    let raws = location
        .copies()
        .into_iter()
        .map(|(_, copy)| read_copy(sys, location.medium, copy, location.size))
        .collect::<Result<Vec<Raw>, EnvStoreError>>()?;
    // Offsets from the end are only known now, with the medium's length;
    // writing one copy must never touch the other.
    if let (Some(second), [Raw::Bytes { offset: a, .. }, Raw::Bytes { offset: b, .. }]) =
        (&location.second, raws.as_slice())
    {
        if second.path == location.first.path && a.abs_diff(*b) < location.size as u64 {
            return Err(EnvStoreError::Overlap {
                path: second.path.clone(),
                first: *a,
                second: *b,
                size: location.size,
            });
        }
    }
    Ok(raws)
}

fn judge(location: &EnvLocation, raws: Vec<Raw>) -> LoadedEnv {
    let layout = location.layout();
    let judged: Vec<Judged> = location
        .copies()
        .into_iter()
        .zip(&raws)
        .map(|((_, copy), raw)| judge_copy(copy, raw, location.size, layout))
        .collect();
    let mut anomalies: Vec<Vec<EnvError>> = Vec::new();
    let (crc_flags, verdicts): (Vec<Option<u8>>, Vec<Result<Env, CopyFault>>) = judged
        .into_iter()
        .map(|j| {
            anomalies.push(j.anomalies);
            (j.crc_flags, j.verdict)
        })
        .unzip();
    let (env, health) = match layout {
        Layout::Single => match verdicts.into_iter().next() {
            Some(Ok(env)) => (Some(env), Health::SingleGood),
            Some(Err(fault)) => (
                None,
                Health::AllCorrupt {
                    faults: vec![fault],
                },
            ),
            None => (None, Health::AllCorrupt { faults: vec![] }),
        },
        Layout::Redundant => redundant_health(verdicts, &crc_flags),
    };
    let current = match &health {
        Health::SingleGood => Some(CopyIndex::First),
        Health::BothGood { current } | Health::OneCorrupt { current, .. } => Some(*current),
        Health::AllCorrupt { .. } => None,
    };
    LoadedEnv {
        env,
        health,
        anomalies: current
            .and_then(|c| anomalies.into_iter().nth(c.index()))
            .unwrap_or_default(),
        location: location.clone(),
        raws,
        crc_flags,
    }
}

fn redundant_health(
    verdicts: Vec<Result<Env, CopyFault>>,
    crc_flags: &[Option<u8>],
) -> (Option<Env>, Health) {
    // Every copy whose CRC is valid competes by its flags alone, whatever its
    // entries hold: U-Boot's env_import_redund (env/common.c) compares only
    // the CRCs and then the flags, and libubootenv's libuboot_load
    // (src/uboot_env.c) likewise; neither looks at the entries before
    // choosing. A valid copy therefore always has an env (the lenient parse).
    let flags = |i: usize| crc_flags.get(i).copied().flatten();
    let Ok(current) = envblock::select_current(flags(0), flags(1)) else {
        let faults = verdicts.into_iter().filter_map(Result::err).collect();
        return (None, Health::AllCorrupt { faults });
    };
    let mut copies = verdicts.into_iter();
    let (first, second) = (copies.next(), copies.next());
    let (chosen, other) = match current {
        CopyIndex::First => (first, second),
        CopyIndex::Second => (second, first),
    };
    let health = match other {
        Some(Err(fault)) => Health::OneCorrupt {
            current,
            corrupt: current.other(),
            fault,
        },
        _ => Health::BothGood { current },
    };
    (chosen.and_then(Result::ok), health)
}

fn judge_copy(copy: &CopyLocation, raw: &Raw, size: usize, layout: Layout) -> Judged {
    let (offset, bytes) = match raw {
        Raw::Missing => {
            return Judged {
                crc_flags: None,
                anomalies: Vec::new(),
                verdict: Err(CopyFault::Missing {
                    path: copy.path.clone(),
                }),
            }
        }
        Raw::Bytes { offset, bytes, .. } => (*offset, bytes),
    };
    if bytes.len() < size {
        return Judged {
            crc_flags: None,
            anomalies: Vec::new(),
            verdict: Err(CopyFault::Truncated {
                path: copy.path.clone(),
                offset,
                got: bytes.len(),
                size,
            }),
        };
    }
    let invalid = |source| CopyFault::Invalid {
        path: copy.path.clone(),
        offset,
        source,
    };
    match envblock::verify(bytes, layout) {
        // The CRC of the other layout would match: U-Boot built for that
        // layout reads this block as its env (issue 11, item 15).
        Err(EnvError::CrcMismatch { .. }) if envblock::verify(bytes, layout.other()).is_ok() => {
            Judged {
                crc_flags: None,
                anomalies: Vec::new(),
                verdict: Err(CopyFault::OtherLayout {
                    path: copy.path.clone(),
                    offset,
                    found: layout.other(),
                    expected: layout,
                }),
            }
        }
        Err(e) => Judged {
            crc_flags: None,
            anomalies: Vec::new(),
            verdict: Err(invalid(e)),
        },
        Ok(verified) => {
            let (env, anomalies) = envblock::parse_data_lenient(verified.data);
            Judged {
                crc_flags: verified.flags,
                verdict: Ok(env),
                anomalies,
            }
        }
    }
}

fn read_copy(
    sys: &mut dyn Sys,
    medium: Medium,
    copy: &CopyLocation,
    size: usize,
) -> Result<Raw, EnvStoreError> {
    let path = &copy.path;
    let file = match sys.open(path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound && medium == Medium::File => {
            return Ok(Raw::Missing)
        }
        Err(source) => {
            return Err(EnvStoreError::Open {
                path: path.clone(),
                source,
            })
        }
    };
    reject_char_device(&file, path)?;
    let len = medium_len(&file, path)?;
    let offset = resolve_offset(copy.offset, len, path)?;
    let mut bytes = vec![0; size];
    let mut got = 0;
    while got < size {
        // Past the end a device or file reads 0 bytes; that copy is truncated.
        let pos = offset + got as u64;
        match file.read_at(&mut bytes[got..], pos) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(EnvStoreError::Read {
                    path: path.clone(),
                    offset: pos,
                    source,
                })
            }
        }
    }
    bytes.truncate(got);
    Ok(Raw::Bytes { len, offset, bytes })
}

fn reject_char_device(file: &File, path: &Path) -> Result<(), EnvStoreError> {
    let meta = file.metadata().map_err(|source| EnvStoreError::Stat {
        path: path.to_owned(),
        source,
    })?;
    if meta.file_type().is_char_device() {
        return Err(EnvStoreError::Unsupported {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Size of a file or block device; seeking to the end works for both, where
/// `metadata().len()` is 0 for a block device.
fn medium_len(mut file: &File, path: &Path) -> Result<u64, EnvStoreError> {
    file.seek(SeekFrom::End(0))
        .map_err(|source| EnvStoreError::Size {
            path: path.to_owned(),
            source,
        })
}

fn resolve_offset(offset: i64, len: u64, path: &Path) -> Result<u64, EnvStoreError> {
    if let Ok(offset) = u64::try_from(offset) {
        return Ok(offset);
    }
    len.checked_sub(offset.unsigned_abs())
        .ok_or_else(|| EnvStoreError::OffsetOutOfRange {
            path: path.to_owned(),
            offset,
            len,
        })
}

/// Writes `env` durably and returns the state as it now is on the medium.
///
/// `previous` must come from [`load`] (or an earlier [`store`]) of the same
/// `location`; it decides which copy is written and with which flags, and
/// everything must still look as it did then.
pub(super) fn store_with(
    sys: &mut dyn Sys,
    location: &EnvLocation,
    env: &Env,
    previous: &LoadedEnv,
    if_all_corrupt: IfAllCorrupt,
) -> Result<LoadedEnv, EnvStoreError> {
    plan(sys, location, env, previous, if_all_corrupt)?.write(sys, location)
}

/// [`store_with`] on the real kernel (the tools and tests outside the init
/// and the CLI).
pub fn store(
    location: &EnvLocation,
    env: &Env,
    previous: &LoadedEnv,
    if_all_corrupt: IfAllCorrupt,
) -> Result<LoadedEnv, EnvStoreError> {
    store_with(&mut Real, location, env, previous, if_all_corrupt)
}

/// A [`store`] decided and checked but not yet made: the copy to write, the
/// block that goes there, and every copy as re-read under the writers' lock.
/// [`Planned::write`] writes it the usual way; a caller that writes the block
/// itself (onto the copy's sectors of the device, see [`map_file`]) calls
/// [`Planned::confirm`] afterwards.
pub(crate) struct Planned {
    target: CopyIndex,
    block: Vec<u8>,
    header: Header,
    now: Vec<Raw>,
    /// The file holding the writers' flock; closing it lets go.
    lock: Option<FileLock>,
}

/// The first half of [`store`]: encodes `env` for the copy to write, takes the
/// writers' lock and checks that nothing changed since `previous` was loaded.
pub(crate) fn plan(
    sys: &mut dyn Sys,
    location: &EnvLocation,
    env: &Env,
    previous: &LoadedEnv,
    if_all_corrupt: IfAllCorrupt,
) -> Result<Planned, EnvStoreError> {
    if previous.location != *location {
        return Err(EnvStoreError::LocationMismatch);
    }
    if previous.is_all_corrupt() && if_all_corrupt == IfAllCorrupt::Refuse {
        return Err(EnvStoreError::AllCorrupt);
    }
    check_size(location.size)?;
    let (target, header) = target_of(previous);
    let copy = location.copy(target);
    // Encode before touching anything, so an oversized env changes nothing.
    let block = envblock::serialize(env, location.size, header).map_err(|source| {
        EnvStoreError::Encode {
            path: copy.path.clone(),
            source,
        }
    })?;

    let lock = lock(sys, location)?;
    let now = read_all(sys, location)?;
    for ((_, c), (seen, current)) in location
        .copies()
        .into_iter()
        .zip(previous.raws.iter().zip(&now))
    {
        if seen != current {
            return Err(EnvStoreError::Changed {
                path: c.path.clone(),
            });
        }
    }
    Ok(Planned {
        target,
        block,
        header,
        now,
        lock: Some(lock),
    })
}

impl Planned {
    /// The file or device of the copy to write.
    pub(crate) fn path<'a>(&self, location: &'a EnvLocation) -> &'a Path {
        &location.copy(self.target).path
    }

    /// What the copy will hold.
    pub(crate) fn block(&self) -> &[u8] {
        &self.block
    }

    /// The copy's current bytes when it is a file holding exactly one whole
    /// env (offset 0, length = size): a copy whose every byte has its place
    /// on the device already. None for a missing or short copy, a device,
    /// or an env inside a larger file.
    pub(super) fn whole_file(&self, location: &EnvLocation) -> Option<&[u8]> {
        match self.now.get(self.target.index()) {
            Some(Raw::Bytes { len, offset, bytes })
                if location.medium == Medium::File
                    && location.copy(self.target).offset == 0
                    && *offset == 0
                    && *len == location.size as u64
                    && bytes.len() == location.size =>
            {
                Some(bytes)
            }
            _ => None,
        }
    }

    /// Gives up the writers' lock (a file on the filesystem, which must be
    /// closed before that filesystem can be unmounted).
    pub(crate) fn unlock(&mut self) {
        self.lock = None;
    }

    /// The second half of [`store`]: writes the copy and syncs it.
    pub(crate) fn write(
        self,
        sys: &mut dyn Sys,
        location: &EnvLocation,
    ) -> Result<LoadedEnv, EnvStoreError> {
        let copy = location.copy(self.target);
        let now = &self.now;
        let (len, offset) = if location.medium == Medium::File
            && self.header == Header::Single
            && copy.offset == 0
            && now
                .first()
                .is_none_or(|raw| holds_only_env(raw, location.size))
            && !(on_fat(sys, &copy.path)
                && now.first().is_some_and(|raw| is_full(raw, location.size)))
        {
            replace_file(sys, &copy.path, &self.block)?;
            (self.block.len() as u64, 0)
        } else {
            write_in_place(sys, location.medium, copy, &self.block)?
        };
        let mut raws = self.now;
        if let Some(slot) = raws.get_mut(self.target.index()) {
            *slot = Raw::Bytes {
                len,
                offset,
                bytes: self.block,
            };
        }
        Ok(judge(location, raws))
    }

    /// After the caller wrote [`Planned::block`] to the copy by other means:
    /// re-reads every copy and returns the new state, or
    /// [`EnvStoreError::NotWritten`] when the copy does not hold the block
    /// ([`EnvStoreError::Changed`] when another copy changed meanwhile).
    pub(super) fn confirm(
        self,
        sys: &mut dyn Sys,
        location: &EnvLocation,
    ) -> Result<LoadedEnv, EnvStoreError> {
        let raws = read_all(sys, location)?;
        for ((index, c), (before, after)) in location
            .copies()
            .into_iter()
            .zip(self.now.iter().zip(&raws))
        {
            if index == self.target {
                if !matches!(after, Raw::Bytes { bytes, .. } if *bytes == self.block) {
                    return Err(EnvStoreError::NotWritten {
                        path: c.path.clone(),
                    });
                }
            } else if before != after {
                return Err(EnvStoreError::Changed {
                    path: c.path.clone(),
                });
            }
        }
        Ok(judge(location, raws))
    }
}

/// The copy to overwrite and its header.
fn target_of(previous: &LoadedEnv) -> (CopyIndex, Header) {
    if previous.location.second.is_none() {
        return (CopyIndex::First, Header::Single);
    }
    let flags_of = |c: CopyIndex| previous.crc_flags.get(c.index()).copied().flatten();
    match &previous.health {
        Health::BothGood { current } | Health::OneCorrupt { current, .. } => {
            let flags = flags_of(*current).map_or(1, envblock::next_flags);
            (current.other(), Header::Redundant { flags })
        }
        // Nothing is current: no copy passes its CRC, so the first copy
        // written (flags 1) is the only valid one and wins.
        Health::SingleGood | Health::AllCorrupt { .. } => {
            let flags = flags_of(CopyIndex::Second).map_or(1, envblock::next_flags);
            (CopyIndex::First, Header::Redundant { flags })
        }
    }
}

/// statfs(2) `f_type` of vfat and msdos (include/uapi/linux/magic.h).
pub(super) const MSDOS_SUPER_MAGIC: i64 = 0x4d44;

/// True when `path` lies on a FAT filesystem (vfat/msdos), where a rename over
/// an existing file is not crash-safe (see the module docs).
pub(super) fn on_fat(sys: &mut dyn Sys, path: &Path) -> bool {
    sys.statfs_type(&parent_dir(path))
        .is_ok_and(|t| t == MSDOS_SUPER_MAGIC)
}

/// The copy is there at its full size (so an in-place write keeps its clusters).
fn is_full(raw: &Raw, size: usize) -> bool {
    matches!(raw, Raw::Bytes { len, .. } if *len == size as u64)
}

/// A single-copy file may be replaced whole only when it is nothing but the
/// env (or less: missing or truncated); anything after it must survive.
fn holds_only_env(raw: &Raw, size: usize) -> bool {
    match raw {
        Raw::Missing => true,
        Raw::Bytes { len, .. } => *len <= size as u64,
    }
}

/// Exclusive, non-blocking lock serializing slotinit writers (see module docs).
fn lock(sys: &mut dyn Sys, location: &EnvLocation) -> Result<FileLock, EnvStoreError> {
    let path = match location.medium {
        Medium::Device => location.first.path.clone(),
        Medium::File => parent_dir(&location.first.path),
    };
    let file = sys
        .open(&path, OpenOptions::new().read(true))
        .map_err(|source| EnvStoreError::Open {
            path: path.clone(),
            source,
        })?;
    match sys.flock_exclusive(&file) {
        Ok(()) => Ok(FileLock::new(file)),
        Err(e) => match errno_of(&e) {
            Errno::EWOULDBLOCK => Err(EnvStoreError::Locked { path }),
            errno => Err(EnvStoreError::Lock {
                path,
                source: errno,
            }),
        },
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Overwrites one copy where it is, then syncs it; returns the medium's
/// length and the resolved offset.
fn write_in_place(
    sys: &mut dyn Sys,
    medium: Medium,
    copy: &CopyLocation,
    block: &[u8],
) -> Result<(u64, u64), EnvStoreError> {
    let path = &copy.path;
    let mut options = OpenOptions::new();
    options.write(true);
    let created = medium == Medium::File && !sys.exists(path);
    if medium == Medium::File {
        // A redundant copy that was missing is created; a device never is, so
        // a device node that has not appeared yet cannot turn into a file.
        options.create(true).mode(0o644);
    }
    let file = sys
        .open(path, &options)
        .map_err(|source| EnvStoreError::Open {
            path: path.clone(),
            source,
        })?;
    reject_char_device(&file, path)?;
    let len = medium_len(&file, path)?;
    let offset = resolve_offset(copy.offset, len, path)?;
    file.write_all_at(block, offset)
        .map_err(|source| EnvStoreError::Write {
            path: path.clone(),
            offset,
            source,
        })?;
    let is_block_device = file
        .metadata()
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    // On a block device only the data matters (fdatasync); a file's size and
    // allocation are metadata that must be durable too (fsync).
    let synced = if is_block_device {
        sys.fdatasync(&file)
    } else {
        sys.fsync(&file)
    };
    synced.map_err(|source| EnvStoreError::Sync {
        path: path.clone(),
        source,
    })?;
    if created {
        sync_dir(sys, &parent_dir(path))?;
    }
    // Writing past the end of a file grows it.
    Ok((len.max(offset + block.len() as u64), offset))
}

/// Temp file, fsync, rename over `path`, fsync the directory.
fn replace_file(sys: &mut dyn Sys, path: &Path, block: &[u8]) -> Result<(), EnvStoreError> {
    // Replace what a symlink points to, not the link, as libubootenv's realpath does.
    let target = sys.canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let dir = parent_dir(&target);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.slotinit-tmp"));
    // The canonical target is no symlink, so lstat says what stat would; a
    // target that did not resolve (missing, dangling) gets the default.
    let mode = sys
        .lstat(&target)
        .ok()
        .filter(|st| st.kind != FileKind::Symlink)
        .map_or(0o644, |st| st.mode);

    // A temp file left by a power cut during an earlier store is stale.
    match sys.remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(EnvStoreError::CreateTemp { path: temp, source });
        }
    }
    let result = write_temp(sys, &temp, block, mode).and_then(|()| {
        sys.rename(&temp, &target)
            .map_err(|source| EnvStoreError::Rename {
                from: temp.clone(),
                to: target.clone(),
                source,
            })
    });
    if result.is_err() {
        // Best effort: the env itself is untouched, only litter remains.
        let _ = sys.remove_file(&temp);
    }
    result?;
    sync_dir(sys, &dir)
}

fn write_temp(
    sys: &mut dyn Sys,
    temp: &Path,
    block: &[u8],
    mode: u32,
) -> Result<(), EnvStoreError> {
    let mut file = sys
        .open(
            temp,
            OpenOptions::new().write(true).create_new(true).mode(mode),
        )
        .map_err(|source| EnvStoreError::CreateTemp {
            path: temp.to_owned(),
            source,
        })?;
    file.write_all(block)
        .map_err(|source| EnvStoreError::Write {
            path: temp.to_owned(),
            offset: 0,
            source,
        })?;
    sys.fsync(&file).map_err(|source| EnvStoreError::Sync {
        path: temp.to_owned(),
        source,
    })
}

/// A run of a file's bytes that lies contiguously on its filesystem's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Extent {
    file_offset: u64,
    pub(super) device_offset: u64,
    pub(crate) len: u64,
}

/// The extents of the first `len` bytes of a file from FIBMAP's answers:
/// `physical[i]` is the device block (of `block_size` bytes) holding the
/// file's block `i`. Only whole blocks: a copy that ends inside a block would
/// need the rest of that block read and written back, which the filesystem
/// path does better. FIBMAP answers 0 for a hole (fs/ioctl.c `ioctl_fibmap`);
/// on FAT, block 0 is the boot sector, never file data.
pub(super) fn extents(
    block_size: u32,
    physical: &[u32],
    len: u64,
) -> Result<Vec<Extent>, ExtentError> {
    if block_size < 512 || !block_size.is_power_of_two() {
        return Err(ExtentError::BlockSize(block_size));
    }
    let bs = u64::from(block_size);
    if len % bs != 0 {
        return Err(ExtentError::PartialBlock { len, block_size });
    }
    if physical.len() as u64 != len / bs {
        return Err(ExtentError::Count {
            got: physical.len(),
            len,
        });
    }
    let mut out: Vec<Extent> = Vec::new();
    for (logical, &block) in physical.iter().enumerate() {
        if block == 0 {
            return Err(ExtentError::Hole { logical });
        }
        let file_offset = logical as u64 * bs;
        let device_offset = u64::from(block) * bs;
        match out.last_mut() {
            Some(e)
                if e.file_offset + e.len == file_offset
                    && e.device_offset + e.len == device_offset =>
            {
                e.len += bs;
            }
            _ => out.push(Extent {
                file_offset,
                device_offset,
                len: bs,
            }),
        }
    }
    Ok(out)
}

/// Where byte `file_offset` of the file lies on the device.
pub(super) fn device_offset(extents: &[Extent], file_offset: u64) -> Option<u64> {
    extents
        .iter()
        .find(|e| (e.file_offset..e.file_offset + e.len).contains(&file_offset))
        .map(|e| e.device_offset + (file_offset - e.file_offset))
}

/// The first offset where what the device holds (`raw`, in file order)
/// differs from the file's bytes; None when they are equal.
fn first_difference(raw: &[u8], expected: &[u8]) -> Option<u64> {
    raw.iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .or_else(|| (raw.len() != expected.len()).then(|| raw.len().min(expected.len())))
        .map(|i| i as u64)
}

/// Maps the first `len` bytes of the file at `path` to its device with
/// FIBMAP (needs CAP_SYS_RAWIO and a filesystem with bmap, as vfat has).
pub(super) fn map_file(
    sys: &mut dyn Sys,
    path: &Path,
    len: u64,
) -> Result<Vec<Extent>, EnvStoreError> {
    let map_err = |source| EnvStoreError::Map {
        path: path.to_owned(),
        source,
    };
    let unmappable = |source| EnvStoreError::Unmappable {
        path: path.to_owned(),
        source,
    };
    let file = sys
        .open(path, OpenOptions::new().read(true))
        .map_err(|source| EnvStoreError::Open {
            path: path.to_owned(),
            source,
        })?;
    let block_size = sys.figetbsz(&file).map_err(map_err)?;
    if block_size < 512 || !block_size.is_power_of_two() {
        return Err(unmappable(ExtentError::BlockSize(block_size)));
    }
    // len is an env size (at most envblock::MAX_SIZE): a few thousand blocks.
    let count = len / u64::from(block_size);
    let mut physical = Vec::new();
    for logical in 0..count {
        let logical = u32::try_from(logical)
            .map_err(|_| map_err(io::Error::from_raw_os_error(libc::EFBIG)))?;
        physical.push(sys.fibmap(&file, logical).map_err(map_err)?);
    }
    extents(block_size, &physical, len).map_err(unmappable)
}

/// Memory aligned for O_DIRECT: the device's logical block size (512 or
/// 4096 on the media slotinit writes) divides 4096.
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    const ALIGN: usize = 4096;

    fn new(len: usize) -> Self {
        let buf = vec![0u8; len + Self::ALIGN];
        let addr = buf.as_ptr() as usize;
        let start = (Self::ALIGN - addr % Self::ALIGN) % Self::ALIGN;
        Self { buf, start, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// Opens a block device for I/O past its page cache (O_DIRECT): no cached
/// page, stale after the filesystem wrote the same sectors, is read or
/// written back around ours. `write` opens it O_RDWR|O_EXCL, which fails
/// with EBUSY while any filesystem on it is mounted (open(2)).
pub(super) fn open_device(
    sys: &mut dyn Sys,
    path: &Path,
    write: bool,
) -> Result<File, EnvStoreError> {
    let mut options = OpenOptions::new();
    options.read(true);
    let mut flags = libc::O_DIRECT;
    if write {
        options.write(true);
        flags |= libc::O_EXCL;
    }
    sys.open(path, options.custom_flags(flags))
        .map_err(|source| EnvStoreError::Open {
            path: path.to_owned(),
            source,
        })
}

/// Reads the `len` bytes the extents cover from `device`, in file order.
fn read_extents(
    device: &File,
    device_path: &Path,
    extents: &[Extent],
    len: usize,
) -> Result<Vec<u8>, EnvStoreError> {
    let mut out = vec![0u8; len];
    for e in extents {
        let mut buf = Aligned::new(extent_len(e, len, device_path)?);
        device
            .read_exact_at(buf.bytes_mut(), e.device_offset)
            .map_err(|source| EnvStoreError::Read {
                path: device_path.to_owned(),
                offset: e.device_offset,
                source,
            })?;
        let start = e.file_offset as usize;
        if let Some(dst) = out.get_mut(start..start + buf.len) {
            dst.copy_from_slice(buf.bytes());
        }
    }
    Ok(out)
}

/// Checks that the device holds `expected` (the file's bytes) where the
/// extents say: [`EnvStoreError::Mismatch`] otherwise.
pub(super) fn check_extents(
    device: &File,
    device_path: &Path,
    path: &Path,
    extents: &[Extent],
    expected: &[u8],
) -> Result<(), EnvStoreError> {
    let raw = read_extents(device, device_path, extents, expected.len())?;
    match first_difference(&raw, expected) {
        None => Ok(()),
        Some(file_offset) => Err(EnvStoreError::Mismatch {
            device: device_path.to_owned(),
            device_offset: device_offset(extents, file_offset).unwrap_or_default(),
            path: path.to_owned(),
            file_offset,
        }),
    }
}

/// Writes `block` (the file's new bytes) onto the extents of `device`, and
/// syncs it: fdatasync on a block device writes its dirty pages and sends a
/// cache flush (block/fops.c `blkdev_fsync`).
pub(super) fn write_extents(
    sys: &mut dyn Sys,
    device: &File,
    device_path: &Path,
    extents: &[Extent],
    block: &[u8],
) -> Result<(), EnvStoreError> {
    for e in extents {
        let mut buf = Aligned::new(extent_len(e, block.len(), device_path)?);
        let start = e.file_offset as usize;
        if let Some(src) = block.get(start..start + buf.len) {
            buf.bytes_mut().copy_from_slice(src);
        }
        device
            .write_all_at(buf.bytes(), e.device_offset)
            .map_err(|source| EnvStoreError::Write {
                path: device_path.to_owned(),
                offset: e.device_offset,
                source,
            })?;
    }
    sys.fdatasync(device).map_err(|source| EnvStoreError::Sync {
        path: device_path.to_owned(),
        source,
    })
}

/// An extent's length, checked to lie within the `len` bytes of the copy.
fn extent_len(e: &Extent, len: usize, device_path: &Path) -> Result<usize, EnvStoreError> {
    match usize::try_from(e.file_offset.saturating_add(e.len)) {
        Ok(end) if end <= len => Ok(e.len as usize),
        _ => Err(EnvStoreError::Unmappable {
            path: device_path.to_owned(),
            source: ExtentError::Beyond {
                end: e.file_offset.saturating_add(e.len),
                len: len as u64,
            },
        }),
    }
}

fn sync_dir(sys: &mut dyn Sys, dir: &Path) -> Result<(), EnvStoreError> {
    sys.open(dir, OpenOptions::new().read(true))
        .and_then(|d| sys.fsync(&d))
        .map_err(|source| EnvStoreError::SyncDir {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{Flock, FlockArg};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    const SIZE: usize = 0x400;

    type Pairs = &'static [(&'static str, &'static str)];

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied()).unwrap()
    }

    fn redundant_block(e: &Env, flags: u8) -> Vec<u8> {
        envblock::serialize(e, SIZE, Header::Redundant { flags }).unwrap()
    }

    fn corrupt(path: &Path, at: u64) {
        let f = OpenOptions::new()
            .write(true)
            .read(true)
            .open(path)
            .unwrap();
        let mut b = [0u8];
        f.read_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x5A], at).unwrap();
    }

    fn flags_at(path: &Path, offset: u64) -> u8 {
        let mut b = [0u8];
        File::open(path)
            .unwrap()
            .read_at(&mut b, offset + 4)
            .unwrap();
        b[0]
    }

    struct Pair {
        _dir: tempfile::TempDir,
        a: PathBuf,
        b: PathBuf,
        loc: EnvLocation,
    }

    fn pair(first: Option<Vec<u8>>, second: Option<Vec<u8>>) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("uboot.env");
        let b = dir.path().join("uboot-redund.env");
        if let Some(bytes) = first {
            fs::write(&a, bytes).unwrap();
        }
        if let Some(bytes) = second {
            fs::write(&b, bytes).unwrap();
        }
        let loc = EnvLocation::redundant_files(&a, &b, SIZE);
        Pair {
            _dir: dir,
            a,
            b,
            loc,
        }
    }

    #[test]
    fn single_file_fresh_needs_overwrite_then_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uboot.env");
        let loc = EnvLocation::single_file(&path, SIZE);

        let fresh = load(&loc).unwrap();
        assert_eq!(
            fresh.health,
            Health::AllCorrupt {
                faults: vec![CopyFault::Missing { path: path.clone() }]
            }
        );
        assert!(fresh.env.is_none());
        let e = env(&[("BOOT_ORDER", "A B")]);
        assert!(matches!(
            store(&loc, &e, &fresh, IfAllCorrupt::Refuse),
            Err(EnvStoreError::AllCorrupt)
        ));
        assert!(!path.exists(), "a refused store must not create the file");

        let stored = store(&loc, &e, &fresh, IfAllCorrupt::Overwrite).unwrap();
        assert_eq!(stored.health, Health::SingleGood);
        assert_eq!(fs::read(&path).unwrap().len(), SIZE);
        let loaded = load(&loc).unwrap();
        assert_eq!(loaded, stored);
        assert_eq!(loaded.env, Some(e));

        // Chained stores need no reload, and leave no temp file behind.
        let e2 = env(&[("BOOT_ORDER", "B A")]);
        let again = store(&loc, &e2, &stored, IfAllCorrupt::Refuse).unwrap();
        assert_eq!(load(&loc).unwrap(), again);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|d| d.unwrap().file_name())
            .collect();
        assert_eq!(names, ["uboot.env"]);
    }

    #[test]
    fn single_file_keeps_permissions_and_follows_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.env");
        fs::write(
            &real,
            envblock::serialize(&Env::new(), SIZE, Header::Single).unwrap(),
        )
        .unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("uboot.env");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let loc = EnvLocation::single_file(&link, SIZE);
        let loaded = load(&loc).unwrap();
        store(&loc, &env(&[("a", "1")]), &loaded, IfAllCorrupt::Refuse).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            envblock::parse_single(&fs::read(&real).unwrap()).unwrap(),
            env(&[("a", "1")])
        );
    }

    #[test]
    fn single_copy_inside_a_bigger_file_is_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let mut image = vec![0xAAu8; 4 * SIZE];
        image[SIZE..2 * SIZE]
            .copy_from_slice(&envblock::serialize(&Env::new(), SIZE, Header::Single).unwrap());
        fs::write(&path, &image).unwrap();
        let loc = EnvLocation {
            medium: Medium::File,
            size: SIZE,
            first: CopyLocation {
                path: path.clone(),
                offset: SIZE as i64,
            },
            second: None,
        };
        let loaded = load(&loc).unwrap();
        assert_eq!(loaded.health, Health::SingleGood);
        store(&loc, &env(&[("x", "y")]), &loaded, IfAllCorrupt::Refuse).unwrap();
        let after = fs::read(&path).unwrap();
        assert_eq!(after.len(), 4 * SIZE);
        assert_eq!(&after[..SIZE], &image[..SIZE]);
        assert_eq!(&after[2 * SIZE..], &image[2 * SIZE..]);
        assert_eq!(
            envblock::parse_single(&after[SIZE..2 * SIZE]).unwrap(),
            env(&[("x", "y")])
        );
    }

    #[test]
    fn single_copy_at_the_start_of_a_bigger_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let mut image = vec![0xAAu8; 3 * SIZE];
        image[..SIZE]
            .copy_from_slice(&envblock::serialize(&Env::new(), SIZE, Header::Single).unwrap());
        fs::write(&path, &image).unwrap();
        let loc = EnvLocation::single_file(&path, SIZE);
        let loaded = load(&loc).unwrap();
        let stored = store(&loc, &env(&[("x", "y")]), &loaded, IfAllCorrupt::Refuse).unwrap();
        let after = fs::read(&path).unwrap();
        assert_eq!(after.len(), 3 * SIZE, "the rest of the file must survive");
        assert_eq!(&after[SIZE..], &image[SIZE..]);
        assert_eq!(load(&loc).unwrap(), stored);
    }

    #[test]
    fn redundant_files_alternate_with_increasing_flags() {
        let e = env(&[("n", "0")]);
        let p = pair(Some(redundant_block(&e, 1)), Some(redundant_block(&e, 0)));
        let mut loaded = load(&p.loc).unwrap();
        assert_eq!(
            loaded.health,
            Health::BothGood {
                current: CopyIndex::First
            }
        );
        assert_eq!(loaded.current_flags(), Some(1));
        let mut expected_current = CopyIndex::First;
        for n in 1..=5u8 {
            let next = env(&[("n", &n.to_string())]);
            loaded = store(&p.loc, &next, &loaded, IfAllCorrupt::Refuse).unwrap();
            expected_current = expected_current.other();
            assert_eq!(
                loaded.health,
                Health::BothGood {
                    current: expected_current
                }
            );
            assert_eq!(loaded.current_flags(), Some(1 + n));
            assert_eq!(load(&p.loc).unwrap(), loaded);
        }
        assert_eq!(flags_at(&p.a, 0), 5);
        assert_eq!(flags_at(&p.b, 0), 6);
    }

    #[test]
    fn redundant_flags_wrap_around() {
        let e = env(&[("n", "old")]);
        let p = pair(
            Some(redundant_block(&e, 0xFE)),
            Some(redundant_block(&e, 0xFF)),
        );
        let loaded = load(&p.loc).unwrap();
        assert_eq!(
            loaded.health,
            Health::BothGood {
                current: CopyIndex::Second
            }
        );
        let stored = store(&p.loc, &env(&[("n", "new")]), &loaded, IfAllCorrupt::Refuse).unwrap();
        assert_eq!(flags_at(&p.a, 0), 0x00);
        assert_eq!(
            stored.health,
            Health::BothGood {
                current: CopyIndex::First
            }
        );
        assert_eq!(load(&p.loc).unwrap().env, Some(env(&[("n", "new")])));
    }

    #[test]
    fn one_corrupt_copy_is_reported_and_rewritten_first() {
        let good = env(&[("v", "good")]);
        type Check = fn(&CopyFault) -> bool;
        let cases: Vec<(&str, Pair, CopyIndex, Check)> = vec![
            (
                "bad crc in the newer copy",
                {
                    let p = pair(
                        Some(redundant_block(&good, 3)),
                        Some(redundant_block(&env(&[("v", "newer")]), 4)),
                    );
                    corrupt(&p.b, 10);
                    p
                },
                CopyIndex::Second,
                |f| {
                    matches!(
                        f,
                        CopyFault::Invalid {
                            source: EnvError::CrcMismatch { .. },
                            ..
                        }
                    )
                },
            ),
            (
                "second file missing",
                pair(Some(redundant_block(&good, 3)), None),
                CopyIndex::Second,
                |f| matches!(f, CopyFault::Missing { .. }),
            ),
            (
                "first file truncated",
                pair(Some(vec![0; 10]), Some(redundant_block(&good, 3))),
                CopyIndex::First,
                |f| matches!(f, CopyFault::Truncated { got: 10, .. }),
            ),
        ];
        for (what, p, corrupt_copy, check) in cases {
            let loaded = load(&p.loc).unwrap();
            let Health::OneCorrupt {
                current,
                corrupt,
                fault,
            } = &loaded.health
            else {
                panic!("{what}: {:?}", loaded.health);
            };
            assert_eq!(*corrupt, corrupt_copy, "{what}");
            assert_eq!(*current, corrupt_copy.other(), "{what}");
            assert!(check(fault), "{what}: {fault:?}");
            assert_eq!(loaded.env, Some(good.clone()), "{what}");
            assert!(
                loaded.to_owned().health.to_string().contains("unusable"),
                "{what}"
            );

            let stored = store(
                &p.loc,
                &env(&[("v", "fixed")]),
                &loaded,
                IfAllCorrupt::Refuse,
            )
            .unwrap();
            assert_eq!(
                stored.health,
                Health::BothGood {
                    current: corrupt_copy
                },
                "{what}"
            );
            assert_eq!(stored.current_flags(), Some(4), "{what}");
            let path = if corrupt_copy == CopyIndex::First {
                &p.a
            } else {
                &p.b
            };
            assert_eq!(fs::metadata(path).unwrap().len(), SIZE as u64, "{what}");
        }
    }

    #[test]
    fn all_corrupt_refuses_and_changes_nothing() {
        let p = pair(Some(vec![0x11; SIZE]), Some(vec![0x22; SIZE]));
        let before = (fs::read(&p.a).unwrap(), fs::read(&p.b).unwrap());
        let loaded = load(&p.loc).unwrap();
        let Health::AllCorrupt { faults } = &loaded.health else {
            panic!("{:?}", loaded.health);
        };
        assert_eq!(faults.len(), 2);
        assert!(loaded.env.is_none());
        assert!(loaded.is_all_corrupt());
        assert!(matches!(
            store(&p.loc, &Env::new(), &loaded, IfAllCorrupt::Refuse),
            Err(EnvStoreError::AllCorrupt)
        ));
        assert_eq!((fs::read(&p.a).unwrap(), fs::read(&p.b).unwrap()), before);

        let stored = store(
            &p.loc,
            &env(&[("k", "v")]),
            &loaded,
            IfAllCorrupt::Overwrite,
        )
        .unwrap();
        assert!(matches!(
            stored.health,
            Health::OneCorrupt {
                current: CopyIndex::First,
                ..
            }
        ));
        assert_eq!(fs::read(&p.b).unwrap(), before.1);
        assert_eq!(flags_at(&p.a, 0), 1);
    }

    /// A redundant copy with a valid CRC whose data area holds `data`.
    fn raw_redundant(flags: u8, data: &[u8]) -> Vec<u8> {
        let mut raw = vec![0u8; SIZE];
        raw[4] = flags;
        raw[5..5 + data.len()].copy_from_slice(data);
        let crc = crc32fast::hash(&raw[5..]);
        raw[..4].copy_from_slice(&crc.to_le_bytes());
        raw
    }

    // Issue 11, item 14: a CRC-valid copy competes by its flags whatever its
    // entries hold, as in U-Boot's env_import_redund and libubootenv's
    // libuboot_load. Before the fix the newer copy below counted as corrupt,
    // the older one was used, and the next store overwrote the newer one.
    #[test]
    fn crc_valid_copy_with_malformed_entries_competes_by_flags() {
        let older = env(&[("v", "older")]);
        let cases: &[(&str, &[u8], Pairs, EnvError)] = &[
            (
                "entry without =",
                b"v=newer\0junk\0\0",
                &[("v", "newer")],
                EnvError::MissingEquals { offset: 8 },
            ),
            (
                "entry without = deletes the name, as himport_r does",
                b"v=newer\0w=1\0v\0\0",
                &[("w", "1")],
                EnvError::MissingEquals { offset: 12 },
            ),
            (
                "empty name skipped",
                b"=x\0v=newer\0\0",
                &[("v", "newer")],
                EnvError::EmptyName { offset: 0 },
            ),
            (
                "odd bytes kept",
                b"v=\xff\xfe\0junk\0\0",
                &[],
                EnvError::MissingEquals { offset: 5 },
            ),
        ];
        for (what, data, want, anomaly) in cases {
            let p = pair(
                Some(raw_redundant(9, data)),
                Some(redundant_block(&older, 3)),
            );
            let before_first = fs::read(&p.a).unwrap();
            let loaded = load(&p.loc).unwrap();
            assert_eq!(
                loaded.health,
                Health::BothGood {
                    current: CopyIndex::First
                },
                "{what}"
            );
            let mut want_env = env(want);
            if *what == "odd bytes kept" {
                want_env.set_bytes(b"v", b"\xff\xfe").unwrap();
            }
            assert_eq!(loaded.env.as_ref(), Some(&want_env), "{what}");
            assert_eq!(loaded.anomalies, vec![anomaly.clone()], "{what}");
            assert_eq!(loaded.current_flags(), Some(9), "{what}");
            // The next store goes to the other (older) copy, never over the current one.
            let stored = store(&p.loc, &want_env, &loaded, IfAllCorrupt::Refuse).unwrap();
            assert_eq!(fs::read(&p.a).unwrap(), before_first, "{what}");
            assert_eq!(flags_at(&p.b, 0), 10, "{what}");
            assert_eq!(
                stored.health,
                Health::BothGood {
                    current: CopyIndex::Second
                },
                "{what}"
            );
        }
    }

    #[test]
    fn equal_flags_pick_the_first_copy_even_if_malformed() {
        // U-Boot: "flags are equal - almost impossible" -> ENV_VALID (first);
        // libubootenv: current = 1 only if flags[1] > flags[0].
        let p = pair(
            Some(raw_redundant(5, b"junk\0v=first\0\0")),
            Some(redundant_block(&env(&[("v", "second")]), 5)),
        );
        let loaded = load(&p.loc).unwrap();
        assert_eq!(
            loaded.health,
            Health::BothGood {
                current: CopyIndex::First
            }
        );
        assert_eq!(loaded.env, Some(env(&[("v", "first")])));
    }

    #[test]
    fn unterminated_crc_valid_single_copy_is_read_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uboot.env");
        let mut raw = vec![b'x'; SIZE];
        raw[4..8].copy_from_slice(b"a=1\0");
        raw[8..10].copy_from_slice(b"b=");
        let crc = crc32fast::hash(&raw[4..]);
        raw[..4].copy_from_slice(&crc.to_le_bytes());
        fs::write(&path, &raw).unwrap();
        let loaded = load(&EnvLocation::single_file(&path, SIZE)).unwrap();
        assert_eq!(loaded.health, Health::SingleGood);
        let e = loaded.env.unwrap();
        assert_eq!(e.get("a"), Some(&b"1"[..]));
        assert_eq!(e.get("b").map(<[u8]>::len), Some(SIZE - 10));
        assert_eq!(loaded.anomalies, vec![EnvError::Unterminated]);
    }

    #[test]
    fn crc_valid_copy_with_only_malformed_entries_is_current() {
        // Before the fix: all corrupt, and only IfAllCorrupt::Overwrite wrote.
        let p = pair(Some(vec![0; SIZE]), Some(raw_redundant(0xFF, b"junk\0\0")));
        let loaded = load(&p.loc).unwrap();
        assert!(matches!(
            loaded.health,
            Health::OneCorrupt {
                current: CopyIndex::Second,
                corrupt: CopyIndex::First,
                ..
            }
        ));
        assert_eq!(loaded.env, Some(Env::new()));
        store(&p.loc, &env(&[("k", "v")]), &loaded, IfAllCorrupt::Refuse).unwrap();
        // 0xFF + 1 wraps to 0x00, which beats 0xFF in U-Boot's rule.
        assert_eq!(flags_at(&p.a, 0), 0x00);
        assert_eq!(load(&p.loc).unwrap().env, Some(env(&[("k", "v")])));
    }

    // Issue 11, item 15: a single-copy env where the config names a pair (and
    // the reverse) is a distinct error, and nothing can be written.
    #[test]
    fn other_layout_is_a_distinct_error() {
        let e = env(&[("bootcmd", "run x")]);
        let single = envblock::serialize(&e, SIZE, Header::Single).unwrap();
        for (what, p) in [
            ("second missing", pair(Some(single.clone()), None)),
            ("second empty", pair(Some(single.clone()), Some(Vec::new()))),
            (
                "second zeroed",
                pair(Some(single.clone()), Some(vec![0; SIZE])),
            ),
            (
                "single copy in the second file",
                pair(None, Some(single.clone())),
            ),
        ] {
            let err = load(&p.loc).unwrap_err();
            assert!(
                matches!(
                    &err,
                    EnvStoreError::WrongLayout {
                        found: Layout::Single,
                        expected: Layout::Redundant,
                        offset: 0,
                        ..
                    }
                ),
                "{what}: {err}"
            );
            assert!(err.to_string().contains("single-copy env"), "{what}: {err}");
        }
        // A redundant copy where the config names a single copy.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uboot.env");
        fs::write(&path, redundant_block(&e, 1)).unwrap();
        let err = load(&EnvLocation::single_file(&path, SIZE)).unwrap_err();
        assert!(
            matches!(
                &err,
                EnvStoreError::WrongLayout {
                    found: Layout::Redundant,
                    expected: Layout::Single,
                    ..
                }
            ),
            "{err}"
        );
        // One valid copy of the pair: the layout is right, the other copy is
        // just stale (U-Boot's next saveenv rewrites it too).
        let p = pair(Some(single), Some(redundant_block(&e, 1)));
        let loaded = load(&p.loc).unwrap();
        assert!(
            matches!(
                &loaded.health,
                Health::OneCorrupt {
                    fault: CopyFault::OtherLayout { .. },
                    ..
                }
            ),
            "{:?}",
            loaded.health
        );
    }

    // Issue 11, item 17: an absurd size is refused before any allocation.
    #[test]
    fn absurd_size_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uboot.env");
        fs::write(&path, [0u8; 64]).unwrap();
        for size in [0x7fff_ffff_ffff, envblock::MAX_SIZE + 1, 4] {
            let loc = EnvLocation::single_file(&path, size);
            assert!(
                matches!(load(&loc), Err(EnvStoreError::InvalidSize { size: s }) if s == size),
                "{size:#x}"
            );
        }
    }

    #[test]
    fn copies_overlapping_once_resolved_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        fs::write(&path, vec![0u8; 3 * SIZE / 2]).unwrap();
        // 0 and -SIZE on a device of 1.5 * SIZE: the copies share SIZE / 2 bytes.
        let loc = EnvLocation::device(&path, 0, Some(-(SIZE as i64)), SIZE);
        assert!(matches!(
            load(&loc),
            Err(EnvStoreError::Overlap { first: 0, .. })
        ));
        fs::write(&path, vec![0u8; 2 * SIZE]).unwrap();
        assert!(load(&loc).is_ok());
    }

    #[test]
    fn device_regions_with_negative_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mmcblk0");
        let total = 8 * SIZE;
        let mut image = vec![0xEEu8; total];
        let e = env(&[("BOOT_ORDER", "A B")]);
        image[total - 2 * SIZE..total - SIZE].copy_from_slice(&redundant_block(&e, 7));
        image[total - SIZE..].copy_from_slice(&redundant_block(&e, 6));
        fs::write(&path, &image).unwrap();
        let loc = EnvLocation::device(&path, -2 * SIZE as i64, Some(-(SIZE as i64)), SIZE);
        let loaded = load(&loc).unwrap();
        assert_eq!(
            loaded.health,
            Health::BothGood {
                current: CopyIndex::First
            }
        );
        let stored = store(
            &loc,
            &env(&[("BOOT_ORDER", "B A")]),
            &loaded,
            IfAllCorrupt::Refuse,
        )
        .unwrap();
        assert_eq!(
            stored.health,
            Health::BothGood {
                current: CopyIndex::Second
            }
        );
        let after = fs::read(&path).unwrap();
        assert_eq!(after.len(), total);
        assert_eq!(&after[..total - 2 * SIZE], &image[..total - 2 * SIZE]);
        assert_eq!(
            &after[total - 2 * SIZE..total - SIZE],
            &image[total - 2 * SIZE..total - SIZE]
        );
        assert_eq!(after[total - SIZE + 4], 8);
    }

    #[test]
    fn device_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("mmcblk9");
        assert!(matches!(
            load(&EnvLocation::device(&missing, 0, None, SIZE)),
            Err(EnvStoreError::Open { .. })
        ));
        let small = dir.path().join("small");
        fs::write(&small, [0u8; 16]).unwrap();
        assert!(matches!(
            load(&EnvLocation::device(&small, -17, None, SIZE)),
            Err(EnvStoreError::OffsetOutOfRange {
                offset: -17,
                len: 16,
                ..
            })
        ));
        let short = load(&EnvLocation::device(&small, 0, None, SIZE)).unwrap();
        assert!(matches!(
            &short.health,
            Health::AllCorrupt { faults } if matches!(faults[..], [CopyFault::Truncated { got: 16, .. }])
        ));
        assert!(matches!(
            load(&EnvLocation::device("/dev/null", 0, None, SIZE)),
            Err(EnvStoreError::Unsupported { .. })
        ));
    }

    #[test]
    fn concurrent_change_is_detected_and_nothing_written() {
        let e = env(&[("n", "1")]);
        let p = pair(Some(redundant_block(&e, 1)), Some(redundant_block(&e, 2)));
        let loaded = load(&p.loc).unwrap();
        // Another writer (fw_setenv) rewrites the non-current copy meanwhile.
        fs::write(&p.a, redundant_block(&env(&[("n", "other")]), 3)).unwrap();
        let before = fs::read(&p.a).unwrap();
        let err = store(
            &p.loc,
            &env(&[("n", "mine")]),
            &loaded,
            IfAllCorrupt::Refuse,
        )
        .unwrap_err();
        assert!(
            matches!(&err, EnvStoreError::Changed { path } if *path == p.a),
            "{err}"
        );
        assert_eq!(fs::read(&p.a).unwrap(), before);
    }

    #[test]
    fn locked_store_is_a_distinct_error() {
        let e = env(&[("n", "1")]);
        let p = pair(Some(redundant_block(&e, 1)), Some(redundant_block(&e, 2)));
        let loaded = load(&p.loc).unwrap();
        let dir = File::open(p.a.parent().unwrap()).unwrap();
        let held = Flock::lock(dir, FlockArg::LockExclusiveNonblock).unwrap();
        let err = store(&p.loc, &e, &loaded, IfAllCorrupt::Refuse).unwrap_err();
        assert!(matches!(err, EnvStoreError::Locked { .. }), "{err}");
        drop(held);
        store(&p.loc, &e, &loaded, IfAllCorrupt::Refuse).unwrap();
    }

    /// A single-copy env file of the full size, replaced on a filesystem
    /// statfs says is not FAT (temp file, fsync, rename, fsync the
    /// directory), overwritten on its own clusters on FAT (module docs).
    #[test]
    fn statfs_picks_rename_or_in_place_for_a_single_copy_file() {
        let file = Path::new("/boot/uboot.env");
        let old = envblock::serialize(&env(&[("n", "1")]), SIZE, Header::Single).unwrap();
        let new_env = env(&[("n", "2")]);
        let new = envblock::serialize(&new_env, SIZE, Header::Single).unwrap();
        let renamed = "rename /boot/.uboot.env.slotinit-tmp /boot/uboot.env";
        for (fs_type, expected) in [
            (
                crate::kernel::sys::TMPFS_MAGIC,
                &[
                    "open /boot/.uboot.env.slotinit-tmp write,create-new",
                    "fsync /boot/.uboot.env.slotinit-tmp",
                    renamed,
                    "fsync /boot",
                ][..],
            ),
            (
                MSDOS_SUPER_MAGIC,
                &["open /boot/uboot.env write,create", "fsync /boot/uboot.env"][..],
            ),
        ] {
            let mut sys = crate::kernel::fake::Fake {
                fs_type: Some(fs_type),
                ..Default::default()
            };
            sys.files.insert(file.into(), old.clone());
            let loc = EnvLocation::single_file(file, SIZE);
            let loaded = load_with(&mut sys, &loc).unwrap();
            store_with(&mut sys, &loc, &new_env, &loaded, IfAllCorrupt::Refuse).unwrap();
            let start = sys.position("flock /boot").unwrap();
            let written: Vec<&str> = sys.calls[start..]
                .iter()
                .map(String::as_str)
                .filter(|c| {
                    c.starts_with("rename")
                        || c.starts_with("fsync")
                        || (c.starts_with("open") && c.contains("write"))
                })
                .collect();
            assert_eq!(written, expected, "{fs_type:#x}");
            assert!(sys.position("statfs /boot").is_some());
            assert_eq!(sys.files.get(file), Some(&new), "{fs_type:#x}");
            assert!(!sys
                .files
                .contains_key(Path::new("/boot/.uboot.env.slotinit-tmp")));
        }
    }

    /// A second writer holds the lock: nothing is read back or written.
    #[test]
    fn a_held_lock_on_the_fake_is_locked_and_writes_nothing() {
        let mut sys = crate::kernel::fake::Fake {
            errno: vec![("flock".into(), libc::EWOULDBLOCK)],
            ..Default::default()
        };
        let e = env(&[("n", "1")]);
        sys.files
            .insert("/boot/uboot.env".into(), redundant_block(&e, 1));
        sys.files
            .insert("/boot/uboot-redund.env".into(), redundant_block(&e, 2));
        let loc = EnvLocation::redundant_files("/boot/uboot.env", "/boot/uboot-redund.env", SIZE);
        let loaded = load_with(&mut sys, &loc).unwrap();
        let before = sys.calls.len();
        let err = store_with(&mut sys, &loc, &e, &loaded, IfAllCorrupt::Refuse).unwrap_err();
        assert!(
            matches!(&err, EnvStoreError::Locked { path } if path == Path::new("/boot")),
            "{err}"
        );
        assert_eq!(sys.calls[before..], ["open /boot", "flock /boot"]);
        // Any other flock failure is an error of its own, with its errno.
        sys.errno = vec![("flock".into(), libc::ENOLCK)];
        let err = store_with(&mut sys, &loc, &e, &loaded, IfAllCorrupt::Refuse).unwrap_err();
        assert!(
            matches!(
                err,
                EnvStoreError::Lock {
                    source: Errno::ENOLCK,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn misuse_is_refused_before_writing() {
        let e = env(&[("n", "1")]);
        let p = pair(Some(redundant_block(&e, 1)), Some(redundant_block(&e, 2)));
        let loaded = load(&p.loc).unwrap();
        let other = EnvLocation::single_file(&p.a, SIZE);
        assert!(matches!(
            store(&other, &e, &loaded, IfAllCorrupt::Refuse),
            Err(EnvStoreError::LocationMismatch)
        ));
        let huge = env(&[("big", &"x".repeat(SIZE))]);
        let before = fs::read(&p.a).unwrap();
        let err = store(&p.loc, &huge, &loaded, IfAllCorrupt::Refuse).unwrap_err();
        assert!(
            matches!(
                &err,
                EnvStoreError::Encode {
                    source: EnvError::TooLarge { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(fs::read(&p.a).unwrap(), before);
    }

    #[test]
    fn from_fwenv_and_read_config() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("fw_env.config");
        fs::write(
            &cfg_path,
            "/dev/mmcblk0 -0x8000 0x4000\n/dev/mmcblk0 -0x4000 0x4000\n",
        )
        .unwrap();
        let loc = EnvLocation::from_fwenv(&read_config(&cfg_path).unwrap());
        assert_eq!(
            loc,
            EnvLocation::device("/dev/mmcblk0", -0x8000, Some(-0x4000), 0x4000)
        );
        fs::write(&cfg_path, "/boot/uboot.env 0 4000\n").unwrap();
        let loc = EnvLocation::from_fwenv(&read_config(&cfg_path).unwrap());
        assert_eq!(loc, EnvLocation::single_file("/boot/uboot.env", 0x4000));
        fs::write(&cfg_path, "/boot/uboot.env\n").unwrap();
        assert!(matches!(
            read_config(&cfg_path),
            Err(EnvStoreError::ParseConfig {
                source: FwEnvError::MissingField { line: 1, .. },
                ..
            })
        ));
        assert!(matches!(
            read_config(&dir.path().join("nope")),
            Err(EnvStoreError::ReadConfig { .. })
        ));
    }

    #[test]
    fn fixtures_load() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/env");
        let single = load(&EnvLocation::single_file(
            fixtures.join("single.env"),
            0x4000,
        ))
        .unwrap();
        assert_eq!(single.health, Health::SingleGood);
        let bad = load(&EnvLocation::single_file(
            fixtures.join("single-badcrc.env"),
            0x4000,
        ))
        .unwrap();
        assert!(matches!(
            &bad.health,
            Health::AllCorrupt { faults } if matches!(faults[..], [CopyFault::Invalid { source: EnvError::CrcMismatch { .. }, .. }])
        ));
        let pair = load(&EnvLocation::redundant_files(
            fixtures.join("redundant-1.env"),
            fixtures.join("redundant-2.env"),
            0x4000,
        ))
        .unwrap();
        assert_eq!(
            pair.health,
            Health::BothGood {
                current: CopyIndex::Second
            }
        );
        assert_eq!(pair.current_flags(), Some(3));
        assert_eq!(pair.env.unwrap().get("BOOT_ORDER"), Some(&b"B A"[..]));
    }

    // Issue 11, B: a commit onto the copy's own sectors. The pure parts:
    // FIBMAP's block numbers to device byte ranges, and the compare step.
    #[test]
    fn extents_merge_contiguous_blocks_and_refuse_what_cannot_be_written_whole() {
        let e = |file_offset, device_offset, len| Extent {
            file_offset,
            device_offset,
            len,
        };
        // A fragmented 16 KiB copy in 512-byte blocks: 100..=103, 200..=227.
        let physical: Vec<u32> = (100..104).chain(200..228).collect();
        assert_eq!(
            extents(512, &physical, 0x4000).unwrap(),
            [e(0, 51200, 2048), e(2048, 102400, 14336)]
        );
        // Contiguous on the device but out of order in the file: two extents.
        assert_eq!(
            extents(4096, &[9, 8], 8192).unwrap(),
            [e(0, 36864, 4096), e(4096, 32768, 4096)]
        );
        assert_eq!(extents(4096, &[7], 4096).unwrap(), [e(0, 28672, 4096)]);
        assert_eq!(
            extents(512, &[5, 0, 7], 1536),
            Err(ExtentError::Hole { logical: 1 })
        );
        assert_eq!(
            extents(512, &[5, 6], 1000),
            Err(ExtentError::PartialBlock {
                len: 1000,
                block_size: 512
            })
        );
        assert_eq!(
            extents(512, &[5], 1024),
            Err(ExtentError::Count { got: 1, len: 1024 })
        );
        assert_eq!(extents(0, &[], 0), Err(ExtentError::BlockSize(0)));
        assert_eq!(extents(1000, &[1], 1000), Err(ExtentError::BlockSize(1000)));
        assert_eq!(extents(256, &[1], 256), Err(ExtentError::BlockSize(256)));
    }

    #[test]
    fn offsets_and_the_first_difference_are_located_on_the_device() {
        let ext = extents(512, &[100, 101, 300], 1536).unwrap();
        assert_eq!(device_offset(&ext, 0), Some(51200));
        assert_eq!(device_offset(&ext, 1023), Some(51200 + 1023));
        assert_eq!(device_offset(&ext, 1024), Some(153600));
        assert_eq!(device_offset(&ext, 1535), Some(153600 + 511));
        assert_eq!(device_offset(&ext, 1536), None);

        let file = vec![7u8; 1536];
        assert_eq!(first_difference(&file, &file), None);
        let mut raw = file.clone();
        raw[1100] = 0;
        raw[1200] = 0;
        assert_eq!(first_difference(&raw, &file), Some(1100));
        assert_eq!(first_difference(&file[..1000], &file), Some(1000));
    }

    /// A regular file stands in for the partition (no O_DIRECT on the host's
    /// temp files): the copy's blocks are scattered over it.
    #[test]
    fn extents_are_read_and_written_only_where_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let dev_path = dir.path().join("partition.img");
        let image: Vec<u8> = (0..64 * 512).map(|i| (i / 512) as u8 | 0x80).collect();
        fs::write(&dev_path, &image).unwrap();
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev_path)
            .unwrap();
        // The file's 4 blocks lie at device blocks 10, 11, 40, 3.
        let ext = extents(512, &[10, 11, 40, 3], 2048).unwrap();
        let current: Vec<u8> = [10u8, 11, 40, 3]
            .iter()
            .flat_map(|b| vec![b | 0x80; 512])
            .collect();
        let file = dir.path().join("uboot.env");
        assert_eq!(
            read_extents(&device, &dev_path, &ext, 2048).unwrap(),
            current
        );
        check_extents(&device, &dev_path, &file, &ext, &current).unwrap();
        let mut other = current.clone();
        other[1536 + 5] ^= 1;
        match check_extents(&device, &dev_path, &file, &ext, &other) {
            Err(EnvStoreError::Mismatch {
                device_offset,
                file_offset,
                ..
            }) => assert_eq!((file_offset, device_offset), (1541, 3 * 512 + 5)),
            other => panic!("{other:?}"),
        }

        let new: Vec<u8> = (0..2048).map(|i| (i % 251) as u8).collect();
        write_extents(&mut Real, &device, &dev_path, &ext, &new).unwrap();
        let after = fs::read(&dev_path).unwrap();
        let mut expected = image.clone();
        for (logical, block) in [10usize, 11, 40, 3].into_iter().enumerate() {
            expected[block * 512..(block + 1) * 512]
                .copy_from_slice(&new[logical * 512..(logical + 1) * 512]);
        }
        assert_eq!(after, expected, "only the mapped blocks change");
        assert_eq!(read_extents(&device, &dev_path, &ext, 2048).unwrap(), new);

        // An extent past the copy is refused before anything is written.
        let beyond = [Extent {
            file_offset: 1536,
            device_offset: 0,
            len: 1024,
        }];
        assert!(matches!(
            write_extents(&mut Real, &device, &dev_path, &beyond, &new),
            Err(EnvStoreError::Unmappable {
                source: ExtentError::Beyond {
                    end: 2560,
                    len: 2048
                },
                ..
            })
        ));
        assert_eq!(fs::read(&dev_path).unwrap(), expected);
    }

    // After a write by other means, confirm() accepts the new copy only if
    // the file reads back the block, and only the copy that was not current
    // is the one planned.
    #[test]
    fn a_planned_write_made_by_other_means_is_confirmed_by_reading_it_back() {
        let old = env(&[("BOOT_ORDER", "A B")]);
        let p = pair(
            Some(redundant_block(&old, 5)),
            Some(redundant_block(&old, 4)),
        );
        let loaded = load(&p.loc).unwrap();
        let new = env(&[("BOOT_ORDER", "B A")]);

        let planned = plan(&mut Real, &p.loc, &new, &loaded, IfAllCorrupt::Refuse).unwrap();
        assert_eq!(planned.path(&p.loc), p.b, "the copy that is not current");
        assert_eq!(
            planned.whole_file(&p.loc),
            Some(&redundant_block(&old, 4)[..])
        );
        assert_eq!(planned.block(), redundant_block(&new, 6));
        // Not written: the copy reads back its old bytes.
        assert!(matches!(
            planned.confirm(&mut Real, &p.loc),
            Err(EnvStoreError::NotWritten { path }) if path == p.b
        ));

        let planned = plan(&mut Real, &p.loc, &new, &loaded, IfAllCorrupt::Refuse).unwrap();
        fs::write(&p.b, planned.block()).unwrap();
        let confirmed = planned.confirm(&mut Real, &p.loc).unwrap();
        assert_eq!(
            confirmed.health,
            Health::BothGood {
                current: CopyIndex::Second
            }
        );
        assert_eq!(confirmed.env, Some(new.clone()));
        assert_eq!(confirmed.current_flags(), Some(6));

        // The current copy changed meanwhile: not confirmed.
        let planned = plan(&mut Real, &p.loc, &old, &confirmed, IfAllCorrupt::Refuse).unwrap();
        fs::write(&p.a, planned.block()).unwrap();
        corrupt(&p.b, 20);
        assert!(matches!(
            planned.confirm(&mut Real, &p.loc),
            Err(EnvStoreError::Changed { path }) if path == p.b
        ));

        // A short or missing copy is no whole file: it takes the filesystem path.
        let short = pair(Some(redundant_block(&old, 5)), Some(vec![0; 100]));
        let loaded = load(&short.loc).unwrap();
        let planned = plan(&mut Real, &short.loc, &new, &loaded, IfAllCorrupt::Refuse).unwrap();
        assert_eq!(planned.whole_file(&short.loc), None);
        let missing = pair(Some(redundant_block(&old, 5)), None);
        let loaded = load(&missing.loc).unwrap();
        let planned = plan(&mut Real, &missing.loc, &new, &loaded, IfAllCorrupt::Refuse).unwrap();
        assert_eq!(planned.whole_file(&missing.loc), None);
    }
}
