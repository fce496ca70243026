//! Slot sources: what the bootloader says it booted. Each source is asked in the
//! configured order (default: `rauc.slot=`, `root=`, `androidboot.slot_suffix=`,
//! the Raspberry Pi firmware's device-tree partition); the first that speaks
//! gives the hint. Pure: the cmdline, the partitions and the device-tree value
//! come in as values.
//!
//! A key given twice with different values (`uboot/boot.cmd` appending the
//! env's `extra_bootargs` after its own `rauc.slot=`) is not taken from the
//! later party: that source speaks, but names no slot, and the decision falls
//! back to the boot state's order as if the bootloader had said nothing usable.

use crate::config::PartRef;
use crate::disk::devices::{matches, Resolved};
use crate::kernel::cmdline::Cmdline;
use crate::state::decision::Hint;
use crate::state::uboot::rauc::Bootnames;
use crate::types::{Slot, SourceKind};

/// Everything the sources read.
pub struct Facts<'a> {
    pub cmdline: &'a Cmdline,
    pub rauc_key: &'a str,
    pub names: &'a Bootnames,
    pub resolved: &'a Resolved,
    /// `chosen/bootloader/partition`, if the device tree has it.
    pub dt_partition: Option<u32>,
}

/// Asks the sources in order; returns the first hint and a line per source asked.
pub fn find(order: &[SourceKind], facts: &Facts) -> (Option<Hint>, Vec<String>) {
    let mut log = Vec::new();
    for kind in order {
        match ask(*kind, facts) {
            Some(hint) => {
                log.push(format!("slot source {kind:?}: {}", describe(&hint)));
                return (Some(hint), log);
            }
            None => log.push(format!("slot source {kind:?}: silent")),
        }
    }
    (None, log)
}

fn describe(hint: &Hint) -> String {
    match hint.slot {
        Some(slot) => format!("{} -> slot {slot}", hint.source),
        None => format!("{} names no slot of this layout", hint.source),
    }
}

/// The one value of `key`: Err(hint) naming every value when they differ.
fn single<'a>(f: &Facts<'a>, key: &str) -> Result<Option<&'a str>, Hint> {
    let values = f.cmdline.values(key);
    match values.first() {
        Some(first) if values.iter().any(|v| v != first) => {
            let listed: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
            Err(Hint {
                slot: None,
                source: format!(
                    "{key}= given {} times with different values ({}), a conflict",
                    values.len(),
                    listed.join(", ")
                ),
            })
        }
        first => Ok(first.copied()),
    }
}

fn ask(kind: SourceKind, f: &Facts) -> Option<Hint> {
    let key = match kind {
        SourceKind::Rauc => f.rauc_key,
        SourceKind::Root => "root",
        SourceKind::Android => "androidboot.slot_suffix",
        SourceKind::Devicetree => return from_devicetree(f),
    };
    let raw = match single(f, key) {
        Ok(raw) => raw?,
        Err(conflict) => return Some(conflict),
    };
    match kind {
        SourceKind::Rauc => Some(Hint {
            slot: f.names.slot(raw),
            source: format!("{}={raw:?}", f.rauc_key),
        }),
        // rpi-image-gen's ab_userdata writes `root=/dev/disk/by-slot/active/system`
        // into each slot's cmdline.txt (image/gpt/ab_userdata/slot-post-process.sh):
        // the link slotinit itself makes, which names no slot. Silent, so
        // the sources after it (the device tree) are asked.
        SourceKind::Root if raw.starts_with(BY_SLOT) => None,
        SourceKind::Root => Some(from_root(raw, f)),
        SourceKind::Android => {
            let slot = match raw {
                "_a" => Some(Slot::A),
                "_b" => Some(Slot::B),
                _ => None,
            };
            Some(Hint {
                slot,
                source: format!("androidboot.slot_suffix={raw}"),
            })
        }
        // Answered above, from the device tree, not the cmdline.
        SourceKind::Devicetree => None,
    }
}

/// Where slotinit's own links live: a `root=` there names no slot.
const BY_SLOT: &str = "/dev/disk/by-slot/";

