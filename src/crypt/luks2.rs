//! LUKS2 in process: the header (binary header + JSON metadata, primary or
//! secondary), keyslot unlock (KDF, keyslot area, AF merge, digest) and the
//! dm-crypt table of the data segment. Pure: it reads the container through
//! `Read + Seek` and hands back table lines; the init sets them up with
//! `Sys::dm_create`.
//!
//! Sources: the LUKS2 on-disk format specification (cryptsetup
//! docs/on-disk-format-luks2.pdf, "LUKS2 binary header", "JSON area",
//! "keyslots", "digests", "segments"), and cryptsetup 2.6.1's behaviour where
//! the spec leaves a choice open: lib/luks2/luks2_disk_metadata.c
//! `LUKS2_disk_hdr_read` (which header wins, where a secondary is looked
//! for), lib/luks2/luks2_keyslot_luks2.c (keyslot area IVs count 512-byte
//! sectors from the area start), lib/libdevmapper.c `get_dm_crypt_params`
//! (the table line; no `iv_large_sectors` for LUKS2), lib/setup.c
//! `crypt_keyslot_get_encryption` (the keyslot cipher is the segment's when
//! the crypto backend knows it: adiantum included, see [`AreaDecrypt`]).
//! Tested against containers made by the real cryptsetup
//! (tests/fixtures/luks2/).

use crate::kernel::sys::{Disk, DmLine};
use sha2::Digest;
use std::fmt::Write as _;
use std::io::{self, SeekFrom};
use zeroize::Zeroizing;

/// The binary header: the first 4096 bytes of each header copy.
const BIN_LEN: usize = 4096;
const MAGIC_PRIMARY: &[u8; 6] = b"LUKS\xba\xbe";
const MAGIC_SECONDARY: &[u8; 6] = b"SKUL\xba\xbe";
/// Header (binary + JSON) sizes the spec allows: 16 KiB to 4 MiB.
const HDR_MIN: u64 = 0x4000;
const HDR_MAX: u64 = 0x40_0000;
/// Where a secondary header may be when the primary is unreadable and so
/// does not say its size (cryptsetup's LUKS2_HDR2_OFFSETS).
const SECONDARY_OFFSETS: [u64; 9] = [
    0x4000, 0x8000, 0x1_0000, 0x2_0000, 0x4_0000, 0x8_0000, 0x10_0000, 0x20_0000, 0x40_0000,
];
/// Offsets inside the binary header (spec, "LUKS2 binary header").
const OFF_VERSION: usize = 6;
const OFF_HDR_SIZE: usize = 8;
const OFF_SEQID: usize = 16;
const OFF_LABEL: usize = 24;
const OFF_CSUM_ALG: usize = 72;
const OFF_UUID: usize = 168;
const OFF_HDR_OFFSET: usize = 256;
const OFF_CSUM: usize = 448;
const CSUM_LEN: usize = 64;
/// The largest keyslot material read (key size x stripes): 4000 stripes of a
/// 1024-byte key. Bounds what a forged header can make the init allocate.
const MAX_AF_BYTES: u64 = 4000 * 1024;
const SECTOR: u64 = 512;
/// The largest key (volume or keyslot) accepted, bytes; dm-crypt's keys are
/// far smaller (64 bytes for aes-xts-plain64 with AES-256).
const MAX_KEY: usize = 512;
/// The shortest digest accepted: a shorter one would let almost any key
/// through (cryptsetup writes the hash's full length, 32 for sha256).
const MIN_DIGEST: usize = 16;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Luks2Error {
    #[error("{what}: cannot read: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}: not a LUKS2 container")]
    NotLuks { what: String },
    #[error("{what}: a LUKS1 container; only LUKS2 is supported")]
    Luks1 { what: String },
    #[error("{what}: no valid LUKS2 header (primary: {primary}; secondary: {secondary})")]
    NoValidHeader {
        what: String,
        primary: String,
        secondary: String,
    },
    #[error("{what}: unsupported LUKS2 container: {reason}")]
    Unsupported { what: String, reason: String },
    #[error("{what}: keyslot {keyslot} needs {memory_kib} KiB for argon2, above the limit of {limit_kib} KiB")]
    MemoryLimit {
        what: String,
        keyslot: u32,
        memory_kib: u64,
        limit_kib: u64,
    },
    #[error("{what}: no keyslot opens with this key")]
    WrongKey { what: String },
    #[error("{what}: no keyslot unlocks the data segment")]
    NoKeyslot { what: String },
    #[error("{what}: the data segment does not fit the device: {reason}")]
    Size { what: String, reason: String },
}

/// Which header copy a [`Container`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Primary,
    Secondary,
}

/// What unlocking may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The most memory an argon2 keyslot may ask for; a keyslot asking for
    /// more is not tried (and is the error when no other one opens).
    pub(crate) max_memory_kib: u64,
}

/// A hash LUKS2 names (checksum, PBKDF2, AF diffusion, digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha1,
    Sha256,
    Sha512,
}

impl Hash {
    fn parse(name: &str) -> Option<Hash> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Some(Hash::Sha1),
            "sha256" => Some(Hash::Sha256),
            "sha512" => Some(Hash::Sha512),
            _ => None,
        }
    }

    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Hash::Sha1 => run::<sha1::Sha1>(parts),
            Hash::Sha256 => run::<sha2::Sha256>(parts),
            Hash::Sha512 => run::<sha2::Sha512>(parts),
        }
    }

    fn len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha512 => 64,
        }
    }

    fn pbkdf2(self, password: &[u8], salt: &[u8], rounds: u32, out: &mut [u8]) {
        match self {
            // slotinit_kdf: compiled for speed while slotinit is for size.
            Hash::Sha1 => slotinit_kdf::pbkdf2_hmac_sha1(password, salt, rounds, out),
            Hash::Sha256 => slotinit_kdf::pbkdf2_hmac_sha256(password, salt, rounds, out),
            Hash::Sha512 => slotinit_kdf::pbkdf2_hmac_sha512(password, salt, rounds, out),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kdf {
    Pbkdf2 {
        hash: Hash,
        iterations: u32,
        salt: Vec<u8>,
    },
    Argon2 {
        id: bool,
        time: u32,
        memory_kib: u32,
        cpus: u32,
        salt: Vec<u8>,
    },
}

/// A keyslot's area: where its encrypted key material lies and how it is
/// encrypted (spec, "keyslots": area type raw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Area {
    /// Bytes from the start of the container.
    pub(crate) offset: u64,
    pub(crate) size: u64,
    /// dm-crypt cipher spec, e.g. `aes-xts-plain64`.
    pub(crate) encryption: String,
    /// Bytes.
    pub(crate) key_size: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Keyslot {
    id: u32,
    /// The volume key's size, bytes.
    key_size: usize,
    stripes: u32,
    af_hash: Hash,
    area: Area,
    kdf: Kdf,
    /// 0 ignore, 1 normal, 2 prefer.
    priority: u8,
}

/// The data segment (spec, "segments": type crypt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Bytes from the start of the container.
    pub(crate) offset: u64,
    /// Bytes; None: "dynamic", up to the end of the device.
    pub(crate) size: Option<u64>,
    /// The IV of the segment's first sector (512-byte units).
    pub(crate) iv_tweak: u64,
    /// dm-crypt cipher spec.
    pub(crate) encryption: String,
    pub(crate) sector_size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct VolumeDigest {
    keyslots: Vec<u32>,
    hash: Hash,
    iterations: u32,
    salt: Vec<u8>,
    digest: Vec<u8>,
}

/// A parsed, checked LUKS2 header (the copy cryptsetup would use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Container {
    what: String,
    which: Which,
    seqid: u64,
    label: String,
    uuid: String,
    keyslots: Vec<Keyslot>,
    segment: Segment,
    digest: VolumeDigest,
}

impl Container {
    pub(crate) fn label(&self) -> &str {
        &self.label
    }
    pub(crate) fn uuid(&self) -> &str {
        &self.uuid
    }
    pub(crate) fn which(&self) -> Which {
        self.which
    }
    /// The header's sequence id (each metadata update counts it up).
    #[cfg(test)]
    pub(crate) fn seqid(&self) -> u64 {
        self.seqid
    }
    #[cfg(test)]
    pub(crate) fn segment(&self) -> &Segment {
        &self.segment
    }
    /// The most memory any keyslot of the data segment asks for (argon2;
    /// 0 for pbkdf2 only).
    #[cfg(test)]
    pub(crate) fn kdf_memory_kib(&self) -> u64 {
        self.keyslots
            .iter()
            .map(|k| match k.kdf {
                Kdf::Argon2 { memory_kib, .. } => u64::from(memory_kib),
                Kdf::Pbkdf2 { .. } => 0,
            })
            .max()
            .unwrap_or(0)
    }
}

/// An unlocked container: the volume key (wiped on drop) and its segment.
pub(crate) struct Unlocked {
    what: String,
    key: Zeroizing<Vec<u8>>,
    segment: Segment,
    keyslot: u32,
}

impl Unlocked {
    #[cfg(test)]
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }
    #[cfg(test)]
    pub(crate) fn segment(&self) -> &Segment {
        &self.segment
    }
    /// The keyslot that opened.
    pub(crate) fn keyslot(&self) -> u32 {
        self.keyslot
    }
}

