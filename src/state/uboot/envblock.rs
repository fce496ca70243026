//! U-Boot environment block codec: `crc32 [flags] key=value\0...\0\0 padding`, no I/O.
//!
//! The format is the one U-Boot's `saveenv`/`env export -c`, libubootenv's
//! `fw_setenv` and `mkenvimage` write:
//!
//! - a CRC-32 (zlib polynomial, the one `crc32fast` computes) of the whole data
//!   area, padding included, stored little-endian. U-Boot stores it in target
//!   byte order; slotinit only targets little-endian machines (aarch64, arm,
//!   x86), so big-endian images (`mkenvimage -b`) are read as bad CRCs.
//! - one `flags` byte only when the board keeps a redundant pair;
//! - `key=value\0` entries and one empty entry (`\0`) ending the list;
//! - padding up to the configured env size.
//!
//! Choices where the tools differ:
//!
//! - Order: [`Env`] keeps variables sorted by name bytes. U-Boot's `hexport_r`
//!   `qsort`s by `strcmp` before writing and libubootenv inserts in `strcmp`
//!   order, so a sorted map makes slotinit write exactly what both would and
//!   makes a rewrite of an unchanged env byte-identical.
//! - Padding: [`serialize`] pads with [`PAD_BYTE`] (0x00) because U-Boot's
//!   `hexport_r` clears the buffer with `\0` before exporting, so the bootloader
//!   and slotinit produce the same bytes for the same env. `mkenvimage` pads
//!   with 0xFF and libubootenv leaves whatever its `malloc` returned; all are
//!   valid because the CRC covers the padding and readers stop at `\0\0`.
//! - Duplicate names in a block: the last one wins, as in U-Boot's
//!   `himport_r` (`hsearch_r(ENV_ENTER)` replaces) and libubootenv.
//! - `name=` (empty value) is kept as an empty value, as libubootenv does;
//!   U-Boot would treat it as "delete" on import.
//! - An entry without `=` is rejected by the strict [`parse_data`]
//!   ([`EnvError::MissingEquals`]); an empty name (`=value`) too. No tool
//!   writes such an entry. But a copy whose CRC is valid is the bootloader's
//!   env whatever it holds, so the store reads CRC-valid copies with
//!   [`parse_data_lenient`], which does what U-Boot and libubootenv do with
//!   them and reports each as an anomaly.
//! - Bytes are kept as bytes: a value that is not UTF-8 survives a rewrite.

use std::collections::BTreeMap;
use std::fmt;

/// Length of the CRC-32 at the start of every block.
const CRC_LEN: usize = 4;

/// What [`serialize`] fills the unused data area with (see the module docs).
const PAD_BYTE: u8 = 0x00;

/// The largest env size slotinit reads or writes (1 MiB). U-Boot's
/// `CONFIG_ENV_SIZE` is typically 8 to 128 KiB (256 KiB on some boards); a
/// larger size is a config mistake, and allocating it in PID 1 could abort the
/// boot (issue 11, item 17).
pub(super) const MAX_SIZE: usize = 1 << 20;

/// The smallest env size: the header of a redundant copy and one empty entry,
/// with room for a few variables.
pub(super) const MIN_SIZE: usize = 16;

