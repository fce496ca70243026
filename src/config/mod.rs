//! `/etc/slotinit.toml`: the schema, its defaults (rpi-image-gen `gpt/ab_userdata`)
//! and a parser whose errors name the line, column and key.

use crate::types::Slot;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub(crate) boot: BootConfig,
    pub partitions: Partitions,
    pub(crate) system: FsConfig,
    pub(crate) persistent: PersistentConfig,
    pub(crate) bootstate: BootStateConfig,
    /// OverlayFS mounts, in order.
    pub(crate) overlay: Vec<OverlaySpec>,
    /// LUKS2 containers opened before the members inside them are resolved.
    pub(crate) crypt: Vec<CryptSpec>,
    /// dm-verity for the system slots.
    pub(crate) verity: VerityConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BootConfig {
    /// The slot that boots when nothing else decides.
    pub(crate) default_slot: Slot,
    /// The system's init, unless `init=` is on the cmdline.
    pub(crate) init: String,
    /// How long to wait for the disk and its partitions.
    pub(crate) device_timeout_ms: u64,
    /// Once some partitions are found, how long the block layer may stay quiet
    /// before the missing ones are declared absent.
    pub(crate) settle_ms: u64,
    /// On a fatal error: seconds before the reboot.
    pub(crate) reboot_delay_s: u64,
    /// Whether `slotinit.slot=` may override the decision; production devices
    /// lock it with `false`.
    pub(crate) allow_override: bool,
    /// The slot sources asked, in order, when the bootloader decides (counter =
    /// "bootloader", or no boot-state store).
    pub(crate) sources: Vec<crate::types::SourceKind>,
    /// Whether each slot boots its own kernel ("per-slot": a decision for
    /// the slot whose kernel is not running goes through the firmware and a
    /// restart) or both share one ("shared": the other slot's system may be
    /// mounted in the same boot). "auto": per slot when `boot_a` and
    /// `boot_b` are two partitions.
    pub(crate) slot_kernels: SlotKernels,
    /// Arm the hardware watchdog for this many seconds and leave it running
    /// into the system (0: off); `slotinit.watchdog=` overrides it.
    pub(crate) watchdog_s: u32,
    /// The watchdog device.
    pub(crate) watchdog_device: String,
    /// The watchdog's driver module, loaded with the disk's drivers before
    /// the watchdog is armed ("": built into the kernel, or no watchdog).
    pub(crate) watchdog_module: String,
}

/// [`BootConfig::slot_kernels`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SlotKernels {
    #[default]
    Auto,
    PerSlot,
    Shared,
}

/// How the layout's members are found. Each is a GPT partition name (a string;
/// `""` when the layout has no such member) or a table naming it another way.
/// Never a filesystem UUID: both slots may be bit-identical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Partitions {
    bootconfig: PartSpec,
    persistent: PartSpec,
    boot_a: PartSpec,
    boot_b: PartSpec,
    pub(crate) system_a: PartSpec,
    system_b: PartSpec,
    /// rpi-image-gen's static slot map (`/boot/slot.map` in the initramfs),
    /// read at boot: its `a.boot`, `a.system`, `b.boot`, `b.system` lines
    /// replace those four members. Empty: none.
    pub(crate) slot_map: String,
}

/// One member as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum PartSpec {
    /// GPT partition name (PARTNAME); empty: not in this layout.
    Name(String),
    /// `{ partuuid = "..." }`, `{ device = "/dev/..." }`, `{ number = N }` or
    /// `{ disk = "mmcblk0", number = N }`, `{ partname = "..." }`.
    By(PartBy),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PartBy {
    partname: Option<String>,
    partuuid: Option<String>,
    device: Option<String>,
    disk: Option<String>,
    number: Option<u32>,
}

/// A validated member reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartRef {
    Absent,
    Name(String),
    Uuid(String),
    Device(String),
    Number { disk: Option<String>, number: u32 },
}

impl PartSpec {
    pub(crate) fn name(name: &str) -> PartSpec {
        PartSpec::Name(name.to_string())
    }

    /// The reference; absent when the table does not name exactly one way
    /// (the config's check refuses those).
    pub(crate) fn reference(&self) -> PartRef {
        self.to_ref().unwrap_or(PartRef::Absent)
    }

    /// The reference, or why the table does not name exactly one way.
    fn to_ref(&self) -> Result<PartRef, PartRefError> {
        let by = match self {
            PartSpec::Name(n) if n.is_empty() => return Ok(PartRef::Absent),
            PartSpec::Name(n) => return Ok(PartRef::Name(n.clone())),
            PartSpec::By(by) => by,
        };
        match (&by.partname, &by.partuuid, &by.device, &by.disk, by.number) {
            (Some(n), None, None, None, None) if !n.is_empty() => Ok(PartRef::Name(n.clone())),
            (None, Some(u), None, None, None) if is_guid(u) => {
                Ok(PartRef::Uuid(u.to_ascii_lowercase()))
            }
            (None, Some(u), None, None, None) => Err(PartRefError::NotAGuid(u.clone())),
            (None, None, Some(d), None, None) if d.starts_with("/dev/") => {
                Ok(PartRef::Device(d.clone()))
            }
            (None, None, Some(d), None, None) => Err(PartRefError::NotUnderDev(d.clone())),
            (None, None, None, disk, Some(number)) if number > 0 => Ok(PartRef::Number {
                disk: disk.clone(),
                number,
            }),
            _ => Err(PartRefError::NotExactlyOne),
        }
    }
}

/// Why a member's table does not name one partition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartRefError {
    #[error("partuuid {0:?} is not a GUID")]
    NotAGuid(String),
    #[error("device {0:?} is not under /dev")]
    NotUnderDev(String),
    #[error("name exactly one of partname, partuuid, device, or number (with an optional disk)")]
    NotExactlyOne,
}

impl std::fmt::Display for PartRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartRef::Absent => f.write_str("(none)"),
            PartRef::Name(n) => write!(f, "PARTNAME={n:?}"),
            PartRef::Uuid(u) => write!(f, "PARTUUID={u}"),
            PartRef::Device(d) => f.write_str(d),
            PartRef::Number {
                disk: Some(d),
                number,
            } => write!(f, "partition {number} of {d}"),
            PartRef::Number { disk: None, number } => write!(f, "partition {number}"),
        }
    }
}

fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The role names of the members, as a backend's `partition` key names them.
pub(crate) const MEMBERS: [&str; 6] = [
    "bootconfig",
    "persistent",
    "boot_a",
    "boot_b",
    "system_a",
    "system_b",
];

impl Partitions {
    pub(crate) fn system(&self, slot: Slot) -> &PartSpec {
        match slot {
            Slot::A => &self.system_a,
            Slot::B => &self.system_b,
        }
    }

    /// Every member absent: the start of a layout that names a few.
    pub(crate) fn absent() -> Partitions {
        let none = || PartSpec::name("");
        Partitions {
            bootconfig: none(),
            persistent: none(),
            boot_a: none(),
            boot_b: none(),
            system_a: none(),
            system_b: none(),
            slot_map: String::new(),
        }
    }