/// `root=`: the system partition it names.
fn from_root(raw: &str, f: &Facts) -> Hint {
    let r = if let Some(label) = raw.strip_prefix("PARTLABEL=") {
        PartRef::Name(label.to_string())
    } else if let Some(uuid) = raw.strip_prefix("PARTUUID=") {
        PartRef::Uuid(uuid.to_ascii_lowercase())
    } else if raw.starts_with("/dev/") {
        PartRef::Device(raw.to_string())
    } else {
        // UUID=, LABEL=: filesystem ids, identical on both slots.
        return Hint {
            slot: None,
            source: format!("root={raw} (only PARTLABEL=, PARTUUID= or /dev/ tell slots apart)"),
        };
    };
    let slot = Slot::ALL
        .into_iter()
        .find(|s| f.resolved.system(*s).is_some_and(|p| matches(&r, p)));
    Hint {
        slot,
        source: format!("root={raw}"),
    }
}

/// The partition the Raspberry Pi firmware says it booted from.
fn from_devicetree(f: &Facts) -> Option<Hint> {
    let number = f.dt_partition?;
    // The firmware names the partition it loaded the kernel from: a boot
    // partition, or a system partition on layouts that boot from it.
    let slot = Slot::ALL.into_iter().find(|s| {
        f.resolved.boot(*s).is_some_and(|p| p.number == number)
            && f.resolved
                .boot(s.other())
                .is_none_or(|p| p.number != number)
    });
    let slot = slot.or_else(|| {
        Slot::ALL
            .into_iter()
            .find(|s| f.resolved.system(*s).is_some_and(|p| p.number == number))
    });
    Some(Hint {
        slot,
        source: format!("device-tree boot partition {number}"),
    })
}