/// Errors of decoding or encoding one environment block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The block cannot even hold its header and an empty variable list.
    #[error(
        "environment block is {len} bytes, smaller than the {min} bytes of header and terminator"
    )]
    TooShort { len: usize, min: usize },
    /// `expected` is the CRC stored in the header, `actual` the one computed over the data area.
    #[error("crc mismatch: header says {expected:#010x}, data area has {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    /// The data area ends before the empty entry that closes the list.
    #[error("environment data has no terminating empty entry (\\0\\0)")]
    Unterminated,
    /// An entry at this offset of the data area has no `=`.
    #[error("entry at data offset {offset} has no '='")]
    MissingEquals { offset: usize },
    /// An entry at this offset of the data area starts with `=`.
    #[error("entry at data offset {offset} has an empty name")]
    EmptyName { offset: usize },
    /// The variables do not fit the data area of an env of `size` bytes.
    #[error("environment needs {needed} bytes of data but an env of {size} bytes has room for {available}")]
    TooLarge {
        needed: usize,
        available: usize,
        size: usize,
    },
    /// A variable name that U-Boot could not store or read back.
    #[error("invalid variable name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// A value containing `\0`, which would end the entry early.
    #[error("value of {name:?} contains a nul byte")]
    InvalidValue { name: String },
    /// Neither copy of a redundant pair passed its checks.
    #[error("no valid copy of the redundant environment")]
    NoValidCopy,
}

/// The variables of one environment, sorted by name bytes (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Env {
    /// An environment without variables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds an env from name/value pairs, validating each.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, EnvError> {
        let mut env = Self::new();
        for (name, value) in pairs {
            env.set(name, value)?;
        }
        Ok(env)
    }

    /// The raw value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.vars.get(name.as_bytes()).map(Vec::as_slice)
    }

    /// Sets `name` to `value`, returning the previous value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<Option<Vec<u8>>, EnvError> {
        self.set_bytes(name.as_bytes(), value.as_bytes())
    }

    /// Sets a variable whose name or value need not be UTF-8.
    pub fn set_bytes(&mut self, name: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, EnvError> {
        validate_name(name)?;
        if value.contains(&0) {
            return Err(EnvError::InvalidValue {
                name: String::from_utf8_lossy(name).into_owned(),
            });
        }
        Ok(self.vars.insert(name.to_vec(), value.to_vec()))
    }

    /// Removes `name`, returning its value.
    #[cfg(test)]
    pub(crate) fn remove(&mut self, name: &str) -> Option<Vec<u8>> {
        self.vars.remove(name.as_bytes())
    }

    /// Variables in the order they are written (sorted by name bytes).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.vars.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Number of variables.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.vars.len()
    }

    /// True when no variable is set.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Bytes of data area this env needs: every `key=value\0` plus the closing `\0`.
    pub fn data_len(&self) -> usize {
        self.vars
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>()
            + 1
    }
}

impl fmt::Display for Env {
    /// One `name=value` per line, like `fw_printenv`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.iter() {
            writeln!(
                f,
                "{}={}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value)
            )?;
        }
        Ok(())
    }
}

fn validate_name(name: &[u8]) -> Result<(), EnvError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains(&b'=') {
        "contains '='"
    } else if name.contains(&0) {
        "contains a nul byte"
    } else {
        return Ok(());
    };
    Err(EnvError::InvalidName {
        name: String::from_utf8_lossy(name).into_owned(),
        reason,
    })
}

/// Single copy (`crc` + data) or one copy of a redundant pair (`crc` + `flags` + data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Single,
    Redundant,
}

impl Layout {
    /// Bytes before the data area.
    pub const fn header_len(self) -> usize {
        match self {
            Self::Single => CRC_LEN,
            Self::Redundant => CRC_LEN + 1,
        }
    }

    /// The other layout: a block written for one fails the CRC of the other.
    pub(crate) const fn other(self) -> Self {
        match self {
            Self::Single => Self::Redundant,
            Self::Redundant => Self::Single,
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single => f.write_str("single-copy env (CRC at byte 0, data at byte 4)"),
            Self::Redundant => f.write_str(
                "copy of a redundant pair (CRC at byte 0, flags at byte 4, data at byte 5)",
            ),
        }
    }
}

/// The header [`serialize`] writes: no flags, or the flags byte of a redundant copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    Single,
    Redundant { flags: u8 },
}

impl Header {
    /// The layout this header belongs to.
    pub const fn layout(self) -> Layout {
        match self {
            Self::Single => Layout::Single,
            Self::Redundant { .. } => Layout::Redundant,
        }
    }
}

