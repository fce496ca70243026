//! `[bootstate.uboot-env]`: where the U-Boot env lives, RAUC's names and
//! counts, and who counts. Read from the backend's own table and, for one
//! release, from the same keys directly in `[bootstate]` (each a
//! "config-deprecated" warning; both spellings with different values are an
//! error naming both keys).

use crate::config::{BootStateConfig, MEMBERS};
use crate::state::uboot::contract::Contract;
use crate::state::uboot::rauc::{self, Bootname, Bootnames};
use crate::state::uboot::{envblock, fwenv};
use crate::state::KeyError;
use serde::{Deserialize, Serialize};

/// The backend's name and the name of its table in `[bootstate]`.
pub(crate) const NAME: &str = "uboot-env";
const NEW: &str = "bootstate.uboot-env";
const OLD: &str = "bootstate";

/// The keys of the table, which were keys of `[bootstate]` before it existed.
pub(super) const KEYS: &[&str] = &[
    "counter",
    "partition",
    "fstype",
    "files",
    "size",
    "raw_offsets",
    "fw_env",
    "bootname_a",
    "bootname_b",
    "attempts",
    "attempts_primary",
    "cmdline_key",
    "env_owner",
    "base_env",
];

/// Keys only the table holds (newer than the flat spelling).
const TABLE_ONLY: &[&str] = &["contract", "fw_lock"];

/// Where the env lives, RAUC's contract, and who counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct UbootEnvConfig {
    /// Whose variables hold the state: RAUC's, the article's or Mender's.
    pub(crate) contract: Contract,
    pub(crate) counter: Counter,
    /// The layout member holding the env files (`bootconfig`, `boot_a`, ...).
    pub(crate) partition: String,
    /// Filesystem of that member.
    pub(crate) fstype: String,
    /// One file (single copy) or two (a redundant pair), relative to its root.
    pub(crate) files: Vec<String>,
    /// Environment size in bytes (U-Boot's CONFIG_ENV_SIZE).
    pub(crate) size: usize,
    /// Instead of files: the member partition itself holds the env (raw, as on
    /// eMMC layouts), one copy per offset (negative: from its end); one or two.
    pub(super) raw_offsets: Vec<i64>,
    /// Instead of files: `fw_env.config` lines (`device offset size`), one or two.
    pub(crate) fw_env: Vec<String>,
    /// RAUC bootname of each slot.
    pub(crate) bootname_a: String,
    pub(crate) bootname_b: String,
    /// RAUC `boot-attempts` (mark-good, reset) and `boot-attempts-primary` (mark-active).
    pub(crate) attempts: u32,
    pub(crate) attempts_primary: u32,
    /// The cmdline key the bootloader names the slot with (counter = "bootloader").
    pub(crate) cmdline_key: String,
    /// Whose env this is: "bootloader" (U-Boot reads it as its own env, with
    /// `bootcmd` and the rest) or "slotinit" (a file only the counters live in).
    pub(super) env_owner: EnvOwner,
    /// An absolute path (read in the root slotinit runs in: the initramfs at
    /// boot, the system for the subcommands) to the board's default env as
    /// `name=value` lines, the format of `mkenvimage` input and U-Boot's
    /// `u-boot-initial-env`. Written under the counters when no valid copy
    /// exists. "" for none.
    pub(crate) base_env: String,
    /// The lock file libubootenv's writers (`fw_setenv`, RAUC's `uboot`
    /// backend, SWUpdate) hold from their load to their store: the
    /// subcommands that write hold it too. "" for none.
    pub(crate) fw_lock: String,
}

/// Whose env the store holds, which decides what a write may start from when
/// no copy is valid (issue 11, item 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum EnvOwner {
    /// U-Boot's own env: an env holding only the counters would leave U-Boot
    /// without `bootcmd`, so slotinit writes on top of the last valid copy or
    /// `base_env`, and otherwise refuses.
    Bootloader,
    /// A file of its own (the default rpi profile, uboot/boot.cmd): the
    /// counters alone are a complete env.
    Slotinit,
}

/// Who decrements the attempts counter: exactly one party may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Counter {
    /// slotinit walks BOOT_ORDER and decrements before switch_root.
    Init,
    /// The bootloader did; slotinit follows its `rauc.slot=` and never decrements.
    Bootloader,
}

impl Default for UbootEnvConfig {
    fn default() -> Self {
        UbootEnvConfig {
            contract: Contract::Rauc,
            counter: Counter::Init,
            partition: "bootconfig".into(),
            fstype: "vfat".into(),
            files: vec!["uboot.env".into(), "uboot-redund.env".into()],
            size: 0x4000,
            raw_offsets: Vec::new(),
            fw_env: Vec::new(),
            bootname_a: "A".into(),
            bootname_b: "B".into(),
            attempts: 3,
            attempts_primary: 3,
            cmdline_key: "rauc.slot".into(),
            // The default profile's uboot.env holds only the counters.
            env_owner: EnvOwner::Slotinit,
            base_env: String::new(),
            fw_lock: super::LIBUBOOTENV_LOCK.into(),
        }
    }
}