    /// Names `role` by `spec`; an unknown role changes nothing.
    pub(crate) fn set_member(&mut self, role: &str, spec: PartSpec) {
        let slot = match role {
            "bootconfig" => &mut self.bootconfig,
            "persistent" => &mut self.persistent,
            "boot_a" => &mut self.boot_a,
            "boot_b" => &mut self.boot_b,
            "system_a" => &mut self.system_a,
            "system_b" => &mut self.system_b,
            _ => return,
        };
        *slot = spec;
    }

    pub(crate) fn member(&self, role: &str) -> Option<&PartSpec> {
        Some(match role {
            "bootconfig" => &self.bootconfig,
            "persistent" => &self.persistent,
            "boot_a" => &self.boot_a,
            "boot_b" => &self.boot_b,
            "system_a" => &self.system_a,
            "system_b" => &self.system_b,
            _ => return None,
        })
    }

    /// Every member's reference by role; invalid ones count as absent (the
    /// config was validated when loaded).
    pub(crate) fn refs(&self) -> Vec<(&'static str, PartRef)> {
        MEMBERS
            .iter()
            .map(|role| {
                let r = self
                    .member(role)
                    .and_then(|s| s.to_ref().ok())
                    .unwrap_or(PartRef::Absent);
                (*role, r)
            })
            .collect()
    }

    /// The reference of one member by role.
    pub(crate) fn reference(&self, role: &str) -> PartRef {
        self.member(role)
            .and_then(|s| s.to_ref().ok())
            .unwrap_or(PartRef::Absent)
    }
}

impl Config {
    /// Whether each slot boots its own kernel ([`BootConfig::slot_kernels`];
    /// "auto": `boot_a` and `boot_b` are two different partitions).
    pub(crate) fn kernels_per_slot(&self) -> bool {
        match self.boot.slot_kernels {
            SlotKernels::PerSlot => true,
            SlotKernels::Shared => false,
            SlotKernels::Auto => {
                let (a, b) = (
                    self.partitions.reference("boot_a"),
                    self.partitions.reference("boot_b"),
                );
                a != PartRef::Absent && b != PartRef::Absent && a != b
            }
        }
    }
}

impl Partitions {
    /// These members with `refs` (from a slot map) in place of the ones
    /// they name.
    pub(crate) fn with_refs(&self, refs: &[(&str, PartRef)]) -> Partitions {
        let mut out = self.clone();
        for (role, r) in refs {
            let spec = match r {
                PartRef::Absent => PartSpec::Name(String::new()),
                PartRef::Name(n) => PartSpec::Name(n.clone()),
                PartRef::Uuid(u) => PartSpec::By(PartBy {
                    partuuid: Some(u.clone()),
                    ..PartBy::default()
                }),
                PartRef::Device(d) => PartSpec::By(PartBy {
                    device: Some(d.clone()),
                    ..PartBy::default()
                }),
                PartRef::Number { disk, number } => PartSpec::By(PartBy {
                    disk: disk.clone(),
                    number: Some(*number),
                    ..PartBy::default()
                }),
            };
            match *role {
                "bootconfig" => out.bootconfig = spec,
                "persistent" => out.persistent = spec,
                "boot_a" => out.boot_a = spec,
                "boot_b" => out.boot_b = spec,
                "system_a" => out.system_a = spec,
                "system_b" => out.system_b = spec,
                _ => {}
            }
        }
        out
    }
}

impl Default for Partitions {
    fn default() -> Self {
        Partitions {
            bootconfig: PartSpec::name("bootconfig"),
            persistent: PartSpec::name("persistent"),
            boot_a: PartSpec::name("boot_a"),
            boot_b: PartSpec::name("boot_b"),
            system_a: PartSpec::name("system_a"),
            system_b: PartSpec::name("system_b"),
            slot_map: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FsConfig {
    pub(crate) fstype: String,
    /// Extra mount options (comma separated); `ro` is always added for the system.
    pub(crate) options: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PersistentConfig {
    pub(crate) fstype: String,
    pub(crate) options: String,
    /// Where the persistent partition appears in the booted system.
    pub(crate) mountpoint: String,
    /// The machine-id kept across slots, relative to the persistent root
    /// ("" leaves /etc/machine-id to the system).
    pub(crate) machine_id: String,
    /// Check the filesystem (`e2fsck -p`) before mounting it; the initramfs
    /// must carry `fsck_path` (initramfs/build --file).
    pub(crate) fsck: bool,
    pub(crate) fsck_path: String,
    /// Directories created (if missing) on the persistent partition, in order.
    #[serde(rename = "dir")]
    pub(crate) dirs: Vec<DirSpec>,
    /// Bind mounts from the persistent partition into the system, in order.
    #[serde(rename = "bind")]
    pub(crate) binds: Vec<BindSpec>,
}

/// `[bootstate]`: which backend keeps the boot state, and when a trial is
/// committed. Everything else in the table belongs to a backend: its own
/// table (`[bootstate.uboot-env]`) and, for one release, the keys the U-Boot
/// backend read directly in `[bootstate]`. The backend reads and checks them
/// (`state::check`); this module only carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootStateConfig {
    /// A registered backend (`state::BACKENDS`, e.g. "uboot-env"), or "none":
    /// no store, the bootloader's word decides.
    pub(crate) backend: String,
    pub(crate) commit: Commit,
    /// Deprecated spelling of `[bootstate.uboot-env] fw_env`. A field of its
    /// own because `disk::devices::BootDiskHint` reads it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) fw_env: Vec<String>,
    /// The backends' tables and the deprecated flat keys, as written.
    #[serde(flatten)]
    pub(crate) keys: toml::Table,
}

/// The backend name that keeps no store.
pub(crate) const BACKEND_NONE: &str = "none";

/// When a trial boot is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Commit {
    /// A health check runs `slotinit mark-good`.
    Userspace,
    /// slotinit commits once the root mounted and has an init.
    OnMount,
}

impl Default for BootStateConfig {
    fn default() -> Self {
        BootStateConfig {
            backend: "rpi-tryboot".into(),
            commit: Commit::Userspace,
            fw_env: Vec::new(),
            keys: toml::Table::new(),
        }
    }
}

/// A directory on the persistent partition. `{slot}` in `path` is the slot
/// directory name: the lowercased system partition name, as rpi-image-gen uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirSpec {
    pub(crate) path: String,
    #[serde(default = "default_dir_mode")]
    pub(crate) mode: u32,
    /// A group name looked up in the system's /etc/group; root if absent there.
    #[serde(default)]
    pub(crate) group: Option<String>,
    /// A user name looked up in the system's /etc/passwd; root if absent there.
    #[serde(default)]
    pub(crate) owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BindSpec {
    /// Relative to the persistent root; `{slot}` makes it per slot, without it
    /// both slots share it.
    pub(crate) source: String,
    /// Absolute path in the booted system (a mount point the image has).
    pub(crate) target: String,
    /// Create the source directory when missing (with `mode`, `owner`, `group`);
    /// when false, a missing source is skipped with a warning.
    #[serde(default = "default_true")]
    pub(crate) create: bool,
    #[serde(default = "default_dir_mode")]
    pub(crate) mode: u32,
    #[serde(default)]
    pub(crate) owner: Option<String>,
    #[serde(default)]
    pub(crate) group: Option<String>,
}

/// OverlayFS over a read-only directory of the system (or the whole root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OverlaySpec {
    /// Absolute path in the system; "/" overlays the whole root.
    pub(crate) target: String,
    /// Where changes go: a size-limited tmpfs (lost at reboot), or a directory
    /// on the persistent partition (kept; per slot with `{slot}` in `path`).
    #[serde(default)]
    pub(crate) upper: Upper,
    /// tmpfs size limit (`size=` of tmpfs: bytes, or with k, m, g, or %).
    #[serde(default = "default_overlay_size")]
    pub(crate) size: String,
    /// upper = "persistent": the directory beneath the persistent root that
    /// holds `upper/` and `work/`.
    #[serde(default)]
    pub(crate) path: Option<String>,
}

/// A LUKS2 container, as rpi-image-gen's provisioning maps make them
/// (`crypt`: `osdata_crypt` holding system_a, system_b and persistent;
/// `cryptslots`: `osab_crypt` with both systems; `cryptdata`:
/// `userdata_crypt` with persistent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CryptSpec {
    /// The device-mapper name of the opened container (rpi-image-gen's `mname`);
    /// its partitions become `<name>p<N>`, as `kpartx -p p` names them.
    pub(crate) name: String,
    /// The partition holding the container: `{ label = "OSDATA_CRYPT" }` (the
    /// LUKS2 label, looked for on the boot disk, as rpi-image-gen's udev rule
    /// finds it by `ID_FS_LABEL`) or a member-like reference.
    pub(crate) device: CryptDevice,
    /// The `[partitions]` members inside (system_a, system_b, persistent),
    /// found by their reference in the container's own GPT.
    #[serde(default)]
    pub(crate) members: Vec<String>,
    /// The container holds a GPT (rpi-image-gen's `etype = "partitioned"`);
    /// false: the opened container is its one member.
    #[serde(default = "default_true")]
    pub(crate) partitioned: bool,
    /// Where the passphrase comes from: `file:/path` in the initramfs, or
    /// `rpi-otp` (the Raspberry Pi's OTP-derived key, as rpi-image-gen's
    /// `hwkey` keyscript computes it).
    pub(crate) key: String,
    /// The most memory a keyslot's argon2 may ask for, in KiB; 0: half of the
    /// RAM. A keyslot asking for more is refused before anything is allocated.
    #[serde(default)]
    pub(crate) max_memory_kib: u64,
    /// The cipher the container was formatted with (`cryptsetup luksFormat
    /// --cipher`): it says which kernel modules the initramfs carries; the
    /// header's own cipher is what the unlock uses.
    #[serde(default = "default_cipher")]
    pub(crate) cipher: String,
}

