//! Parser for `/etc/fw_env.config`, the file telling `fw_printenv` where the U-Boot env lives.
//!
//! Each non-comment line is `device offset size [sectorsize [sectors]]`; one
//! line is a single env, two lines a redundant pair. The numbers follow the
//! `sscanf(line, "%ms %lli %zx %zx %lx")` of libubootenv (and U-Boot's own
//! `tools/env/fw_env.c`), because a config that works with `fw_printenv` must
//! mean the same thing here:
//!
//! - `offset` is a C integer: optional sign, `0x` hex, leading-`0` octal, or
//!   decimal. A negative offset counts back from the end of the device.
//! - `size`, `sectorsize` and `sectors` are always hex, with or without `0x`:
//!   `4000` means 0x4000, not four thousand.
//!
//! Stricter than libubootenv, which silently skips lines it cannot scan and
//! ignores lines after the second: here those are errors with a line number,
//! since guessing where the boot counters live is worse than stopping.
//! A `#` starts a comment anywhere after whitespace.

use std::num::ParseIntError;
use std::path::PathBuf;

/// Errors of parsing `fw_env.config`; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FwEnvError {
    #[error("line {line}: missing {field}")]
    MissingField { line: usize, field: &'static str },
    #[error("line {line}: invalid {field} {text:?}")]
    InvalidNumber {
        line: usize,
        field: &'static str,
        text: String,
        #[source]
        source: ParseIntError,
    },
    #[error("line {line}: unexpected extra field {text:?}")]
    ExtraField { line: usize, text: String },
    #[error("line {line}: environment size is zero")]
    ZeroSize { line: usize },
    #[error(
        "line {line}: environment size {size:#x} is larger than {max:#x} bytes",
        max = crate::state::uboot::envblock::MAX_SIZE
    )]
    TooLarge { line: usize, size: usize },
    #[error("line {line}: this copy overlaps the copy of line {first} on {}", .device.display())]
    Overlap {
        line: usize,
        first: usize,
        device: PathBuf,
    },
    #[error("line {line}: a third environment copy is not supported (at most two lines)")]
    TooManyEntries { line: usize },
    #[error("line {line}: size {size:#x} differs from the first copy's {first:#x}")]
    SizeMismatch {
        line: usize,
        size: usize,
        first: usize,
    },
    #[error("no environment device configured")]
    NoEntries,
}

/// One line of `fw_env.config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwEnvEntry {
    pub device: PathBuf,
    /// Byte offset of the env on `device`; negative counts from the end.
    pub offset: i64,
    /// Env size in bytes, header included.
    pub size: usize,
    /// Erase-block size; only meaningful for MTD flash, which slotinit does not write.
    pub sector_size: Option<u64>,
    /// Erase blocks the env may span; MTD only, as `sector_size`.
    pub sectors: Option<u64>,
    /// 1-based line in the config, for messages.
    pub line: usize,
}

/// The whole config: where the single env, or both copies of the pair, live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FwEnvConfig {
    Single(FwEnvEntry),
    Redundant(FwEnvEntry, FwEnvEntry),
}

impl FwEnvConfig {
    /// The env size shared by all copies.
    pub fn size(&self) -> usize {
        match self {
            Self::Single(e) | Self::Redundant(e, _) => e.size,
        }
    }

    /// The copies in config order.
    pub fn entries(&self) -> Vec<&FwEnvEntry> {
        match self {
            Self::Single(e) => vec![e],
            Self::Redundant(a, b) => vec![a, b],
        }
    }
}

/// Parses the text of `fw_env.config`.
pub fn parse(text: &str) -> Result<FwEnvConfig, FwEnvError> {
    let mut entries: Vec<FwEnvEntry> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let Some(entry) = parse_line(raw, index + 1)? else {
            continue;
        };
        if let Some(first) = entries.first() {
            if entries.len() >= 2 {
                return Err(FwEnvError::TooManyEntries { line: entry.line });
            }
            check_second(first, &entry)?;
        }
        entries.push(entry);
    }
    let mut entries = entries.into_iter();
    match (entries.next(), entries.next()) {
        (None, _) => Err(FwEnvError::NoEntries),
        (Some(a), None) => Ok(FwEnvConfig::Single(a)),
        (Some(a), Some(b)) => Ok(FwEnvConfig::Redundant(a, b)),
    }
}

