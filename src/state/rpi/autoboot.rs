//! `autoboot.txt` as the Raspberry Pi firmware reads it, and its rewrite in
//! place (pure: bytes in, bytes out; the write itself is [`write_in_place`]).
//!
//! The firmware's rules, from raspberrypi/documentation
//! (`computers/config_txt/autoboot.adoc`, `conditional.adoc`):
//! - the file is at most 512 bytes;
//! - it supports the `[all]`, `[none]` and `[tryboot]` conditional filters.
//!   A filter applies to the lines after it; filters of different types
//!   combine (all must pass) and `[all]` resets them all; `[none]` never
//!   passes, `[tryboot]` only in a boot with the tryboot flag set. Lines
//!   before the first filter apply always. The documentation names no other
//!   filter for this file, so a line under any other filter is taken as not
//!   applying, in either boot (and reported);
//! - `boot_partition=N` (the partition to boot, 1-based; 0 = the first
//!   bootable FAT partition) and `tryboot_a_b=1` (the tryboot switch is made
//!   at partition level: the partition's normal `config.txt` is loaded);
//! - as in `config.txt`, a later value of a key replaces an earlier one, and
//!   `#` starts a comment line.
//!
//! The committed partition C is the `boot_partition` of a boot without the
//! flag; the trial partition T is that of a boot with it.
//!
//! The rewrite keeps every other byte (comments, other keys, order, line
//! endings) and the length: the file is rewritten in place, never renamed,
//! so a new value must have as many digits as the old one.

use std::path::{Path, PathBuf};

/// The firmware reads at most this much of `autoboot.txt`.
pub(crate) const MAX_LEN: usize = 512;

/// Why `autoboot.txt` cannot be used (or rewritten).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum AutobootError {
    #[error("{}: missing", .path.display())]
    Missing { path: PathBuf },
    #[error("{}: {len} bytes, more than the firmware's limit of 512", .path.display())]
    TooLong { path: PathBuf, len: usize },
    #[error("{}: not text", .path.display())]
    NotText { path: PathBuf },
    #[error("{}: line {line}: boot_partition={value:?} is not a partition number", .path.display())]
    BadNumber {
        path: PathBuf,
        line: usize,
        value: String,
    },
    #[error("{}: no boot_partition applies under [all]", .path.display())]
    NoCommitted { path: PathBuf },
    #[error("{}: no boot_partition under [tryboot] to rewrite in place", .path.display())]
    NoTrybootLine { path: PathBuf },
    #[error(
        "{}: the partition of a tryboot boot is set by an [all] line, \
         which cannot be rewritten apart from the committed one",
        .path.display()
    )]
    SharedLine { path: PathBuf },
    #[error(
        "{}: boot_partition={old} cannot become {new} in place (a different length); \
         refusing to change the file's length on FAT",
        .path.display()
    )]
    LengthChange { path: PathBuf, old: u32, new: u32 },
    #[error("{}: cannot {what}", .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    #[error("{}: read back after the write differs from what was written", .path.display())]
    ReadBack { path: PathBuf },
}

/// One `boot_partition` line: its value and where its digits are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Value {
    pub(crate) number: u32,
    /// Byte range of the digits in the file.
    start: usize,
    end: usize,
    /// Set under `[tryboot]` (else under `[all]`).
    tryboot: bool,
}

/// The parsed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Autoboot {
    pub(crate) path: PathBuf,
    pub(crate) bytes: Vec<u8>,
    /// The partition a boot without the tryboot flag loads.
    committed: Value,
    /// The partition a boot with it loads.
    trial: Value,
    pub(crate) tryboot_a_b: bool,
    /// Some `[tryboot]` section sets `boot_partition`.
    has_tryboot_line: bool,
    /// Filters the documentation does not name, with their line.
    pub(crate) ignored: Vec<(usize, String)>,
}

