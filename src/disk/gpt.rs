//! GPT reading: the unique partition GUIDs (PARTUUID) the kernel does not put in
//! its uevents. Pure parsing of the header and entry array with their CRCs, and
//! [`find_valid`], which picks the table the kernel's partition scan picked:
//! block/partitions/efi.c `find_valid_gpt()` and `is_gpt_valid()`.
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
    /// The first and last logical block of the partition (inclusive, as
    /// the entry stores them: UEFI `StartingLBA`/`EndingLBA`), in the disk's
    /// logical blocks.
    pub first_lba: u64,
    pub last_lba: u64,
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
    #[error("no protective MBR (and no `gpt` on the kernel cmdline)")]
    NoProtectiveMbr,
    #[error("GPT header at LBA {at} names LBA {my_lba} as its own")]
    MyLba { at: u64, my_lba: u64 },
    #[error("GPT usable LBAs {first}..={last} are not within the disk's {last_lba}")]
    UsableLbas {
        first: u64,
        last: u64,
        last_lba: u64,
    },
    #[error("GPT {0} lies beyond the end of the disk")]
    BeyondDisk(&'static str),
    #[error("cannot read the disk: {0}")]
    Io(String),
    #[error("primary GPT: {primary}; {}", alternate.as_ref().map_or_else(
        || "alternate GPT not read (the kernel reads it only with `gpt` on its cmdline)".to_string(),
        |e| format!("alternate GPT: {e}")))]
    NoValidTable {
        primary: Box<GptError>,
        alternate: Option<Box<GptError>>,
    },
}

/// Where the entry array is, from a valid header (LBA 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The LBA this header says it is at (`my_lba`).
    pub my_lba: u64,
    /// Where the other copy is (`alternate_lba`).
    alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
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
        my_lba: le64(block, 24),
        alternate_lba: le64(block, 32),
        first_usable_lba: le64(block, 40),
        last_usable_lba: le64(block, 48),
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
            first_lba: le64(e, 32),
            last_lba: le64(e, 40),
        });
    }
    Ok(out)
}

/// Which copy of the table the entries came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Primary,
    Alternate,
}

/// The table the kernel uses for a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub which: Which,
    pub entries: Vec<Entry>,
}

const PRIMARY_LBA: u64 = 1;

/// Reads `buf.len()` bytes at byte `offset`.
fn read_at<D: Read + Seek>(dev: &mut D, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    dev.seek(SeekFrom::Start(offset))?;
    dev.read_exact(buf)
}

/// `is_pmbr_valid()`: the MBR signature and a record of type 0xEE starting at
/// LBA 1 (a protective or a hybrid MBR; the size is only warned about).
pub fn is_pmbr_valid(mbr: &[u8]) -> bool {
    if mbr.len() < 512 || mbr[510..512] != [0x55, 0xaa] {
        return false;
    }
    (0..4).any(|i| {
        let record = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
        record[4] == 0xee && le32(record, 8) == 1
    })
}

