//! The boot state: what the firmware booted, trial or committed, this boot's
//! decision, the commit, mark-good / bad / active, and what `status` shows,
//! behind one trait ([`Backend`]). The init's state stage and the CLI use
//! only the trait and the functions here.
//!
//! A new backend is one module (its `[bootstate.<name>]` table, read and
//! checked by the module itself, and a type implementing [`Backend`]) and one
//! line in [`BACKENDS`]; `state::fake` (a test) is such a second backend.
//! The U-Boot env with RAUC's contract (`uboot`) is the first. The trait
//! assumes no counters: a backend whose firmware picks the slot (Raspberry
//! Pi tryboot, Arm FWU metadata) answers `decide` from what the firmware says
//! and its own trial flag, `mark` from its own metadata, and `record` with
//! its slots in `order` and what is left of a trial in `left`.
//!
//! RAUC's bootnames and cmdline key (`[bootstate.uboot-env]`) also serve the
//! `rauc` slot source and the CLI's slot argument whatever the backend, so
//! the U-Boot keys are read (their types checked) with every backend.

pub(crate) mod decision;
#[cfg(test)]
mod fake;
pub mod fwu;
pub mod rpi;
pub mod sources;
pub mod uboot;

use crate::config::{BootStateConfig, Config, ConfigError, BACKEND_NONE};
use crate::disk::devices::Resolved;
use crate::kernel::sys::Sys;
use crate::kind;
use crate::types::Slot;
use decision::{DecideCtx, DecideError, Outcome};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The backends, by the name `[bootstate] backend` gives: a new backend is a
/// module and a line here (`fwu-metadata`: Arm FWU metadata, TF-A picks
/// the bank).
pub(crate) const BACKENDS: &[Entry] = &[uboot::BACKEND, rpi::BACKEND, fwu::BACKEND];

/// One backend: its name (also the name of its table in `[bootstate]`), its
/// config check and how it opens.
pub(crate) struct Entry {
    pub(crate) name: &'static str,
    /// Keys it read directly in `[bootstate]` before it had a table (read
    /// for one release, with a warning); empty for a new backend.
    pub(crate) legacy_keys: &'static [&'static str],
    /// Reads and checks the backend's keys of `[bootstate]`.
    pub(crate) check: fn(&BootStateConfig) -> Result<Checked, CheckError>,
    /// Every key the backend's keys may be (for the lenient parse).
    pub(crate) reference: fn() -> toml::Table,
    /// Opens the store through `sys`. `resolved` are the layout's
    /// partitions; `mount_dir` is where a backend may mount one.
    pub(crate) open: OpenFn,
    /// This boot's decision when the store could not be opened.
    pub(crate) unavailable: fn(&BootStateConfig, &DecideCtx) -> Result<Outcome, DecideError>,
    /// Whether the bootloader's (firmware's) word picks the slot, so the
    /// slot sources asked are worth logging.
    pub(crate) bootloader_decides: fn(&BootStateConfig) -> bool,
    /// The block devices the config names for the store (they tell which
    /// disk the bootloader booted from).
    pub(crate) devices: fn(&BootStateConfig) -> Vec<String>,
    /// The filesystems the store is read from at boot (their modules go in
    /// the initramfs).
    pub(crate) filesystems: fn(&BootStateConfig) -> Vec<String>,
    /// A lock file another writer of the same store holds from its load to
    /// its store (libubootenv's, for the U-Boot env): the subcommands that
    /// write hold it across theirs, so neither write is lost.
    pub(crate) foreign_lock: fn(&BootStateConfig) -> Option<PathBuf>,
}

/// How a backend opens: the kernel, the config, the layout's partitions, a
/// directory to mount on.
type OpenFn = fn(&mut dyn Sys, &Config, &Resolved, &Path) -> Result<Box<dyn Backend>, OpenError>;

