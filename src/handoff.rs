//! The handoff record: what this boot did, left in /run/slotinit/handoff.json for
//! the booted system (`slotinit status`, udev rules, health checks).

use crate::disk::devices::Resolved;
use crate::kernel::watchdog::LastReset;
use crate::state::decision::{Decision, Hint};
use crate::types::Slot;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// 2: errors and warnings are `{kind, message}` objects (1: strings).
/// 3: mounts are `{what, target, fstype, options}` objects.
/// 4: the `watchdog` record.
const VERSION: u32 = 4;

/// One error or warning of a boot: a stable `kind` for programs (health
/// checks, `status --json`, the tests) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Problem {
    pub(crate) kind: String,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn new(kind: &str, message: impl Into<String>) -> Problem {
        Problem {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

/// A version 1 record's plain string reads as a problem of kind "unknown".
impl<'de> Deserialize<'de> for Problem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Object { kind: String, message: String },
        }
        Ok(match Either::deserialize(d)? {
            Either::Text(message) => Problem::new("unknown", message),
            Either::Object { kind, message } => Problem { kind, message },
        })
    }
}

/// One mount slotinit made, as the booted system sees it (the sysroot is `/`):
/// what `slotinit mount-units` writes a unit file for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct MountRecord {
    /// A device, a file system name (`tmpfs`, `overlay`), or the directory a
    /// bind shows.
    pub(crate) what: String,
    /// The mount point.
    pub(crate) target: String,
    /// The file system type; `none` for a bind.
    pub(crate) fstype: String,
    /// `ro`/`rw` and the mount options; `bind` for a bind.
    pub(crate) options: String,
}

/// A version 1 or 2 record's "what target fstype options" line reads as its
/// four words (a path with a space in it was ambiguous there already).
impl<'de> Deserialize<'de> for MountRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields {
            what: String,
            target: String,
            fstype: String,
            options: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Object(Fields),
        }
        Ok(match Either::deserialize(d)? {
            Either::Text(line) => {
                let mut words = line.split_whitespace().map(str::to_string);
                let mut next = || words.next().unwrap_or_default();
                let (what, target, fstype) = (next(), next(), next());
                let options = next();
                // Version 1 and 2 wrote a bind as "what target bind".
                if fstype == "bind" {
                    MountRecord {
                        what,
                        target,
                        fstype: "none".into(),
                        options: "bind".into(),
                    }
                } else {
                    MountRecord {
                        what,
                        target,
                        fstype,
                        options,
                    }
                }
            }
            Either::Object(f) => MountRecord {
                what: f.what,
                target: f.target,
                fstype: f.fstype,
                options: f.options,
            },
        })
    }
}

/// The hardware watchdog as the boot left it (`boot.watchdog_s`,
/// `slotinit.watchdog=`). The handoff has none when it was off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct WatchdogRecord {
    pub(crate) device: String,
    /// The timeout asked for, seconds.
    pub(crate) requested_s: u32,
    /// The timeout it runs with, when the driver says.
    pub(crate) timeout_s: Option<u32>,
    /// The driver's identity (WDIOC_GETSUPPORT).
    pub(crate) identity: Option<String>,
    /// Whether the reset before this boot was the watchdog's, as far as the
    /// driver tells (WDIOC_GETBOOTSTATUS).
    pub(crate) last_reset: LastReset,
    /// Left running into the system, for its init to feed.
    pub(crate) running: bool,
    /// Why it could not be armed.
    pub(crate) error: Option<String>,
}

/// Fields default when absent, so a newer or older record still reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Handoff {
    pub(crate) version: u32,
    /// The slot that booted, and why.
    pub(crate) slot: Option<Slot>,
    pub(crate) decision: Option<Decision>,
    /// The slot's directory on the persistent partition (`system_a`).
    pub(crate) slot_dir: Option<String>,
    pub(crate) devices: Resolved,
    /// The boot-state store after this boot's writes.
    pub(crate) bootstate: Option<crate::state::Record>,
    /// What the bootloader said it booted, if a slot source spoke.
    pub(crate) hint: Option<Hint>,
    /// Why a slot was given up in this boot, if one was.
    pub(crate) fallback: Option<String>,
    /// What slotinit mounted, in order, as the booted system sees it.
    pub(crate) mounts: Vec<MountRecord>,
    /// The machine-id the system sees and where it came from.
    pub(crate) machine_id: Option<String>,
    pub(crate) machine_id_source: Option<String>,
    /// The persistent partition's filesystem check, when configured.
    pub(crate) fsck: Option<String>,
    /// True when the persistent partition could not be used (tmpfs /var).
    pub(crate) persistent_degraded: bool,
    /// Every error and warning of this boot, in order, each with its kind.
    pub(crate) errors: Vec<Problem>,
    pub(crate) warnings: Vec<Problem>,
    /// Each stage and how long it took, microseconds.
    pub(crate) timings_us: Vec<(String, u64)>,
    /// The init that was exec'd, and the arguments it was given (argv[1..]).
    pub(crate) init: Option<String>,
    pub(crate) init_args: Vec<String>,
    /// slotinit's peak resident memory (VmHWM) just before the handoff, KiB.
    pub(crate) vmhwm_kb: Option<u64>,
    /// CPU time slotinit spent itself (user) and in the kernel on its behalf
    /// (system, module loading and mounts included), microseconds.
    pub(crate) cpu_user_us: Option<u64>,
    pub(crate) cpu_sys_us: Option<u64>,
    /// The hardware watchdog, when one was asked for.
    pub(crate) watchdog: Option<WatchdogRecord>,
    /// The LUKS2 containers of the config, opened or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) crypt: Vec<CryptRecord>,
    /// dm-verity over the mounted system, when it is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) verity: Option<VerityRecord>,
}

