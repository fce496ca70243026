//! GPT reading: the unique partition GUIDs (PARTUUID) the kernel does not put in
//! its uevents. Pure parsing of the header and entry array with their CRCs, and
//! a thin reader of the primary table of a disk.
//!
//! Hand-written rather than the `gpt` crate: slotinit needs only the entries'
//! GUIDs and names of a table it never writes, and the parser stays a few dozen
//! lines with crc32fast, against a crate with its own CRC and UUID stacks in a
//! PID 1 whose size is budgeted.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const SIGNATURE: &[u8; 8] = b"EFI PART";

/// One used entry of the partition array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based, as the kernel numbers partitions.
    pub number: u32,
    /// Unique partition GUID, lowercase, as `PARTUUID=` spells it.
    pub uuid: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    #[error("no GPT signature")]
    NoSignature,
    #[error("GPT header CRC mismatch")]
    HeaderCrc,
    #[error("GPT header is malformed: {0}")]
    Malformed(&'static str),
    #[error("GPT entry array CRC mismatch")]
    EntriesCrc,
}

/// Where the entry array is, from a valid header (LBA 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub entries_lba: u64,
    pub count: u32,
    pub entry_size: u32,
    entries_crc: u32,
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Validates the header block (signature, size, CRC with its own field zeroed).
pub fn parse_header(block: &[u8]) -> Result<Header, GptError> {
    if block.len() < 92 || &block[..8] != SIGNATURE {
        return Err(GptError::NoSignature);
    }
    let size = le32(block, 12) as usize;
    if !(92..=block.len()).contains(&size) {
        return Err(GptError::Malformed("header size"));
    }
    let mut copy = block[..size].to_vec();
    copy[16..20].fill(0);
    if crc32fast::hash(&copy) != le32(block, 16) {
        return Err(GptError::HeaderCrc);
    }
    let header = Header {
        entries_lba: le64(block, 72),
        count: le32(block, 80),
        entry_size: le32(block, 84),
        entries_crc: le32(block, 88),
    };
    // Only 128-byte entries, as the kernel's is_gpt_valid() (block/partitions/efi.c)
    // insists: the kernel makes no partitions of other tables anyway, and a
    // corrupt size would have read() allocate up to 4096 * 4 GiB.
    if header.entry_size != 128 || header.count > 4096 {
        return Err(GptError::Malformed("entry size or count"));
    }
    Ok(header)
}