/// A block whose CRC matched; the data area is not parsed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified<'a> {
    /// The flags byte of a redundant copy, `None` for a single copy.
    pub flags: Option<u8>,
    /// The data area, padding included.
    pub data: &'a [u8],
}

/// One parsed copy of a redundant pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedundantCopy {
    pub flags: u8,
    pub env: Env,
}

/// Checks the header and CRC of `block` without parsing the variables.
///
/// Split from parsing because U-Boot picks the current redundant copy on the
/// CRC alone; the store needs the flags of every CRC-valid copy.
pub fn verify(block: &[u8], layout: Layout) -> Result<Verified<'_>, EnvError> {
    let header_len = layout.header_len();
    let min = header_len + 1;
    if block.len() < min {
        return Err(EnvError::TooShort {
            len: block.len(),
            min,
        });
    }
    let (header, data) = block.split_at(header_len);
    let expected = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let actual = crc32fast::hash(data);
    if expected != actual {
        return Err(EnvError::CrcMismatch { expected, actual });
    }
    let flags = match layout {
        Layout::Single => None,
        Layout::Redundant => Some(header[CRC_LEN]),
    };
    Ok(Verified { flags, data })
}

/// Parses the `key=value\0...\0\0` data area (padding after the end is ignored).
pub fn parse_data(data: &[u8]) -> Result<Env, EnvError> {
    let mut env = Env::new();
    let mut offset = 0;
    loop {
        let rest = data.get(offset..).ok_or(EnvError::Unterminated)?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(EnvError::Unterminated)?;
        if len == 0 {
            return Ok(env);
        }
        let entry = &rest[..len];
        let eq = entry
            .iter()
            .position(|&b| b == b'=')
            .ok_or(EnvError::MissingEquals { offset })?;
        if eq == 0 {
            return Err(EnvError::EmptyName { offset });
        }
        // Names from a block cannot hold `=` or `\0` by construction, so no
        // validation is needed; later duplicates replace earlier ones.
        env.vars
            .insert(entry[..eq].to_vec(), entry[eq + 1..].to_vec());
        offset += len + 1;
    }
}

/// Parses the data area the way the bootloader reads it, never failing: what
/// [`parse_data`] rejects is skipped and returned as an anomaly.
///
/// The store uses this for a copy whose CRC is valid, because U-Boot and
/// libubootenv pick the current copy on the CRC and flags alone and then use
/// its variables whatever else the data area holds (issue 11, item 14):
///
/// - an entry without `=` deletes that name, as U-Boot's `himport_r`
///   (lib/hashtable.c, "deal with "name" and "name=" entries (delete var)")
///   does; libubootenv's `libuboot_load` (src/uboot_env.c) skips it, which
///   only differs when the same name was set earlier in the block;
/// - an empty name (`=value`) is skipped, as libubootenv does (its
///   `__libuboot_set_env` refuses an empty name). U-Boot's `himport_r` fails
///   the whole import on it ("unable to use an empty key") and boots its
///   built-in default env, so a rewrite without that entry restores the
///   stored variables for U-Boot too;
/// - a data area without the closing empty entry ends at its last byte, as
///   in `himport_r`, which stops at the env size.
pub fn parse_data_lenient(data: &[u8]) -> (Env, Vec<EnvError>) {
    let mut env = Env::new();
    let mut anomalies = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let rest = &data[offset..];
        let len = match rest.iter().position(|&b| b == 0) {
            Some(0) => return (env, anomalies),
            Some(len) => len,
            None => {
                anomalies.push(EnvError::Unterminated);
                rest.len()
            }
        };
        let entry = &rest[..len];
        match entry.iter().position(|&b| b == b'=') {
            None => {
                anomalies.push(EnvError::MissingEquals { offset });
                env.vars.remove(entry);
            }
            Some(0) => anomalies.push(EnvError::EmptyName { offset }),
            Some(eq) => {
                env.vars
                    .insert(entry[..eq].to_vec(), entry[eq + 1..].to_vec());
            }
        }
        offset += len + 1;
    }
    if !anomalies.contains(&EnvError::Unterminated) {
        anomalies.push(EnvError::Unterminated);
    }
    (env, anomalies)
}

