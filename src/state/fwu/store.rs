//! The two copies on their partitions, through [`Sys`]: read both, pick the
//! one the firmware uses, repair the other, and the ordered write (the
//! secondary, synced, then the primary, synced, each read back).
//!
//! Which copy: the primary when it is valid, else the secondary, as TF-A's
//! `fwu_init` (`drivers/fwu/fwu.c`: `FWU_METADATA_IMAGE_ID`, then
//! `BKUP_FWU_METADATA_IMAGE_ID`; on STM32MP the GPT partitions
//! `metadata1` / `metadata2`, `plat/st/common/bl2_io_storage.c`
//! `plat_fwu_set_metadata_image_source`). Both valid but different: the
//! primary, and the secondary is restored from it, as U-Boot's
//! `fwu_get_mdata` (`lib/fwu_updates/fwu.c`) does.
//!
//! The write order is U-Boot's `fwu_sync_mdata(.., BOTH_PARTS)`: the
//! secondary first. A cut during the secondary's write leaves the primary
//! (old, valid) in use; a cut during the primary's leaves the secondary
//! (new, valid); so the state the firmware reads is the old one until the
//! primary's write lands, then the new one.

use super::mdata::{self, Geometry, Mdata};
use crate::kernel::sys::{FileLock, Sys};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::PathBuf;

/// A write that did not happen (or not all of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum WriteError {
    /// Another writer holds the lock; nothing written.
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Failed(String),
}

/// One copy: which partition, where, what was read.
#[derive(Debug, Clone)]
pub(super) struct Copy {
    /// The config's name (`metadata1`).
    pub(super) name: String,
    pub(super) path: PathBuf,
    /// The partition's size, when it could be read.
    pub(super) len: Option<u64>,
    /// The parsed copy, or why it is not usable.
    pub(super) read: Result<Mdata, String>,
}

impl Copy {
    pub(super) fn label(&self) -> String {
        if self.path.as_os_str() == self.name.as_str() {
            self.name.clone()
        } else {
            format!("{} ({})", self.name, self.path.display())
        }
    }

    fn valid(&self) -> Option<&Mdata> {
        self.read.as_ref().ok()
    }
}

/// Both copies and the one in use.
#[derive(Debug, Clone)]
pub(super) struct Store {
    pub(super) copies: [Copy; 2],
    geometry: Geometry,
}

/// Reads `path`'s size and its first bytes (at most [`mdata::CAP`]).
fn read_raw(sys: &mut dyn Sys, path: &std::path::Path) -> Result<(u64, Vec<u8>), String> {
    let mut file = sys
        .open(path, OpenOptions::new().read(true))
        .map_err(|e| format!("cannot open: {e}"))?;
    let len = file
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("cannot size: {e}"))?;
    let want = usize::try_from(len).unwrap_or(usize::MAX).min(mdata::CAP);
    let mut buf = vec![0; want];
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read at {got}: {e}")),
        }
    }
    buf.truncate(got);
    Ok((len, buf))
}

impl Store {
    /// Reads both copies (primary first).
    pub(super) fn open(
        sys: &mut dyn Sys,
        copies: [(String, PathBuf); 2],
        geometry: Geometry,
    ) -> Store {
        let copies = copies.map(|(name, path)| match read_raw(sys, &path) {
            Ok((len, buf)) => Copy {
                read: mdata::parse(&buf, geometry).map_err(|e| e.to_string()),
                name,
                path,
                len: Some(len),
            },
            Err(e) => Copy {
                name,
                path,
                len: None,
                read: Err(e),
            },
        });
        Store { copies, geometry }
    }

    /// The copy in use: the primary if valid, else the secondary.
    pub(super) fn current(&self) -> Option<&Mdata> {
        self.copies[0].valid().or_else(|| self.copies[1].valid())
    }

    /// Whose bytes the firmware reads: 0 primary, 1 secondary.
    pub(super) fn in_use(&self) -> Option<usize> {
        if self.copies[0].valid().is_some() {
            Some(0)
        } else if self.copies[1].valid().is_some() {
            Some(1)
        } else {
            None
        }
    }

    /// The copy that differs from the one in use (invalid, or valid with
    /// other bytes), if any.
    pub(super) fn stale(&self) -> Option<usize> {
        let used = self.in_use()?;
        let other = 1 - used;
        let same = self.copies[other]
            .valid()
            .zip(self.current())
            .is_some_and(|(a, b)| a.bytes() == b.bytes());
        (!same).then_some(other)
    }