/// A `[bootstate.uboot-env]` (or deprecated `[bootstate]`) that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UbootConfigError {
    #[error(transparent)]
    Key(KeyError),
    #[error("{OLD}.{key} and {NEW}.{key} are both set, to different values; keep {NEW}.{key}")]
    Conflict { key: String },
    #[error("{OLD}.{NAME} must be a table")]
    NotATable,
    #[error("{at}.partition: {partition:?} is not a layout member (one of {members})", members = MEMBERS.join(", "))]
    NotAMember { at: &'static str, partition: String },
    #[error("{at}.raw_offsets: one offset, or two for a redundant pair")]
    RawOffsets { at: &'static str },
    #[error("{at}.files: one file, or two for a redundant pair")]
    Files { at: &'static str },
    #[error("{at}.files: {file:?} must be a relative path inside the persistent partition")]
    FileNotRelative { at: &'static str, file: String },
    #[error("{at}.files: both copies of the pair are {file:?}; a redundant pair needs two files")]
    SameFile { at: &'static str, file: String },
    #[error("{at}.raw_offsets: copies at {a:#x} and {b:#x} overlap ({size:#x} bytes each)")]
    Overlap {
        at: &'static str,
        a: i64,
        b: i64,
        size: usize,
    },
    #[error("{at}.fw_env: {}", crate::types::error_chain(error))]
    FwEnv {
        at: &'static str,
        error: fwenv::FwEnvError,
    },
    #[error("{at}.size: {size} bytes is too small")]
    SizeTooSmall { at: &'static str, size: usize },
    #[error(
        "{at}.size: {size:#x} bytes is larger than {max:#x} (U-Boot's CONFIG_ENV_SIZE is usually 0x2000 to 0x20000)",
        max = envblock::MAX_SIZE
    )]
    SizeTooLarge { at: &'static str, size: usize },
    #[error("{at}.base_env: {path:?} must be an absolute path")]
    BaseEnvNotAbsolute { at: &'static str, path: String },
    #[error("{at}.fw_lock: {path:?} must be an absolute path (or \"\" for none)")]
    FwLockNotAbsolute { at: &'static str, path: String },
    #[error("{at}.{key}: {error}")]
    Bootname {
        at: &'static str,
        key: &'static str,
        error: rauc::BootStateError,
    },
    #[error("{at}: both slots have the same bootname")]
    SameBootname { at: &'static str },
    #[error("{at}: attempts must be at least 1")]
    Attempts { at: &'static str },
    #[error(
        "{at}.counter: the mender contract is counted by U-Boot (bootcount against bootlimit); \
         set counter = \"bootloader\""
    )]
    MenderCounter { at: &'static str },
    #[error(
        "{at}.{key}: {name:?}: the mender contract names a slot by its partition number \
         (mender_boot_part, e.g. \"2\" and \"3\")"
    )]
    MenderBootname {
        at: &'static str,
        key: &'static str,
        name: String,
    },
}

/// The table as read, and the deprecated keys it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) config: UbootEnvConfig,
    /// Keys given directly in `[bootstate]`.
    pub(crate) deprecated: Vec<String>,
}

impl UbootEnvConfig {
    /// Reads and checks the backend's keys of `[bootstate]`: its table and
    /// the deprecated flat keys (other keys are the registry's to judge).
    pub(crate) fn from_bootstate(bs: &BootStateConfig) -> Result<Parsed, UbootConfigError> {
        let (parsed, at) = Self::read(bs)?;
        parsed.config.validate(&|key| at(key))?;
        Ok(parsed)
    }

    /// Reads the keys (their types, and both spellings agreeing) without the
    /// checks of their values: what another backend, or "none", needs of them
    /// (the slot names), as before the table existed. Also says which table
    /// each key was read from.
    pub(crate) fn read(
        bs: &BootStateConfig,
    ) -> Result<(Parsed, impl Fn(&str) -> &'static str), UbootConfigError> {
        let mut old = toml::Table::new();
        for (key, value) in &bs.keys {
            if KEYS.contains(&key.as_str()) {
                old.insert(key.clone(), value.clone());
            }
        }
        if !bs.fw_env.is_empty() {
            let lines = bs.fw_env.iter().cloned().map(toml::Value::String).collect();
            old.insert("fw_env".into(), toml::Value::Array(lines));
        }
        let new = match bs.keys.get(NAME) {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t.clone(),
            Some(_) => return Err(UbootConfigError::NotATable),
        };
        // Each key alone first, so an error names its key and its table.
        for (table, keys) in [(OLD, &old), (NEW, &new)] {
            for (key, value) in keys {
                let one: toml::Table = [(key.clone(), value.clone())].into_iter().collect();
                if let Err(e) = toml::Value::Table(one).try_into::<UbootEnvConfig>() {
                    return Err(UbootConfigError::Key(KeyError {
                        table: table.into(),
                        key: key.clone(),
                        in_value: KEYS.contains(&key.as_str())
                            || TABLE_ONLY.contains(&key.as_str()),
                        message: e.message().to_string(),
                    }));
                }
            }
        }
        for (key, value) in &old {
            if new.get(key).is_some_and(|v| v != value) {
                return Err(UbootConfigError::Conflict { key: key.clone() });
            }
        }
        let mut merged = old.clone();
        merged.extend(new.clone());
        let config: UbootEnvConfig =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    UbootConfigError::Key(KeyError {
                        table: NEW.into(),
                        key: String::new(),
                        in_value: false,
                        message: e.message().to_string(),
                    })
                })?;
        let at = move |key: &str| if new.contains_key(key) { NEW } else { OLD };
        let parsed = Parsed {
            config,
            deprecated: old.keys().cloned().collect(),
        };
        Ok((parsed, at))
    }

    /// Every key the table may hold, spelled both ways, for the lenient
    /// parse of a newer release's config.
    pub(crate) fn reference() -> toml::Table {
        let exemplar = UbootEnvConfig {
            raw_offsets: vec![0],
            fw_env: vec![String::new()],
            ..UbootEnvConfig::default()
        };
        let mut table = match toml::Value::try_from(exemplar) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        table.insert(NAME.into(), toml::Value::Table(table.clone()));
        table
    }

    pub(crate) fn bootnames(&self) -> Result<Bootnames, rauc::BootStateError> {
        Ok(Bootnames {
            a: Bootname::new(&self.bootname_a)?,
            b: Bootname::new(&self.bootname_b)?,
        })
    }

    /// The backend's state config (RAUC's model) for the contract: the slot
    /// list and the counts a commit and mark-active set.
    pub(crate) fn rauc(&self) -> Result<rauc::Config, rauc::BootStateError> {
        let names = self.bootnames()?;
        self.contract
            .state_config(&names, self.attempts, self.attempts_primary)
    }

    /// Checks that serde cannot express; `at` names the table a key was read from.
    fn validate(&self, at: &dyn Fn(&str) -> &'static str) -> Result<(), UbootConfigError> {
        use UbootConfigError as E;
        if self.fw_env.is_empty() {
            self.validate_partition(at)?;
        } else {
            fwenv::parse(&self.fw_env.join("\n")).map_err(|error| E::FwEnv {
                at: at("fw_env"),
                error,
            })?;
        }
        if self.size < envblock::MIN_SIZE {
            return Err(E::SizeTooSmall {
                at: at("size"),
                size: self.size,
            });
        }
        // PID 1 allocates the size: an absurd one would abort the boot.
        if self.size > envblock::MAX_SIZE {
            return Err(E::SizeTooLarge {
                at: at("size"),
                size: self.size,
            });
        }
        if !self.base_env.is_empty() && !self.base_env.starts_with('/') {
            return Err(E::BaseEnvNotAbsolute {
                at: at("base_env"),
                path: self.base_env.clone(),
            });
        }
        if !self.fw_lock.is_empty() && !self.fw_lock.starts_with('/') {
            return Err(E::FwLockNotAbsolute {
                at: at("fw_lock"),
                path: self.fw_lock.clone(),
            });
        }
        for (key, name) in [
            ("bootname_a", &self.bootname_a),
            ("bootname_b", &self.bootname_b),
        ] {
            Bootname::new(name).map_err(|error| E::Bootname {
                at: at(key),
                key,
                error,
            })?;
        }
        if self.bootname_a == self.bootname_b {
            return Err(E::SameBootname {
                at: at("bootname_b"),
            });
        }
        if self.attempts == 0 || self.attempts_primary == 0 {
            return Err(E::Attempts { at: at("attempts") });
        }
        if self.contract == Contract::Mender {
            if self.counter != Counter::Bootloader {
                return Err(E::MenderCounter { at: at("counter") });
            }
            for (key, name) in [
                ("bootname_a", &self.bootname_a),
                ("bootname_b", &self.bootname_b),
            ] {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::MenderBootname {
                        at: at(key),
                        key,
                        name: name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The env on a layout partition (files, or raw offsets), without
    /// fw_env lines.
    fn validate_partition(
        &self,
        at: &dyn Fn(&str) -> &'static str,
    ) -> Result<(), UbootConfigError> {
        use UbootConfigError as E;
        if !MEMBERS.contains(&self.partition.as_str()) {
            return Err(E::NotAMember {
                at: at("partition"),
                partition: self.partition.clone(),
            });
        }
        if self.raw_offsets.len() > 2 {
            return Err(E::RawOffsets {
                at: at("raw_offsets"),
            });
        }
        if self.raw_offsets.is_empty() && !(1..=2).contains(&self.files.len()) {
            return Err(E::Files { at: at("files") });
        }
        for f in &self.files {
            if f.is_empty() || f.starts_with('/') || f.split('/').any(|c| c == "..") {
                return Err(E::FileNotRelative {
                    at: at("files"),
                    file: f.clone(),
                });
            }
        }
        // FAT names are case-insensitive; "./a" is "a".
        let norm = |f: &str| f.trim_start_matches("./").to_ascii_lowercase();
        if let [a, b] = self.files.as_slice() {
            if self.raw_offsets.is_empty() && norm(a) == norm(b) {
                return Err(E::SameFile {
                    at: at("files"),
                    file: a.clone(),
                });
            }
        }
        if let [a, b] = self.raw_offsets.as_slice() {
            if fwenv::overlaps(*a, *b, self.size) {
                return Err(E::Overlap {
                    at: at("raw_offsets"),
                    a: *a,
                    b: *b,
                    size: self.size,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parsed(text: &str) -> Result<Parsed, UbootConfigError> {
        let config = Config::parse(text, "t").unwrap();
        UbootEnvConfig::from_bootstate(&config.bootstate)
    }

    #[test]
    fn both_spellings_read_the_same() {
        let old = parsed("[bootstate]\ncounter = \"bootloader\"\nattempts = 5\n").unwrap();
        let new =
            parsed("[bootstate.uboot-env]\ncounter = \"bootloader\"\nattempts = 5\n").unwrap();
        assert_eq!(old.config, new.config);
        assert_eq!(old.config.counter, Counter::Bootloader);
        assert_eq!(old.config.attempts, 5);
        assert_eq!(old.deprecated, ["attempts", "counter"]);
        assert!(new.deprecated.is_empty());
        // The legacy fw_env field is read too.
        let fw = parsed("[bootstate]\nfw_env = [\"/dev/x 0 0x4000\"]\n").unwrap();
        assert_eq!(fw.config.fw_env, ["/dev/x 0 0x4000"]);
        assert_eq!(fw.deprecated, ["fw_env"]);
    }

    #[test]
    fn both_spellings_with_different_values_name_both_keys() {
        let err =
            parsed("[bootstate]\nattempts = 5\n[bootstate.uboot-env]\nattempts = 4\n").unwrap_err();
        assert!(matches!(&err, UbootConfigError::Conflict { key } if key == "attempts"));
        let text = err.to_string();
        assert!(
            text.contains("bootstate.attempts") && text.contains("bootstate.uboot-env.attempts"),
            "{text}"
        );
        // The same value twice is only deprecated.
        let same =
            parsed("[bootstate]\nattempts = 5\n[bootstate.uboot-env]\nattempts = 5\n").unwrap();
        assert_eq!(same.deprecated, ["attempts"]);
    }

    #[test]
    fn errors_name_the_table_the_key_was_read_from() {
        let err = parsed("[bootstate.uboot-env]\nsize = 1\n").unwrap_err();
        assert!(
            err.to_string().starts_with("bootstate.uboot-env.size:"),
            "{err}"
        );
        let err = parsed("[bootstate]\nsize = 1\n").unwrap_err();
        assert!(err.to_string().starts_with("bootstate.size:"), "{err}");
        match parsed("[bootstate.uboot-env]\ncountr = 1\n").unwrap_err() {
            UbootConfigError::Key(k) => {
                assert_eq!((k.table.as_str(), k.key.as_str()), (NEW, "countr"));
                assert!(!k.in_value);
            }
            other => panic!("{other}"),
        }
        match parsed("[bootstate]\ncounter = \"uboot\"\n").unwrap_err() {
            UbootConfigError::Key(k) => {
                assert_eq!((k.table.as_str(), k.key.as_str()), (OLD, "counter"));
                assert!(k.in_value);
                assert!(
                    k.message.contains("unknown variant `uboot`"),
                    "{}",
                    k.message
                );
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn shipped_example_is_the_defaults() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/rpi-uboot-rauc.toml"
        ));
        let p = parsed(text).unwrap();
        assert_eq!(p.config, UbootEnvConfig::default());
        assert!(p.deprecated.is_empty(), "{:?}", p.deprecated);
    }
}