/// Errors of the text form of an env (`name=value` lines); `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("line {line}: no '=' (expected name=value)")]
    MissingEquals { line: usize },
    #[error("line {line}: invalid variable")]
    Invalid {
        line: usize,
        #[source]
        source: EnvError,
    },
}

/// Parses an env in the text form `mkenvimage` takes (and U-Boot's
/// `u-boot-initial-env` holds): one `name=value` per line, empty lines and
/// lines starting with `#` skipped, a line ending in `\` continued on the
/// next with the newline kept in the value (tools/mkenvimage.c). Stricter
/// than mkenvimage, which copies any line: a line without `=` or with an
/// empty name is an error here, since U-Boot would drop it or fail the
/// whole import (`himport_r`).
pub fn parse_text(text: &[u8]) -> Result<Env, TextError> {
    let mut env = Env::new();
    let mut add = |entry: &[u8], line: usize| -> Result<(), TextError> {
        let eq = entry
            .iter()
            .position(|&b| b == b'=')
            .ok_or(TextError::MissingEquals { line })?;
        env.set_bytes(&entry[..eq], &entry[eq + 1..])
            .map(drop)
            .map_err(|source| TextError::Invalid { line, source })
    };
    let mut entry: Vec<u8> = Vec::new();
    let mut first_line = 0;
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        if entry.is_empty() {
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            first_line = index + 1;
        }
        match line.strip_suffix(b"\\") {
            Some(continued) => {
                entry.extend_from_slice(continued);
                entry.push(b'\n');
            }
            None => {
                entry.extend_from_slice(line);
                add(&std::mem::take(&mut entry), first_line)?;
            }
        }
    }
    // A last line ending in a backslash: mkenvimage keeps the newline.
    if !entry.is_empty() {
        add(&entry, first_line)?;
    }
    Ok(env)
}

/// Decodes a single-copy block (no flags byte).
pub fn parse_single(block: &[u8]) -> Result<Env, EnvError> {
    parse_data(verify(block, Layout::Single)?.data)
}

/// Decodes one copy of a redundant pair (with flags byte).
pub fn parse_redundant(block: &[u8]) -> Result<RedundantCopy, EnvError> {
    let verified = verify(block, Layout::Redundant)?;
    Ok(RedundantCopy {
        // verify() always yields flags for Layout::Redundant.
        flags: verified.flags.unwrap_or_default(),
        env: parse_data(verified.data)?,
    })
}

/// Encodes `env` into a block of exactly `size` bytes.
pub fn serialize(env: &Env, size: usize, header: Header) -> Result<Vec<u8>, EnvError> {
    let header_len = header.layout().header_len();
    let needed = env.data_len();
    let available = size.saturating_sub(header_len);
    if needed > available {
        return Err(EnvError::TooLarge {
            needed,
            available,
            size,
        });
    }
    let mut block = Vec::with_capacity(size);
    block.extend_from_slice(&[0; CRC_LEN]);
    if let Header::Redundant { flags } = header {
        block.push(flags);
    }
    for (name, value) in env.iter() {
        block.extend_from_slice(name);
        block.push(b'=');
        block.extend_from_slice(value);
        block.push(0);
    }
    block.push(0);
    block.resize(size, PAD_BYTE);
    let crc = crc32fast::hash(&block[header_len..]);
    block[..CRC_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(block)
}

/// Which copy of a redundant pair: the first or the second line of `fw_env.config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CopyIndex {
    First,
    Second,
}