/// `is_gpt_valid()` at `lba`: header signature, size, CRC, `my_lba`, usable
/// range within the disk, 128-byte entries, the entry array readable within
/// the disk, not empty, and its CRC.
fn is_gpt_valid<D: Read + Seek>(
    dev: &mut D,
    sector: u64,
    lba: u64,
    last_lba: u64,
) -> Result<Vec<Entry>, GptError> {
    // read_lba() reads nothing beyond the last LBA.
    if lba > last_lba {
        return Err(GptError::BeyondDisk("header"));
    }
    let io = |e: std::io::Error| GptError::Io(e.to_string());
    let mut block = vec![0u8; sector as usize];
    let offset = lba
        .checked_mul(sector)
        .ok_or(GptError::BeyondDisk("header"))?;
    read_at(dev, offset, &mut block).map_err(io)?;
    let header = parse_header(&block)?;
    if header.my_lba != lba {
        return Err(GptError::MyLba {
            at: lba,
            my_lba: header.my_lba,
        });
    }
    let (first, last) = (header.first_usable_lba, header.last_usable_lba);
    if first > last_lba || last > last_lba || last < first {
        return Err(GptError::UsableLbas {
            first,
            last,
            last_lba,
        });
    }
    // alloc_read_gpt_entries(): an empty array is no table, and all of it must
    // be read from within the disk.
    let len = u64::from(header.count) * u64::from(header.entry_size);
    if len == 0 {
        return Err(GptError::Malformed("no partition entries"));
    }
    let start = header
        .entries_lba
        .checked_mul(sector)
        .ok_or(GptError::BeyondDisk("entry array"))?;
    let disk_end = (last_lba + 1).saturating_mul(sector);
    if header.entries_lba > last_lba || start.saturating_add(len) > disk_end {
        return Err(GptError::BeyondDisk("entry array"));
    }
    let mut array = vec![0u8; len as usize];
    read_at(dev, start, &mut array).map_err(io)?;
    parse_entries(&header, &array)
}

/// The table the kernel's partition scan uses, `find_valid_gpt()` of
/// block/partitions/efi.c step by step: without `gpt` on the kernel cmdline
/// (`force_gpt`) the MBR must be protective (or hybrid); the primary table at
/// LBA 1 wins whenever it is valid; only with `force_gpt` is the alternate at
/// the last LBA read when the primary is not. (Its last resort, a sector the
/// block driver names via `alternative_gpt_sector`, exists for NVIDIA Tegra
/// eMMC only and is not modelled.) `dev` is the whole disk, `sector` its
/// logical block size.
pub fn find_valid<D: Read + Seek>(
    dev: &mut D,
    sector: u64,
    force_gpt: bool,
) -> Result<Table, GptError> {
    if !(512..=65536).contains(&sector) {
        return Err(GptError::Malformed("logical block size"));
    }
    let bytes = dev
        .seek(SeekFrom::End(0))
        .map_err(|e| GptError::Io(e.to_string()))?;
    // last_lba(): the disk's size in blocks, less one.
    let last_lba = (bytes / sector)
        .checked_sub(1)
        .ok_or(GptError::BeyondDisk("header"))?;
    if !force_gpt {
        let mut mbr = [0u8; 512];
        read_at(dev, 0, &mut mbr).map_err(|e| GptError::Io(e.to_string()))?;
        if !is_pmbr_valid(&mbr) {
            return Err(GptError::NoProtectiveMbr);
        }
    }
    let primary = match is_gpt_valid(dev, sector, PRIMARY_LBA, last_lba) {
        Ok(entries) => {
            return Ok(Table {
                which: Which::Primary,
                entries,
            })
        }
        Err(e) => e,
    };
    if !force_gpt {
        return Err(GptError::NoValidTable {
            primary: Box::new(primary),
            alternate: None,
        });
    }
    match is_gpt_valid(dev, sector, last_lba, last_lba) {
        Ok(entries) => Ok(Table {
            which: Which::Alternate,
            entries,
        }),
        Err(alternate) => Err(GptError::NoValidTable {
            primary: Box::new(primary),
            alternate: Some(Box::new(alternate)),
        }),
    }
}

/// [`find_valid`] of a disk device (or image) with `sector`-byte blocks.
pub(super) fn read_as_kernel<S: crate::kernel::sys::Sys + ?Sized>(
    sys: &mut S,
    disk: &Path,
    sector: u64,
    force_gpt: bool,
) -> Result<Table, String> {
    let mut f = sys
        .open_disk(disk)
        .map_err(|e| format!("{}: open: {e}", disk.display()))?;
    find_valid(&mut f, sector, force_gpt).map_err(|e| format!("{}: {e}", disk.display()))
}

