//! The partitions inside an opened container (rpi-image-gen's "partitioned"
//! LUKS2 containers: `osdata_crypt` holding system_a, system_b and
//! persistent), mapped as `kpartx -a -p p /dev/mapper/NAME` maps them: one
//! `linear` target per used GPT entry, named NAME + "p" + the entry's number.
//! rpi-image-gen's slot map names them so (`mapper:<name>p:<N>`).
//!
//! Source: multipath-tools kpartx/gpt.c `read_gpt_pt` (an entry with a zero
//! type GUID is an empty slice, so numbers keep their holes; start and size
//! scaled from the device's logical blocks to 512-byte sectors) and
//! kpartx/kpartx.c (the ADD loop: empty slices skipped, the name
//! `<mapname><delim><N>`, the params `<device> <start>`). Pure: the GPT is
//! read with [`crate::disk::gpt`] from the opened container, the targets are
//! created through `Sys`.

use crate::disk::gpt::Entry;
use crate::kernel::sys::DmLine;

/// kpartx's `-p p`: the delimiter between the container's name and the
/// partition number (kpartx would add none after a name not ending in a
/// digit; rpi-image-gen passes `-p p` so the names are always `NAMEpN`).
const DELIMITER: &str = "p";

/// `DM_NAME_LEN` (128) less its NUL.
const DM_NAME_MAX: usize = 127;

/// kpartx's `MAXSLICES` (and the kernel's `DISK_MAX_PARTS`): entries past it
/// are never mapped by either.
const MAX_PARTITIONS: u32 = 256;

/// One partition of a container, ready for `dm_create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MappedPart {
    /// The device-mapper name: `<container>p<N>`.
    pub name: String,
    /// The GPT entry's number (1-based, as kpartx and the kernel number).
    pub number: u32,
    /// The GPT partition name (rpi-image-gen's member names).
    pub part_name: String,
    /// The unique partition GUID (PARTUUID), lowercase.
    pub uuid: String,
    /// `0 <sectors> linear <container_node> <start sector>`.
    pub table: Vec<DmLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KpartxError {
    #[error("{container}: logical block size {lba_bytes} is not 512, 1024, 2048 or 4096")]
    LbaSize { container: String, lba_bytes: u64 },
    #[error("{container}: partition {number} ({part_name:?}) ends at LBA {last}, before it starts at LBA {first}")]
    Reversed {
        container: String,
        number: u32,
        part_name: String,
        first: u64,
        last: u64,
    },
    #[error("{container}: partition {number} ({part_name:?}) at LBAs {first}..={last} of {lba_bytes} bytes runs past the container's end ({bytes} bytes)")]
    BeyondEnd {
        container: String,
        number: u32,
        part_name: String,
        first: u64,
        last: u64,
        lba_bytes: u64,
        bytes: u64,
    },
    #[error("{container}: partition {number} is past the {MAX_PARTITIONS} partitions kpartx and the kernel map")]
    TooMany { container: String, number: u32 },
    #[error("{container}: {name:?} is no device-mapper name (empty, a '/' or blank, or over {DM_NAME_MAX} bytes)")]
    Name { container: String, name: String },
    #[error(
        "{container}: device {device:?} cannot go in a device-mapper table (empty or with blanks)"
    )]
    Device { container: String, device: String },
}