fn default_cipher() -> String {
    CRYPT_CIPHERS[0].into()
}

/// Where a container's passphrase comes from (`CryptSpec::key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySpec {
    /// `file:/path`: a file in the initramfs, read whole (as cryptsetup's
    /// `--key-file`).
    File(std::path::PathBuf),
    /// `rpi-otp`: the Raspberry Pi's OTP-derived key.
    RpiOtp,
}

impl std::str::FromStr for KeySpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("file:") {
            Some(p) if p.starts_with('/') && !p.split('/').any(|c| c == "..") => {
                Ok(KeySpec::File(p.into()))
            }
            _ if s == "rpi-otp" => Ok(KeySpec::RpiOtp),
            _ => Err(format!(
                "{s:?} is neither file:/PATH (absolute, in the initramfs) nor rpi-otp"
            )),
        }
    }
}

/// How a [`CryptSpec`] names its partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum CryptDevice {
    /// `{ label = "..." }`: the LUKS2 header's label.
    Label { label: String },
    /// A partition, as `[partitions]` names members.
    Part(PartSpec),
}

/// `[verity]`: dm-verity over the system slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct VerityConfig {
    pub(crate) mode: VerityMode,
    /// Where the hash tree is: "appended" (veritysetup's superblock right
    /// after the filesystem, at its size rounded up to 4 KiB).
    pub(crate) hash: String,
    /// A file in the initramfs holding the slot's root hash (hex), `{slot}`
    /// expanded; the cmdline's `roothash=` or `slotinit.roothash=` wins for
    /// the slot whose kernel runs.
    pub(crate) roothash_file: String,
    /// What a corrupted block does once the system runs: "restart" (dm-verity's
    /// `restart_on_corruption`; the restart counts against a trial) or "eio".
    pub(crate) on_corruption: OnCorruptionConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum VerityMode {
    #[default]
    Off,
    /// Verity when the slot has a root hash; a slot without one mounts plain.
    Optional,
    /// A slot without valid verity data is refused.
    Required,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum OnCorruptionConfig {
    #[default]
    Restart,
    Eio,
}

impl Default for VerityConfig {
    fn default() -> Self {
        VerityConfig {
            mode: VerityMode::Off,
            hash: "appended".into(),
            roothash_file: String::new(),
            on_corruption: OnCorruptionConfig::Restart,
        }
    }
}

/// The members a container may hold: the bootloader reads the boot members.
const CRYPT_MEMBERS: [&str; 3] = ["system_a", "system_b", "persistent"];

/// A device-mapper name: what `dmsetup` and udev's `/dev/mapper` take.
fn is_dm_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'))
        && name != "."
        && name != ".."
}