/// Reads the primary GPT of a disk device (or image) with `sector`-byte blocks,
/// with the parsers' checks only; the boot uses [`read_as_kernel`].
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

    /// tests/fixtures/gpt/corrupt-primary.gpt put back at both ends of its disk.
    fn corrupt_primary_disk() -> Vec<u8> {
        let stored = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gpt/corrupt-primary.gpt"
        ))
        .unwrap();
        assert_eq!(stored.len(), (34 + 33) * 512);
        let mut disk = vec![0u8; 8192 * 512];
        disk[..34 * 512].copy_from_slice(&stored[..34 * 512]);
        let tail = disk.len() - 33 * 512;
        disk[tail..].copy_from_slice(&stored[34 * 512..]);
        disk
    }

    fn uuids(table: &Table) -> Vec<String> {
        table.entries.iter().map(|e| e.uuid.clone()).collect()
    }

    fn oracle(name: &str) -> Vec<String> {
        let path = format!("{}/tests/fixtures/gpt/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        text.split_whitespace().map(str::to_string).collect()
    }

    /// A corrupt primary header: with `gpt` on the cmdline the kernel reads
    /// the alternate at the last LBA, so slotinit reads the same PARTUUIDs;
    /// without it the kernel makes no partitions of the disk and neither
    /// table counts.
    #[test]
    fn corrupt_primary_uses_the_alternate_only_with_force_gpt() {
        let disk = corrupt_primary_disk();
        let table = find_valid(&mut std::io::Cursor::new(&disk), 512, true).unwrap();
        assert_eq!(table.which, Which::Alternate);
        assert_eq!(uuids(&table), oracle("corrupt-primary.partuuids"));
        let names: Vec<&str> = table.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["bootconfig", "system_a", "system_b"]);
        match find_valid(&mut std::io::Cursor::new(&disk), 512, false) {
            Err(GptError::NoValidTable {
                primary,
                alternate: None,
            }) => assert_eq!(*primary, GptError::NoSignature),
            other => panic!("{other:?}"),
        }
        // The same through a file, as the boot reads /dev/<disk>.
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk");
        std::fs::write(&img, &disk).unwrap();
        let table = read_as_kernel(&mut crate::kernel::sys::Real, &img, 512, true).unwrap();
        assert_eq!(uuids(&table), oracle("corrupt-primary.partuuids"));
        let err = read_as_kernel(&mut crate::kernel::sys::Real, &img, 512, false).unwrap_err();
        assert!(err.contains("alternate GPT not read"), "{err}");
    }

    /// The primary with a bad CRC (instead of zeroed) falls back the same way;
    /// a valid primary always wins, even over a valid alternate.
    #[test]
    fn valid_primary_wins_and_bad_crc_falls_back() {
        let mut disk = corrupt_primary_disk();
        // Rebuild a valid primary from the alternate, as sgdisk would.
        let last = 8191usize;
        let mut header = disk[last * 512..last * 512 + 512].to_vec();
        header[24..32].copy_from_slice(&1u64.to_le_bytes());
        header[32..40].copy_from_slice(&(last as u64).to_le_bytes());
        header[72..80].copy_from_slice(&2u64.to_le_bytes());
        header[16..20].fill(0);
        let crc = crc32fast::hash(&header[..92]);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        disk[512..1024].copy_from_slice(&header);
        let table = find_valid(&mut std::io::Cursor::new(&disk), 512, true).unwrap();
        assert_eq!(table.which, Which::Primary);
        assert_eq!(uuids(&table), oracle("corrupt-primary.partuuids"));
        assert_eq!(
            find_valid(&mut std::io::Cursor::new(&disk), 512, false)
                .unwrap()
                .which,
            Which::Primary
        );
        disk[512 + 40] ^= 1;
        let table = find_valid(&mut std::io::Cursor::new(&disk), 512, true).unwrap();
        assert_eq!(table.which, Which::Alternate);
        // Both copies bad: nothing, and both reasons named.
        disk[last * 512 + 40] ^= 1;
        let err = find_valid(&mut std::io::Cursor::new(&disk), 512, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "primary GPT: GPT header CRC mismatch; alternate GPT: GPT header CRC mismatch"
        );
    }

    /// is_gpt_valid()'s checks beyond the CRCs: the header must name the LBA it
    /// was read from, and its usable range must lie within the disk.
    #[test]
    fn header_must_sit_where_it_says() {
        let mut disk = corrupt_primary_disk();
        // The alternate's own header copied to LBA 1 keeps my_lba = 8191.
        disk.copy_within(8191 * 512..8192 * 512, 512);
        let err = find_valid(&mut std::io::Cursor::new(&disk), 512, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("GPT header at LBA 1 names LBA 8191 as its own"),
            "{err}"
        );
        // A disk cut short: the alternate is not at the new last LBA, and the
        // primary's usable range runs past the end.
        let short = &disk[..4096 * 512];
        let err = find_valid(&mut std::io::Cursor::new(short), 512, true).unwrap_err();
        assert!(
            err.to_string().contains("alternate GPT: no GPT signature"),
            "{err}"
        );
    }

    #[test]
    fn protective_mbr_is_required_without_force_gpt() {
        let mut disk = corrupt_primary_disk();
        assert!(is_pmbr_valid(&disk[..512]));
        disk[446 + 4] = 0x83;
        assert!(!is_pmbr_valid(&disk[..512]));
        assert_eq!(
            find_valid(&mut std::io::Cursor::new(&disk), 512, false),
            Err(GptError::NoProtectiveMbr)
        );
        // With `gpt` the MBR is not looked at.
        assert!(find_valid(&mut std::io::Cursor::new(&disk), 512, true).is_ok());
        assert!(!is_pmbr_valid(&[0u8; 100]));
    }

    #[test]
    fn tiny_or_odd_disks_are_errors() {
        for (len, sector) in [(0usize, 512u64), (511, 512), (4096, 100), (4096, 1 << 20)] {
            let disk = vec![0u8; len];
            assert!(
                find_valid(&mut std::io::Cursor::new(&disk), sector, true).is_err(),
                "{len} {sector}"
            );
        }
    }

    /// `sgdisk -p` rows: (number, first, last, name).
    fn sgdisk_rows(text: &str) -> Vec<(u32, u64, u64, String)> {
        text.lines()
            .skip_while(|l| !l.starts_with("Number"))
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let n = |i: usize| f[i].parse::<u64>().unwrap();
                (n(0) as u32, n(1), n(2), f[6..].join(" "))
            })
            .collect()
    }

    /// Each entry's first and last LBA as sgdisk, which wrote the table,
    /// prints them (a hole at entry 3 keeps entry 4's number).
    #[test]
    fn first_and_last_lba_match_sgdisk() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let sgdisk = |args: &[&str]| {
            let out = std::process::Command::new("sgdisk")
                .args(args)
                .arg(&img)
                .output()
                .unwrap_or_else(|e| {
                    panic!("sgdisk (gdisk, tools/install-deps) could not run: {e}")
                });
            assert!(out.status.success(), "sgdisk {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        sgdisk(&[
            "-o",
            "-n",
            "1:2048:+1M",
            "-c",
            "1:system_a",
            "-n",
            "2:0:+3M",
            "-c",
            "2:system_b",
            "-n",
            "4:0:0",
            "-c",
            "4:persistent",
        ]);
        let want = sgdisk_rows(&sgdisk(&["-p"]));
        assert_eq!(want.len(), 3);
        let table = find_valid(&mut std::fs::File::open(&img).unwrap(), 512, false).unwrap();
        let got: Vec<_> = table
            .entries
            .iter()
            .map(|e| (e.number, e.first_lba, e.last_lba, e.name.clone()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn short_or_empty_input() {
        assert_eq!(parse_header(&[]), Err(GptError::NoSignature));
        assert_eq!(parse_header(&[0u8; 512]), Err(GptError::NoSignature));
    }
}