/// GUIDs are stored with their first three fields little-endian.
fn guid(b: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

/// The used entries of the array (type GUID not zero), checked against the
/// header's CRC.
pub fn parse_entries(header: &Header, array: &[u8]) -> Result<Vec<Entry>, GptError> {
    let len = header.count as usize * header.entry_size as usize;
    let array = array.get(..len).ok_or(GptError::Malformed(
        "entry array shorter than the header says",
    ))?;
    if crc32fast::hash(array) != header.entries_crc {
        return Err(GptError::EntriesCrc);
    }
    let mut out = Vec::new();
    for (i, e) in array.chunks_exact(header.entry_size as usize).enumerate() {
        if e[..16].iter().all(|b| *b == 0) {
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        out.push(Entry {
            number: i as u32 + 1,
            uuid: guid(&e[16..32]),
            name: String::from_utf16_lossy(&units),
        });
    }
    Ok(out)
}

/// Reads the primary GPT of a disk device (or image) with `sector`-byte blocks.
pub fn read(disk: &Path, sector: u64) -> Result<Vec<Entry>, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{}: {what}: {e}", disk.display());
    let mut f = std::fs::File::open(disk).map_err(|e| fail("open", &e))?;
    let mut block = vec![0u8; sector as usize];
    f.seek(SeekFrom::Start(sector))
        .and_then(|_| f.read_exact(&mut block))
        .map_err(|e| fail("read header", &e))?;
    let header = parse_header(&block).map_err(|e| fail("GPT", &e))?;
    let mut array = vec![0u8; header.count as usize * header.entry_size as usize];
    // A corrupt LBA must not wrap around (or panic in a debug build).
    let start = header
        .entries_lba
        .checked_mul(sector)
        .ok_or_else(|| fail("GPT", &GptError::Malformed("entry array lba out of range")))?;
    f.seek(SeekFrom::Start(start))
        .and_then(|_| f.read_exact(&mut array))
        .map_err(|e| fail("read entries", &e))?;
    parse_entries(&header, &array).map_err(|e| fail("GPT", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table as sgdisk wrote it for a test disk (tests/fixtures/gpt).
    fn fixture() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gpt/rpi.gpt"
        ))
        .unwrap()
    }

    #[test]
    fn reads_names_and_uuids_of_a_real_table() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk");
        std::fs::write(&img, fixture()).unwrap();
        let entries = read(&img, 512).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bootconfig",
                "boot_a",
                "boot_b",
                "system_a",
                "system_b",
                "persistent"
            ]
        );
        assert_eq!(entries[3].number, 4);
        let expect = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gpt/rpi.partuuids"
        ))
        .unwrap();
        let got: Vec<String> = entries.iter().map(|e| e.uuid.clone()).collect();
        assert_eq!(got, expect.split_whitespace().collect::<Vec<_>>());
    }

    #[test]
    fn corruption_is_detected() {
        let data = fixture();
        let header = &data[512..1024];
        assert!(parse_header(header).is_ok());
        let mut bad = header.to_vec();
        bad[40] ^= 1;
        assert_eq!(parse_header(&bad), Err(GptError::HeaderCrc));
        let mut bad = header.to_vec();
        bad[0] = b'X';
        assert_eq!(parse_header(&bad), Err(GptError::NoSignature));
        let h = parse_header(header).unwrap();
        let start = h.entries_lba as usize * 512;
        let mut array = data[start..start + 128 * 128].to_vec();
        array[200] ^= 1;
        assert_eq!(parse_entries(&h, &array), Err(GptError::EntriesCrc));
        assert!(parse_entries(&h, &array[..100]).is_err());
    }

    /// The fixture's header with `edit` applied and its CRC made right again.
    fn edited_header(data: &[u8], edit: impl Fn(&mut [u8])) -> Vec<u8> {
        let mut header = data[512..1024].to_vec();
        edit(&mut header);
        header[16..20].fill(0);
        let crc = crc32fast::hash(&header[..92]);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        header
    }

    /// Found by the `gpt` fuzz target: an entry-array LBA whose byte offset
    /// does not fit a u64 overflowed in `read`.
    #[test]
    fn entries_lba_beyond_u64_is_an_error() {
        let mut data = fixture();
        let header = edited_header(&data, |h| {
            h[72..80].copy_from_slice(&(u64::MAX / 2).to_le_bytes())
        });
        data[512..1024].copy_from_slice(&header);
        assert!(parse_header(&header).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk");
        std::fs::write(&img, &data).unwrap();
        let err = read(&img, 512).unwrap_err();
        assert!(err.contains("entry array lba out of range"), "{err}");
    }

    /// Found by the `gpt` fuzz target: a huge entry size made `read` allocate
    /// count * size bytes (178 GB here), which aborts a PID 1.
    #[test]
    fn entry_size_other_than_128_is_malformed() {
        let mut data = fixture();
        for size in [0x5300_0001u32, 256, 127] {
            let header = edited_header(&data, |h| h[84..88].copy_from_slice(&size.to_le_bytes()));
            assert_eq!(
                parse_header(&header),
                Err(GptError::Malformed("entry size or count")),
                "{size}"
            );
        }
        let header = edited_header(&data, |h| {
            h[84..88].copy_from_slice(&0x5300_0001u32.to_le_bytes())
        });
        data[512..1024].copy_from_slice(&header);
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk");
        std::fs::write(&img, &data).unwrap();
        assert!(read(&img, 512).is_err());
    }

    #[test]
    fn short_or_empty_input() {
        assert_eq!(parse_header(&[]), Err(GptError::NoSignature));
        assert_eq!(parse_header(&[0u8; 512]), Err(GptError::NoSignature));
    }
}