/// What a boot-state backend does, for the init's state stage and the CLI.
///
/// The methods that touch the medium take the kernel (`sys`) as an argument
/// rather than the backend keeping it: PID 1 interleaves the backend's calls
/// with the other stages' on the one [`Sys`] of the boot, the host tests
/// then read one recorded sequence of calls, and no backend holds a borrow
/// across stages.
pub(crate) trait Backend {
    #[cfg(test)]
    fn name(&self) -> &'static str;
    /// Where the state lives, its health and error, and per-slot state: the
    /// handoff's `bootstate` and `status`'s `store`.
    fn record(&self) -> Record;
    /// This boot's slot, committed durably before it returns where the
    /// backend counts; a write that fails never lets a trial boot uncounted
    /// when another slot is known good.
    fn decide(&mut self, sys: &mut dyn Sys, ctx: &DecideCtx) -> Result<Outcome, DecideError>;
    /// `commit = "on-mount"`: the slot mounted and has an init. Ok(false):
    /// nothing to commit (no usable state).
    fn commit_good(&mut self, sys: &mut dyn Sys, slot: Slot) -> Result<bool, CommitError>;
    /// `mark-good`, `mark-bad`, `mark-active`: the line to print.
    fn mark(
        &mut self,
        sys: &mut dyn Sys,
        how: Mark,
        slot: Slot,
        force: bool,
    ) -> Result<String, MarkError>;
    /// Makes the firmware boot `slot` at the next reset, durably: the init
    /// calls it when this boot's decision is a slot whose kernel is not the
    /// one running (slot coherence), then restarts; `mark-active --reboot`
    /// calls it too. Returns the restart argument (`"0 tryboot"`), or None
    /// for a plain restart.
    fn boot_next(&mut self, sys: &mut dyn Sys, slot: Slot) -> Result<Option<String>, MarkError>;
    /// Trial or committed, and what is left of the trial, for `status`.
    fn status(&self, booted: Option<Slot>) -> BootStatus;
    /// How this backend's [`Record`] (`order`, `left`) names the slot the
    /// firmware boots next: what RAUC's custom backend answers from.
    fn next_boot(&self) -> NextBoot;
    /// Undoes what open did (a mount).
    fn close(self: Box<Self>, sys: &mut dyn Sys);
}

/// How a [`Record`]'s `order` and `left` name the slot booted next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextBoot {
    /// `order` is the firmware's try order and `left` each slot's attempts:
    /// the first slot in the order with attempts left (U-Boot's counters,
    /// TF-A's FWU banks).
    InOrder,
    /// The first of `order` is the committed slot the firmware boots by
    /// default; a slot with attempts in `left` is an armed trial, booted
    /// (through a one-shot tryboot) before it (the Raspberry Pi).
    Tryboot,
}

/// The store's state as recorded in the handoff and shown by `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) location: String,
    pub(crate) health: String,
    pub(crate) error: Option<String>,
    /// The slots in the order they are tried (U-Boot: BOOT_ORDER).
    pub(crate) order: Vec<String>,
    /// What is left of each slot's trial (U-Boot: BOOT_x_LEFT).
    pub(crate) left: Vec<(String, u32)>,
    pub(crate) last_fallback: Option<String>,
}

/// `status`: the booted slot's boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BootStatus {
    /// "trial", "committed", or "unknown".
    pub(crate) boot: &'static str,
    pub(crate) attempts_left: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Good,
    Bad,
    Active,
}

impl Mark {
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Mark::Good => "good",
            Mark::Bad => "bad",
            Mark::Active => "active",
        }
    }
}

/// A key of `[bootstate]` (or a backend's table) that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table}.{key}: {message}")]
pub(crate) struct KeyError {
    /// `bootstate` or `bootstate.<backend>`.
    pub(crate) table: String,
    pub(crate) key: String,
    /// The value is wrong (else the key is unknown).
    pub(crate) in_value: bool,
    pub(crate) message: String,
}

/// An error of a backend's table `[bootstate.<backend>]`: `key` "" for the
/// table as a whole.
pub(crate) fn table_key_error(backend: &str, key: &str, message: String) -> CheckError {
    CheckError::Key(KeyError {
        table: format!("bootstate.{backend}"),
        key: key.into(),
        in_value: !key.is_empty(),
        message,
    })
}

/// Reads a backend's table `[bootstate.<backend>]` into its type (its
/// default when the table is missing). Each key is read alone first, so an
/// error names its key: a known key with a bad value, or an unknown key
/// (`reference` lists the known ones). The backend checks the values after.
pub(crate) fn read_table<T: serde::de::DeserializeOwned + Default>(
    bs: &BootStateConfig,
    backend: &str,
    reference: fn() -> toml::Table,
) -> Result<T, CheckError> {
    let Some(value) = bs.keys.get(backend) else {
        return Ok(T::default());
    };
    let toml::Value::Table(t) = value else {
        return Err(table_key_error(
            backend,
            "",
            format!("[bootstate] {backend}: not a table"),
        ));
    };
    for (key, v) in t {
        let one: toml::Table = [(key.clone(), v.clone())].into_iter().collect();
        if let Err(e) = toml::Value::Table(one).try_into::<T>() {
            return Err(CheckError::Key(KeyError {
                table: format!("bootstate.{backend}"),
                key: key.clone(),
                in_value: reference().contains_key(key),
                message: e.message().to_string(),
            }));
        }
    }
    value
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| table_key_error(backend, "", e.message().to_string()))
}