/// A kernel module's name as modprobe takes it, or "" for none.
fn is_module_name(name: &str) -> bool {
    name.len() <= 56
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// The ciphers `[[crypt]] cipher` may name: what rpi-image-gen and cryptsetup
/// format with (aes-xts by default; Adiantum where the CPU has no AES
/// instructions, as on a Raspberry Pi 4).
pub(crate) const CRYPT_CIPHERS: &[&str] = &[
    "aes-xts-plain64",
    "xchacha12,aes-adiantum-plain64",
    "xchacha20,aes-adiantum-plain64",
];

impl Config {
    fn validate_crypt(&self) -> Result<(), Invalid> {
        let mut inside: Vec<&str> = Vec::new();
        for (i, c) in self.crypt.iter().enumerate() {
            let bad = |why: String| Invalid::Crypt {
                name: c.name.clone(),
                why,
            };
            if !is_dm_name(&c.name) {
                return Err(bad(
                    "name must be a device-mapper name ([A-Za-z0-9_+.-], at most 100)".into(),
                ));
            }
            if self.crypt[..i].iter().any(|o| o.name == c.name) {
                return Err(bad("two containers have this name".into()));
            }
            match &c.device {
                CryptDevice::Label { label } if label.is_empty() || label.len() > 47 => {
                    return Err(bad(format!(
                        "device label {label:?} must be 1 to 47 bytes (LUKS2 label)"
                    )))
                }
                CryptDevice::Label { .. } => {}
                CryptDevice::Part(spec) => match spec.to_ref() {
                    Ok(PartRef::Absent) => return Err(bad("device is empty".into())),
                    Ok(_) => {}
                    Err(e) => return Err(bad(format!("device: {e}"))),
                },
            }
            if c.members.is_empty() {
                return Err(bad("members is empty: name what is inside".into()));
            }
            if !CRYPT_CIPHERS.contains(&c.cipher.as_str()) {
                return Err(bad(format!(
                    "cipher {:?} is not one of {}",
                    c.cipher,
                    CRYPT_CIPHERS.join(", ")
                )));
            }
            for m in &c.members {
                if !CRYPT_MEMBERS.contains(&m.as_str()) {
                    return Err(bad(format!(
                        "member {m:?} cannot be inside a container (only {})",
                        CRYPT_MEMBERS.join(", ")
                    )));
                }
                if inside.contains(&m.as_str()) {
                    return Err(bad(format!("member {m:?} is already inside a container")));
                }
                if self.partitions.member(m).map(PartSpec::to_ref) == Some(Ok(PartRef::Absent)) {
                    return Err(bad(format!(
                        "member {m:?} is not in this layout (partitions.{m} = \"\")"
                    )));
                }
                inside.push(m);
            }
            if !c.partitioned && c.members.len() != 1 {
                return Err(bad(
                    "a container without a partition table holds exactly one member".into(),
                ));
            }
            c.key
                .parse::<KeySpec>()
                .map_err(|e| bad(format!("key: {e}")))?;
        }
        if self.verity.hash != "appended" {
            return Err(Invalid::VerityHash(self.verity.hash.clone()));
        }
        let file = &self.verity.roothash_file;
        if !file.is_empty() && (!file.starts_with('/') || file.split('/').any(|c| c == "..")) {
            return Err(Invalid::NotAbsolute {
                key: "verity.roothash_file",
                path: file.clone(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Upper {
    #[default]
    Tmpfs,
    Persistent,
}

fn default_overlay_size() -> String {
    "64m".into()
}

fn default_true() -> bool {
    true
}

fn default_dir_mode() -> u32 {
    0o755
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            default_slot: Slot::A,
            init: "/sbin/init".into(),
            device_timeout_ms: 10_000,
            settle_ms: 300,
            reboot_delay_s: 10,
            allow_override: true,
            sources: crate::types::DEFAULT_ORDER.to_vec(),
            slot_kernels: SlotKernels::Auto,
            watchdog_s: 0,
            watchdog_device: "/dev/watchdog".into(),
            watchdog_module: String::new(),
        }
    }
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            fstype: "ext4".into(),
            options: String::new(),
        }
    }
}

impl Default for PersistentConfig {
    fn default() -> Self {
        let dir = |path: &str, mode: u32, group: Option<&str>| DirSpec {
            path: path.into(),
            mode,
            group: group.map(str::to_string),
            owner: None,
        };
        let bind = |source: &str, target: &str| BindSpec {
            source: source.into(),
            target: target.into(),
            create: true,
            mode: 0o755,
            owner: None,
            group: None,
        };
        PersistentConfig {
            fstype: "ext4".into(),
            options: "noatime,lazytime,commit=60,errors=remount-ro".into(),
            mountpoint: "/persistent".into(),
            machine_id: "common/etc/machine-id".into(),
            fsck: false,
            fsck_path: "/sbin/e2fsck".into(),
            dirs: vec![
                dir("slots", 0o755, None),
                dir("slots/{slot}", 0o755, None),
                dir("slots/{slot}/var", 0o755, None),
                dir("slots/{slot}/var/tmp", 0o1777, None),
                dir("slots/{slot}/var/log", 0o755, None),
                dir("slots/{slot}/var/log/journal", 0o755, None),
                dir("home", 0o755, None),
                dir("log", 0o755, None),
                dir("log/journal", 0o2755, Some("systemd-journal")),
                dir("common", 0o755, None),
                dir("common/etc", 0o755, None),
            ],
            binds: vec![
                bind("slots/{slot}/var", "/var"),
                bind("home", "/home"),
                bind("log/journal", "/var/log/journal"),
            ],
        }
    }
}

/// A config that cannot be used, located in its text.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {error}")]
    Invalid { path: String, error: Invalid },
    /// The boot-state backend's own keys (`state::check`).
    #[error("{path}")]
    Backend {
        path: String,
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ConfigError {
    /// The handoff kind of every config error. Only the tests ask: a config
    /// the init cannot use is fatal (`kind::FATAL`), the CLI prints it.
    #[cfg(test)]
    pub(crate) fn kind(&self) -> &'static str {
        crate::kind::CONFIG
    }

    /// A parse error of `text` at a byte span, worded as [`Config::parse`]
    /// words its own: the table and key it is in.
    pub(crate) fn parse(
        text: &str,
        path: &str,
        span: Option<std::ops::Range<usize>>,
        message: &str,
    ) -> Self {
        let (line, column) = span
            .clone()
            .map(|span| line_column(text, span.start))
            .unwrap_or((0, 0));
        let message = message.trim_end().to_string();
        // An error in a value names the key it is assigned to.
        let key = match key_of_line(text, line) {
            Some((key, eq)) if column > eq => Some(key),
            _ => key_at(text, span),
        };
        let message = match (key, table_of_line(text, line)) {
            (Some(key), Some(table)) => format!("[{table}] {key}: {message}"),
            (Some(key), None) => format!("{key}: {message}"),
            (None, Some(table)) => format!("in [{table}]: {message}"),
            (None, None) => message,
        };
        ConfigError::Parse {
            path: path.into(),
            line,
            column,
            message,
        }
    }
}

/// Where `key` is assigned in `[table]` of `text`: the byte span of the key,
/// or with `value` of its value. For a backend that reads its keys from the
/// parsed table and still wants to say on which line a bad one is.
pub(crate) fn span_of(
    text: &str,
    table: &str,
    key: &str,
    value: bool,
) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let trimmed = line.trim();
        if let Some(t) = trimmed.strip_prefix('[') {
            current = t
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_string();
            continue;
        }
        let Some((k, rest)) = line.split_once('=') else {
            continue;
        };
        if current != table || k.trim() != key {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if !value {
            return Some(start + indent..start + indent + key.len());
        }
        let at = start + k.len() + 1 + (rest.len() - rest.trim_start().len());
        return Some(at..start + line.trim_end().len());
    }
    None
}

/// Why a config that parsed cannot be used: checks that serde cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("partitions.{role}: {error}")]
    Member {
        role: &'static str,
        error: PartRefError,
    },
    #[error("partitions.{role}: {reference} is already partitions.{other}")]
    SameMember {
        role: &'static str,
        reference: PartRef,
        other: &'static str,
    },
    #[error("partitions.system_{0}: a slot needs its system partition")]
    NoSystem(Slot),
    #[error("boot.init: {0:?} must be an absolute path")]
    InitNotAbsolute(String),
    #[error(
        "boot.device_timeout_ms: {0} is outside {lo}..={hi}: too short races the disk \
         driver, too long never reaches the reboot",
        lo = DEVICE_TIMEOUT_MS.start(),
        hi = DEVICE_TIMEOUT_MS.end()
    )]
    DeviceTimeout(u64),
    #[error("boot.settle_ms: {settle} is longer than boot.device_timeout_ms ({timeout})")]
    SettleLonger { settle: u64, timeout: u64 },
    #[error(
        "boot.reboot_delay_s: {0} s is more than {MAX_REBOOT_DELAY_S} s: a failed boot \
         would hang instead of rebooting"
    )]
    RebootDelay(u64),
    #[error(
        "boot.watchdog_s: {0} s is more than {MAX_WATCHDOG_S} s: a hang would \
         go unreset for that long"
    )]
    WatchdogTooLong(u32),
    #[error("boot.watchdog_device: {0:?} must be a device under /dev")]
    WatchdogDevice(String),
    #[error("boot.watchdog_module: {0:?} must be a module name ([A-Za-z0-9_-]) or \"\"")]
    WatchdogModule(String),
    #[error(
        "system.options: {0:?} would mount the system writable; it is always \
         mounted read-only (use an [[overlay]] for writable paths)"
    )]
    SystemWritable(String),
    #[error("system.options: {0:?} has whitespace; options are separated by commas only")]
    SystemWhitespace(String),
    #[error("persistent.mountpoint: {0:?} must be an absolute path")]
    MountpointNotAbsolute(String),
    #[error("{key}: {path:?} must be a relative path inside the persistent partition")]
    NotRelative { key: &'static str, path: String },
    #[error("persistent.dir {path:?}: mode {mode:o} is not a permission mode")]
    DirMode { path: String, mode: u32 },
    #[error("{key}: {path:?} must be an absolute path without ..")]
    NotAbsolute { key: &'static str, path: String },
    #[error("overlay {0:?}: upper = \"persistent\" needs a path")]
    OverlayNeedsPath(String),
    #[error("overlay {0:?}: path is only for upper = \"persistent\"")]
    OverlayPathWithTmpfs(String),
    #[error(
        "overlay \"/\": the whole root can only have a tmpfs upper \
         (the persistent partition mounts inside it)"
    )]
    OverlayRootPersistent,
    #[error("crypt {name:?}: {why}")]
    Crypt { name: String, why: String },
    #[error("verity.hash: {0:?} is not \"appended\" (the only layout this release reads)")]
    VerityHash(String),
    #[error("overlay {target:?}: size {size:?} is not a tmpfs size")]
    OverlaySize { target: String, size: String },
    #[error("bootstate.backend: the backend needs a name (\"none\" for no store)")]
    NoBackend,
}

