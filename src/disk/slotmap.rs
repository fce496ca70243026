//! rpi-image-gen's static slot map (`/boot/slot.map`), the alternative to
//! GPT partition names its slot mapper falls back to (rpi-image-gen
//! `layer/rpi/device/slot-mapper/bin/rpi-slot-static`). Pure: text in,
//! partition references out.
//!
//! The format, as that script reads it: one `KEY=KIND:NAME:PART` a line;
//! empty lines and lines starting with `#` are skipped; the keys are
//! `a.boot`, `a.system`, `b.boot`, `b.system` (others are ignored), all four
//! required; PART is decimal digits. KIND empty: partition PART of the boot
//! disk (`/dev/<disk>p<PART>`); KIND `mapper`: `/dev/mapper/<NAME><PART>`
//! (no separator: a container split with `kpartx -p p` is written
//! `mapper:<name>p:<N>`); any other KIND is an error. Only devices on the
//! boot disk qualify, as the mapper's `RPI_ONBOOTDEV` udev tag has it: the
//! disk comes from the device tree's `boot-mode` ([`boot_disk`]); a mapper
//! device is taken to be built on it (the script assumes the same).

use crate::config::PartRef;

/// The four members a slot map names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    pub a_boot: Target,
    pub a_system: Target,
    pub b_boot: Target,
    pub b_system: Target,
}

/// One `KIND:NAME:PART`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Partition `PART` of the boot disk.
    BootDisk(u32),
    /// `/dev/mapper/<name><part>`.
    Mapper { name: String, part: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotMapError {
    #[error("slot map line {line}: {value:?} is not KIND:NAME:PART (KIND empty or \"mapper\", PART digits)")]
    BadTriplet { line: usize, value: String },
    #[error("slot map line {line}: {key} given twice")]
    Twice { line: usize, key: String },
    #[error("slot map: no {0} (a.boot, a.system, b.boot and b.system are all needed)")]
    Missing(&'static str),
}

/// The disk the firmware booted from, by the device tree's `boot-mode`
/// (rpi-image-gen's slot mapper: 1 = SD/eMMC `mmcblk0`, 6 = NVMe
/// `nvme0n1`; other modes are not supported there).
pub fn boot_disk(boot_mode: u32) -> Option<&'static str> {
    match boot_mode {
        1 => Some("mmcblk0"),
        6 => Some("nvme0n1"),
        _ => None,
    }
}

/// Parses the map's text.
pub fn parse(text: &str) -> Result<SlotMap, SlotMapError> {
    let mut found: [Option<Target>; 4] = [None, None, None, None];
    const KEYS: [&str; 4] = ["a.boot", "a.system", "b.boot", "b.system"];
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let Some(slot) = KEYS.iter().position(|k| *k == key) else {
            continue;
        };
        let target = triplet(value).ok_or_else(|| SlotMapError::BadTriplet {
            line: line_no,
            value: value.to_string(),
        })?;
        if found[slot].replace(target).is_some() {
            return Err(SlotMapError::Twice {
                line: line_no,
                key: key.to_string(),
            });
        }
    }
    let [a_boot, a_system, b_boot, b_system] = found;
    Ok(SlotMap {
        a_boot: a_boot.ok_or(SlotMapError::Missing("a.boot"))?,
        a_system: a_system.ok_or(SlotMapError::Missing("a.system"))?,
        b_boot: b_boot.ok_or(SlotMapError::Missing("b.boot"))?,
        b_system: b_system.ok_or(SlotMapError::Missing("b.system"))?,
    })
}

/// `KIND:NAME:PART`: KIND up to the first colon, PART after the last, NAME
/// between (the script's shell expansions `%%:*`, `#*:`, `##*:`).
fn triplet(value: &str) -> Option<Target> {
    let (kind, rest) = value.split_once(':')?;
    let name = rest.split(':').next().unwrap_or("");
    let part = rest.rsplit(':').next().unwrap_or("");
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let part: u32 = part.parse().ok()?;
    match kind {
        "" => Some(Target::BootDisk(part)),
        "mapper" if !name.is_empty() => Some(Target::Mapper {
            name: name.to_string(),
            part,
        }),
        _ => None,
    }
}

/// The layout members the map names, as references the device resolution
/// matches (`boot_a`, `system_a`, `boot_b`, `system_b`): a boot-disk
/// partition by number on `boot_disk`, a mapper device by its node.
pub fn to_refs(map: &SlotMap, boot_disk: &str) -> Vec<(&'static str, PartRef)> {
    let r = |t: &Target| match t {
        Target::BootDisk(number) => PartRef::Number {
            disk: Some(boot_disk.to_string()),
            number: *number,
        },
        Target::Mapper { name, part } => PartRef::Device(format!("/dev/mapper/{name}{part}")),
    };
    vec![
        ("boot_a", r(&map.a_boot)),
        ("system_a", r(&map.a_system)),
        ("boot_b", r(&map.b_boot)),
        ("system_b", r(&map.b_system)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ab_userdata's partition numbers (bootconfig 1, boot_a 2, boot_b 3,
    /// system_a 4, system_b 5), in the format rpi-slot-static reads.
    const PLAIN: &str = "# slot map\na.boot=::2\na.system=::4\nb.boot=::3\nb.system=::5\n";

    /// The `cryptslots` provision map: both systems in the LUKS container
    /// `osab_crypt`, split by `kpartx -p p`.
    const CRYPT: &str =
        "a.boot=::2\na.system=mapper:osab_cryptp:1\nb.boot=::3\nb.system=mapper:osab_cryptp:2\n";

    #[test]
    fn plain_map_on_sd_and_nvme() {
        let map = parse(PLAIN).unwrap();
        assert_eq!(map.a_boot, Target::BootDisk(2));
        assert_eq!(map.b_system, Target::BootDisk(5));
        let refs = to_refs(&map, boot_disk(1).unwrap());
        assert_eq!(
            refs[0],
            (
                "boot_a",
                PartRef::Number {
                    disk: Some("mmcblk0".into()),
                    number: 2
                }
            )
        );
        let refs = to_refs(&map, boot_disk(6).unwrap());
        assert_eq!(
            refs[3],
            (
                "system_b",
                PartRef::Number {
                    disk: Some("nvme0n1".into()),
                    number: 5
                }
            )
        );
        // USB (4) and others: not a boot disk the mapper supports.
        assert_eq!(boot_disk(4), None);
    }

    #[test]
    fn mapper_targets() {
        let refs = to_refs(&parse(CRYPT).unwrap(), "mmcblk0");
        assert_eq!(
            refs[1],
            (
                "system_a",
                PartRef::Device("/dev/mapper/osab_cryptp1".into())
            )
        );
        assert_eq!(
            refs[3],
            (
                "system_b",
                PartRef::Device("/dev/mapper/osab_cryptp2".into())
            )
        );
    }

    #[test]
    fn odd_inputs() {
        // Unknown keys and comments are skipped; no final newline is fine.
        let text = "x.other=foo\n#a.boot=bad\n\na.boot=::2\na.system=::4\nb.boot=::3\nb.system=::5";
        assert!(parse(text).is_ok());
        let bad = [
            ("a.boot=2", "line 1"),
            ("a.boot=::", "line 1"),
            ("a.boot=::x", "line 1"),
            ("a.boot=nbd:x:2", "line 1"),
            ("a.boot=mapper::2", "line 1"),
            ("a.boot=::2\na.boot=::3", "a.boot given twice"),
            ("a.boot=::2\na.system=::4\nb.boot=::3", "no b.system"),
        ];
        for (text, needle) in bad {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
