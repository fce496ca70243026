//! The boot state: what the firmware booted, trial or committed, this boot's
//! decision, the commit, mark-good / bad / active, and what `status` shows,
//! behind one trait ([`Backend`]). Each backend is a module with its config
//! table (`[bootstate.<name>]`), and one line in [`BACKENDS`].
//!
//! The U-Boot env with RAUC's contract (`uboot`) is the first. The trait
//! assumes no counters: a backend whose firmware picks the slot (Raspberry
//! Pi tryboot, Arm FWU metadata) answers `decide` from what the firmware
//! says and its own trial flag, and `mark` from its own metadata.

pub mod decision;
pub mod uboot;

use crate::config::{BootStateConfig, Config, ConfigError, BACKEND_NONE};
use crate::disk::devices::Resolved;
use crate::types::Slot;
use decision::{DecideCtx, DecideError, Outcome};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The backends, by the name `[bootstate] backend` gives: a new backend is a
/// module and a line here.
pub const BACKENDS: &[Entry] = &[uboot::BACKEND];

/// One backend: its name (also the name of its table in `[bootstate]`), its
/// config check and how it opens.
pub struct Entry {
    pub name: &'static str,
    /// Keys it read directly in `[bootstate]` before it had a table (read
    /// for one release, with a warning); empty for a new backend.
    pub legacy_keys: &'static [&'static str],
    /// Reads and checks the backend's keys of `[bootstate]`.
    pub check: fn(&BootStateConfig) -> Result<Checked, CheckError>,
    /// Every key the backend's keys may be (for the lenient parse).
    pub reference: fn() -> toml::Table,
    /// Opens the store. `resolved` are the layout's partitions; `mount_dir`
    /// is where a backend may mount one.
    pub open: OpenFn,
}

/// How a backend opens: the config, the layout's partitions, a directory to
/// mount on.
pub type OpenFn = fn(&Config, &Resolved, &Path) -> Result<Box<dyn Backend>, OpenError>;

/// What a boot-state backend does, for the init's state stage and the CLI.
pub trait Backend {
    fn name(&self) -> &'static str;
    /// Where the state lives, its health and error, and per-slot state: the
    /// handoff's `bootstate` and `status`'s `store`.
    fn record(&self) -> Record;
    /// This boot's slot, committed durably before it returns where the
    /// backend counts; a write that fails never lets a trial boot uncounted
    /// when another slot is known good.
    fn decide(&mut self, ctx: &DecideCtx) -> Result<Outcome, DecideError>;
    /// True when the bootloader (or firmware) picks the slot and the
    /// decision follows its word (the slot sources are then logged).
    fn bootloader_decides(&self) -> bool;
    /// `commit = "on-mount"`: the slot mounted and has an init. Ok(false):
    /// nothing to commit (no usable state).
    fn commit_good(&mut self, slot: Slot) -> Result<bool, CommitError>;
    /// `mark-good`, `mark-bad`, `mark-active`: the line to print.
    fn mark(&mut self, how: Mark, slot: Slot, force: bool) -> Result<String, MarkError>;
    /// Trial or committed, and what is left of the trial, for `status`.
    fn status(&self, booted: Option<Slot>) -> BootStatus;
    /// Undoes what open did (a mount).
    fn close(self: Box<Self>);
}

/// The store's state as recorded in the handoff and shown by `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub location: String,
    pub health: String,
    pub error: Option<String>,
    /// The slots in the order they are tried (U-Boot: BOOT_ORDER).
    pub order: Vec<String>,
    /// What is left of each slot's trial (U-Boot: BOOT_x_LEFT).
    pub left: Vec<(String, u32)>,
    pub last_fallback: Option<String>,
}

/// `status`: the booted slot's boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootStatus {
    /// "trial", "committed", or "unknown".
    pub boot: &'static str,
    pub attempts_left: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Good,
    Bad,
    Active,
}