impl Config {
    /// Parses and validates config text; `path` only names the source in errors.
    /// The boot-state backend's keys are checked by `state::check`.
    pub(crate) fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::parse(text, path, e.span(), e.message()))?;
        config.validate().map_err(|error| ConfigError::Invalid {
            path: path.into(),
            error,
        })?;
        Ok(config)
    }

    /// For the booted system's subcommands reading the config the init used: an
    /// initramfs newer than the slot's binary may use keys this binary does not
    /// know. Those keys are dropped (and named) instead of failing the health
    /// check's `mark-good`; everything else is checked as usual. `bootstate`
    /// is what `[bootstate]` may hold besides its own keys (the backends'
    /// keys and tables, from `state`).
    pub(crate) fn parse_lenient(
        text: &str,
        path: &str,
        bootstate: &toml::Table,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let invalid = |message: String| ConfigError::Parse {
            path: path.into(),
            line: 0,
            column: 0,
            message,
        };
        let mut table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(_) => return Config::parse(text, path).map(|c| (c, Vec::new())),
        };
        let reference = toml::Value::try_from(Config::exemplar())
            .map_err(|e| invalid(format!("internal: {e}")))?;
        let mut dropped = Vec::new();
        if let toml::Value::Table(mut reference) = reference {
            if let Some(toml::Value::Table(bs)) = reference.get_mut("bootstate") {
                bs.extend(bootstate.clone());
            }
            prune(&mut table, &reference, "", &mut dropped);
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| invalid(e.message().to_string()))?;
        config.validate().map_err(|error| ConfigError::Invalid {
            path: path.into(),
            error,
        })?;
        Ok((config, dropped))
    }

    /// A config with every optional field set and every list holding one entry:
    /// as TOML it shows every key this release knows (None fields are not
    /// serialized at all), which is what the lenient parse keeps.
    fn exemplar() -> Config {
        let mut c = Config::default();
        let some = || Some(String::new());
        for d in &mut c.persistent.dirs {
            (d.group, d.owner) = (some(), some());
        }
        for b in &mut c.persistent.binds {
            (b.group, b.owner) = (some(), some());
        }
        c.overlay = vec![OverlaySpec {
            target: "/".into(),
            upper: Upper::Tmpfs,
            size: default_overlay_size(),
            path: some(),
        }];
        c.bootstate.fw_env = vec![String::new()];
        c.crypt = vec![CryptSpec {
            name: String::new(),
            device: CryptDevice::Label {
                label: String::new(),
            },
            members: Vec::new(),
            partitioned: true,
            key: String::new(),
            max_memory_kib: 0,
            cipher: String::new(),
        }];
        c
    }

    /// Checks that serde cannot express: names unique, paths relative or absolute
    /// where they must be, modes in range.
    fn validate(&self) -> Result<(), Invalid> {
        let mut seen: Vec<(&'static str, PartRef)> = Vec::new();
        for role in MEMBERS {
            let Some(spec) = self.partitions.member(role) else {
                continue;
            };
            let r = spec
                .to_ref()
                .map_err(|error| Invalid::Member { role, error })?;
            // A shared partition (MAPIO's one boot partition for both slots) is
            // fine for boot members; two slots on one system partition are not.
            if let Some((other, _)) = seen.iter().find(|(_, o)| *o == r && r != PartRef::Absent) {
                // One boot partition may serve both slots and hold the boot state.
                let boot = |m: &str| m.starts_with("boot");
                if !(boot(role) && boot(other)) {
                    return Err(Invalid::SameMember {
                        role,
                        reference: r,
                        other,
                    });
                }
            }
            seen.push((role, r));
        }
        for slot in Slot::ALL {
            if self.partitions.system(slot).to_ref() == Ok(PartRef::Absent) {
                return Err(Invalid::NoSystem(slot));
            }
        }
        let map = &self.partitions.slot_map;
        if !map.is_empty() && (!map.starts_with('/') || map.split('/').any(|c| c == "..")) {
            return Err(Invalid::NotAbsolute {
                key: "partitions.slot_map",
                path: map.clone(),
            });
        }
        if !self.boot.init.starts_with('/') {
            return Err(Invalid::InitNotAbsolute(self.boot.init.clone()));
        }
        self.boot.validate_times()?;
        check_system_options(&self.system.options)?;
        if !self.persistent.mountpoint.starts_with('/') {
            return Err(Invalid::MountpointNotAbsolute(
                self.persistent.mountpoint.clone(),
            ));
        }
        for d in &self.persistent.dirs {
            check_relative("persistent.dir.path", &d.path)?;
            if d.mode > 0o7777 {
                return Err(Invalid::DirMode {
                    path: d.path.clone(),
                    mode: d.mode,
                });
            }
        }
        let absolute = |key, path: &str| {
            if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                return Err(Invalid::NotAbsolute {
                    key,
                    path: path.to_string(),
                });
            }
            Ok(())
        };
        for b in &self.persistent.binds {
            check_relative("persistent.bind.source", &b.source)?;
            absolute("persistent.bind.target", &b.target)?;
        }
        if !self.persistent.machine_id.is_empty() {
            check_relative("persistent.machine_id", &self.persistent.machine_id)?;
        }
        for o in &self.overlay {
            absolute("overlay.target", &o.target)?;
            match (o.upper, &o.path) {
                (Upper::Persistent, Some(path)) => check_relative("overlay.path", path)?,
                (Upper::Persistent, None) => {
                    return Err(Invalid::OverlayNeedsPath(o.target.clone()))
                }
                (Upper::Tmpfs, Some(_)) => {
                    return Err(Invalid::OverlayPathWithTmpfs(o.target.clone()))
                }
                (Upper::Tmpfs, None) => {}
            }
            if o.target == "/" && o.upper == Upper::Persistent {
                return Err(Invalid::OverlayRootPersistent);
            }
            if o.size.is_empty() || o.size.contains(',') {
                return Err(Invalid::OverlaySize {
                    target: o.target.clone(),
                    size: o.size.clone(),
                });
            }
        }
        if self.bootstate.backend.is_empty() {
            return Err(Invalid::NoBackend);
        }
        self.validate_crypt()
    }
}