impl CopyIndex {
    /// 0 for the first copy, 1 for the second.
    pub const fn index(self) -> usize {
        match self {
            Self::First => 0,
            Self::Second => 1,
        }
    }

    /// The other copy of the pair.
    pub const fn other(self) -> Self {
        match self {
            Self::First => Self::Second,
            Self::Second => Self::First,
        }
    }
}

impl fmt::Display for CopyIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::First => f.write_str("first copy"),
            Self::Second => f.write_str("second copy"),
        }
    }
}

/// Picks the current copy of a redundant pair from the flags of the copies
/// that are valid (`None` = that copy failed its checks).
///
/// U-Boot's `env_import_redund` rules: 0xFF against 0x00 is a wrap-around and
/// 0x00 wins; otherwise the higher flags win; equal flags pick the first copy.
/// libubootenv does the same for files and block devices (`FLAGS_INCREMENTAL`).
pub fn select_current(first: Option<u8>, second: Option<u8>) -> Result<CopyIndex, EnvError> {
    match (first, second) {
        (None, None) => Err(EnvError::NoValidCopy),
        (Some(_), None) => Ok(CopyIndex::First),
        (None, Some(_)) => Ok(CopyIndex::Second),
        (Some(a), Some(b)) => Ok(match (a, b) {
            (0xFF, 0x00) => CopyIndex::Second,
            (0x00, 0xFF) => CopyIndex::First,
            (a, b) if b > a => CopyIndex::Second,
            _ => CopyIndex::First,
        }),
    }
}