impl Autoboot {
    /// Parses `bytes` (the whole file as read) with the firmware's rules.
    pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Autoboot, AutobootError> {
        let path_buf = path.to_path_buf();
        if bytes.len() > MAX_LEN {
            return Err(AutobootError::TooLong {
                path: path_buf,
                len: bytes.len(),
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| AutobootError::NotText {
            path: path_buf.clone(),
        })?;
        // The filters in force: the tryboot one, and one that never passes
        // ([none], or a filter this file does not support).
        let (mut tryboot, mut never) = (false, false);
        let mut committed: Option<Value> = None;
        let mut trial: Option<Value> = None;
        let mut tryboot_a_b = false;
        let mut has_tryboot_line = false;
        let mut ignored = Vec::new();
        let mut offset = 0;
        for (index, raw) in text.split_inclusive('\n').enumerate() {
            let start = offset;
            offset += raw.len();
            let line = raw.trim_end_matches(['\n', '\r']);
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                match name {
                    "all" => (tryboot, never) = (false, false),
                    "none" => never = true,
                    "tryboot" => tryboot = true,
                    other => {
                        ignored.push((index + 1, other.to_string()));
                        never = true;
                    }
                }
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (in_committed, in_trial) = (!never && !tryboot, !never);
            match key.trim() {
                "boot_partition" => {
                    let digits = value.trim();
                    let number = parse_number(digits).ok_or_else(|| AutobootError::BadNumber {
                        path: path_buf.clone(),
                        line: index + 1,
                        value: digits.to_string(),
                    })?;
                    let at = start + key.len() + 1 + (value.len() - value.trim_start().len());
                    let v = Value {
                        number,
                        start: at,
                        end: at + digits.len(),
                        tryboot,
                    };
                    has_tryboot_line |= v.tryboot;
                    if in_committed {
                        committed = Some(v);
                    }
                    if in_trial {
                        trial = Some(v);
                    }
                }
                "tryboot_a_b" if in_committed || in_trial => {
                    tryboot_a_b = value.trim() == "1";
                }
                _ => {}
            }
        }
        let committed = committed.ok_or_else(|| AutobootError::NoCommitted {
            path: path_buf.clone(),
        })?;
        Ok(Autoboot {
            path: path_buf,
            bytes: bytes.to_vec(),
            committed,
            trial: trial.unwrap_or(committed),
            tryboot_a_b,
            has_tryboot_line,
            ignored,
        })
    }

    /// C: the partition a boot without the tryboot flag loads.
    pub(crate) fn committed(&self) -> u32 {
        self.committed.number
    }

    /// T: the partition a boot with the tryboot flag loads.
    pub(crate) fn trial(&self) -> u32 {
        self.trial.number
    }

    /// The file with C := `committed` and T := `trial`, same length; the
    /// firmware's view of the result is checked by parsing it again.
    pub(crate) fn rewrite(&self, committed: u32, trial: u32) -> Result<Vec<u8>, AutobootError> {
        let path = || self.path.clone();
        // A trial value from an [all] line is the committed line itself.
        if !self.trial.tryboot && committed != trial {
            return Err(if self.has_tryboot_line {
                AutobootError::SharedLine { path: path() }
            } else {
                AutobootError::NoTrybootLine { path: path() }
            });
        }
        let mut out = self.bytes.clone();
        for (value, new) in [(self.committed, committed), (self.trial, trial)] {
            let digits = new.to_string();
            if digits.len() != value.end - value.start {
                return Err(AutobootError::LengthChange {
                    path: path(),
                    old: value.number,
                    new,
                });
            }
            out[value.start..value.end].copy_from_slice(digits.as_bytes());
        }
        let again = Autoboot::parse(&self.path, &out)?;
        if again.committed() != committed || again.trial() != trial {
            return Err(AutobootError::SharedLine { path: path() });
        }
        Ok(out)
    }
}

/// A partition number as the file writes it: decimal digits (the
/// documentation shows no other form), 1 or more (0 is the firmware's
/// "first bootable FAT partition", no slot's).
fn parse_number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Reads `path` through `sys`.
pub(crate) fn read(
    sys: &mut dyn crate::kernel::sys::Sys,
    path: &Path,
) -> Result<Autoboot, AutobootError> {
    match sys.read_file(path) {
        Ok(Some(bytes)) => Autoboot::parse(path, &bytes),
        Ok(None) => Err(AutobootError::Missing {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_error(path, "read it", e)),
    }
}

fn io_error(path: &Path, what: &'static str, e: std::io::Error) -> AutobootError {
    AutobootError::Io {
        path: path.to_path_buf(),
        what,
        source: std::sync::Arc::new(e),
    }
}

/// Rewrites `path` from `old` to `new` (same length) in place: open without
/// truncating or creating, one write at offset 0, fsync, read back and
/// compare. Never a rename: on FAT a rename is several writes in no fixed
/// order (see `state::uboot::envstore`), an overwrite of the file's own
/// cluster is one, and both values a torn write can leave (old digits or
/// new, per line) name a slot's boot partition.
pub(crate) fn write_in_place(
    sys: &mut dyn crate::kernel::sys::Sys,
    path: &Path,
    old: &[u8],
    new: &[u8],
) -> Result<(), AutobootError> {
    use std::os::unix::fs::FileExt;
    if old.len() != new.len() {
        return Err(AutobootError::LengthChange {
            path: path.to_path_buf(),
            old: old.len() as u32,
            new: new.len() as u32,
        });
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true);
    let file = sys
        .open(path, &options)
        .map_err(|e| io_error(path, "open it for writing", e))?;
    let mut current = vec![0u8; old.len() + 1];
    let got = file
        .read_at(&mut current, 0)
        .map_err(|e| io_error(path, "read it before the write", e))?;
    // Someone changed it since it was parsed: write nothing.
    if current.get(..got) != Some(old) {
        return Err(AutobootError::ReadBack {
            path: path.to_path_buf(),
        });
    }
    log::debug!(
        "rewriting {} in place ({} bytes)",
        path.display(),
        new.len()
    );
    file.write_all_at(new, 0)
        .map_err(|e| io_error(path, "write it", e))?;
    sys.fsync(&file).map_err(|e| io_error(path, "sync it", e))?;
    drop(file);
    match sys.read_file(path) {
        Ok(Some(back)) if back == new => Ok(()),
        Ok(_) => Err(AutobootError::ReadBack {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_error(path, "read it back", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::sys::Real;

    /// The first call starting with `prefix`.
    fn starts(sys: &crate::kernel::fake::Fake, prefix: &str) -> Option<usize> {
        sys.calls.iter().position(|c| c.starts_with(prefix))
    }

    /// What rpi-image-gen's `image/gpt/ab_userdata/pre-image.sh` writes.
    const IMAGE_GEN: &str = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n";

    fn parse(text: &str) -> Result<Autoboot, AutobootError> {
        Autoboot::parse(Path::new("/b/autoboot.txt"), text.as_bytes())
    }

    #[test]
    fn rpi_image_gen_file() {
        let a = parse(IMAGE_GEN).unwrap();
        assert_eq!((a.committed(), a.trial()), (2, 3));
        assert!(a.tryboot_a_b);
        let swapped = a.rewrite(3, 2).unwrap();
        assert_eq!(
            String::from_utf8(swapped).unwrap(),
            "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"
        );
    }

    /// The firmware's rules on odd inputs: (text, C, T).
    #[test]
    fn section_rules() {
        let cases: &[(&str, u32, u32)] = &[
            // No filter at all: the lines apply always.
            ("boot_partition=2\n", 2, 2),
            // [tryboot] without a partition: the tryboot boot loads C.
            ("[all]\nboot_partition=2\n[tryboot]\ntryboot_a_b=1\n", 2, 2),
            // [none] never applies.
            ("[all]\nboot_partition=2\n[none]\nboot_partition=5\n", 2, 2),
            // The later value wins, in each view.
            (
                "boot_partition=2\nboot_partition=3\n[tryboot]\nboot_partition=2\n",
                3,
                2,
            ),
            // [tryboot] before [all]: a later [all] line overrides it in a tryboot.
            (
                "[tryboot]\nboot_partition=3\n[all]\nboot_partition=2\n",
                2,
                2,
            ),
            // Filters combine: [none] stays in force until [all].
            (
                "[all]\nboot_partition=2\n[none]\n[tryboot]\nboot_partition=5\n",
                2,
                2,
            ),
            (
                "[tryboot]\n[none]\nboot_partition=5\n[all]\nboot_partition=2\n",
                2,
                2,
            ),
            // A filter the file does not support: its lines do not apply, up
            // to the next [all].
            (
                "[all]\nboot_partition=2\n[pi4]\nboot_partition=7\n[tryboot]\nboot_partition=3\n",
                2,
                2,
            ),
            (
                "[all]\nboot_partition=2\n[pi4]\nboot_partition=7\n[all]\n[tryboot]\nboot_partition=3\n",
                2,
                3,
            ),
            // Comments, CRLF, blank lines, spaces after the value.
            (
                "# A/B\r\n[all]\r\n\r\nboot_partition=2 \r\n[tryboot]\r\nboot_partition=3\r\n",
                2,
                3,
            ),
            // No final newline.
            ("[all]\nboot_partition=2\n[tryboot]\nboot_partition=3", 2, 3),
        ];
        for (text, c, t) in cases {
            let a = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!((a.committed(), a.trial()), (*c, *t), "{text:?}");
        }
        let a = parse("[all]\nboot_partition=2\n[pi4]\nboot_partition=7\n").unwrap();
        assert_eq!(a.ignored, [(3, "pi4".to_string())]);
    }

    #[test]
    fn bad_files_name_the_file() {
        let long = format!("{IMAGE_GEN}{}", "#".repeat(MAX_LEN));
        let cases: Vec<(&[u8], &str)> = vec![
            (long.as_bytes(), "more than the firmware's limit of 512"),
            (
                b"[tryboot]\nboot_partition=3\n",
                "no boot_partition applies under [all]",
            ),
            (
                b"[all]\nboot_partition=two\n",
                "line 2: boot_partition=\"two\"",
            ),
            (b"[all]\nboot_partition=\n", "is not a partition number"),
            (b"[all]\nboot_partition=-1\n", "is not a partition number"),
            (b"\xff\xfe", "not text"),
            (b"", "no boot_partition"),
        ];
        for (bytes, needle) in cases {
            let e = Autoboot::parse(Path::new("/b/autoboot.txt"), bytes).unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with("/b/autoboot.txt: "), "{text}");
            assert!(text.contains(needle), "{text}");
        }
        // Exactly 512 bytes is fine.
        let full = format!("{IMAGE_GEN}{}", "#".repeat(MAX_LEN - IMAGE_GEN.len()));
        assert_eq!(full.len(), MAX_LEN);
        assert!(parse(&full).is_ok());
    }

    #[test]
    fn rewrite_keeps_every_other_byte_and_the_length() {
        let text = "# keep me\r\n[all]\r\ntryboot_a_b=1\r\nboot_partition=2\r\nfoo=bar\r\n[tryboot]\r\nboot_partition=3\r\n# end";
        let a = parse(text).unwrap();
        let out = a.rewrite(3, 2).unwrap();
        assert_eq!(out.len(), text.len());
        let diff: Vec<usize> = (0..out.len())
            .filter(|i| out[*i] != text.as_bytes()[*i])
            .collect();
        assert_eq!(diff.len(), 2, "only the two digits change: {diff:?}");
        let again = Autoboot::parse(&a.path, &out).unwrap();
        assert_eq!((again.committed(), again.trial()), (3, 2));
        // Setting [tryboot] only.
        let out = a.rewrite(2, 2).unwrap();
        let again = Autoboot::parse(&a.path, &out).unwrap();
        assert_eq!((again.committed(), again.trial()), (2, 2));
    }

    #[test]
    fn rewrites_that_cannot_be_in_place_are_refused() {
        let a = parse("[all]\nboot_partition=9\n[tryboot]\nboot_partition=10\n").unwrap();
        let e = a.rewrite(10, 9).unwrap_err();
        assert!(matches!(e, AutobootError::LengthChange { .. }), "{e}");
        assert!(e
            .to_string()
            .starts_with("/b/autoboot.txt: boot_partition=9 cannot become 10"));
        let a = parse("[all]\nboot_partition=2\n").unwrap();
        assert!(matches!(
            a.rewrite(2, 3),
            Err(AutobootError::NoTrybootLine { .. })
        ));
        let a = parse("[tryboot]\nboot_partition=3\n[all]\nboot_partition=2\n").unwrap();
        assert!(matches!(
            a.rewrite(2, 3),
            Err(AutobootError::SharedLine { .. })
        ));
    }

    /// The crash states of the commit: a write of the file torn after any
    /// byte (a prefix of the new bytes over the old), and any subset of the
    /// changed bytes landing, all leave a file the firmware reads with a
    /// slot's boot partition in both views.
    #[test]
    fn every_torn_state_of_the_swap_boots_a_slot() {
        for text in [
            IMAGE_GEN,
            "# c\r\n[all]\r\nboot_partition=2\r\n[tryboot]\r\nboot_partition=3\r\n",
        ] {
            let a = parse(text).unwrap();
            let new = a.rewrite(3, 2).unwrap();
            let old = text.as_bytes();
            let mut states = std::collections::BTreeSet::new();
            for cut in 0..=new.len() {
                let mut torn = new[..cut].to_vec();
                torn.extend_from_slice(&old[cut..]);
                let t = Autoboot::parse(&a.path, &torn).unwrap();
                states.insert((t.committed(), t.trial()));
            }
            assert_eq!(
                states.into_iter().collect::<Vec<_>>(),
                [(2, 3), (3, 2), (3, 3)],
                "{text:?}"
            );
            let changed: Vec<usize> = (0..new.len()).filter(|i| new[*i] != old[*i]).collect();
            for mask in 0..(1u32 << changed.len()) {
                let mut torn = old.to_vec();
                for (bit, at) in changed.iter().enumerate() {
                    if mask & (1 << bit) != 0 {
                        torn[*at] = new[*at];
                    }
                }
                let t = Autoboot::parse(&a.path, &torn).unwrap();
                for p in [t.committed(), t.trial()] {
                    assert!(p == 2 || p == 3, "{mask}: {p}");
                }
            }
        }
    }

    #[test]
    fn in_place_write_on_a_temp_file_reads_back() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("autoboot.txt");
        std::fs::write(&path, IMAGE_GEN).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        let a = read(&mut Real, &path).unwrap();
        let new = a.rewrite(3, 2).unwrap();
        write_in_place(&mut Real, &path, &a.bytes, &new).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), new);
        // The same file, rewritten, not replaced.
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        // A file changed since it was read: nothing written.
        let e = write_in_place(&mut Real, &path, &a.bytes, &new).unwrap_err();
        assert!(matches!(e, AutobootError::ReadBack { .. }), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), new);
        // Missing: an error naming it, nothing created.
        let gone = dir.path().join("none.txt");
        assert!(matches!(
            read(&mut Real, &gone),
            Err(AutobootError::Missing { .. })
        ));
        assert!(write_in_place(&mut Real, &gone, b"x", b"y").is_err());
        assert!(!gone.exists());
    }

    #[test]
    fn in_place_write_on_the_fake_opens_without_truncate_and_syncs() {
        let mut sys = crate::kernel::fake::Fake::default();
        let path = Path::new("/b/autoboot.txt");
        sys.files.insert(path.into(), IMAGE_GEN.as_bytes().to_vec());
        let a = read(&mut sys, path).unwrap();
        let new = a.rewrite(3, 2).unwrap();
        write_in_place(&mut sys, path, &a.bytes, &new).unwrap();
        assert_eq!(sys.files[path], new);
        let open = sys.calls.iter().find(|c| c.starts_with("open ")).unwrap();
        assert!(
            !open.contains("trunc") && !open.contains("create"),
            "{open}"
        );
        let (o, s) = (
            starts(&sys, "open /b/autoboot.txt").unwrap(),
            starts(&sys, "fsync /b/autoboot.txt").unwrap(),
        );
        assert!(o < s, "{:?}", sys.calls);
        assert!(sys.calls.iter().all(|c| !c.starts_with("rename")));
        // A failed sync is an error: the commit did not happen.
        let mut sys = crate::kernel::fake::Fake {
            fail: vec!["fsync".into()],
            ..Default::default()
        };
        sys.files.insert(path.into(), IMAGE_GEN.as_bytes().to_vec());
        let e = write_in_place(&mut sys, path, IMAGE_GEN.as_bytes(), &new).unwrap_err();
        assert!(e.to_string().contains("cannot sync it"), "{e}");
    }
}