impl std::fmt::Debug for Unlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unlocked")
            .field("what", &self.what)
            .field("keyslot", &self.keyslot)
            .field("segment", &self.segment)
            .finish_non_exhaustive()
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// A NUL-terminated string field of the binary header.
fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn read_at(dev: &mut dyn Disk, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    dev.seek(SeekFrom::Start(offset))?;
    dev.read_exact(buf)
}

/// Why one header copy is not usable; `Io` is a device error, not damage.
enum CopyError {
    Io(io::Error),
    Bad(String),
}

impl From<String> for CopyError {
    fn from(s: String) -> Self {
        CopyError::Bad(s)
    }
}

fn io_or_short(e: io::Error) -> CopyError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        CopyError::Bad("the device is too short".into())
    } else {
        CopyError::Io(e)
    }
}

struct Copy {
    bin: Vec<u8>,
    json: serde_json::Value,
}

/// Reads and checks one header copy at `offset` (cryptsetup `hdr_read_disk`:
/// magic, version, the offset it names, its size, the checksum).
fn read_copy(dev: &mut dyn Disk, offset: u64, secondary: bool) -> Result<Copy, CopyError> {
    let mut bin = vec![0u8; BIN_LEN];
    read_at(dev, offset, &mut bin).map_err(io_or_short)?;
    let magic = if secondary {
        MAGIC_SECONDARY
    } else {
        MAGIC_PRIMARY
    };
    if &bin[..6] != magic {
        return Err(format!("{NO_MAGIC} at {offset:#x}").into());
    }
    let version = be16(&bin, OFF_VERSION);
    if version != 2 {
        return Err(format!("version {version} at {offset:#x}").into());
    }
    let hdr_offset = be64(&bin, OFF_HDR_OFFSET);
    if hdr_offset != offset {
        return Err(format!("header at {offset:#x} says it is at {hdr_offset:#x}").into());
    }
    let hdr_size = be64(&bin, OFF_HDR_SIZE);
    if !(HDR_MIN..=HDR_MAX).contains(&hdr_size) {
        return Err(format!("header size {hdr_size:#x}").into());
    }
    if secondary && offset != hdr_size {
        return Err(format!("secondary at {offset:#x} with size {hdr_size:#x}").into());
    }
    let alg = cstr(&bin[OFF_CSUM_ALG..OFF_CSUM_ALG + 32]);
    let hash = Hash::parse(&alg).ok_or_else(|| format!("checksum algorithm {alg:?}"))?;
    let json_len = (hdr_size as usize) - BIN_LEN;
    let mut json = vec![0u8; json_len];
    read_at(dev, offset + BIN_LEN as u64, &mut json).map_err(io_or_short)?;
    let mut zeroed = bin.clone();
    zeroed[OFF_CSUM..OFF_CSUM + CSUM_LEN].fill(0);
    let sum = hash.digest(&[&zeroed, &json]);
    if sum[..] != bin[OFF_CSUM..OFF_CSUM + hash.len()] {
        return Err(format!("checksum mismatch at {offset:#x}").into());
    }
    // The JSON text ends at the first NUL; the rest of the area is zeros.
    let end = json.iter().position(|&c| c == 0).unwrap_or(json.len());
    let value: serde_json::Value =
        serde_json::from_slice(&json[..end]).map_err(|e| format!("JSON at {offset:#x}: {e}"))?;
    if !value.is_object() {
        return Err(format!("JSON at {offset:#x} is not an object").into());
    }
    Ok(Copy { bin, json: value })
}

/// One header copy as [`read_header`] judges it.
enum Got {
    /// Checksum and JSON valid; what it holds may still be unsupported.
    Valid {
        seqid: u64,
        parsed: Box<Result<Container, Luks2Error>>,
    },
    Bad(String),
    Io(io::Error),
}

fn judge(r: Result<Copy, CopyError>, which: Which, what: &str) -> Got {
    match r {
        Err(CopyError::Io(e)) => Got::Io(e),
        Err(CopyError::Bad(s)) => Got::Bad(s),
        Ok(copy) => {
            let seqid = be64(&copy.bin, OFF_SEQID);
            match parse_copy(&copy, which, what) {
                Ok(c) => Got::Valid {
                    seqid,
                    parsed: Box::new(Ok(c)),
                },
                Err(JsonError::Unsupported(reason)) => Got::Valid {
                    seqid,
                    parsed: Box::new(Err(Luks2Error::Unsupported {
                        what: what.into(),
                        reason,
                    })),
                },
                Err(JsonError::Bad(s)) => Got::Bad(s),
            }
        }
    }
}

const NO_MAGIC: &str = "no LUKS2 magic";

/// The secondary when the primary does not say its size: the first known
/// offset holding a readable one.
fn scan_secondary(dev: &mut dyn Disk) -> Result<Copy, CopyError> {
    let mut best = None;
    for off in SECONDARY_OFFSETS {
        match read_copy(dev, off, true) {
            Ok(c) => return Ok(c),
            Err(CopyError::Io(e)) => return Err(CopyError::Io(e)),
            Err(CopyError::Bad(s)) => {
                if !s.starts_with(NO_MAGIC) && !s.starts_with("the device is too short") {
                    best.get_or_insert(s);
                }
            }
        }
    }
    Err(CopyError::Bad(best.unwrap_or_else(|| {
        format!("{NO_MAGIC} at the known offsets")
    })))
}

/// Reads the LUKS2 header of `dev` as cryptsetup does
/// (`LUKS2_disk_hdr_read`): the primary at 0; the secondary where the
/// primary's size says, or, when the primary is unreadable, at the known
/// offsets; both valid: the higher seqid (the primary on a tie). A copy
/// whose JSON does not validate is damaged and the other one is used.
/// `what` names the device in errors.
pub(crate) fn read_header(dev: &mut dyn Disk, what: &str) -> Result<Container, Luks2Error> {
    let io = |source| Luks2Error::Io {
        what: what.to_string(),
        source,
    };
    let mut head = [0u8; 8];
    match read_at(dev, 0, &mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(Luks2Error::NotLuks { what: what.into() })
        }
        Err(e) => return Err(io(e)),
    }
    if &head[..6] == MAGIC_PRIMARY && be16(&head, OFF_VERSION) == 1 {
        return Err(Luks2Error::Luks1 { what: what.into() });
    }
    let primary = read_copy(dev, 0, false);
    let secondary = match &primary {
        Ok(c) => read_copy(dev, be64(&c.bin, OFF_HDR_SIZE), true),
        Err(_) => scan_secondary(dev),
    };
    let p = judge(primary, Which::Primary, what);
    let s = judge(secondary, Which::Secondary, what);
    match (p, s) {
        (
            Got::Valid {
                seqid: a,
                parsed: pa,
            },
            Got::Valid {
                seqid: b,
                parsed: pb,
            },
        ) => {
            if b > a {
                *pb
            } else {
                *pa
            }
        }
        (Got::Valid { parsed, .. }, _) | (_, Got::Valid { parsed, .. }) => *parsed,
        (Got::Io(e), _) | (_, Got::Io(e)) => Err(io(e)),
        (Got::Bad(p), Got::Bad(s)) => {
            if &head[..6] != MAGIC_PRIMARY && s.starts_with(NO_MAGIC) {
                Err(Luks2Error::NotLuks { what: what.into() })
            } else {
                Err(Luks2Error::NoValidHeader {
                    what: what.into(),
                    primary: p,
                    secondary: s,
                })
            }
        }
    }
}

/// The label of a LUKS2 binary header (`head`: at least its first 72
/// bytes), if it is one: for finding a container by label without reading
/// its metadata (the checksum is not checked; [`read_header`] does).
pub(crate) fn peek_label(head: &[u8]) -> Option<String> {
    if head.get(..6)? != MAGIC_PRIMARY || head.get(OFF_VERSION..OFF_VERSION + 2)? != [0, 2] {
        return None;
    }
    let label = cstr(head.get(OFF_LABEL..OFF_LABEL + 48)?);
    Some(label)
}