/// `[bootstate]` as a backend reads it, when usable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Deprecated spellings used: each a "config-deprecated" warning.
    pub(crate) deprecated: Vec<String>,
}

/// A `[bootstate]` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    #[error("bootstate.backend: unknown backend {name:?} (one of {known})")]
    UnknownBackend { name: String, known: String },
    #[error(transparent)]
    Key(KeyError),
    /// The backend's own check; its message says the key.
    #[error("{0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl CheckError {
    pub(crate) fn kind(&self) -> &'static str {
        kind::CONFIG
    }
}

/// The store cannot be opened; the boot goes on without it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error(transparent)]
    Config(#[from] CheckError),
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl OpenError {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            OpenError::Config(e) => e.kind(),
            OpenError::Backend(_) => kind::BOOTSTATE_UNAVAILABLE,
        }
    }
}

/// The commit on mount failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot commit slot {slot}: {message}")]
pub(crate) struct CommitError {
    pub(crate) slot: Slot,
    pub(crate) message: String,
}

impl CommitError {
    pub(crate) fn kind(&self) -> &'static str {
        kind::COMMIT
    }
}

/// Why a mark wrote nothing (or failed writing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MarkError {
    /// The stored state is corrupt or invalid; `--force` writes a fresh one.
    #[error("{0}")]
    Unusable(String),
    /// The mark cannot apply to the stored state.
    #[error("boot state: {0}")]
    Invalid(String),
    /// Another writer holds the store.
    #[error("{0}")]
    Locked(String),
    /// The mark would leave no slot to boot; `--force` marks anyway.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Write(String),
}

impl MarkError {
    #[cfg(test)]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            MarkError::Unusable(_) => kind::BOOTSTATE_UNUSABLE,
            MarkError::Invalid(_) => kind::BOOTSTATE_INVALID,
            MarkError::Locked(_) => kind::BOOTSTATE_LOCKED,
            MarkError::Refused(_) => kind::MARK_REFUSED,
            MarkError::Write(_) => kind::BOOTSTATE_WRITE,
        }
    }
}

/// The registry entry for `name`.
fn entry<'a>(backends: &'a [Entry], name: &str) -> Result<&'a Entry, CheckError> {
    backends
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| CheckError::UnknownBackend {
            name: name.into(),
            known: std::iter::once(BACKEND_NONE)
                .chain(backends.iter().map(|e| e.name))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Checks `[bootstate]` against the registry: every key is a backend's table
/// or a backend's deprecated key, and the chosen backend accepts its keys.
/// The U-Boot backend's keys are checked whatever the backend (its names
/// serve the `rauc` slot source).
pub(crate) fn check(config: &Config) -> Result<Checked, CheckError> {
    check_with(BACKENDS, &config.bootstate)
}

fn check_with(backends: &[Entry], bs: &BootStateConfig) -> Result<Checked, CheckError> {
    let chosen = match bs.backend.as_str() {
        BACKEND_NONE => None,
        name => Some(entry(backends, name)?),
    };
    for key in bs.keys.keys() {
        let known = backends
            .iter()
            .any(|e| e.name == key || e.legacy_keys.contains(&key.as_str()));
        if !known {
            return Err(CheckError::Key(KeyError {
                table: "bootstate".into(),
                key: key.clone(),
                in_value: false,
                message: format!("unknown field `{key}`"),
            }));
        }
    }
    let mut checked = (uboot::BACKEND.check)(bs)?;
    if let Some(e) = chosen.filter(|e| e.name != uboot::config::NAME) {
        checked.deprecated.extend((e.check)(bs)?.deprecated);
    }
    Ok(checked)
}

/// [`Config::parse`] and [`check`], the errors located in `text`.
pub fn parse(text: &str, path: &str) -> Result<(Config, Checked), ConfigError> {
    let config = Config::parse(text, path)?;
    let checked = check(&config).map_err(|e| located(e, text, path))?;
    Ok((config, checked))
}

/// Reads and checks `path`; a missing file is the defaults.
pub(crate) fn load(sys: &mut dyn Sys, path: &Path) -> Result<(Config, Checked), ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    };
    match crate::kernel::sys::read_text(sys, path) {
        Ok(Some(text)) => parse(&text, &path.display().to_string()),
        Ok(None) => {
            let config = Config::default();
            let checked = check(&config).map_err(|e| located(e, "", "defaults"))?;
            Ok((config, checked))
        }
        Err(source) => Err(read_error(source)),
    }
}