/// One line (1-based `line`): None when it holds only blanks or a comment.
fn parse_line(raw: &str, line: usize) -> Result<Option<FwEnvEntry>, FwEnvError> {
    let content = raw.split('#').next().unwrap_or_default();
    let mut fields = content.split_whitespace();
    let Some(device) = fields.next() else {
        return Ok(None);
    };
    let offset_text = fields.next().ok_or(FwEnvError::MissingField {
        line,
        field: "offset",
    })?;
    let size_text = fields.next().ok_or(FwEnvError::MissingField {
        line,
        field: "size",
    })?;
    let offset = parse_c_integer(offset_text).map_err(|source| FwEnvError::InvalidNumber {
        line,
        field: "offset",
        text: offset_text.to_owned(),
        source,
    })?;
    let size = usize::from_str_radix(strip_hex_prefix(size_text).unwrap_or(size_text), 16)
        .map_err(|source| FwEnvError::InvalidNumber {
            line,
            field: "size",
            text: size_text.to_owned(),
            source,
        })?;
    if size == 0 {
        return Err(FwEnvError::ZeroSize { line });
    }
    // An absurd size would be allocated by PID 1 (issue 11, item 17).
    if size > crate::state::uboot::envblock::MAX_SIZE {
        return Err(FwEnvError::TooLarge { line, size });
    }
    let sector_size = fields
        .next()
        .map(|t| parse_hex(t, line, "sector size"))
        .transpose()?;
    let sectors = fields
        .next()
        .map(|t| parse_hex(t, line, "sector count"))
        .transpose()?;
    if let Some(extra) = fields.next() {
        return Err(FwEnvError::ExtraField {
            line,
            text: extra.to_owned(),
        });
    }
    Ok(Some(FwEnvEntry {
        device: PathBuf::from(device),
        offset,
        size,
        sector_size,
        sectors,
        line,
    }))
}

/// The second copy of a pair against the first.
fn check_second(first: &FwEnvEntry, second: &FwEnvEntry) -> Result<(), FwEnvError> {
    let (line, size) = (second.line, second.size);
    // libubootenv's check_compatible_devices refuses this too.
    if first.size != size {
        return Err(FwEnvError::SizeMismatch {
            line,
            size,
            first: first.size,
        });
    }
    // Writing one copy of a pair must never touch the other: that is
    // what makes the pair survive a torn write. libubootenv does not
    // check this; a pair that overlaps loses both copies at once.
    if first.device.as_os_str() == second.device.as_os_str()
        && overlaps(first.offset, second.offset, size)
    {
        return Err(FwEnvError::Overlap {
            line,
            first: first.line,
            device: first.device.clone(),
        });
    }
    Ok(())
}

/// True when two copies of `size` bytes at these offsets surely share a byte.
/// Offsets of opposite signs depend on the device's length and are checked
/// when the store reads them.
pub(super) fn overlaps(a: i64, b: i64, size: usize) -> bool {
    (a < 0) == (b < 0) && a.abs_diff(b) < size as u64
}

/// `%lx`/`%zx`: hex digits with an optional `0x`/`0X`.
fn parse_hex(text: &str, line: usize, field: &'static str) -> Result<u64, FwEnvError> {
    let digits = strip_hex_prefix(text).unwrap_or(text);
    u64::from_str_radix(digits, 16).map_err(|source| FwEnvError::InvalidNumber {
        line,
        field,
        text: text.to_owned(),
        source,
    })
}