/// Removes the keys of `table` that `reference` (the defaults, as TOML) does not
/// have, recursing into tables and arrays of tables.
fn prune(table: &mut toml::Table, reference: &toml::Table, at: &str, dropped: &mut Vec<String>) {
    table.retain(|key, _| {
        let known = reference.contains_key(key);
        if !known {
            dropped.push(format!("{at}{key}"));
        }
        known
    });
    for (key, value) in table.iter_mut() {
        let path = format!("{at}{key}.");
        // A container's device is one of several shapes (an untagged enum):
        // the exemplar shows one of them, so its keys are not pruned.
        if path == "crypt.device." {
            continue;
        }
        match (value, reference.get(key)) {
            (toml::Value::Table(t), Some(toml::Value::Table(r))) => prune(t, r, &path, dropped),
            (toml::Value::Array(items), Some(toml::Value::Array(r))) => {
                if let Some(toml::Value::Table(shape)) = r.first() {
                    for item in items.iter_mut() {
                        if let toml::Value::Table(t) = item {
                            prune(t, shape, &path, dropped);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Bounds on the waits: outside them PID 1 either races the disk driver (and
/// every boot fails) or waits forever and never reaches its reboot.
const DEVICE_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=600_000;
/// The longest pause before the reboot after a fatal error.
const MAX_REBOOT_DELAY_S: u64 = 3_600;
/// The longest watchdog timeout: an hour (Linux's drivers cap far lower:
/// bcm2835_wdt at 15 s, i6300esb at about 2046 s).
pub(crate) const MAX_WATCHDOG_S: u32 = 3_600;

impl BootConfig {
    fn validate_times(&self) -> Result<(), Invalid> {
        if !DEVICE_TIMEOUT_MS.contains(&self.device_timeout_ms) {
            return Err(Invalid::DeviceTimeout(self.device_timeout_ms));
        }
        if self.settle_ms > self.device_timeout_ms {
            return Err(Invalid::SettleLonger {
                settle: self.settle_ms,
                timeout: self.device_timeout_ms,
            });
        }
        if self.reboot_delay_s > MAX_REBOOT_DELAY_S {
            return Err(Invalid::RebootDelay(self.reboot_delay_s));
        }
        if self.watchdog_s > MAX_WATCHDOG_S {
            return Err(Invalid::WatchdogTooLong(self.watchdog_s));
        }
        let dev = &self.watchdog_device;
        let name = dev.strip_prefix("/dev/").unwrap_or_default();
        if name.is_empty() || name.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(Invalid::WatchdogDevice(dev.clone()));
        }
        if !is_module_name(&self.watchdog_module) {
            return Err(Invalid::WatchdogModule(self.watchdog_module.clone()));
        }
        Ok(())
    }
}

/// The system is always mounted read-only (the slot must stay as it was
/// installed and verified): no option may turn that off, and an option the
/// kernel cannot parse fails every mount of both slots.
fn check_system_options(options: &str) -> Result<(), Invalid> {
    for opt in options.split(',') {
        if opt.trim().eq_ignore_ascii_case("rw") {
            return Err(Invalid::SystemWritable(opt.to_string()));
        }
        if opt.contains(char::is_whitespace) {
            return Err(Invalid::SystemWhitespace(opt.to_string()));
        }
    }
    Ok(())
}

/// Paths on the persistent partition stay beneath it.
fn check_relative(key: &'static str, path: &str) -> Result<(), Invalid> {
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(Invalid::NotRelative {
            key,
            path: path.to_string(),
        });
    }
    Ok(())
}

/// The bare key the error points at, if the span covers one.
fn key_at(text: &str, span: Option<std::ops::Range<usize>>) -> Option<String> {
    let key = text.get(span?)?.trim();
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    bare.then(|| key.to_string())
}

/// The key assigned on a line (`key = value`) and the column of its `=`.
fn key_of_line(text: &str, line: usize) -> Option<(String, usize)> {
    let (key, _) = text.lines().nth(line.checked_sub(1)?)?.split_once('=')?;
    let column = key.chars().count() + 1;
    let key = key.trim();
    Some((key_at(key, Some(0..key.len()))?, column))
}

/// The table (`[boot]`, `[[persistent.bind]]`) a line belongs to.
fn table_of_line(text: &str, line: usize) -> Option<String> {
    text.lines()
        .take(line)
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix('[').map(|t| {
                t.trim_start_matches('[')
                    .trim_end_matches(']')
                    .trim()
                    .to_string()
            })
        })
        .last()
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Replaces `{slot}` with the slot directory name.
pub(crate) fn expand_slot(template: &str, slot_dir: &str) -> String {
    template.replace("{slot}", slot_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_the_defaults() {
        assert_eq!(Config::parse("", "t").unwrap(), Config::default());
    }

    #[test]
    fn missing_file_is_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let (got, _) =
            crate::state::load(&mut crate::kernel::sys::Real, &dir.path().join("none.toml"))
                .unwrap();
        assert_eq!(got, Config::default());
    }

    #[test]
    fn overrides_merge_with_defaults() {
        let c = Config::parse(
            "[boot]\ndefault_slot = \"b\"\ndevice_timeout_ms = 500\n[partitions]\nsystem_a = \"rootfs-a\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.boot.default_slot, Slot::B);
        assert_eq!(c.boot.device_timeout_ms, 500);
        assert_eq!(c.boot.init, "/sbin/init");
        assert_eq!(c.partitions.system_a, PartSpec::name("rootfs-a"));
        assert_eq!(c.partitions.system_b, PartSpec::name("system_b"));
    }

    #[test]
    fn octal_modes() {
        let c = Config::parse(
            "[persistent]\ndir = [{ path = \"x\", mode = 0o1777 }]\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.persistent.dirs[0].mode, 0o1777);
        assert_eq!(c.persistent.binds, PersistentConfig::default().binds);
    }

    /// Each bad config names where the problem is.
    #[test]
    fn errors_locate_the_problem() {
        let cases: &[(&str, &str, usize, usize)] = &[
            (
                "[boot]\ndefualt_slot = \"a\"\n",
                "[boot] defualt_slot: unknown field",
                2,
                1,
            ),
            (
                "[[persistent.bind]]\nsourc = \"x\"\n",
                "[persistent.bind] sourc: unknown field `sourc`",
                2,
                1,
            ),
            ("[boot]\ndefault_slot = \"c\"\n", "unknown variant", 2, 16),
            (
                "[boot]\ndevice_timeout_ms = \"10\"\n",
                "invalid type",
                2,
                21,
            ),
            ("[boot\n", "", 1, 6),
            ("[nope]\n", "nope", 1, 2),
        ];
        for (text, needle, line, column) in cases {
            match Config::parse(text, "/etc/slotinit.toml") {
                Err(ConfigError::Parse {
                    line: l,
                    column: c,
                    message,
                    path,
                }) => {
                    assert_eq!(path, "/etc/slotinit.toml");
                    assert!(message.contains(needle), "{text:?}: {message}");
                    assert_eq!((l, c), (*line, *column), "{text:?}: {message}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn semantic_errors() {
        let cases = [
            "[partitions]\nsystem_b = \"system_a\"\n",
            "[partitions]\nsystem_a = \"\"\n",
            "[partitions]\nsystem_a = { number = 2, device = \"/dev/vda2\" }\n",
            "[partitions]\nsystem_a = { partuuid = \"not-a-guid\" }\n",
            "[partitions]\nsystem_a = { device = \"vda2\" }\n",
            "[partitions]\nsystem_a = { number = 0 }\n",
            "[partitions]\nboot_a = \"system_a\"\n",
            "[boot]\ninit = \"sbin/init\"\n",
            "[persistent]\nmachine_id = \"/etc/machine-id\"\n",
            "[persistent]\nbind = [{ source = \"../x\", target = \"/var\" }]\n",
            "[persistent]\nbind = [{ source = \"x\", target = \"var\" }]\n",
            "[persistent]\ndir = [{ path = \"x\", mode = 0o17777 }]\n",
        ];
        for text in cases {
            assert!(
                matches!(Config::parse(text, "t"), Err(ConfigError::Invalid { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn lenient_parse_drops_keys_of_a_newer_release() {
        let text = "[boot]\nfuture_key = 1\ndefault_slot = \"b\"\n[future_table]\nx = 1\n\
                    [bootstate]\nattempts = 5\nfuture = true\n";
        assert!(Config::parse(text, "t").is_err());
        let uboot = |c: &Config| {
            crate::state::uboot::config::UbootEnvConfig::from_bootstate(&c.bootstate)
                .unwrap()
                .config
        };
        let (c, mut dropped) = crate::state::parse_lenient(text, "t").unwrap();
        dropped.sort();
        assert_eq!(c.boot.default_slot, Slot::B);
        assert_eq!(uboot(&c).attempts, 5);
        assert_eq!(
            dropped,
            vec!["boot.future_key", "bootstate.future", "future_table"]
        );
        // The same in the backend's own table.
        let text = "[bootstate.uboot-env]\nattempts = 5\nfuture = true\n";
        let (c, dropped) = crate::state::parse_lenient(text, "t").unwrap();
        assert_eq!(uboot(&c).attempts, 5);
        assert_eq!(dropped, vec!["bootstate.uboot-env.future"]);
        // Every key this release knows is kept, optional ones and list items too.
        let full = "[persistent]\nmachine_id = \"\"\n\
                    dir = [{ path = \"x\", mode = 0o700, group = \"g\", owner = \"o\" }]\n\
                    bind = [{ source = \"x\", target = \"/x\", create = false, mode = 0o700, owner = \"o\", group = \"g\" }]\n\
                    [[overlay]]\ntarget = \"/srv\"\nupper = \"persistent\"\npath = \"o/{slot}\"\nsize = \"1m\"\n\
                    [bootstate]\nraw_offsets = [0, 16384]\n";
        let (c, dropped) = crate::state::parse_lenient(full, "t").unwrap();
        assert_eq!(dropped, Vec::<String>::new());
        assert_eq!(c, Config::parse(full, "t").unwrap());
        let shipped = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/rpi-ab-userdata.toml"
        ));
        assert_eq!(
            crate::state::parse_lenient(shipped, "t").unwrap().1,
            Vec::<String>::new()
        );
        // A wrong type is still an error.
        assert!(crate::state::parse_lenient("[bootstate]\nattempts = \"x\"\n", "t").is_err());
        assert!(
            crate::state::parse_lenient("[bootstate.uboot-env]\nattempts = \"x\"\n", "t").is_err()
        );
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }

    /// `rw` in system.options was accepted and made the system writable.
    #[test]
    fn system_options_cannot_make_the_system_writable() {
        for options in ["rw", "noatime,rw", "RW", " rw", "ro,rw", "noatime, ro"] {
            let text = format!("[system]\noptions = {options:?}\n");
            match Config::parse(&text, "t") {
                Err(ConfigError::Invalid { error, .. }) => {
                    let message = error.to_string();
                    assert!(
                        matches!(
                            error,
                            Invalid::SystemWritable(_) | Invalid::SystemWhitespace(_)
                        ),
                        "{options}: {message}"
                    );
                    assert!(
                        message.starts_with("system.options: "),
                        "{options}: {message}"
                    )
                }
                other => panic!("{options:?}: {other:?}"),
            }
        }
        for options in ["", "ro", "noatime,errors=remount-ro", "defaults,noload"] {
            let text = format!("[system]\noptions = {options:?}\n");
            assert!(Config::parse(&text, "t").is_ok(), "{options}");
        }
    }

    /// Waits that would make PID 1 race the disk or never reboot.
    #[test]
    fn waits_are_bounded() {
        let bad = [
            "device_timeout_ms = 0",
            "device_timeout_ms = 99",
            "device_timeout_ms = 600001",
            "device_timeout_ms = 2000\nsettle_ms = 2001",
            "reboot_delay_s = 3601",
            "reboot_delay_s = 18446744073709551615",
        ];
        for line in bad {
            let text = format!("[boot]\n{line}\n");
            match Config::parse(&text, "t") {
                Err(ConfigError::Invalid { error, .. }) => {
                    let message = error.to_string();
                    assert!(message.starts_with("boot."), "{line}: {message}");
                    assert!(
                        matches!(
                            error,
                            Invalid::DeviceTimeout(_)
                                | Invalid::SettleLonger { .. }
                                | Invalid::RebootDelay(_)
                        ),
                        "{line}: {message}"
                    );
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        for line in [
            "device_timeout_ms = 100\nsettle_ms = 100",
            "device_timeout_ms = 600000",
            "reboot_delay_s = 0",
            "reboot_delay_s = 3600",
        ] {
            let text = format!("[boot]\n{line}\n");
            assert!(Config::parse(&text, "t").is_ok(), "{line}");
        }
    }

    #[test]
    fn watchdog_keys() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(
            (c.boot.watchdog_s, c.boot.watchdog_device.as_str()),
            (0, "/dev/watchdog")
        );
        let c = Config::parse(
            "[boot]\nwatchdog_s = 30\nwatchdog_device = \"/dev/watchdog1\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            (c.boot.watchdog_s, c.boot.watchdog_device.as_str()),
            (30, "/dev/watchdog1")
        );
        for (line, key) in [
            ("watchdog_s = 3601", "boot.watchdog_s: 3601 s"),
            (
                "watchdog_device = \"watchdog\"",
                "boot.watchdog_device: \"watchdog\"",
            ),
            ("watchdog_device = \"/dev/\"", "boot.watchdog_device"),
            (
                "watchdog_device = \"/dev/../etc/x\"",
                "boot.watchdog_device",
            ),
            ("watchdog_device = \"/tmp/w\"", "boot.watchdog_device"),
        ] {
            match Config::parse(&format!("[boot]\n{line}\n"), "t") {
                Err(ConfigError::Invalid { error, .. }) => {
                    assert!(error.to_string().starts_with(key), "{line}: {error}")
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        // A negative timeout is a type error that names the key and line.
        match Config::parse("[boot]\nwatchdog_s = -1\n", "t") {
            Err(ConfigError::Parse { line, message, .. }) => {
                assert_eq!(line, 2);
                assert!(message.contains("watchdog_s"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// rpi-image-gen's three maps, as a device maker writes them.
    const CRYPT: &str = "[[crypt]]\nname = \"osdata_crypt\"\ndevice = { label = \"OSDATA_CRYPT\" }\n\
        members = [\"system_a\", \"system_b\", \"persistent\"]\nkey = \"file:/etc/slotinit/osdata.key\"\n";

    #[test]
    fn crypt_maps_parse_and_name_their_members() {
        let c = Config::parse(CRYPT, "t").unwrap();
        assert_eq!(c.crypt.len(), 1);
        assert!(c.crypt[0].partitioned);
        assert_eq!(
            c.crypt[0].device,
            CryptDevice::Label {
                label: "OSDATA_CRYPT".into()
            }
        );
        let slots = "[[crypt]]\nname = \"osab_crypt\"\ndevice = \"osab\"\n\
            members = [\"system_a\", \"system_b\"]\nkey = \"rpi-otp\"\n\
            [[crypt]]\nname = \"userdata_crypt\"\ndevice = { number = 7 }\n\
            members = [\"persistent\"]\nkey = \"file:/k\"\npartitioned = false\n";
        let c = Config::parse(slots, "t").unwrap();
        assert_eq!(c.crypt[0].device, CryptDevice::Part(PartSpec::name("osab")));
        assert!(!c.crypt[1].partitioned);
    }

    #[test]
    fn crypt_mistakes_are_refused_with_the_container_named() {
        let cases = [
            (
                CRYPT.replace("osdata_crypt", "os data"),
                "device-mapper name",
            ),
            (
                CRYPT.replace("\"persistent\"", "\"boot_a\""),
                "cannot be inside",
            ),
            (
                CRYPT.replace("file:/etc/slotinit/osdata.key", "osdata.key"),
                "key",
            ),
            (
                format!("{CRYPT}{}", CRYPT.replace("osdata_crypt", "other")),
                "already inside",
            ),
            (
                CRYPT.replace("[\"system_a\", \"system_b\", \"persistent\"]", "[]"),
                "members is empty",
            ),
            (
                format!("{CRYPT}partitioned = false\n"),
                "exactly one member",
            ),
            (
                format!("[partitions]\npersistent = \"\"\n{CRYPT}"),
                "not in this layout",
            ),
            (
                CRYPT.replace("{ label = \"OSDATA_CRYPT\" }", "{ label = \"\" }"),
                "label",
            ),
        ];
        for (text, why) in cases {
            match Config::parse(&text, "t") {
                Err(ConfigError::Invalid { error, .. }) => {
                    let message = error.to_string();
                    assert!(message.starts_with("crypt \""), "{message}");
                    assert!(message.contains(why), "{why}: {message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn verity_keys_parse_and_check() {
        let c = Config::parse(
            "[verity]\nmode = \"required\"\nroothash_file = \"/etc/slotinit/roothash-{slot}\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.verity.mode, VerityMode::Required);
        assert_eq!(c.verity.on_corruption, OnCorruptionConfig::Restart);
        for bad in [
            "hash = \"verity_a\"",
            "roothash_file = \"roothash\"",
            "mode = \"on\"",
        ] {
            assert!(
                Config::parse(&format!("[verity]\n{bad}\n"), "t").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn lenient_parse_keeps_a_containers_device_of_any_shape() {
        let text = "[[crypt]]\nname = \"c\"\ndevice = { number = 4 }\nmembers = [\"persistent\"]\nkey = \"rpi-otp\"\nnew_key = 1\n";
        let (c, dropped) = Config::parse_lenient(text, "t", &toml::Table::new()).unwrap();
        assert_eq!(dropped, vec!["crypt.new_key".to_string()]);
        assert!(matches!(c.crypt[0].device, CryptDevice::Part(_)));
    }

    #[test]
    fn slot_expansion() {
        assert_eq!(
            expand_slot("slots/{slot}/var", "system_b"),
            "slots/system_b/var"
        );
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    /// The shipped example is the documentation of the defaults: it must parse
    /// and equal them exactly.
    /// Every shipped profile passes the checks `check-config` runs.
    #[test]
    fn shipped_profiles_are_valid() {
        for (name, text) in [
            (
                "mapio.toml",
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/mapio.toml")),
            ),
            (
                "generic-ab.toml",
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/configs/generic-ab.toml"
                )),
            ),
            (
                "stm32mp.toml",
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/stm32mp.toml")),
            ),
            (
                "mender.toml",
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/mender.toml")),
            ),
            (
                "rpi-uboot-rauc.toml",
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/configs/rpi-uboot-rauc.toml"
                )),
            ),
        ] {
            if let Err(e) = Config::parse(text, name) {
                panic!("{name}: {e}");
            }
        }
    }

    #[test]
    fn rpi_example_is_the_defaults() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/rpi-ab-userdata.toml"
        ));
        let mut parsed = Config::parse(text, "rpi-ab-userdata.toml").unwrap();
        // The backend's table is the backend's defaults
        // (state::uboot::config::tests::shipped_example_is_the_defaults).
        assert!(parsed.bootstate.keys.remove("rpi-tryboot").is_some());
        assert_eq!(parsed, Config::default());
    }
}