/// The device tree's u32 cell, big-endian.
pub(crate) fn parse_dt_u32(bytes: &[u8]) -> Option<u32> {
    let cell: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(cell))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::devices::Partition;
    use crate::state::uboot::rauc::Bootname;

    fn resolved() -> Resolved {
        let p = |dev: &str, n: u32, name: &str, uuid: &str| {
            Some(Partition {
                dev: dev.into(),
                disk: "vda".into(),
                number: n,
                name: Some(name.into()),
                uuid: Some(uuid.into()),
            })
        };
        Resolved {
            boot_a: p("vda2", 2, "boot_a", "00000000-0000-0000-0000-000000000002"),
            boot_b: p("vda3", 3, "boot_b", "00000000-0000-0000-0000-000000000003"),
            system_a: p(
                "vda4",
                4,
                "system_a",
                "00000000-0000-0000-0000-000000000004",
            ),
            system_b: p(
                "vda5",
                5,
                "system_b",
                "00000000-0000-0000-0000-0000000000ab",
            ),
            ..Resolved::default()
        }
    }

    fn names() -> Bootnames {
        Bootnames {
            a: Bootname::new("A").unwrap(),
            b: Bootname::new("B").unwrap(),
        }
    }

    fn hint(cmdline: &str, dt: Option<u32>) -> Option<Hint> {
        let c = Cmdline::parse(cmdline.as_bytes());
        let r = resolved();
        let n = names();
        let facts = Facts {
            cmdline: &c,
            rauc_key: "rauc.slot",
            names: &n,
            resolved: &r,
            dt_partition: dt,
        };
        find(&crate::types::DEFAULT_ORDER, &facts).0
    }

    #[test]
    fn each_source_alone() {
        let cases: &[(&str, Option<u32>, Option<Slot>)] = &[
            ("rauc.slot=B", None, Some(Slot::B)),
            ("rauc.slot=A", None, Some(Slot::A)),
            ("rauc.slot=C", None, None),
            ("root=PARTLABEL=system_b", None, Some(Slot::B)),
            (
                "root=PARTUUID=00000000-0000-0000-0000-0000000000AB",
                None,
                Some(Slot::B),
            ),
            ("root=/dev/vda4", None, Some(Slot::A)),
            ("root=/dev/vda9", None, None),
            ("root=UUID=1234", None, None),
            ("androidboot.slot_suffix=_b", None, Some(Slot::B)),
            ("androidboot.slot_suffix=b", None, None),
            ("", Some(3), Some(Slot::B)),
            ("", Some(2), Some(Slot::A)),
            ("", Some(5), Some(Slot::B)),
            ("", Some(9), None),
        ];
        for (cmdline, dt, slot) in cases {
            let h = hint(cmdline, *dt).unwrap_or_else(|| panic!("{cmdline}: silent"));
            assert_eq!(h.slot, *slot, "{cmdline} {dt:?}: {}", h.source);
        }
    }

    #[test]
    fn silence_and_precedence() {
        assert_eq!(
            hint("console=ttyAMA0 root=", None).map(|h| h.slot),
            Some(None)
        );
        assert_eq!(hint("console=ttyAMA0", None), None);
        // rauc.slot= comes first, then root=, android, the device tree.
        let h = hint("root=PARTLABEL=system_a rauc.slot=B", Some(2)).unwrap();
        assert_eq!(
            (h.slot, h.source.as_str()),
            (Some(Slot::B), "rauc.slot=\"B\"")
        );
        let h = hint("androidboot.slot_suffix=_b root=/dev/vda4", None).unwrap();
        assert_eq!(h.slot, Some(Slot::A));
        // rpi-image-gen's cmdline.txt names slotinit's own link: silent, so
        // the firmware's device tree is heard.
        let h = hint("root=/dev/disk/by-slot/active/system rootwait", Some(3)).unwrap();
        assert_eq!(
            (h.slot, h.source.as_str()),
            (Some(Slot::B), "device-tree boot partition 3")
        );
        assert_eq!(hint("root=/dev/disk/by-slot/active/system", None), None);
    }

    #[test]
    fn configured_order_is_followed() {
        let c = Cmdline::parse(b"rauc.slot=A androidboot.slot_suffix=_b");
        let (r, n) = (resolved(), names());
        let facts = Facts {
            cmdline: &c,
            rauc_key: "rauc.slot",
            names: &n,
            resolved: &r,
            dt_partition: None,
        };
        let (h, log) = find(&[SourceKind::Android, SourceKind::Rauc], &facts);
        assert_eq!(h.unwrap().slot, Some(Slot::B));
        assert_eq!(log.len(), 1);
        let (h, log) = find(&[SourceKind::Devicetree, SourceKind::Rauc], &facts);
        assert_eq!(h.unwrap().slot, Some(Slot::A));
        assert_eq!(
            log,
            vec![
                "slot source Devicetree: silent",
                "slot source Rauc: rauc.slot=\"A\" -> slot a"
            ]
        );
    }

    /// Two parties setting one key: the later one does not win; the source
    /// speaks (the order stops there) but names no slot, and says why.
    #[test]
    fn conflicting_values_are_no_hint() {
        let cases: &[(&str, &str)] = &[
            ("rauc.slot=A rauc.slot=B", "rauc.slot= given 2 times"),
            ("rauc.slot=A console=x rauc.slot=B", "(\"A\", \"B\")"),
            ("root=/dev/vda4 root=/dev/vda5", "root= given 2 times"),
            (
                "androidboot.slot_suffix=_a androidboot.slot_suffix=_b",
                "androidboot.slot_suffix= given 2 times",
            ),
        ];
        for (cmdline, needle) in cases {
            let h = hint(cmdline, Some(3)).unwrap_or_else(|| panic!("{cmdline}: silent"));
            assert_eq!(h.slot, None, "{cmdline}");
            assert!(h.source.contains(needle), "{cmdline}: {}", h.source);
        }
        // The same value twice is one word.
        assert_eq!(
            hint("rauc.slot=B rauc.slot=B", None).unwrap().slot,
            Some(Slot::B)
        );
        // A conflict in a later source does not matter once an earlier one spoke.
        assert_eq!(
            hint("rauc.slot=A root=/dev/vda4 root=/dev/vda5", None)
                .unwrap()
                .slot,
            Some(Slot::A)
        );
    }

    #[test]
    fn dt_cell() {
        assert_eq!(parse_dt_u32(&[0, 0, 0, 3]), Some(3));
        assert_eq!(parse_dt_u32(&[0, 0, 3]), None);
    }
}