/// `%lli` (strtoll base 0): optional sign, then `0x` hex, `0` octal or decimal.
fn parse_c_integer(text: &str) -> Result<i64, ParseIntError> {
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (digits, radix) = if let Some(hex) = strip_hex_prefix(unsigned) {
        (hex, 16)
    } else if unsigned.len() > 1 && unsigned.starts_with('0') {
        (&unsigned[1..], 8)
    } else {
        (unsigned, 10)
    };
    // from_str_radix accepts a sign of its own, which would let "--1" or
    // "0x-5" through; an empty string gives the same "invalid digit" error.
    if digits.starts_with(['+', '-']) {
        return "-".parse::<i64>();
    }
    // Parse with the sign attached so that i64::MIN is representable.
    let signed = if negative {
        format!("-{digits}")
    } else {
        digits.to_owned()
    };
    i64::from_str_radix(&signed, radix)
}

fn strip_hex_prefix(text: &str) -> Option<&str> {
    text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(device: &str, offset: i64, size: usize, line: usize) -> FwEnvEntry {
        FwEnvEntry {
            device: PathBuf::from(device),
            offset,
            size,
            sector_size: None,
            sectors: None,
            line,
        }
    }

    #[test]
    fn parses_single_and_redundant() {
        let single = "# U-Boot env\n/dev/mmcblk0 0x400000 0x4000\n";
        assert_eq!(
            parse(single),
            Ok(FwEnvConfig::Single(entry(
                "/dev/mmcblk0",
                0x400000,
                0x4000,
                2
            )))
        );

        let redundant =
            "\n/boot/uboot.env 0 4000 # first\n\t/boot/uboot-redund.env\t0x0\t0x4000 0x1000 2\n";
        let cfg = parse(redundant).unwrap();
        let FwEnvConfig::Redundant(a, b) = &cfg else {
            panic!("not redundant: {cfg:?}");
        };
        assert_eq!(*a, entry("/boot/uboot.env", 0, 0x4000, 2));
        assert_eq!(b.sector_size, Some(0x1000));
        assert_eq!(b.sectors, Some(2));
        assert_eq!(b.line, 3);
        assert_eq!(cfg.size(), 0x4000);
        assert_eq!(cfg.entries().len(), 2);
    }

    #[test]
    fn numbers_follow_sscanf() {
        let cases: &[(&str, i64, usize)] = &[
            ("/d 16384 0x4000", 16384, 0x4000),
            ("/d 0x4000 4000", 0x4000, 0x4000),
            ("/d 0X10 0X20", 0x10, 0x20),
            ("/d 010 20", 8, 0x20),
            ("/d 0 1", 0, 1),
            ("/d -0x4000 0x4000", -0x4000, 0x4000),
            ("/d -16384 0x4000", -16384, 0x4000),
            ("/d +512 0x200", 512, 0x200),
        ];
        for (text, offset, size) in cases {
            let FwEnvConfig::Single(e) = parse(text).unwrap() else {
                panic!("{text}");
            };
            assert_eq!((e.offset, e.size), (*offset, *size), "{text}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        type Check = fn(&FwEnvError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("/d", |e| {
                matches!(
                    e,
                    FwEnvError::MissingField {
                        line: 1,
                        field: "offset"
                    }
                )
            }),
            ("#c\n/d 0", |e| {
                matches!(
                    e,
                    FwEnvError::MissingField {
                        line: 2,
                        field: "size"
                    }
                )
            }),
            ("/d zz 0x10", |e| {
                matches!(
                    e,
                    FwEnvError::InvalidNumber {
                        line: 1,
                        field: "offset",
                        ..
                    }
                )
            }),
            ("/d 08 0x10", |e| {
                matches!(
                    e,
                    FwEnvError::InvalidNumber {
                        line: 1,
                        field: "offset",
                        ..
                    }
                )
            }),
            ("/d 0x-5 0x10", |e| {
                matches!(
                    e,
                    FwEnvError::InvalidNumber {
                        line: 1,
                        field: "offset",
                        ..
                    }
                )
            }),
            ("/d --1 0x10", |e| {
                matches!(
                    e,
                    FwEnvError::InvalidNumber {
                        line: 1,
                        field: "offset",
                        ..
                    }
                )
            }),
            ("/d 0 0xg", |e| {
                matches!(
                    e,
                    FwEnvError::InvalidNumber {
                        line: 1,
                        field: "size",
                        ..
                    }
                )
            }),
            ("/d 0 0x", |e| {
                matches!(
                    e,
                    FwEnvError::InvalidNumber {
                        line: 1,
                        field: "size",
                        ..
                    }
                )
            }),
            ("/d 0 -10", |e| {
                matches!(
                    e,
                    FwEnvError::InvalidNumber {
                        line: 1,
                        field: "size",
                        ..
                    }
                )
            }),
            ("/d 0 10 x", |e| {
                matches!(
                    e,
                    FwEnvError::InvalidNumber {
                        line: 1,
                        field: "sector size",
                        ..
                    }
                )
            }),
            ("/d 0 10 1 x", |e| {
                matches!(
                    e,
                    FwEnvError::InvalidNumber {
                        line: 1,
                        field: "sector count",
                        ..
                    }
                )
            }),
            ("/d 0 10 1 1 extra", |e| {
                matches!(e, FwEnvError::ExtraField { line: 1, .. })
            }),
            ("/d 0 0", |e| matches!(e, FwEnvError::ZeroSize { line: 1 })),
            ("/d 0 0x7fffffffffff", |e| {
                matches!(
                    e,
                    FwEnvError::TooLarge {
                        line: 1,
                        size: 0x7fff_ffff_ffff
                    }
                )
            }),
            ("/d 0 100001", |e| {
                matches!(e, FwEnvError::TooLarge { line: 1, .. })
            }),
            ("/d 0 4000\n/d 0x3fff 4000", |e| {
                matches!(
                    e,
                    FwEnvError::Overlap {
                        line: 2,
                        first: 1,
                        ..
                    }
                )
            }),
            ("/d -0x4000 4000\n/d -0x4001 4000", |e| {
                matches!(
                    e,
                    FwEnvError::Overlap {
                        line: 2,
                        first: 1,
                        ..
                    }
                )
            }),
            ("/d 0x4000 4000\n/d 0x4000 4000", |e| {
                matches!(
                    e,
                    FwEnvError::Overlap {
                        line: 2,
                        first: 1,
                        ..
                    }
                )
            }),
            ("/a 0 10\n/b 0 10\n\n/c 0 10", |e| {
                matches!(e, FwEnvError::TooManyEntries { line: 4 })
            }),
            ("/a 0 10\n/b 0 20", |e| {
                matches!(
                    e,
                    FwEnvError::SizeMismatch {
                        line: 2,
                        size: 0x20,
                        first: 0x10
                    }
                )
            }),
            ("", |e| matches!(e, FwEnvError::NoEntries)),
            ("# only\n   \n", |e| matches!(e, FwEnvError::NoEntries)),
        ];
        for (text, check) in cases {
            let err = parse(text).unwrap_err();
            assert!(check(&err), "{text:?} gave {err:?}");
            assert!(err.to_string().starts_with("line ") || matches!(err, FwEnvError::NoEntries));
        }
    }

    #[test]
    fn copies_that_do_not_overlap_are_accepted() {
        for text in [
            "/d 0 4000\n/d 0x4000 4000",
            "/d 0x4000 4000\n/d 0 4000",
            "/d -0x8000 4000\n/d -0x4000 4000",
            // Opposite signs depend on the device length: checked at load.
            "/d 0 4000\n/d -0x4000 4000",
            "/a 0 4000\n/b 0 4000",
            "/d 0 100000",
        ] {
            assert!(parse(text).is_ok(), "{text}");
        }
        assert!(overlaps(0, 0x3FFF, 0x4000));
        assert!(!overlaps(0, 0x4000, 0x4000));
        assert!(!overlaps(0, -0x4000, 0x4000));
    }

    #[test]
    fn extreme_offsets() {
        let FwEnvConfig::Single(e) = parse("/d -0x8000000000000000 1").unwrap() else {
            panic!()
        };
        assert_eq!(e.offset, i64::MIN);
        assert!(parse("/d 0x8000000000000000 1").is_err());
    }
}