/// One container: where it was found, how long its unlock took, or why it
/// did not open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CryptRecord {
    pub(crate) name: String,
    pub(crate) device: String,
    pub(crate) unlock_ms: Option<u64>,
    /// The LUKS2 UUID, the header copy read ("primary", or "secondary" when
    /// the primary is damaged) and the keyslot that opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) keyslot: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// The verified system: its target, the partition under it and the root
/// hash it was checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VerityRecord {
    pub(crate) name: String,
    pub(crate) device: String,
    pub(crate) root_hash: String,
    /// Where the root hash came from (`cmdline`, or the file's path).
    pub(crate) root_hash_source: String,
    pub(crate) on_corruption: String,
    pub(crate) setup_ms: u64,
}

impl Handoff {
    pub(crate) fn new() -> Self {
        Handoff {
            version: VERSION,
            ..Handoff::default()
        }
    }

    pub(crate) fn to_json(&self) -> String {
        // Serializing plain owned data cannot fail; an empty object is still JSON.
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    pub(crate) fn parse(text: &str) -> Result<Handoff, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub(crate) fn load(path: &Path) -> std::io::Result<Handoff> {
        let text = std::fs::read_to_string(path)?;
        Handoff::parse(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }
}

/// VmHWM from /proc/self/status text.
pub(crate) fn parse_vmhwm_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::decision::Source;

    #[test]
    fn vmhwm() {
        let status = "Name:\tslotinit\nVmPeak:\t   3000 kB\nVmHWM:\t    1234 kB\n";
        assert_eq!(parse_vmhwm_kb(status), Some(1234));
        assert_eq!(parse_vmhwm_kb("Name: x\n"), None);
    }

    #[test]
    fn round_trip() {
        let mut h = Handoff::new();
        h.slot = Some(Slot::B);
        h.decision = Some(Decision {
            slot: Slot::B,
            source: Source::Override,
        });
        h.timings_us.push(("mounts".into(), 1234));
        h.init = Some("/sbin/init".into());
        h.init_args = vec!["single".into()];
        h.errors.push(Problem::new(
            "persistent-missing",
            "persistent: no partition",
        ));
        let text = h.to_json();
        assert!(text.contains("\"slot\": \"b\""), "{text}");
        assert_eq!(Handoff::parse(&text).unwrap(), h);
    }

    #[test]
    fn the_watchdog_record_round_trips_and_is_absent_when_off() {
        let mut h = Handoff::new();
        assert!(!h.to_json().contains("\"watchdog\": {"));
        h.watchdog = Some(WatchdogRecord {
            device: "/dev/watchdog".into(),
            requested_s: 30,
            timeout_s: Some(30),
            identity: Some("i6300ESB timer".into()),
            last_reset: LastReset::Watchdog,
            running: true,
            error: None,
        });
        let text = h.to_json();
        assert!(text.contains("\"last_reset\": \"watchdog\""), "{text}");
        assert_eq!(Handoff::parse(&text).unwrap(), h);
        // A version 3 record has none.
        let old = Handoff::parse(r#"{"version": 3}"#).unwrap();
        assert_eq!(old.watchdog, None);
    }

    #[test]
    fn an_older_record_with_mount_lines_still_reads() {
        let h = Handoff::parse(
            r#"{"version": 2, "mounts": ["/dev/vda6 /sysroot/persistent ext4 rw,noatime",
                "/sysroot/persistent/home /sysroot/home bind"]}"#,
        )
        .unwrap();
        assert_eq!(h.mounts[0].target, "/sysroot/persistent");
        assert_eq!(h.mounts[0].options, "rw,noatime");
        assert_eq!(
            (h.mounts[1].fstype.as_str(), h.mounts[1].options.as_str()),
            ("none", "bind")
        );
    }

    #[test]
    fn a_version_1_record_with_string_errors_still_reads() {
        let h = Handoff::parse(r#"{"version": 1, "errors": ["boom"]}"#).unwrap();
        assert_eq!(h.errors, vec![Problem::new("unknown", "boom")]);
    }

    #[test]
    fn an_older_record_without_init_args_still_reads() {
        let h = Handoff::parse(r#"{"version": 1, "init": "/sbin/init"}"#).unwrap();
        assert_eq!(h.init.as_deref(), Some("/sbin/init"));
        assert!(h.init_args.is_empty());
    }
}