fn dm_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= DM_NAME_MAX
        && !name.contains('/')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The targets `kpartx -a -p p` would create for the GPT `entries` (the used
/// entries of the container's table, [`crate::disk::gpt::find_valid`] read
/// with `lba_bytes`-byte blocks: the opened container's logical block size,
/// 4096 when dm-crypt uses 4 KiB sectors) of the container `container_name`
/// (its device-mapper name), whose node `container_node` goes in the tables
/// and which is `container_bytes` long.
///
/// Refused, naming the container and the entry, where kpartx would go on: a
/// partition that ends before it starts (kpartx's size underflows) or runs
/// past the container's end (the kernel would truncate or skip its own such
/// partitions, and a system slot cut short is no slot), and a name the
/// kernel would refuse.
pub(crate) fn partitions(
    container_name: &str,
    container_node: &str,
    entries: &[Entry],
    lba_bytes: u64,
    container_bytes: u64,
) -> Result<Vec<MappedPart>, KpartxError> {
    let container = || container_name.to_string();
    if !dm_name_ok(container_name) {
        return Err(KpartxError::Name {
            container: container(),
            name: container_name.to_string(),
        });
    }
    if container_node.is_empty()
        || container_node
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(KpartxError::Device {
            container: container(),
            device: container_node.to_string(),
        });
    }
    if ![512, 1024, 2048, 4096].contains(&lba_bytes) {
        return Err(KpartxError::LbaSize {
            container: container(),
            lba_bytes,
        });
    }
    // gpt.c's sector_size_mul.
    let per_lba = lba_bytes / 512;
    let sectors = container_bytes / 512;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        if e.number == 0 || e.number > MAX_PARTITIONS {
            return Err(KpartxError::TooMany {
                container: container(),
                number: e.number,
            });
        }
        if e.last_lba < e.first_lba {
            return Err(KpartxError::Reversed {
                container: container(),
                number: e.number,
                part_name: e.name.clone(),
                first: e.first_lba,
                last: e.last_lba,
            });
        }
        let start = e.first_lba.checked_mul(per_lba);
        let end = e
            .last_lba
            .checked_add(1)
            .and_then(|l| l.checked_mul(per_lba));
        let (start, end) = match (start, end) {
            (Some(start), Some(end)) if end <= sectors => (start, end),
            _ => {
                return Err(KpartxError::BeyondEnd {
                    container: container(),
                    number: e.number,
                    part_name: e.name.clone(),
                    first: e.first_lba,
                    last: e.last_lba,
                    lba_bytes,
                    bytes: container_bytes,
                })
            }
        };
        let name = format!("{container_name}{DELIMITER}{}", e.number);
        if !dm_name_ok(&name) {
            return Err(KpartxError::Name {
                container: container(),
                name,
            });
        }
        out.push(MappedPart {
            name,
            number: e.number,
            part_name: e.name.clone(),
            uuid: e.uuid.clone(),
            table: vec![DmLine {
                start: 0,
                length: end - start,
                target: "linear".to_string(),
                params: format!("{container_node} {start}"),
            }],
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::gpt;

    const DISK_BYTES: u64 = 16 << 20;

    fn fixture(name: &str) -> String {
        format!(
            "{}/tests/fixtures/verity/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    /// The 16 MiB container of tests/fixtures/verity/README.md: its stored
    /// head (MBR, primary header, entries) at the start, zeroes after.
    fn container(lba: u64) -> Vec<gpt::Entry> {
        let head = std::fs::read(fixture(&format!("container-{lba}.gpt"))).unwrap();
        let mut disk = vec![0u8; DISK_BYTES as usize];
        disk[..head.len()].copy_from_slice(&head);
        let table = gpt::find_valid(&mut std::io::Cursor::new(disk), lba, false).unwrap();
        assert_eq!(table.which, gpt::Which::Primary);
        table.entries
    }

    /// `kpartx -l -p p` lines: `<name> : 0 <sectors> <device> <start>`.
    fn kpartx(lba: u64) -> Vec<(String, DmLine)> {
        let text = std::fs::read_to_string(fixture(&format!("container-{lba}.kpartx"))).unwrap();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f[1..3], [":", "0"], "{l}");
                let line = DmLine {
                    start: 0,
                    length: f[3].parse().unwrap(),
                    target: "linear".into(),
                    params: format!("{} {}", f[4], f[5]),
                };
                (f[0].to_string(), line)
            })
            .collect()
    }

    /// The names `sgdisk -p` printed, by number.
    fn sgdisk_names(lba: u64) -> Vec<(u32, String)> {
        let text = std::fs::read_to_string(fixture(&format!("container-{lba}.sgdisk"))).unwrap();
        text.lines()
            .skip_while(|l| !l.starts_with("Number"))
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].parse().unwrap(), f[6..].join(" "))
            })
            .collect()
    }

    /// What kpartx made of the same table, at 512- and 4096-byte logical
    /// blocks: the same names (the hole at entry 3 kept), starts and sizes
    /// in 512-byte sectors.
    #[test]
    fn same_targets_as_kpartx() {
        for lba in [512, 4096] {
            let entries = container(lba);
            let want = kpartx(lba);
            // kpartx ran on /dev/loop0, so its map name is loop0.
            let got = partitions("loop0", "/dev/loop0", &entries, lba, DISK_BYTES).unwrap();
            let got_lines: Vec<(String, DmLine)> = got
                .iter()
                .map(|p| {
                    assert_eq!(p.table.len(), 1);
                    (p.name.clone(), p.table[0].clone())
                })
                .collect();
            assert_eq!(got_lines, want, "{lba}");
            let names: Vec<(u32, String)> = got
                .iter()
                .map(|p| (p.number, p.part_name.clone()))
                .collect();
            assert_eq!(names, sgdisk_names(lba), "{lba}");
            for (p, e) in got.iter().zip(&entries) {
                assert_eq!(p.uuid, e.uuid);
            }
        }
    }

    #[test]
    fn container_names_and_nodes() {
        let entries = container(4096);
        let got = partitions(
            "osdata_crypt",
            "/dev/mapper/osdata_crypt",
            &entries,
            4096,
            DISK_BYTES,
        )
        .unwrap();
        let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["osdata_cryptp1", "osdata_cryptp2", "osdata_cryptp4"]
        );
        assert_eq!(got[0].table[0].params, "/dev/mapper/osdata_crypt 2048");
        // A name ending in a digit still gets the "p" (kpartx -p p).
        let got = partitions("crypt2", "253:0", &entries, 4096, DISK_BYTES).unwrap();
        assert_eq!(got[2].name, "crypt2p4");
        assert_eq!(got[2].table[0].params, "253:0 18432");
        for bad in ["", "a/b", "a b", &"x".repeat(126)] {
            assert!(
                matches!(
                    partitions(bad, "/dev/dm-0", &entries, 4096, DISK_BYTES),
                    Err(KpartxError::Name { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(partitions(&"x".repeat(125), "/dev/dm-0", &entries, 4096, DISK_BYTES).is_ok());
        assert!(matches!(
            partitions("c", "/dev/dm 0", &entries, 4096, DISK_BYTES),
            Err(KpartxError::Device { .. })
        ));
        assert!(partitions("c", "/dev/dm-0", &[], 4096, DISK_BYTES)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn broken_entries_are_refused_naming_the_container() {
        let entries = container(512);
        // The container read as shorter than its table says (a GPT copied
        // from a bigger image): the last partition runs past its end.
        let err = partitions("osdata_crypt", "/dev/dm-0", &entries, 512, 12 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "osdata_crypt: partition 4 (\"persistent\") at LBAs 18432..=32734 of 512 bytes \
             runs past the container's end (12582912 bytes)"
        );
        // One sector short of the last partition's end.
        let last = entries[2].last_lba;
        assert!(partitions("c", "/dev/dm-0", &entries, 512, last * 512).is_err());
        assert!(partitions("c", "/dev/dm-0", &entries, 512, (last + 1) * 512).is_ok());
        // A 512-byte table taken as a 4096-byte one lies past the end too.
        assert!(matches!(
            partitions("c", "/dev/dm-0", &entries, 4096, DISK_BYTES),
            Err(KpartxError::BeyondEnd { .. })
        ));
        let mut reversed = entries.clone();
        reversed[1].last_lba = reversed[1].first_lba - 1;
        assert_eq!(
            partitions("osdata_crypt", "/dev/dm-0", &reversed, 512, DISK_BYTES)
                .unwrap_err()
                .to_string(),
            "osdata_crypt: partition 2 (\"system_b\") ends at LBA 10239, before it starts at LBA 10240"
        );
        let mut huge = entries.clone();
        huge[0].last_lba = u64::MAX;
        assert!(matches!(
            partitions("c", "/dev/dm-0", &huge, 512, u64::MAX),
            Err(KpartxError::BeyondEnd { .. })
        ));
        let mut many = entries.clone();
        many[2].number = 257;
        assert!(matches!(
            partitions("c", "/dev/dm-0", &many, 512, DISK_BYTES),
            Err(KpartxError::TooMany { number: 257, .. })
        ));
        for lba in [0, 256, 3000, 8192] {
            assert_eq!(
                partitions("c", "/dev/dm-0", &entries, lba, DISK_BYTES)
                    .unwrap_err()
                    .to_string(),
                format!("c: logical block size {lba} is not 512, 1024, 2048 or 4096")
            );
        }
    }
}