    /// Why neither copy can be used, naming both partitions.
    pub(super) fn why_unusable(&self) -> String {
        self.copies
            .iter()
            .map(|c| match &c.read {
                Ok(_) => format!("{}: valid", c.label()),
                Err(e) => format!("{}: {e}", c.label()),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub(super) fn location(&self) -> String {
        format!(
            "primary {}, secondary {}",
            self.copies[0].label(),
            self.copies[1].label()
        )
    }

    /// Restores the stale copy from the one in use: one write, synced,
    /// read back. Ok(None) when nothing was stale.
    pub(super) fn repair(&mut self, sys: &mut dyn Sys) -> Result<Option<String>, WriteError> {
        let (Some(stale), Some(good)) = (self.stale(), self.current().cloned()) else {
            return Ok(None);
        };
        let _lock = self.lock(sys)?;
        let label = self.copies[stale].label();
        let was = match &self.copies[stale].read {
            Ok(_) => "valid but different".to_string(),
            Err(e) => e.clone(),
        };
        self.write_copy(sys, stale, &good)
            .map_err(WriteError::Failed)?;
        Ok(Some(format!(
            "FWU metadata {label} ({was}) restored from {}",
            self.copies[1 - stale].label()
        )))
    }

    /// Writes `new` to both copies: the secondary, synced and read back,
    /// then the primary. Nothing written when both already hold it.
    pub(super) fn write_both(
        &mut self,
        sys: &mut dyn Sys,
        new: &Mdata,
    ) -> Result<bool, WriteError> {
        let same = |c: &Copy| c.valid().is_some_and(|m| m.bytes() == new.bytes());
        if same(&self.copies[0]) && same(&self.copies[1]) {
            return Ok(false);
        }
        let _lock = self.lock(sys)?;
        for index in [1, 0] {
            if !same(&self.copies[index]) {
                self.write_copy(sys, index, new)
                    .map_err(WriteError::Failed)?;
            }
        }
        Ok(true)
    }

    /// The writers' lock: flock on the primary's device (a second `slotinit
    /// mark-*` waits for none and fails).
    fn lock(&self, sys: &mut dyn Sys) -> Result<FileLock, WriteError> {
        let path = &self.copies[0].path;
        let label = self.copies[0].label();
        let file = sys
            .open(path, OpenOptions::new().read(true))
            .map_err(|e| WriteError::Failed(format!("{label}: cannot open: {e}")))?;
        match sys.flock_exclusive(&file) {
            Ok(()) => Ok(FileLock::new(file)),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Err(WriteError::Locked(
                format!("{label}: locked by another writer; nothing written"),
            )),
            Err(e) => Err(WriteError::Failed(format!("{label}: cannot lock: {e}"))),
        }
    }

    /// One copy: in place at offset 0, synced (fdatasync on a block device,
    /// fsync on a file), then read back and parsed.
    fn write_copy(&mut self, sys: &mut dyn Sys, index: usize, new: &Mdata) -> Result<(), String> {
        let copy = &self.copies[index];
        let label = copy.label();
        let bytes = new.bytes();
        if let Some(len) = copy.len {
            if bytes.len() as u64 > len {
                return Err(format!(
                    "{label}: the {} bytes of the metadata do not fit its {len} bytes",
                    bytes.len()
                ));
            }
        }
        let path = copy.path.clone();
        let file: File = sys
            .open(&path, OpenOptions::new().write(true))
            .map_err(|e| format!("{label}: cannot open for writing: {e}"))?;
        file.write_all_at(bytes, 0)
            .map_err(|e| format!("{label}: cannot write: {e}"))?;
        let block = file
            .metadata()
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false);
        let synced = if block {
            sys.fdatasync(&file)
        } else {
            sys.fsync(&file)
        };
        synced.map_err(|e| format!("{label}: cannot sync: {e}"))?;
        drop(file);
        let (len, buf) = read_raw(sys, &path).map_err(|e| format!("{label}: read back: {e}"))?;
        let back = mdata::parse(&buf, self.geometry);
        let ok = back.as_ref().is_ok_and(|m| m.bytes() == bytes);
        self.copies[index].len = Some(len);
        self.copies[index].read = back.map_err(|e| e.to_string());
        if !ok {
            return Err(format!("{label}: read back differs from what was written"));
        }
        Ok(())
    }
}