/// The flags to write into the non-current copy: current + 1, wrapping 0xFF to
/// 0x00 (U-Boot's `++env_flags`, libubootenv's `flags++`).
pub const fn next_flags(current: u8) -> u8 {
    current.wrapping_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pairs = &'static [(&'static str, &'static str)];

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied()).unwrap()
    }

    /// A block from raw data bytes with a correct CRC, like a tool would write.
    fn block(header: Header, data: &[u8], size: usize) -> Vec<u8> {
        let mut b = vec![0u8; CRC_LEN];
        if let Header::Redundant { flags } = header {
            b.push(flags);
        }
        let hl = b.len();
        b.extend_from_slice(data);
        b.resize(size, 0xFF);
        let crc = crc32fast::hash(&b[hl..]);
        b[..CRC_LEN].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn serialize_layout_is_crc_flags_sorted_entries_padding() {
        let e = env(&[("b", "2"), ("a", "1")]);
        let out = serialize(&e, 32, Header::Redundant { flags: 7 }).unwrap();
        assert_eq!(out.len(), 32);
        assert_eq!(out[4], 7);
        assert_eq!(&out[5..15], b"a=1\0b=2\0\0\0");
        assert!(out[15..].iter().all(|&b| b == PAD_BYTE));
        let crc = crc32fast::hash(&out[5..]);
        assert_eq!(&out[..4], &crc.to_le_bytes());

        let single = serialize(&e, 16, Header::Single).unwrap();
        assert_eq!(&single[4..13], b"a=1\0b=2\0\0");
    }

    #[test]
    fn round_trips() {
        let cases: &[(Pairs, Header, usize)] = &[
            (&[], Header::Single, 5),
            (&[], Header::Redundant { flags: 0 }, 6),
            (
                &[("BOOT_ORDER", "A B"), ("BOOT_A_LEFT", "3")],
                Header::Single,
                0x4000,
            ),
            (&[("x", "")], Header::Redundant { flags: 0xFF }, 64),
            (
                &[("bootcmd", "run a; run b"), ("e", "=x=")],
                Header::Single,
                64,
            ),
        ];
        for (pairs, header, size) in cases {
            let e = env(pairs);
            let out = serialize(&e, *size, *header).unwrap();
            match header {
                Header::Single => assert_eq!(parse_single(&out).unwrap(), e, "{pairs:?}"),
                Header::Redundant { flags } => assert_eq!(
                    parse_redundant(&out).unwrap(),
                    RedundantCopy {
                        flags: *flags,
                        env: e.clone()
                    }
                ),
            }
        }
    }

    #[test]
    fn non_utf8_values_survive() {
        let mut e = Env::new();
        e.set_bytes(b"latin1", b"caf\xe9").unwrap();
        let out = serialize(&e, 32, Header::Single).unwrap();
        assert_eq!(
            parse_single(&out).unwrap().get("latin1"),
            Some(&b"caf\xe9"[..])
        );
    }

    #[test]
    fn exact_fit_and_one_byte_too_many() {
        // "a=1\0" + "\0" = 5 bytes of data.
        let e = env(&[("a", "1")]);
        assert!(serialize(&e, CRC_LEN + 5, Header::Single).is_ok());
        assert_eq!(
            serialize(&e, CRC_LEN + 4, Header::Single),
            Err(EnvError::TooLarge {
                needed: 5,
                available: 4,
                size: 8
            })
        );
        assert_eq!(
            serialize(&e, CRC_LEN + 5, Header::Redundant { flags: 1 }),
            Err(EnvError::TooLarge {
                needed: 5,
                available: 4,
                size: 9
            })
        );
        assert!(matches!(
            serialize(&Env::new(), 2, Header::Single),
            Err(EnvError::TooLarge { available: 0, .. })
        ));
    }

    #[test]
    fn parse_rejects() {
        let good = block(Header::Single, b"a=1\0\0", 32);
        let mut flipped = good.clone();
        flipped[6] ^= 0x01;
        let stored = u32::from_le_bytes([good[0], good[1], good[2], good[3]]);
        let cases: Vec<(&str, Vec<u8>, EnvError)> = vec![
            (
                "too short",
                vec![0; 4],
                EnvError::TooShort { len: 4, min: 5 },
            ),
            (
                "flipped byte",
                flipped.clone(),
                EnvError::CrcMismatch {
                    expected: stored,
                    actual: crc32fast::hash(&flipped[4..]),
                },
            ),
            (
                "no terminator at all",
                block(Header::Single, b"a=1", 7),
                EnvError::Unterminated,
            ),
            (
                "entry ends at the last byte, no empty entry",
                block(Header::Single, b"a=1\0", 8),
                EnvError::Unterminated,
            ),
            (
                "entry without =",
                block(Header::Single, b"a=1\0junk\0\0", 32),
                EnvError::MissingEquals { offset: 4 },
            ),
            (
                "empty name",
                block(Header::Single, b"=v\0\0", 32),
                EnvError::EmptyName { offset: 0 },
            ),
        ];
        for (what, bytes, want) in cases {
            assert_eq!(parse_single(&bytes), Err(want), "{what}");
        }
    }

    #[test]
    fn parse_accepts_what_the_tools_write() {
        let cases: &[(&str, &[u8], Pairs)] = &[
            ("empty env, U-Boot style", b"\0", &[]),
            ("0xFF padding, mkenvimage style", b"a=1\0\0", &[("a", "1")]),
            ("duplicate: last wins", b"a=1\0a=2\0\0", &[("a", "2")]),
            ("empty value kept", b"a=\0\0", &[("a", "")]),
            ("value with =", b"a=b=c\0\0", &[("a", "b=c")]),
            ("unsorted input", b"z=1\0a=2\0\0", &[("a", "2"), ("z", "1")]),
        ];
        for (what, data, want) in cases {
            let b = block(Header::Single, data, 64);
            assert_eq!(parse_single(&b).unwrap(), env(want), "{what}");
        }
    }

    #[test]
    fn redundant_header_flags_are_not_under_the_crc() {
        let mut b = serialize(&env(&[("a", "1")]), 32, Header::Redundant { flags: 1 }).unwrap();
        b[4] = 0xFF;
        assert_eq!(parse_redundant(&b).unwrap().flags, 0xFF);
        // A redundant copy is not a single block: the flags byte shifts the data.
        assert!(parse_single(&b).is_err());
    }

    #[test]
    fn set_validates() {
        let mut e = Env::new();
        assert!(matches!(e.set("", "x"), Err(EnvError::InvalidName { .. })));
        assert!(matches!(
            e.set("a=b", "x"),
            Err(EnvError::InvalidName { .. })
        ));
        assert!(matches!(
            e.set_bytes(b"a\0", b"x"),
            Err(EnvError::InvalidName { .. })
        ));
        assert!(matches!(
            e.set("a", "x\0y"),
            Err(EnvError::InvalidValue { .. })
        ));
        assert_eq!(e.set("a", "1"), Ok(None));
        assert_eq!(e.set("a", "2"), Ok(Some(b"1".to_vec())));
        assert_eq!(e.remove("a"), Some(b"2".to_vec()));
        assert!(e.is_empty());
    }

    #[test]
    fn sorted_like_strcmp() {
        let e = env(&[
            ("bootcmd", "x"),
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "3"),
        ]);
        let names: Vec<&[u8]> = e.iter().map(|(k, _)| k).collect();
        assert_eq!(names, [&b"BOOT_A_LEFT"[..], b"BOOT_ORDER", b"bootcmd"]);
        assert_eq!(e.to_string(), "BOOT_A_LEFT=3\nBOOT_ORDER=A B\nbootcmd=x\n");
    }

    #[test]
    fn select_current_follows_u_boot() {
        use CopyIndex::{First, Second};
        type Want = Result<CopyIndex, EnvError>;
        let cases: &[(Option<u8>, Option<u8>, Want)] = &[
            (None, None, Err(EnvError::NoValidCopy)),
            (Some(5), None, Ok(First)),
            (None, Some(5), Ok(Second)),
            (Some(1), Some(2), Ok(Second)),
            (Some(2), Some(1), Ok(First)),
            (Some(3), Some(3), Ok(First)),
            (Some(0xFF), Some(0x00), Ok(Second)),
            (Some(0x00), Some(0xFF), Ok(First)),
            // Only the exact 0xFF/0x00 pair counts as a wrap-around.
            (Some(0xFF), Some(0x01), Ok(First)),
            (Some(0xFE), Some(0x00), Ok(First)),
        ];
        for (a, b, want) in cases {
            assert_eq!(select_current(*a, *b), *want, "{a:?} {b:?}");
        }
    }

    #[test]
    fn fixtures_made_by_the_real_tools() {
        const SINGLE: &[u8] = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/env/single.env"
        ));
        const BAD: &[u8] = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/env/single-badcrc.env"
        ));
        const RED1: &[u8] = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/env/redundant-1.env"
        ));
        const RED2: &[u8] = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/env/redundant-2.env"
        ));

        let defaults = [
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3"),
            ("BOOT_ORDER", "A B"),
            ("bootcmd", "run distro_bootcmd"),
        ];
        let mut with_delay = env(&defaults);
        with_delay.set("bootdelay", "2").unwrap();
        assert_eq!(parse_single(SINGLE).unwrap(), with_delay, "mkenvimage");
        assert!(matches!(
            parse_single(BAD),
            Err(EnvError::CrcMismatch { .. })
        ));
        // Redundant copies are not single blocks, and vice versa.
        assert!(parse_redundant(SINGLE).is_err());
        assert!(parse_single(RED1).is_err());

        let first = parse_redundant(RED1).unwrap();
        let second = parse_redundant(RED2).unwrap();
        assert_eq!((first.flags, second.flags), (2, 3));
        let mut older = env(&defaults);
        older.set("BOOT_A_LEFT", "1").unwrap();
        let mut newer = older.clone();
        newer.set("BOOT_ORDER", "B A").unwrap();
        assert_eq!((first.env, second.env), (older, newer));
        assert_eq!(
            select_current(Some(first.flags), Some(second.flags)),
            Ok(CopyIndex::Second)
        );
    }

    #[test]
    fn next_flags_wraps_and_always_wins() {
        assert_eq!(next_flags(1), 2);
        assert_eq!(next_flags(0xFF), 0);
        for cur in 0..=u8::MAX {
            assert_eq!(
                select_current(Some(cur), Some(next_flags(cur))),
                Ok(CopyIndex::Second)
            );
            assert_eq!(
                select_current(Some(next_flags(cur)), Some(cur)),
                Ok(CopyIndex::First)
            );
        }
    }

    #[test]
    fn lenient_parse_does_what_the_bootloader_does() {
        let cases: &[(&str, &[u8], Pairs, &[EnvError])] = &[
            ("clean", b"a=1\0\0", &[("a", "1")], &[]),
            (
                "no '=': skipped",
                b"a=1\0junk\0b=2\0\0",
                &[("a", "1"), ("b", "2")],
                &[EnvError::MissingEquals { offset: 4 }],
            ),
            (
                "no '=': deletes an earlier entry (himport_r)",
                b"a=1\0a\0\0",
                &[],
                &[EnvError::MissingEquals { offset: 4 }],
            ),
            (
                "empty name skipped",
                b"=v\0a=1\0\0",
                &[("a", "1")],
                &[EnvError::EmptyName { offset: 0 }],
            ),
            (
                "no terminator: the data area ends the entry",
                b"a=1\0b=2",
                &[("a", "1"), ("b", "2")],
                &[EnvError::Unterminated],
            ),
            (
                "last entry ends at the last byte",
                b"a=1\0",
                &[("a", "1")],
                &[EnvError::Unterminated],
            ),
            ("empty data area", b"", &[], &[EnvError::Unterminated]),
        ];
        for (what, data, want, anomalies) in cases {
            let (got, found) = parse_data_lenient(data);
            assert_eq!(got, env(want), "{what}");
            assert_eq!(found, *anomalies, "{what}");
            // Where the strict parser accepts, both agree.
            if let Ok(strict) = parse_data(data) {
                assert_eq!(strict, got, "{what}");
                assert!(found.is_empty(), "{what}");
            }
        }
    }

    #[test]
    fn text_form_is_mkenvimage_input() {
        let text = b"# comment\n\nbootcmd=run a; run b\nmulti=one\\\ntwo\nempty=\nx=a=b\n";
        let e = parse_text(text).unwrap();
        assert_eq!(e.get("bootcmd"), Some(&b"run a; run b"[..]));
        assert_eq!(e.get("multi"), Some(&b"one\ntwo"[..]));
        assert_eq!(e.get("empty"), Some(&b""[..]));
        assert_eq!(e.get("x"), Some(&b"a=b"[..]));
        assert_eq!(e.len(), 4);
        assert_eq!(
            parse_text(b"a=1").unwrap(),
            env(&[("a", "1")]),
            "no final newline"
        );
        assert_eq!(
            parse_text(b"a=1\n\nnot a variable\n"),
            Err(TextError::MissingEquals { line: 3 })
        );
        assert!(matches!(
            parse_text(b"=x\n"),
            Err(TextError::Invalid { line: 1, .. })
        ));
        // The checked-in mkenvimage input reads as mkenvimage wrote it.
        let txt = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/env/single.txt"
        ));
        let img = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/env/single.env"
        ));
        assert_eq!(parse_text(txt).unwrap(), parse_single(img).unwrap());
    }

    #[test]
    fn layouts_name_their_header() {
        assert_eq!(Layout::Single.other(), Layout::Redundant);
        assert_eq!(Layout::Redundant.other(), Layout::Single);
        assert!(Layout::Single.to_string().contains("data at byte 4"));
        assert!(Layout::Redundant.to_string().contains("flags at byte 4"));
    }
}