/// Standard base64 with padding (RFC 4648 section 4), as LUKS2 stores salts
/// and digests.
fn base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    let mut pad = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                pad += 1;
                continue;
            }
            _ => return None,
        };
        if pad > 0 {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if pad > 2 || (text.len() % 4 != 0) {
        return None;
    }
    Some(out)
}

type Obj = serde_json::Map<String, serde_json::Value>;

fn field<'a>(o: &'a Obj, key: &str, at: &str) -> Result<&'a serde_json::Value, String> {
    o.get(key).ok_or_else(|| format!("{at}: no {key:?}"))
}

fn object<'a>(o: &'a Obj, key: &str, at: &str) -> Result<&'a Obj, String> {
    field(o, key, at)?
        .as_object()
        .ok_or_else(|| format!("{at}: {key:?} is not an object"))
}

fn string<'a>(o: &'a Obj, key: &str, at: &str) -> Result<&'a str, String> {
    field(o, key, at)?
        .as_str()
        .ok_or_else(|| format!("{at}: {key:?} is not a string"))
}

/// A u64 the spec stores as a decimal string (offsets, sizes).
fn u64_text(o: &Obj, key: &str, at: &str) -> Result<u64, String> {
    let s = string(o, key, at)?;
    s.parse()
        .map_err(|_| format!("{at}: {key:?} is not a number: {s:?}"))
}

/// A number the spec stores as a JSON number (iterations, key sizes).
fn u32_num(o: &Obj, key: &str, at: &str) -> Result<u32, String> {
    field(o, key, at)?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("{at}: {key:?} is not a small number"))
}

fn bytes64(o: &Obj, key: &str, at: &str) -> Result<Vec<u8>, String> {
    base64(string(o, key, at)?).ok_or_else(|| format!("{at}: {key:?} is not base64"))
}

fn hash_field(o: &Obj, key: &str, at: &str) -> Result<Hash, String> {
    let name = string(o, key, at)?;
    Hash::parse(name).ok_or_else(|| format!("{at}: hash {name:?}"))
}

/// The ids of a JSON array of decimal strings (digest keyslots/segments).
fn ids(o: &Obj, key: &str, at: &str) -> Result<Vec<u32>, String> {
    field(o, key, at)?
        .as_array()
        .ok_or_else(|| format!("{at}: {key:?} is not an array"))?
        .iter()
        .map(|v| v.as_str().and_then(|s| s.parse().ok()))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| format!("{at}: {key:?} holds a non-id"))
}

fn parse_copy(copy: &Copy, which: Which, what: &str) -> Result<Container, JsonError> {
    let root = copy
        .json
        .as_object()
        .ok_or_else(|| JsonError::Bad("JSON is not an object".into()))?;
    let (keyslots, segment, digest) = parse_json(root)?;
    Ok(Container {
        what: what.into(),
        which,
        seqid: be64(&copy.bin, OFF_SEQID),
        label: cstr(&copy.bin[OFF_LABEL..OFF_LABEL + 48]),
        uuid: cstr(&copy.bin[OFF_UUID..OFF_UUID + 40]),
        keyslots,
        segment,
        digest,
    })
}

enum JsonError {
    /// Malformed: the copy is damaged.
    Bad(String),
    /// Well-formed, but slotinit cannot open it.
    Unsupported(String),
}

impl From<String> for JsonError {
    fn from(s: String) -> Self {
        JsonError::Bad(s)
    }
}

type Parsed = (Vec<Keyslot>, Segment, VolumeDigest);

fn parse_json(root: &Obj) -> Result<Parsed, JsonError> {
    // A mandatory requirement (online reencryption in progress, an opal
    // segment...) means the layout is not the plain one described below.
    if let Some(config) = root.get("config").and_then(|c| c.as_object()) {
        if let Some(req) = config.get("requirements").and_then(|r| r.as_object()) {
            if let Some(m) = req.get("mandatory").and_then(|m| m.as_array()) {
                if !m.is_empty() {
                    let names: Vec<String> = m.iter().map(|v| v.to_string()).collect();
                    return Err(JsonError::Unsupported(format!(
                        "mandatory requirements {}",
                        names.join(", ")
                    )));
                }
            }
        }
    }
    let segments = object(root, "segments", "metadata")?;
    let seg = object(segments, "0", "segments")
        .map_err(|_| JsonError::Unsupported("no segment 0".into()))?;
    let seg_type = string(seg, "type", "segment 0")?;
    if seg_type != "crypt" {
        return Err(JsonError::Unsupported(format!(
            "segment 0 of type {seg_type:?}"
        )));
    }
    if seg.get("integrity").is_some() {
        return Err(JsonError::Unsupported("segment 0 with integrity".into()));
    }
    let size = match string(seg, "size", "segment 0")? {
        "dynamic" => None,
        _ => Some(u64_text(seg, "size", "segment 0")?),
    };
    let sector_size = u32_num(seg, "sector_size", "segment 0")?;
    if !matches!(sector_size, 512 | 1024 | 2048 | 4096) {
        return Err(format!("segment 0: sector size {sector_size}").into());
    }
    let segment = Segment {
        offset: u64_text(seg, "offset", "segment 0")?,
        size,
        iv_tweak: u64_text(seg, "iv_tweak", "segment 0")?,
        encryption: string(seg, "encryption", "segment 0")?.to_string(),
        sector_size,
    };
    if segment.offset % SECTOR != 0 {
        return Err(format!("segment 0: offset {} is not sector aligned", segment.offset).into());
    }

    // The digest bound to segment 0 (spec, "digests": type pbkdf2).
    let digests = object(root, "digests", "metadata")?;
    let mut digest = None;
    for (id, d) in digests {
        let at = format!("digest {id}");
        let d = d
            .as_object()
            .ok_or_else(|| format!("{at} is not an object"))?;
        if !ids(d, "segments", &at)?.contains(&0) {
            continue;
        }
        let kind = string(d, "type", &at)?;
        if kind != "pbkdf2" {
            return Err(JsonError::Unsupported(format!("{at} of type {kind:?}")));
        }
        digest = Some(VolumeDigest {
            keyslots: ids(d, "keyslots", &at)?,
            hash: hash_field(d, "hash", &at).map_err(JsonError::Unsupported)?,
            iterations: u32_num(d, "iterations", &at)?,
            salt: bytes64(d, "salt", &at)?,
            digest: bytes64(d, "digest", &at)?,
        });
        break;
    }
    let digest = digest.ok_or_else(|| JsonError::Bad("no digest for segment 0".into()))?;
    if digest.digest.len() < MIN_DIGEST || digest.digest.len() > digest.hash.len() {
        return Err(format!("digest of {} bytes", digest.digest.len()).into());
    }
    if digest.iterations == 0 {
        return Err("digest with 0 iterations".to_string().into());
    }

    let slots = object(root, "keyslots", "metadata")?;
    let mut keyslots = Vec::new();
    let mut unsupported = None;
    for (id, k) in slots {
        let at = format!("keyslot {id}");
        let n: u32 = id.parse().map_err(|_| format!("keyslot id {id:?}"))?;
        if !digest.keyslots.contains(&n) {
            continue;
        }
        let k = k
            .as_object()
            .ok_or_else(|| format!("{at} is not an object"))?;
        match parse_keyslot(n, k, &at) {
            Ok(slot) => keyslots.push(slot),
            Err(JsonError::Unsupported(s)) => unsupported = Some(s),
            Err(e) => return Err(e),
        }
    }
    if keyslots.is_empty() {
        if let Some(s) = unsupported {
            return Err(JsonError::Unsupported(s));
        }
    }
    // cryptsetup tries "prefer" keyslots first, then "normal" ones.
    keyslots.sort_by_key(|k| (std::cmp::Reverse(k.priority), k.id));
    Ok((keyslots, segment, digest))
}