impl Mark {
    pub fn verb(self) -> &'static str {
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
pub struct KeyError {
    /// `bootstate` or `bootstate.<backend>`.
    pub table: String,
    pub key: String,
    /// The value is wrong (else the key is unknown).
    pub in_value: bool,
    pub message: String,
}

/// `[bootstate]` as a backend reads it, when usable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Deprecated spellings used: each a "config-deprecated" warning.
    pub deprecated: Vec<String>,
}

/// A `[bootstate]` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("bootstate.backend: unknown backend {name:?} (one of {known})")]
    UnknownBackend { name: String, known: String },
    #[error(transparent)]
    Key(KeyError),
    /// The backend's own check; its message says the key.
    #[error("{0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl CheckError {
    pub fn kind(&self) -> &'static str {
        "config"
    }
}

/// The store cannot be opened; the boot goes on without it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] CheckError),
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl OpenError {
    pub fn kind(&self) -> &'static str {
        match self {
            OpenError::Config(e) => e.kind(),
            OpenError::Backend(_) => "bootstate-unavailable",
        }
    }
}

/// The commit on mount failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot commit slot {slot}: {message}")]
pub struct CommitError {
    pub slot: Slot,
    pub message: String,
}

impl CommitError {
    pub fn kind(&self) -> &'static str {
        "commit"
    }
}

/// Why a mark wrote nothing (or failed writing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkError {
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
    pub fn kind(&self) -> &'static str {
        match self {
            MarkError::Unusable(_) => "bootstate-unusable",
            MarkError::Invalid(_) => "bootstate-invalid",
            MarkError::Locked(_) => "bootstate-locked",
            MarkError::Refused(_) => "mark-refused",
            MarkError::Write(_) => "bootstate-write",
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
pub fn check(config: &Config) -> Result<Checked, CheckError> {
    check_with(BACKENDS, &config.bootstate)
}

pub fn check_with(backends: &[Entry], bs: &BootStateConfig) -> Result<Checked, CheckError> {
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
    if bs.backend != BACKEND_NONE && bs.backend != uboot::config::NAME {
        checked
            .deprecated
            .extend((entry(backends, &bs.backend)?.check)(bs)?.deprecated);
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
pub fn load(path: &Path) -> Result<(Config, Checked), ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let config = Config::default();
            let checked = check(&config).map_err(|e| located(e, "", "defaults"))?;
            Ok((config, checked))
        }
        Err(source) => Err(ConfigError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// [`Config::parse_lenient`] knowing every backend's keys.
pub fn parse_lenient(text: &str, path: &str) -> Result<(Config, Vec<String>), ConfigError> {
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
        e => ConfigError::Backend {
            path: path.into(),
            error: Box::new(e),
        },
    }
}

/// Opens the configured backend; None for backend "none".
pub fn open(
    config: &Config,
    resolved: &Resolved,
    mount_dir: &Path,
) -> Result<Option<Box<dyn Backend>>, OpenError> {
    open_with(BACKENDS, config, resolved, mount_dir)
}

pub fn open_with(
    backends: &[Entry],
    config: &Config,
    resolved: &Resolved,
    mount_dir: &Path,
) -> Result<Option<Box<dyn Backend>>, OpenError> {
    check_with(backends, &config.bootstate)?;
    if config.bootstate.backend == BACKEND_NONE {
        return Ok(None);
    }
    let entry = entry(backends, &config.bootstate.backend)?;
    (entry.open)(config, resolved, mount_dir).map(Some)
}

/// How the bootloader names the slots on the cmdline, for the `rauc` slot
/// source and the CLI's slot argument: RAUC's bootnames and cmdline key
/// (`[bootstate.uboot-env]`, read whatever the backend).
pub fn slot_names(config: &Config) -> Result<(uboot::rauc::Bootnames, String), CheckError> {
    let parsed = uboot::config::UbootEnvConfig::from_bootstate(&config.bootstate)
        .map_err(uboot::check_error)?;
    let names = parsed
        .config
        .bootnames()
        .map_err(|e| CheckError::Backend(Box::new(e)))?;
    Ok((names, parsed.config.cmdline_key))
}