/// [`Config::parse_lenient`] knowing every backend's keys.
pub(crate) fn parse_lenient(text: &str, path: &str) -> Result<(Config, Vec<String>), ConfigError> {
    let mut reference = toml::Table::new();
    for e in BACKENDS {
        reference.extend((e.reference)());
    }
    let (config, dropped) = Config::parse_lenient(text, path, &reference)?;
    check(&config).map_err(|e| located(e, text, path))?;
    Ok((config, dropped))
}

/// A check error as a config error: a key error located in `text`.
fn located(e: CheckError, text: &str, path: &str) -> ConfigError {
    match e {
        CheckError::Key(k) => {
            let span = crate::config::span_of(text, &k.table, &k.key, k.in_value);
            if span.is_some() {
                ConfigError::parse(text, path, span, &k.message)
            } else {
                ConfigError::Parse {
                    path: path.into(),
                    line: 0,
                    column: 0,
                    message: k.to_string(),
                }
            }
        }
        CheckError::UnknownBackend { name, known } => ConfigError::parse(
            text,
            path,
            crate::config::span_of(text, "bootstate", "backend", true),
            &format!("unknown backend {name:?} (one of {known})"),
        ),
        e => ConfigError::Backend {
            path: path.into(),
            error: Box::new(e),
        },
    }
}

/// Opens the configured backend through `sys`; None for backend "none".
pub(crate) fn open(
    sys: &mut dyn Sys,
    config: &Config,
    resolved: &Resolved,
    mount_dir: &Path,
) -> Result<Option<Box<dyn Backend>>, OpenError> {
    open_with(BACKENDS, sys, config, resolved, mount_dir)
}

fn open_with(
    backends: &[Entry],
    sys: &mut dyn Sys,
    config: &Config,
    resolved: &Resolved,
    mount_dir: &Path,
) -> Result<Option<Box<dyn Backend>>, OpenError> {
    check_with(backends, &config.bootstate)?;
    if config.bootstate.backend == BACKEND_NONE {
        return Ok(None);
    }
    let entry = entry(backends, &config.bootstate.backend)?;
    (entry.open)(sys, config, resolved, mount_dir).map(Some)
}

/// How the bootloader names the slots on the cmdline, for the `rauc` slot
/// source and the CLI's slot argument: RAUC's bootnames and cmdline key
/// (`[bootstate.uboot-env]`, read whatever the backend).
pub(crate) fn slot_names(config: &Config) -> Result<(uboot::rauc::Bootnames, String), CheckError> {
    let parsed = uboot::config::UbootEnvConfig::from_bootstate(&config.bootstate)
        .map_err(uboot::check_error)?;
    let names = parsed
        .config
        .bootnames()
        .map_err(|e| CheckError::Backend(Box::new(e)))?;
    Ok((names, parsed.config.cmdline_key))
}

/// This boot's decision without an open store: backend "none" follows the
/// bootloader's word; a backend whose store could not be opened says what
/// it does without it.
pub(crate) fn decide_unopened(config: &Config, ctx: &DecideCtx) -> Result<Outcome, DecideError> {
    let bs = &config.bootstate;
    match entry(BACKENDS, &bs.backend) {
        Ok(entry) if bs.backend != BACKEND_NONE => (entry.unavailable)(bs, ctx),
        _ => decision::follow_bootloader(ctx),
    }
}

/// Whether the bootloader's word picks the slot (always, without a store).
pub(crate) fn bootloader_decides(config: &Config) -> bool {
    let bs = &config.bootstate;
    bs.backend == BACKEND_NONE
        || entry(BACKENDS, &bs.backend).is_ok_and(|e| (e.bootloader_decides)(bs))
}

/// The lock file of the configured backend's foreign writers, if any
/// ([`Entry::foreign_lock`]).
pub(crate) fn foreign_lock(config: &Config) -> Option<PathBuf> {
    let bs = &config.bootstate;
    entry(BACKENDS, &bs.backend)
        .ok()
        .and_then(|e| (e.foreign_lock)(bs))
}

/// The block devices the boot-state config names (`fw_env` lines), for
/// `disk::devices::BootDiskHint`: the bootloader's env is on its boot disk.
pub(crate) fn boot_devices(config: &Config) -> Vec<String> {
    let bs = &config.bootstate;
    let mut devices: Vec<String> = BACKENDS.iter().flat_map(|e| (e.devices)(bs)).collect();
    devices.dedup();
    devices
}