fn parse_keyslot(id: u32, k: &Obj, at: &str) -> Result<Keyslot, JsonError> {
    let kind = string(k, "type", at)?;
    if kind != "luks2" {
        return Err(JsonError::Unsupported(format!("{at} of type {kind:?}")));
    }
    let key_size = u32_num(k, "key_size", at)? as usize;
    let af = object(k, "af", at)?;
    let af_type = string(af, "type", at)?;
    if af_type != "luks1" {
        return Err(JsonError::Unsupported(format!("{at}: af {af_type:?}")));
    }
    let stripes = u32_num(af, "stripes", at)?;
    let af_hash = hash_field(af, "hash", at).map_err(JsonError::Unsupported)?;
    let area = object(k, "area", at)?;
    let area_type = string(area, "type", at)?;
    if area_type != "raw" {
        return Err(JsonError::Unsupported(format!("{at}: area {area_type:?}")));
    }
    let area = Area {
        offset: u64_text(area, "offset", at)?,
        size: u64_text(area, "size", at)?,
        encryption: string(area, "encryption", at)?.to_string(),
        key_size: u32_num(area, "key_size", at)? as usize,
    };
    if !(1..=MAX_KEY).contains(&area.key_size) {
        return Err(format!("{at}: area key size {}", area.key_size).into());
    }
    let af_bytes = key_size as u64 * u64::from(stripes);
    if !(1..=MAX_KEY).contains(&key_size)
        || stripes == 0
        || af_bytes > MAX_AF_BYTES
        || af_bytes > area.size
    {
        return Err(format!(
            "{at}: {stripes} stripes of {key_size} bytes in a {}-byte area",
            area.size
        )
        .into());
    }
    if area.offset % SECTOR != 0 {
        return Err(format!("{at}: area offset {} is not sector aligned", area.offset).into());
    }
    let kdf = object(k, "kdf", at)?;
    let kdf = match string(kdf, "type", at)? {
        "pbkdf2" => Kdf::Pbkdf2 {
            hash: hash_field(kdf, "hash", at).map_err(JsonError::Unsupported)?,
            iterations: u32_num(kdf, "iterations", at)?,
            salt: bytes64(kdf, "salt", at)?,
        },
        t @ ("argon2i" | "argon2id") => Kdf::Argon2 {
            id: t == "argon2id",
            time: u32_num(kdf, "time", at)?,
            memory_kib: u32_num(kdf, "memory", at)?,
            cpus: u32_num(kdf, "cpus", at)?,
            salt: bytes64(kdf, "salt", at)?,
        },
        other => return Err(JsonError::Unsupported(format!("{at}: kdf {other:?}"))),
    };
    let priority = match k.get("priority") {
        None => 1,
        Some(p) => p
            .as_u64()
            .and_then(|p| u8::try_from(p).ok())
            .filter(|p| *p <= 2)
            .ok_or_else(|| format!("{at}: priority {p}"))?,
    };
    Ok(Keyslot {
        id,
        key_size,
        stripes,
        af_hash,
        area,
        kdf,
        priority,
    })
}

/// Decrypts keyslot areas. [`InProcess`] does `aes-xts-plain64` (what
/// cryptsetup uses for an aes-xts container); any other keyslot cipher
/// (cryptsetup 2.6 encrypts an adiantum container's keyslots with
/// `xchacha12,aes-adiantum-plain64` too) is the kernel's: [`ViaKernel`]
/// reads it through a temporary read-only dm-crypt mapping of the area
/// ([`area_table`]), as cryptsetup itself does when the kernel crypto API is
/// not available to userspace (luks2_keyslot_luks2.c
/// `luks2_decrypt_from_storage`, the dm-crypt fallback). Why not adiantum in
/// process: the kernel has it anyway (the data segment needs it), and the
/// one crate (`adiantum` 0.2, one author, on release candidates of
/// RustCrypto's next generation) would add a second AES and a ChaCha to the
/// binary; the tests use it to play dm-crypt.
pub(crate) trait AreaDecrypt {
    /// The first `len` bytes (a multiple of 512) of `area`, decrypted with
    /// `key`: 512-byte sectors, the IV counting sectors from the area's
    /// start. `dev` is the container (an implementation through dm-crypt
    /// reads its own mapping instead). `Unsupported` kind: this
    /// implementation does not know the cipher.
    fn decrypt(
        &mut self,
        dev: &mut dyn Disk,
        area: &Area,
        key: &[u8],
        len: usize,
    ) -> io::Result<Zeroizing<Vec<u8>>>;
}

/// [`AreaDecrypt`] in process: `aes-xts-plain64` with a 256- or 512-bit key.
pub(crate) struct InProcess;

impl AreaDecrypt for InProcess {
    fn decrypt(
        &mut self,
        dev: &mut dyn Disk,
        area: &Area,
        key: &[u8],
        len: usize,
    ) -> io::Result<Zeroizing<Vec<u8>>> {
        if area.encryption != "aes-xts-plain64" {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("keyslot cipher {} needs the kernel", area.encryption),
            ));
        }
        let mut buf = Zeroizing::new(vec![0u8; len]);
        read_at(dev, area.offset, &mut buf)?;
        xts_decrypt(key, &mut buf, 512, 0)?;
        Ok(buf)
    }
}

/// AES-XTS with a plain64 IV: sector `n` of `data` (in `sector` bytes)
/// gets IV `first_iv + n * sector / 512` (dm-crypt counts IVs in 512-byte
/// units unless `iv_large_sectors`, which LUKS2 does not set).
pub(crate) fn xts_decrypt(
    key: &[u8],
    data: &mut [u8],
    sector: usize,
    first_iv: u64,
) -> io::Result<()> {
    use aes::cipher::KeyInit;
    use xts_mode::Xts128;
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "aes-xts key size");
    if sector < 512 || sector % 512 != 0 || data.len() % sector != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "aes-xts: not whole sectors",
        ));
    }
    let per = (sector / 512) as u128;
    let tweak = |n: u128| (u128::from(first_iv) + n * per).to_le_bytes();
    match key.len() {
        32 => {
            let (a, b) = key.split_at(16);
            let x = Xts128::new(
                aes::Aes128::new_from_slice(a).map_err(|_| bad())?,
                aes::Aes128::new_from_slice(b).map_err(|_| bad())?,
            );
            x.decrypt_area(data, sector, 0, tweak);
        }
        64 => {
            let (a, b) = key.split_at(32);
            let x = Xts128::new(
                aes::Aes256::new_from_slice(a).map_err(|_| bad())?,
                aes::Aes256::new_from_slice(b).map_err(|_| bad())?,
            );
            x.decrypt_area(data, sector, 0, tweak);
        }
        _ => return Err(bad()),
    }
    Ok(())
}

/// [`AreaDecrypt`] for the init: aes-xts-plain64 in process, any other
/// keyslot cipher (adiantum) through the kernel. `read_mapped(table, len)`
/// sets up a temporary read-only dm-crypt mapping with `table` (the area of
/// the container at `device`, [`area_table`]), reads its first `len` bytes
/// and removes the mapping: in the init, `Sys::dm_create`, a read of the
/// node it returns, `Sys::dm_remove`. The table's copy of the key is wiped
/// after the call.
pub(crate) struct ViaKernel<'a, F> {
    pub(crate) device: &'a str,
    pub(crate) read_mapped: F,
}

impl<F> AreaDecrypt for ViaKernel<'_, F>
where
    F: FnMut(&[DmLine], usize) -> io::Result<Zeroizing<Vec<u8>>>,
{
    fn decrypt(
        &mut self,
        dev: &mut dyn Disk,
        area: &Area,
        key: &[u8],
        len: usize,
    ) -> io::Result<Zeroizing<Vec<u8>>> {
        if area.encryption == "aes-xts-plain64" {
            return InProcess.decrypt(dev, area, key, len);
        }
        let mut table = area_table(area, key, self.device, len);
        let out = (self.read_mapped)(&table, len);
        for line in &mut table {
            zeroize::Zeroize::zeroize(&mut line.params);
        }
        out
    }
}

/// The table of a temporary read-only dm-crypt mapping that decrypts the
/// first `len` bytes of a keyslot area of the container at `device`: for an
/// [`AreaDecrypt`] through the kernel (IV 0 at the area's start).
pub(crate) fn area_table(area: &Area, key: &[u8], device: &str, len: usize) -> Vec<DmLine> {
    vec![DmLine {
        start: 0,
        length: (len as u64).div_ceil(SECTOR),
        target: "crypt".into(),
        params: format!(
            "{} {} 0 {} {}",
            area.encryption,
            hex(key),
            device,
            area.offset / SECTOR
        ),
    }]
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The LUKS1 anti-forensic merge (spec: "af" type luks1, from the LUKS1
/// spec's AF-merge): every stripe but the last is XORed in and diffused
/// with `hash`; the last one XORed in gives the key.
fn af_merge(material: &[u8], key_size: usize, stripes: u32, hash: Hash) -> Zeroizing<Vec<u8>> {
    let mut d = Zeroizing::new(vec![0u8; key_size]);
    let stripes = stripes as usize;
    for i in 0..stripes {
        let s = &material[i * key_size..(i + 1) * key_size];
        for (x, y) in d.iter_mut().zip(s) {
            *x ^= y;
        }
        if i + 1 < stripes {
            diffuse(&mut d, hash);
        }
    }
    d
}

/// The AF diffusion: each hash-sized block j (the last one may be shorter)
/// becomes hash(be32(j) || block), truncated to the block's length.
fn diffuse(buf: &mut [u8], hash: Hash) {
    let n = hash.len();
    for (j, block) in buf.chunks_mut(n).enumerate() {
        let h = Zeroizing::new(hash.digest(&[&(j as u32).to_be_bytes(), block]));
        block.copy_from_slice(&h[..block.len()]);
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why one keyslot did not open.
enum SlotError {
    /// Not this key (or a damaged area: the digest cannot tell them apart).
    NoMatch,
    Memory(u64),
    Unsupported(String),
    Io(io::Error),
}

fn derive(kdf: &Kdf, passphrase: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>, SlotError> {
    let mut out = Zeroizing::new(vec![0u8; len]);
    match kdf {
        Kdf::Pbkdf2 {
            hash,
            iterations,
            salt,
        } => hash.pbkdf2(passphrase, salt, *iterations, &mut out),
        Kdf::Argon2 {
            id,
            time,
            memory_kib,
            cpus,
            salt,
        } => {
            use slotinit_kdf::Argon2Error;
            // slotinit_kdf reserves argon2's memory fallibly (PID 1 must not
            // abort on an allocation the RAM cannot give) and wipes it.
            slotinit_kdf::argon2(*id, *memory_kib, *time, *cpus, passphrase, salt, &mut out)
                .map_err(|e| match e {
                    Argon2Error::Memory => SlotError::Memory(u64::from(*memory_kib)),
                    Argon2Error::Params(e) => {
                        SlotError::Unsupported(format!("argon2 parameters: {e}"))
                    }
                    Argon2Error::Hash(e) => SlotError::Unsupported(format!("argon2: {e}")),
                })?;
        }
    }
    Ok(out)
}

fn try_slot(
    c: &Container,
    slot: &Keyslot,
    dev: &mut dyn Disk,
    passphrase: &[u8],
    limits: &Limits,
    areas: &mut dyn AreaDecrypt,
) -> Result<Zeroizing<Vec<u8>>, SlotError> {
    if let Kdf::Argon2 { memory_kib, .. } = slot.kdf {
        // Before anything is allocated: argon2 takes all of it at once.
        if u64::from(memory_kib) > limits.max_memory_kib {
            return Err(SlotError::Memory(u64::from(memory_kib)));
        }
    }
    let slot_key = derive(&slot.kdf, passphrase, slot.area.key_size)?;
    let af_len = slot.key_size * slot.stripes as usize;
    let read_len = (af_len as u64).div_ceil(SECTOR) * SECTOR;
    let material = areas
        .decrypt(dev, &slot.area, &slot_key, read_len as usize)
        .map_err(|e| match e.kind() {
            io::ErrorKind::Unsupported => SlotError::Unsupported(e.to_string()),
            io::ErrorKind::UnexpectedEof => SlotError::NoMatch,
            _ => SlotError::Io(e),
        })?;
    if material.len() < af_len {
        return Err(SlotError::NoMatch);
    }
    let key = af_merge(
        &material[..af_len],
        slot.key_size,
        slot.stripes,
        slot.af_hash,
    );
    let d = &c.digest;
    let mut check = Zeroizing::new(vec![0u8; d.digest.len()]);
    d.hash.pbkdf2(&key, &d.salt, d.iterations, &mut check);
    if constant_time_eq(&check, &d.digest) {
        Ok(key)
    } else {
        Err(SlotError::NoMatch)
    }
}

/// Opens `c` with `passphrase`, keyslot areas decrypted in process
/// (aes-xts-plain64; see [`unlock_with`] for the others): the tests' way.
#[cfg(test)]
pub(crate) fn unlock(
    c: &Container,
    dev: &mut dyn Disk,
    passphrase: &[u8],
    limits: &Limits,
) -> Result<Unlocked, Luks2Error> {
    unlock_with(c, dev, passphrase, limits, &mut InProcess)
}

/// Opens `c` with `passphrase`: every keyslot of the data segment's digest
/// (preferred ones first) until one gives a key the digest accepts. A
/// keyslot whose argon2 memory is above `limits` is not tried; one whose
/// area is garbage fails like a wrong key and the others are tried.
pub(crate) fn unlock_with(
    c: &Container,
    dev: &mut dyn Disk,
    passphrase: &[u8],
    limits: &Limits,
    areas: &mut dyn AreaDecrypt,
) -> Result<Unlocked, Luks2Error> {
    let mut over: Option<(u32, u64)> = None;
    let mut unsupported: Option<String> = None;
    let mut tried = 0;
    for slot in c.keyslots.iter().filter(|k| k.priority > 0) {
        match try_slot(c, slot, dev, passphrase, limits, areas) {
            Ok(key) => {
                log::debug!("{}: keyslot {} opens", c.what, slot.id);
                return Ok(Unlocked {
                    what: c.what.clone(),
                    key,
                    segment: c.segment.clone(),
                    keyslot: slot.id,
                });
            }
            Err(SlotError::NoMatch) => tried += 1,
            Err(SlotError::Memory(kib)) => {
                log::warn!(
                    "{}: keyslot {} needs {kib} KiB for argon2 (limit {} KiB): not tried",
                    c.what,
                    slot.id,
                    limits.max_memory_kib
                );
                over.get_or_insert((slot.id, kib));
            }
            Err(SlotError::Unsupported(s)) => {
                log::warn!("{}: keyslot {}: {s}", c.what, slot.id);
                unsupported.get_or_insert(format!("keyslot {}: {s}", slot.id));
            }
            Err(SlotError::Io(source)) => {
                return Err(Luks2Error::Io {
                    what: c.what.clone(),
                    source,
                })
            }
        }
    }
    if tried > 0 {
        return Err(Luks2Error::WrongKey {
            what: c.what.clone(),
        });
    }
    if let Some((keyslot, memory_kib)) = over {
        return Err(Luks2Error::MemoryLimit {
            what: c.what.clone(),
            keyslot,
            memory_kib,
            limit_kib: limits.max_memory_kib,
        });
    }
    if let Some(reason) = unsupported {
        return Err(Luks2Error::Unsupported {
            what: c.what.clone(),
            reason,
        });
    }
    Err(Luks2Error::NoKeyslot {
        what: c.what.clone(),
    })
}

/// The dm-crypt table of the unlocked data segment on `device` (the node to
/// name in the table), `device_bytes` long (kernel
/// Documentation/admin-guide/device-mapper/dm-crypt.rst): `<cipher> <key>
/// <iv_offset> <device> <offset>`, plus `1 sector_size:<n>` when the
/// segment's sectors are not 512 bytes, as cryptsetup loads it
/// (lib/libdevmapper.c `get_dm_crypt_params`; the key as hex, not through
/// the kernel keyring). The returned params hold the key: drop the lines
/// once loaded.
pub(crate) fn crypt_table(
    u: &Unlocked,
    device: &str,
    device_bytes: u64,
) -> Result<Vec<DmLine>, Luks2Error> {
    let seg = &u.segment;
    let size_err = |reason: String| Luks2Error::Size {
        what: u.what.clone(),
        reason,
    };
    let bytes = match seg.size {
        Some(n) => {
            if seg.offset.saturating_add(n) > device_bytes {
                return Err(size_err(format!(
                    "{n} bytes at {} on a {device_bytes}-byte device",
                    seg.offset
                )));
            }
            n
        }
        None => device_bytes.checked_sub(seg.offset).ok_or_else(|| {
            size_err(format!(
                "it starts at {} on a {device_bytes}-byte device",
                seg.offset
            ))
        })?,
    };
    // cryptsetup refuses a device not a whole number of crypt sectors
    // ("Device size is not aligned to requested sector size").
    if bytes == 0 || bytes % u64::from(seg.sector_size) != 0 {
        return Err(size_err(format!(
            "{bytes} bytes is not a whole number of {}-byte sectors",
            seg.sector_size
        )));
    }
    let mut params = format!(
        "{} {} {} {} {}",
        seg.encryption,
        hex(&u.key),
        seg.iv_tweak,
        device,
        seg.offset / SECTOR
    );
    if seg.sector_size != 512 {
        let _ = write!(params, " 1 sector_size:{}", seg.sector_size);
    }
    Ok(vec![DmLine {
        start: 0,
        length: bytes / SECTOR,
        target: "crypt".into(),
        params,
    }])
}

/// Keys by slot id, for tests that look at one keyslot.
#[cfg(test)]
fn slot_ids(c: &Container) -> std::collections::BTreeMap<u32, &'static str> {
    c.keyslots
        .iter()
        .map(|k| {
            (
                k.id,
                match k.kdf {
                    Kdf::Pbkdf2 { .. } => "pbkdf2",
                    Kdf::Argon2 { id: true, .. } => "argon2id",
                    Kdf::Argon2 { id: false, .. } => "argon2i",
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::{Cursor, Read};
    use std::time::Instant;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/luks2");
    const PW0: &[u8] = b"correct horse battery staple";
    const PW1: &[u8] = b"second passphrase\n";
    const NO_LIMIT: Limits = Limits {
        max_memory_kib: 1 << 20,
    };

    fn image(name: &str) -> Vec<u8> {
        let gz = std::fs::read(format!("{FIXTURES}/{name}.img.gz")).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// The volume key as `cryptsetup luksDump --dump-volume-key` printed it.
    fn dumped_key(name: &str) -> Vec<u8> {
        let text = std::fs::read_to_string(format!("{FIXTURES}/{name}.key")).unwrap();
        let text = text.trim();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A line of `cryptsetup luksDump` (the first whose key matches).
    fn dumped(name: &str, key: &str) -> String {
        let text = std::fs::read_to_string(format!("{FIXTURES}/{name}.dump")).unwrap();
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap()
    }

    /// The 32 sectors of known plaintext make.sh put in every fixture.
    fn plaintext(i: usize) -> Vec<u8> {
        let mut s = format!("slotinit plaintext sector {i:05} ").into_bytes();
        s.resize(512, b'.');
        s
    }

    #[test]
    fn base64_as_rfc4648() {
        for (text, bytes) in [
            ("", &b""[..]),
            ("Zg==", b"f"),
            ("Zm8=", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYmFy", b"foobar"),
        ] {
            assert_eq!(base64(text).as_deref(), Some(bytes));
        }
        assert_eq!(base64("Zm9"), None);
        assert_eq!(base64("Zm=v"), None);
        assert_eq!(base64("Z!=="), None);
    }

    #[test]
    fn reads_the_header_cryptsetup_wrote() {
        for name in [
            "xts512-pbkdf2",
            "xts256-argon2",
            "xts512-argon2id-format",
            "adiantum-argon2id",
        ] {
            let img = image(name);
            let c = read_header(&mut Cursor::new(img), name).unwrap();
            assert_eq!(c.which(), Which::Primary);
            assert_eq!(c.label(), dumped(name, "Label:"));
            assert_eq!(c.uuid(), dumped(name, "UUID:"));
            assert_eq!(c.seqid().to_string(), dumped(name, "Epoch:"));
            let seg = c.segment();
            assert_eq!(format!("{} [bytes]", seg.offset), dumped(name, "offset:"));
            assert_eq!(seg.size, None, "length: {}", dumped(name, "length:"));
            assert_eq!(seg.encryption, dumped(name, "cipher:"));
            assert_eq!(
                format!("{} [bytes]", seg.sector_size),
                dumped(name, "sector:")
            );
        }
        let c = read_header(&mut Cursor::new(image("xts512-pbkdf2")), "x").unwrap();
        assert_eq!(
            slot_ids(&c),
            BTreeMap::from([(0, "pbkdf2"), (1, "argon2id")])
        );
        assert_eq!(c.kdf_memory_kib(), 8192);
        let c = read_header(&mut Cursor::new(image("xts256-argon2")), "x").unwrap();
        assert_eq!(
            slot_ids(&c),
            BTreeMap::from([(0, "argon2id"), (1, "argon2i")])
        );
        assert_eq!(c.kdf_memory_kib(), 16384);
    }

    #[test]
    fn unlocks_every_keyslot_to_the_dumped_volume_key() {
        for (name, pw, slot) in [
            ("xts512-pbkdf2", PW0, 0),
            ("xts512-pbkdf2", PW1, 1),
            ("xts256-argon2", PW0, 0),
            ("xts256-argon2", PW1, 1),
            ("xts512-argon2id-format", PW0, 0),
        ] {
            let mut dev = Cursor::new(image(name));
            let c = read_header(&mut dev, name).unwrap();
            let u = unlock(&c, &mut dev, pw, &NO_LIMIT).unwrap();
            assert_eq!(u.key(), &dumped_key(name)[..], "{name} slot {slot}");
            assert_eq!(u.keyslot(), slot);
        }
    }

    #[test]
    fn the_key_decrypts_the_data_cryptsetup_encrypted() {
        for name in ["xts512-pbkdf2", "xts256-argon2", "xts512-argon2id-format"] {
            let img = image(name);
            let mut dev = Cursor::new(img.clone());
            let c = read_header(&mut dev, name).unwrap();
            let u = unlock(&c, &mut dev, PW0, &NO_LIMIT).unwrap();
            let seg = u.segment();
            let mut data = img[seg.offset as usize..].to_vec();
            assert_eq!(data.len(), 32 * 512);
            xts_decrypt(u.key(), &mut data, seg.sector_size as usize, seg.iv_tweak).unwrap();
            for i in 0..32 {
                assert_eq!(
                    data[i * 512..(i + 1) * 512],
                    plaintext(i)[..],
                    "{name} sector {i}"
                );
            }
        }
    }

    #[test]
    fn wrong_key() {
        let mut dev = Cursor::new(image("xts512-pbkdf2"));
        let c = read_header(&mut dev, "/dev/mmcblk0p4").unwrap();
        let e = unlock(&c, &mut dev, b"not it", &NO_LIMIT).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/mmcblk0p4: no keyslot opens with this key"
        );
    }

    #[test]
    fn a_damaged_keyslot_fails_alone() {
        let mut img = image("xts512-pbkdf2");
        let c = read_header(&mut Cursor::new(img.clone()), "x").unwrap();
        let area = &c.keyslots.iter().find(|k| k.id == 0).unwrap().area;
        for (i, b) in img[area.offset as usize..][..4096].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut dev = Cursor::new(img);
        let e = unlock(&c, &mut dev, PW0, &NO_LIMIT).unwrap_err();
        assert!(matches!(e, Luks2Error::WrongKey { .. }), "{e}");
        let u = unlock(&c, &mut dev, PW1, &NO_LIMIT).unwrap();
        assert_eq!(u.keyslot(), 1);
        assert_eq!(u.key(), &dumped_key("xts512-pbkdf2")[..]);
    }

    #[test]
    fn a_damaged_primary_header_gives_the_secondary() {
        let name = "xts256-argon2";
        let mut img = image(name);
        // Zero the primary's JSON: its checksum fails.
        img[4096..16384].fill(0);
        let mut dev = Cursor::new(img.clone());
        let c = read_header(&mut dev, name).unwrap();
        assert_eq!(c.which(), Which::Secondary);
        assert_eq!(c.uuid(), dumped(name, "UUID:"));
        let u = unlock(&c, &mut dev, PW0, &NO_LIMIT).unwrap();
        assert_eq!(u.key(), &dumped_key(name)[..]);
        // The whole primary binary header gone too: found at a known offset.
        img[..4096].fill(0);
        let c = read_header(&mut Cursor::new(img.clone()), name).unwrap();
        assert_eq!(c.which(), Which::Secondary);
        // Both gone.
        img[16384..16384 + 4096].fill(0);
        let e = read_header(&mut Cursor::new(img), "/dev/vda4").unwrap_err();
        assert_eq!(e.to_string(), "/dev/vda4: not a LUKS2 container");
    }

    #[test]
    fn the_higher_seqid_wins() {
        // cryptsetup writes the secondary, then the primary: an update cut
        // between the two leaves a newer secondary. Made here by giving the
        // secondary a higher seqid and a fresh checksum.
        let name = "xts512-pbkdf2";
        let mut img = image(name);
        let at = 16384;
        let seq = be64(&img, at + OFF_SEQID) + 1;
        img[at + OFF_SEQID..at + OFF_SEQID + 8].copy_from_slice(&seq.to_be_bytes());
        img[at + OFF_CSUM..at + OFF_CSUM + CSUM_LEN].fill(0);
        let sum = Hash::Sha256.digest(&[&img[at..at + 16384]]);
        img[at + OFF_CSUM..at + OFF_CSUM + 32].copy_from_slice(&sum);
        let c = read_header(&mut Cursor::new(img), name).unwrap();
        assert_eq!(c.which(), Which::Secondary);
        assert_eq!(c.seqid(), seq);
    }

    /// `img` with the primary header's JSON edited by `edit` (and a fresh
    /// checksum) and the secondary's magic gone: what a forged or buggy
    /// header looks like once its checksum holds.
    fn forge(mut img: Vec<u8>, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let end = img[BIN_LEN..16384].iter().position(|&c| c == 0).unwrap();
        let mut json: serde_json::Value =
            serde_json::from_slice(&img[BIN_LEN..BIN_LEN + end]).unwrap();
        edit(&mut json);
        let text = serde_json::to_vec(&json).unwrap();
        img[BIN_LEN..16384].fill(0);
        img[BIN_LEN..BIN_LEN + text.len()].copy_from_slice(&text);
        img[OFF_CSUM..OFF_CSUM + CSUM_LEN].fill(0);
        let sum = Hash::Sha256.digest(&[&img[..16384]]);
        img[OFF_CSUM..OFF_CSUM + 32].copy_from_slice(&sum);
        img[16384..16384 + 6].fill(0);
        img
    }

    #[test]
    fn forged_metadata_is_refused_without_panic_or_huge_allocation() {
        use serde_json::json;
        let name = "xts512-pbkdf2";
        let base = image(name);
        // The forge itself keeps a good header good.
        let ok = forge(base.clone(), |_| {});
        let mut dev = Cursor::new(ok);
        let c = read_header(&mut dev, name).unwrap();
        assert_eq!(
            unlock(&c, &mut dev, PW0, &NO_LIMIT).unwrap().key(),
            &dumped_key(name)[..]
        );
        type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "digest of 0 bytes",
                Box::new(|j| j["digests"]["0"]["digest"] = json!("")),
            ),
            (
                "digest with 0 iterations",
                Box::new(|j| j["digests"]["0"]["iterations"] = json!(0)),
            ),
            (
                "area key size 4294967295",
                Box::new(|j| j["keyslots"]["0"]["area"]["key_size"] = json!(4294967295u64)),
            ),
            (
                "0 stripes",
                Box::new(|j| j["keyslots"]["0"]["af"]["stripes"] = json!(0)),
            ),
            (
                "4000 stripes of 100000 bytes",
                Box::new(|j| j["keyslots"]["0"]["key_size"] = json!(100000)),
            ),
            (
                "sector size 3",
                Box::new(|j| j["segments"]["0"]["sector_size"] = json!(3)),
            ),
            (
                "\"size\" is not a number",
                Box::new(|j| j["segments"]["0"]["size"] = json!("-1")),
            ),
            (
                "\"salt\" is not base64",
                Box::new(|j| j["keyslots"]["0"]["kdf"]["salt"] = json!("!!!!")),
            ),
            (
                "no \"segments\"",
                Box::new(|j| {
                    j.as_object_mut().unwrap().remove("segments");
                }),
            ),
            (
                "no digest for segment 0",
                Box::new(|j| j["digests"]["0"]["segments"] = json!(["1"])),
            ),
        ];
        for (reason, edit) in cases {
            let e =
                read_header(&mut Cursor::new(forge(base.clone(), edit)), "/dev/vda4").unwrap_err();
            assert!(
                matches!(e, Luks2Error::NoValidHeader { .. }) && e.to_string().contains(reason),
                "{reason}: {e}"
            );
        }
        let unsupported: Vec<(&str, Edit)> = vec![
            (
                "mandatory requirements \"online-reencrypt-v2\"",
                Box::new(|j| {
                    j["config"]["requirements"] = json!({"mandatory": ["online-reencrypt-v2"]})
                }),
            ),
            (
                "segment 0 with integrity",
                Box::new(|j| j["segments"]["0"]["integrity"] = json!({"type": "hmac(sha256)"})),
            ),
            (
                "segment 0 of type \"linear\"",
                Box::new(|j| j["segments"]["0"]["type"] = json!("linear")),
            ),
        ];
        for (reason, edit) in unsupported {
            let e =
                read_header(&mut Cursor::new(forge(base.clone(), edit)), "/dev/vda4").unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("/dev/vda4: unsupported LUKS2 container: {reason}")
            );
        }
        // An unknown kdf makes that keyslot unusable; the other still opens.
        let img = forge(base.clone(), |j| {
            j["keyslots"]["0"]["kdf"]["type"] = json!("scrypt")
        });
        let mut dev = Cursor::new(img);
        let c = read_header(&mut dev, name).unwrap();
        assert_eq!(slot_ids(&c), BTreeMap::from([(1, "argon2id")]));
        assert_eq!(unlock(&c, &mut dev, PW1, &NO_LIMIT).unwrap().keyslot(), 1);
        // A keyslot area past the end of the device: that keyslot fails.
        let img = forge(base, |j| {
            j["keyslots"]["0"]["area"]["offset"] = json!("1073741824")
        });
        let mut dev = Cursor::new(img);
        let c = read_header(&mut dev, name).unwrap();
        let e = unlock(&c, &mut dev, PW0, &NO_LIMIT).unwrap_err();
        assert!(matches!(e, Luks2Error::WrongKey { .. }), "{e}");
    }

    #[test]
    fn peek_label_reads_what_luksdump_says() {
        for name in ["xts512-pbkdf2", "adiantum-argon2id"] {
            let img = image(name);
            assert_eq!(peek_label(&img[..512]).as_deref(), Some("OSDATA_CRYPT"));
        }
        assert_eq!(peek_label(&[0u8; 512]), None);
        let mut luks1 = image("xts512-pbkdf2");
        luks1[6..8].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(peek_label(&luks1[..512]), None);
        assert_eq!(peek_label(&luks1[..10]), None);
    }

    #[test]
    fn not_luks() {
        for img in [vec![0u8; 1 << 20], vec![0u8; 100], b"hello".repeat(10000)] {
            let e = read_header(&mut Cursor::new(img), "/dev/vda4").unwrap_err();
            assert_eq!(e.to_string(), "/dev/vda4: not a LUKS2 container");
        }
    }

    #[test]
    fn luks1_is_refused_by_name() {
        // A LUKS1 phdr starts with the same magic and version 1 (LUKS1 spec).
        let mut img = vec![0u8; 1 << 16];
        img[..6].copy_from_slice(MAGIC_PRIMARY);
        img[6..8].copy_from_slice(&1u16.to_be_bytes());
        let e = read_header(&mut Cursor::new(img), "/dev/vda4").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/vda4: a LUKS1 container; only LUKS2 is supported"
        );
    }

    #[test]
    fn argon2_over_the_limit_is_refused_before_it_runs() {
        let name = "xts256-argon2";
        let mut dev = Cursor::new(image(name));
        let c = read_header(&mut dev, "osdata_crypt (/dev/mmcblk0p3)").unwrap();
        let limits = Limits {
            max_memory_kib: 4096,
        };
        let e = unlock(&c, &mut dev, PW0, &limits).unwrap_err();
        assert_eq!(
            e.to_string(),
            "osdata_crypt (/dev/mmcblk0p3): keyslot 0 needs 16384 KiB for argon2, above the limit of 4096 KiB"
        );
        // Keyslot 1 (argon2i, 8192 KiB) is within a limit that keyslot 0 is
        // above: the key of keyslot 0 does not open it, so the answer names
        // the keyslot that was not tried.
        let limits = Limits {
            max_memory_kib: 8192,
        };
        let e = unlock(&c, &mut dev, PW0, &limits).unwrap_err();
        assert!(matches!(e, Luks2Error::WrongKey { .. }), "{e}");
        let u = unlock(&c, &mut dev, PW1, &limits).unwrap();
        assert_eq!(u.keyslot(), 1);
    }

    #[test]
    fn crypt_table_as_cryptsetup_loads_it() {
        // dmsetup table of `cryptsetup open` prints, for a LUKS2 container
        // (key shown with --showkeys): "0 <sectors> crypt aes-xts-plain64
        // <key> 0 <major:minor> <offset sectors>[ 1 sector_size:4096]".
        for (name, tail) in [
            ("xts512-pbkdf2", ""),
            ("xts256-argon2", " 1 sector_size:4096"),
        ] {
            let img = image(name);
            let len = img.len() as u64;
            let mut dev = Cursor::new(img);
            let c = read_header(&mut dev, name).unwrap();
            let u = unlock(&c, &mut dev, PW0, &NO_LIMIT).unwrap();
            let off = c.segment().offset;
            let t = crypt_table(&u, "/dev/vda4", len).unwrap();
            let key: String = dumped_key(name)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                t,
                vec![DmLine {
                    start: 0,
                    length: (len - off) / 512,
                    target: "crypt".into(),
                    params: format!("aes-xts-plain64 {key} 0 /dev/vda4 {}{tail}", off / 512),
                }]
            );
            assert!(crypt_table(&u, "/dev/vda4", off).is_err());
            if tail.is_empty() {
                assert!(crypt_table(&u, "/dev/vda4", len + 512).is_ok());
            } else {
                let e = crypt_table(&u, "/dev/vda4", len + 512).unwrap_err();
                assert!(e.to_string().contains("4096-byte sectors"), "{e}");
            }
        }
    }

    #[test]
    fn area_table_maps_the_area_alone() {
        let area = Area {
            offset: 32768,
            size: 131072,
            encryption: "xchacha12,aes-adiantum-plain64".into(),
            key_size: 32,
        };
        let t = area_table(&area, &[0xab; 32], "/dev/vda4", 128000);
        assert_eq!(t[0].length, 250);
        assert_eq!(
            t[0].params,
            format!(
                "xchacha12,aes-adiantum-plain64 {} 0 /dev/vda4 64",
                "ab".repeat(32)
            )
        );
    }

    /// What the init's dm-crypt mapping does for an adiantum keyslot area,
    /// in process for the tests: xchacha12,aes-adiantum-plain64, the IV (a
    /// 32-byte tweak) the little-endian sector number, zero-padded.
    struct Adiantum;

    fn adiantum_decrypt(key: &[u8], data: &mut [u8], sector: usize, first_iv: u64) {
        use adiantum::cipher::KeyInit;
        type C = adiantum::Cipher<chacha20::XChaCha12, aes09::Aes256>;
        let c = C::new_from_slice(key).unwrap();
        for (n, page) in data.chunks_mut(sector).enumerate() {
            let mut tweak = [0u8; 32];
            let iv = first_iv + (n * sector / 512) as u64;
            tweak[..8].copy_from_slice(&iv.to_le_bytes());
            c.decrypt(page, &tweak);
        }
    }

    impl AreaDecrypt for Adiantum {
        fn decrypt(
            &mut self,
            dev: &mut dyn Disk,
            area: &Area,
            key: &[u8],
            len: usize,
        ) -> io::Result<Zeroizing<Vec<u8>>> {
            assert_eq!(area.encryption, "xchacha12,aes-adiantum-plain64");
            let mut buf = Zeroizing::new(vec![0u8; len]);
            read_at(dev, area.offset, &mut buf)?;
            adiantum_decrypt(key, &mut buf, 512, 0);
            Ok(buf)
        }
    }

    #[test]
    fn adiantum_keyslots_are_adiantum_too() {
        let name = "adiantum-argon2id";
        let img = image(name);
        let mut dev = Cursor::new(img.clone());
        let c = read_header(&mut dev, name).unwrap();
        assert_eq!(c.segment().encryption, "xchacha12,aes-adiantum-plain64");
        assert_eq!(c.segment().sector_size, 4096);
        assert_eq!(c.keyslots[0].area.encryption, dumped(name, "Cipher:"));
        assert_eq!(c.keyslots[0].area.key_size * 8, 256);
        // In process, the keyslot is not opened: its cipher is the kernel's.
        let e = unlock(&c, &mut dev, PW0, &NO_LIMIT).unwrap_err();
        assert_eq!(
            e.to_string(),
            "adiantum-argon2id: unsupported LUKS2 container: keyslot 0: keyslot cipher xchacha12,aes-adiantum-plain64 needs the kernel"
        );
        // Through an AreaDecrypt that knows adiantum: the dumped key, and it
        // decrypts what cryptsetup wrote through dm-crypt.
        let u = unlock_with(&c, &mut dev, PW0, &NO_LIMIT, &mut Adiantum).unwrap();
        assert_eq!(u.key(), &dumped_key(name)[..]);
        let seg = u.segment();
        let mut data = img[seg.offset as usize..].to_vec();
        adiantum_decrypt(u.key(), &mut data, 4096, seg.iv_tweak);
        for i in 0..32 {
            assert_eq!(data[i * 512..(i + 1) * 512], plaintext(i)[..], "sector {i}");
        }
        let e = unlock_with(&c, &mut dev, PW1, &NO_LIMIT, &mut Adiantum).unwrap_err();
        assert!(matches!(e, Luks2Error::WrongKey { .. }), "{e}");
        let t = crypt_table(&u, "/dev/mmcblk0p3", img.len() as u64).unwrap();
        assert!(t[0]
            .params
            .starts_with("xchacha12,aes-adiantum-plain64 4a01eae6"));
        assert!(t[0]
            .params
            .ends_with(" 0 /dev/mmcblk0p3 2048 1 sector_size:4096"));
    }

    /// The init's way for adiantum keyslots, with dm-crypt played by the
    /// adiantum crate from the table it is given: the table must map the
    /// right bytes of the right device with the right cipher and key.
    #[test]
    fn via_kernel_maps_the_keyslot_area_for_dm_crypt() {
        let name = "adiantum-argon2id";
        let img = image(name);
        let mut dev = Cursor::new(img.clone());
        let c = read_header(&mut dev, name).unwrap();
        let mut mapped = Vec::new();
        let mut via = ViaKernel {
            device: "/dev/mmcblk0p3",
            read_mapped: |table: &[DmLine], len: usize| {
                assert_eq!(table.len(), 1);
                let l = &table[0];
                assert_eq!((l.start, l.target.as_str()), (0, "crypt"));
                assert_eq!(l.length * 512, len as u64);
                let p: Vec<&str> = l.params.split(' ').collect();
                assert_eq!(p.len(), 5, "{}", l.params);
                assert_eq!(
                    (p[0], p[2], p[3]),
                    ("xchacha12,aes-adiantum-plain64", "0", "/dev/mmcblk0p3")
                );
                mapped.push(p[4].to_string());
                let key: Vec<u8> = (0..p[1].len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&p[1][i..i + 2], 16).unwrap())
                    .collect();
                let at = p[4].parse::<usize>().unwrap() * 512;
                let mut buf = Zeroizing::new(img[at..at + len].to_vec());
                adiantum_decrypt(&key, &mut buf, 512, 0);
                Ok(buf)
            },
        };
        let u = unlock_with(&c, &mut dev, PW0, &NO_LIMIT, &mut via).unwrap();
        assert_eq!(u.key(), &dumped_key(name)[..]);
        // Keyslot 0's area: "Area offset:32768 [bytes]".
        assert_eq!(mapped, vec!["64"]);
        // aes-xts keyslots stay in process.
        let xts = image("xts512-pbkdf2");
        let mut dev = Cursor::new(xts);
        let c = read_header(&mut dev, "xts").unwrap();
        let mut via = ViaKernel {
            device: "/dev/vda4",
            read_mapped: |_: &[DmLine], _: usize| -> io::Result<Zeroizing<Vec<u8>>> {
                panic!("no mapping for aes-xts keyslots")
            },
        };
        assert!(unlock_with(&c, &mut dev, PW0, &NO_LIMIT, &mut via).is_ok());
    }

    /// In process for aes-xts, the test's adiantum for adiantum.
    struct Both;

    impl AreaDecrypt for Both {
        fn decrypt(
            &mut self,
            dev: &mut dyn Disk,
            area: &Area,
            key: &[u8],
            len: usize,
        ) -> io::Result<Zeroizing<Vec<u8>>> {
            if area.encryption == "aes-xts-plain64" {
                InProcess.decrypt(dev, area, key, len)
            } else {
                Adiantum.decrypt(dev, area, key, len)
            }
        }
    }

    /// Unlock times (run with --release --ignored --nocapture).
    #[test]
    #[ignore]
    fn unlock_times() {
        for (name, pw) in [
            ("xts512-pbkdf2", PW0),
            ("xts512-pbkdf2", PW1),
            ("xts256-argon2", PW0),
            ("xts256-argon2", PW1),
            ("adiantum-argon2id", PW0),
            ("xts512-argon2id-format", PW0),
        ] {
            let mut dev = Cursor::new(image(name));
            let c = read_header(&mut dev, name).unwrap();
            let t = Instant::now();
            let u = unlock_with(&c, &mut dev, pw, &NO_LIMIT, &mut Both).unwrap();
            println!("{name} keyslot {}: {:?}", u.keyslot(), t.elapsed());
        }
    }
}