/// The filesystems the chosen backend reads its store from at boot.
pub(crate) fn store_filesystems(config: &Config) -> Vec<String> {
    let bs = &config.bootstate;
    BACKENDS
        .iter()
        .filter(|e| e.name == bs.backend)
        .flat_map(|e| (e.filesystems)(bs))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::decision::{Decision, Hint, Line, Problem, Source};
    use super::*;
    use crate::kernel::sys::Real;

    /// A second backend is its module and this one line.
    const REGISTRY: &[Entry] = &[uboot::BACKEND, fake::BACKEND];

    fn config(text: &str) -> Config {
        Config::parse(text, "t").unwrap()
    }

    fn ctx<'a>(hint: Option<&'a Hint>, failed: &'a [(Slot, String)]) -> DecideCtx<'a> {
        DecideCtx {
            override_slot: None,
            default_slot: Slot::A,
            hint,
            failed,
        }
    }

    /// A U-Boot env store in `dir` (fw_env lines, no mount), in the new spelling.
    fn uboot_config(dir: &Path, extra: &str) -> Config {
        config(&format!(
            "[bootstate]\nbackend = \"uboot-env\"\n[bootstate.uboot-env]\nfw_env = [\"{} 0x0 0x4000\"]\n{extra}",
            dir.join("uboot.env").display()
        ))
    }

    fn open_uboot(dir: &Path, config: &Config) -> Box<dyn Backend> {
        open(&mut Real, config, &Resolved::default(), dir)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_second_backend_is_a_module_and_a_registry_line() {
        let dir = tempfile::tempdir().unwrap();
        let c = config("[bootstate]\nbackend = \"fake\"\n[bootstate.fake]\ncommitted = \"b\"\n");
        // Not registered: an unknown backend, named with the known ones.
        match check(&c) {
            Err(CheckError::UnknownBackend { name, known }) => {
                assert_eq!(name, "fake");
                assert_eq!(known, "none, uboot-env, rpi-tryboot, fwu-metadata");
            }
            other => panic!("{other:?}"),
        }
        assert!(open(&mut Real, &c, &Resolved::default(), dir.path()).is_err());
        // Registered: checked, opened and used through the trait alone.
        check_with(REGISTRY, &c.bootstate).unwrap();
        let bad = config("[bootstate]\nbackend = \"fake\"\n[bootstate.fake]\ncomitted = \"b\"\n");
        assert!(matches!(
            check_with(REGISTRY, &bad.bootstate),
            Err(CheckError::Key(_))
        ));
        let mut b = open_with(REGISTRY, &mut Real, &c, &Resolved::default(), dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(b.name(), "fake");
        let out = b.decide(&mut Real, &ctx(None, &[])).unwrap();
        assert_eq!(
            out.decision,
            Decision {
                slot: Slot::B,
                source: Source::Bootloader
            }
        );
        assert_eq!(
            b.mark(&mut Real, Mark::Active, Slot::A, false).unwrap(),
            "slot a marked active"
        );
        assert_eq!(
            b.mark(&mut Real, Mark::Bad, Slot::B, false)
                .unwrap_err()
                .kind(),
            "mark-refused"
        );
        b.close(&mut Real);
        // The trial is armed on the medium; the next boot tries it once.
        let mut b = open_with(REGISTRY, &mut Real, &c, &Resolved::default(), dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(
            b.decide(&mut Real, &ctx(None, &[])).unwrap().decision.slot,
            Slot::A
        );
        assert_eq!(b.status(Some(Slot::A)).boot, "trial");
        assert!(b.commit_good(&mut Real, Slot::A).unwrap());
        assert_eq!(b.status(Some(Slot::A)).boot, "committed");
        assert_eq!(b.record().order, ["a"]);
    }

    #[test]
    fn backend_none_opens_nothing_and_follows_the_bootloader() {
        let c = config("[bootstate]\nbackend = \"none\"\n");
        let dir = tempfile::tempdir().unwrap();
        assert!(open(&mut Real, &c, &Resolved::default(), dir.path())
            .unwrap()
            .is_none());
        assert!(bootloader_decides(&c));
        let hint = Hint {
            slot: Some(Slot::B),
            source: "rauc.slot=\"B\"".into(),
        };
        let out = decide_unopened(&c, &ctx(Some(&hint), &[])).unwrap();
        assert_eq!(out.decision.source, Source::Bootloader);
        assert_eq!(out.decision.slot, Slot::B);
        let failed = [(Slot::B, "no init".to_string())];
        let out = decide_unopened(&c, &ctx(Some(&hint), &failed)).unwrap();
        assert_eq!(
            out.decision,
            Decision {
                slot: Slot::A,
                source: Source::Fallback
            }
        );
        let both = [(Slot::A, "x".to_string()), (Slot::B, "y".to_string())];
        let err = decide_unopened(&c, &ctx(None, &both)).unwrap_err();
        assert!(matches!(err, DecideError::BothFailed));
        assert_eq!(err.kind(), "decision");
        // A hint that names no slot is an error of kind "decision".
        let nameless = Hint {
            slot: None,
            source: "rauc.slot=\"Z\"".into(),
        };
        let out = decide_unopened(&c, &ctx(Some(&nameless), &[])).unwrap();
        assert_eq!(out.decision.source, Source::Default);
        assert_eq!(
            out.problems().map(Problem::kind).collect::<Vec<_>>(),
            ["decision"]
        );
    }

    // Before the trait, a U-Boot store that could not be opened left
    // counter = "init" booting the default slot, never the cmdline's word.
    #[test]
    fn unopened_uboot_store_decides_as_its_counter_says() {
        let hint = Hint {
            slot: Some(Slot::B),
            source: "rauc.slot=\"B\"".into(),
        };
        let init = config(
            "[bootstate]\nbackend = \"uboot-env\"\n[bootstate.uboot-env]\ncounter = \"init\"\n",
        );
        assert!(!bootloader_decides(&init));
        let out = decide_unopened(&init, &ctx(Some(&hint), &[])).unwrap();
        assert_eq!(
            out.decision,
            Decision {
                slot: Slot::A,
                source: Source::Default
            }
        );
        let follow = config("[bootstate]\nbackend = \"uboot-env\"\ncounter = \"bootloader\"\n");
        assert!(bootloader_decides(&follow));
        let out = decide_unopened(&follow, &ctx(Some(&hint), &[])).unwrap();
        assert_eq!(out.decision.slot, Slot::B);
        assert_eq!(out.decision.source, Source::Bootloader);
    }

    /// The U-Boot backend through the trait: decide counts and commits,
    /// on-mount commit, the marks, status, the record.
    #[test]
    fn uboot_backend_round_trips_through_the_trait() {
        let dir = tempfile::tempdir().unwrap();
        let c = uboot_config(dir.path(), "");
        let mut b = open_uboot(dir.path(), &c);
        assert_eq!(b.name(), "uboot-env");
        assert_eq!(b.record().health, "no environment yet");
        let out = b.decide(&mut Real, &ctx(None, &[])).unwrap();
        assert_eq!(
            out.decision,
            Decision {
                slot: Slot::A,
                source: Source::Counters
            }
        );
        assert!(out.problems().next().is_none(), "{:?}", out.lines);
        assert!(out
            .lines
            .iter()
            .any(|l| matches!(l, Line::Note(n) if n.starts_with("boot state committed"))));
        // Committed before decide returned: a fresh open reads the count.
        b.close(&mut Real);
        let mut b = open_uboot(dir.path(), &c);
        assert_eq!(b.record().left, [("A".into(), 2), ("B".into(), 3)]);
        assert_eq!(
            b.status(Some(Slot::A)),
            BootStatus {
                boot: "trial",
                attempts_left: Some(2)
            }
        );
        assert!(b.commit_good(&mut Real, Slot::A).unwrap());
        assert_eq!(b.status(Some(Slot::A)).boot, "committed");
        let line = b.mark(&mut Real, Mark::Active, Slot::B, false).unwrap();
        assert!(line.starts_with("slot b (B) marked active"), "{line}");
        assert_eq!(b.record().order, ["B", "A"]);
        let line = b.mark(&mut Real, Mark::Good, Slot::B, false).unwrap();
        assert!(line.contains("marked good"), "{line}");
        b.mark(&mut Real, Mark::Bad, Slot::A, false).unwrap();
        let refused = b.mark(&mut Real, Mark::Bad, Slot::B, false).unwrap_err();
        assert_eq!(refused.kind(), "mark-refused");
        b.close(&mut Real);
        let b = open_uboot(dir.path(), &c);
        assert_eq!(b.record().order, ["B"]);
        assert_eq!(b.status(Some(Slot::B)).boot, "committed");
        assert_eq!(b.status(None).boot, "unknown");
        b.close(&mut Real);
    }

    /// boot_next: the slot first in BOOT_ORDER for the boot script, its
    /// count as the decision left it (a reset would let a firmware that
    /// ignores BOOT_ORDER restart forever); a plain restart.
    #[test]
    fn uboot_backend_boot_next_puts_the_slot_first_and_keeps_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let c = uboot_config(dir.path(), "");
        let mut b = open_uboot(dir.path(), &c);
        // Fresh store: nothing to steer with, nothing written.
        assert_eq!(b.boot_next(&mut Real, Slot::B).unwrap(), None);
        assert!(!dir.path().join("uboot.env").exists());
        b.decide(&mut Real, &ctx(None, &[])).unwrap();
        assert_eq!(b.boot_next(&mut Real, Slot::B).unwrap(), None);
        b.close(&mut Real);
        let mut b = open_uboot(dir.path(), &c);
        assert_eq!(b.record().order, ["B", "A"]);
        assert_eq!(b.record().left, [("A".into(), 2), ("B".into(), 3)]);
        // Already first: unchanged.
        assert_eq!(b.boot_next(&mut Real, Slot::B).unwrap(), None);
        assert_eq!(b.record().order, ["B", "A"]);
        b.close(&mut Real);
    }

    /// The writers' lock held by another writer (a second `slotinit
    /// mark-*`, the init): the mark says so by its kind and writes nothing.
    #[test]
    fn uboot_backend_mark_under_a_held_lock_is_bootstate_locked() {
        let mut sys = crate::kernel::fake::Fake {
            errno: vec![("flock /boot".into(), libc::EWOULDBLOCK)],
            ..Default::default()
        };
        sys.dirs.insert("/boot".into());
        let c = config("[bootstate]\nbackend = \"uboot-env\"\n[bootstate.uboot-env]\nfw_env = [\"/boot/uboot.env 0x0 0x4000\"]\n");
        let mut b = open(&mut sys, &c, &Resolved::default(), Path::new("/mnt"))
            .unwrap()
            .unwrap();
        let err = b.mark(&mut sys, Mark::Active, Slot::B, false).unwrap_err();
        assert!(matches!(err, MarkError::Locked(_)), "{err}");
        assert_eq!(err.kind(), "bootstate-locked");
        assert!(
            err.to_string().contains("locked by another writer"),
            "{err}"
        );
        assert!(sys.position("flock /boot").is_some());
        assert!(
            sys.calls.iter().all(|c| !c.contains("write")),
            "{:?}",
            sys.calls
        );
        assert!(!sys.files.contains_key(Path::new("/boot/uboot.env")));
        // Once the other writer is gone, the same mark writes.
        sys.errno.clear();
        b.mark(&mut sys, Mark::Active, Slot::B, false).unwrap();
        b.close(&mut sys);
        assert!(sys.files.contains_key(Path::new("/boot/uboot.env")));
    }

    #[test]
    fn uboot_backend_marks_nothing_on_a_corrupt_store() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uboot.env");
        std::fs::write(&file, vec![0x55u8; 0x4000]).unwrap();
        let c = uboot_config(dir.path(), "");
        let mut b = open_uboot(dir.path(), &c);
        assert!(b.record().error.is_some());
        let err = b.mark(&mut Real, Mark::Good, Slot::A, false).unwrap_err();
        assert!(matches!(err, MarkError::Unusable(_)), "{err}");
        assert_eq!(err.kind(), "bootstate-unusable");
        // commit on mount has nothing to commit, and writes nothing.
        assert!(!b.commit_good(&mut Real, Slot::A).unwrap());
        assert_eq!(std::fs::read(&file).unwrap(), vec![0x55u8; 0x4000]);
        // --force writes a fresh state (the env is slotinit's).
        b.mark(&mut Real, Mark::Active, Slot::B, true).unwrap();
        b.close(&mut Real);
        let b = open_uboot(dir.path(), &c);
        assert_eq!(b.record().order, ["B", "A"]);
    }

    #[test]
    fn the_store_that_cannot_be_opened_has_a_kind() {
        let dir = tempfile::tempdir().unwrap();
        // Files on a layout member that was not found.
        let err = open(
            &mut Real,
            &Config::default(),
            &Resolved::default(),
            dir.path(),
        )
        .err()
        .unwrap();
        assert_eq!(err.kind(), "bootstate-unavailable");
        assert!(
            crate::types::error_chain(&err).contains("no bootconfig partition"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_of_bootstate_are_located() {
        let text =
            "[boot]\ninit = \"/sbin/init\"\n[bootstate]\nbackend = \"uboot-env\"\ncountr = 1\n";
        // The config alone carries them; the backend check refuses them.
        assert!(Config::parse(text, "t").is_ok());
        match parse(text, "t") {
            Err(ConfigError::Parse {
                line,
                column,
                message,
                ..
            }) => {
                assert_eq!((line, column), (5, 1));
                assert_eq!(message, "[bootstate] countr: unknown field `countr`");
            }
            other => panic!("{other:?}"),
        }
        let text = "[bootstate.uboot-env]\n  counter = \"uboot\"\n";
        match parse(text, "t") {
            Err(ConfigError::Parse {
                line,
                column,
                message,
                ..
            }) => {
                assert_eq!((line, column), (2, 13), "{message}");
                assert!(
                    message.starts_with("[bootstate.uboot-env] counter: unknown variant `uboot`"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        let text = "[bootstate]\nbackend = \"uboot\"\n";
        let err = parse(text, "t").unwrap_err();
        assert_eq!(err.kind(), "config");
        assert_eq!(
            crate::types::error_chain(&err),
            "t:2:11: [bootstate] backend: unknown backend \"uboot\" (one of none, uboot-env, rpi-tryboot, fwu-metadata)"
        );
    }

    /// What `check-config` accepts reads back the same from its TOML (the
    /// config fuzz target's property), in both spellings.
    #[test]
    fn accepted_configs_round_trip() {
        let mut texts: Vec<String> = [
            "rpi-ab-userdata",
            "rpi-uboot-rauc",
            "mapio",
            "generic-ab",
            "mender",
            "stm32mp",
            "uboot-rauc",
        ]
        .iter()
        .map(|n| {
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("configs/{n}.toml")),
            )
            .unwrap()
        })
        .collect();
        texts
            .push("[bootstate]\nbackend = \"uboot-env\"\nfw_env = [\"/dev/x 0 0x4000\"]\ncounter = \"bootloader\"\n".into());
        texts.push(
            "[bootstate]\nbackend = \"none\"\nattempts = 2\n[bootstate.uboot-env]\nattempts = 2\n"
                .into(),
        );
        for text in texts {
            let (c, _) = parse(&text, "t").unwrap();
            let again = toml::to_string(&c).unwrap();
            assert_eq!(parse(&again, "again").unwrap().0, c, "{again}");
        }
    }

    #[test]
    fn deprecated_spelling_is_named_and_both_spellings_must_agree() {
        let (_, checked) = parse(
            "[bootstate]\nbackend = \"uboot-env\"\ncounter = \"bootloader\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(checked.deprecated.len(), 1);
        assert!(
            checked.deprecated[0].contains("counter")
                && checked.deprecated[0].contains("[bootstate.uboot-env]"),
            "{:?}",
            checked.deprecated
        );
        let (_, checked) = parse("[bootstate]\nbackend = \"uboot-env\"\n[bootstate.uboot-env]\ncounter = \"bootloader\"\n", "t").unwrap();
        assert!(checked.deprecated.is_empty());
        let err = parse(
            "[bootstate]\nbackend = \"uboot-env\"\nsize = 0x2000\n[bootstate.uboot-env]\nsize = 0x4000\n",
            "t",
        )
        .unwrap_err();
        let text = crate::types::error_chain(&err);
        assert!(
            text.contains("bootstate.size") && text.contains("bootstate.uboot-env.size"),
            "{text}"
        );
    }

    // Before the table, backend "none" took any value of the U-Boot keys.
    #[test]
    fn backend_none_checks_the_types_of_the_uboot_keys_only() {
        assert!(parse("[bootstate]\nbackend = \"none\"\nsize = 1\n", "t").is_ok());
        assert!(parse("[bootstate]\nbackend = \"none\"\nsize = \"x\"\n", "t").is_err());
        assert!(parse("[bootstate]\nbackend = \"uboot-env\"\nsize = 1\n", "t").is_err());
    }

    #[test]
    fn boot_devices_are_the_fw_env_devices_of_either_spelling() {
        for text in [
            "[bootstate]\nbackend = \"uboot-env\"\nfw_env = [\"# c\", \"/dev/mmcblk0boot1 0x3e0000 0x20000\"]\n",
            "[bootstate]\nbackend = \"uboot-env\"\n[bootstate.uboot-env]\nfw_env = [\"# c\", \"/dev/mmcblk0boot1 0x3e0000 0x20000\"]\n",
        ] {
            assert_eq!(boot_devices(&config(text)), ["/dev/mmcblk0boot1"], "{text}");
        }
    }
}
