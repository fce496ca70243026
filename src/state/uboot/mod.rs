//! The U-Boot environment under a variable contract (RAUC's BOOT_ORDER and
//! BOOT_x_LEFT, the article's boot_slot and boot_x_left, Mender's
//! mender_boot_part and upgrade_available): the env format, where its copies
//! live, the store that reads and writes it, the contracts, RAUC's decision
//! over the state they read, and the backend the init and the CLI use.

pub mod article;
mod backend;
pub mod config;
pub mod contract;
pub mod decide;
pub mod envblock;
pub mod envstore;
pub mod fwenv;
pub mod mender;
pub mod rauc;
pub(crate) mod store;
mod vars;

use crate::config::BootStateConfig;
use crate::state::decision::{DecideCtx, DecideError, Line, Outcome};
use crate::state::{CheckError, Checked, Entry};

/// The registry line.
/// libubootenv's writers' lock, the default of `fw_lock`: libubootenv
/// (v0.3.2, Debian bookworm's; `src/uboot_env.c` `libuboot_lock`) opens it
/// `O_WRONLY|O_CREAT|O_TRUNC` and takes a blocking `flock(LOCK_EX)` in
/// `libuboot_open`, before it loads the env, and lets go in `libuboot_close`,
/// after its store; v0.3.7 makes the path configurable, with this default.
/// It ignores a lock it cannot take (no `/var/lock`) and runs unlocked.
pub(crate) const LIBUBOOTENV_LOCK: &str = "/var/lock/fw_printenv.lock";

pub(crate) const BACKEND: Entry = Entry {
    name: config::NAME,
    legacy_keys: config::KEYS,
    check,
    reference: config::UbootEnvConfig::reference,
    open: backend::open,
    unavailable,
    bootloader_decides,
    devices,
    filesystems,
    foreign_lock,
};

/// Checks the keys; their values only where this is the backend (before the
/// table existed, backend "none" took any value).
fn check(bs: &BootStateConfig) -> Result<Checked, CheckError> {
    let parsed = if bs.backend == config::NAME {
        config::UbootEnvConfig::from_bootstate(bs)
    } else {
        config::UbootEnvConfig::read(bs).map(|(parsed, _)| parsed)
    }
    .map_err(check_error)?;
    let deprecated = if parsed.deprecated.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "{} directly in [bootstate]: deprecated, read for one more release; \
             move to [bootstate.{}]",
            parsed.deprecated.join(", "),
            config::NAME
        )]
    };
    Ok(Checked { deprecated })
}

pub(crate) fn check_error(e: config::UbootConfigError) -> CheckError {
    match e {
        config::UbootConfigError::Key(k) => CheckError::Key(k),
        e => CheckError::Backend(Box::new(e)),
    }
}

/// Without the store: RAUC's decision over no state (counter = "init": the
/// default slot; "bootloader": its word), nothing to commit.
fn unavailable(bs: &BootStateConfig, ctx: &DecideCtx) -> Result<Outcome, DecideError> {
    let invalid = |e: Box<dyn std::error::Error + Send + Sync>| DecideError::State(e);
    let (parsed, _) = config::UbootEnvConfig::read(bs).map_err(|e| invalid(Box::new(e)))?;
    let names = parsed
        .config
        .bootnames()
        .map_err(|e| invalid(Box::new(e)))?;
    let rauc = parsed.config.rauc().map_err(|e| invalid(Box::new(e)))?;
    let out = decide::decide(&decide::Inputs {
        override_slot: ctx.override_slot,
        default_slot: ctx.default_slot,
        counter: parsed.config.counter,
        hint: ctx.hint,
        state: None,
        names: &names,
        config: &rauc,
        failed: ctx.failed,
    })?;
    let mut lines: Vec<Line> = out.notes.into_iter().map(Line::Note).collect();
    lines.extend(out.errors.into_iter().map(Line::Problem));
    Ok(Outcome {
        decision: out.decision,
        fallback: out.fallback,
        lines,
    })
}

fn bootloader_decides(bs: &BootStateConfig) -> bool {
    config::UbootEnvConfig::read(bs)
        .is_ok_and(|(p, _)| p.config.counter == config::Counter::Bootloader)
}

/// The devices of the fw_env lines: the bootloader's env lives on the disk
/// it booted from.
/// `fw_lock`: the lock file of libubootenv's writers, or None ("" or a
/// config that does not read).
fn foreign_lock(bs: &BootStateConfig) -> Option<std::path::PathBuf> {
    let (parsed, _) = config::UbootEnvConfig::read(bs).ok()?;
    Some(parsed.config.fw_lock)
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
}

/// The env files' filesystem, unless the env is raw on a device.
fn filesystems(bs: &BootStateConfig) -> Vec<String> {
    match config::UbootEnvConfig::read(bs) {
        Ok((parsed, _))
            if parsed.config.fw_env.is_empty() && parsed.config.raw_offsets.is_empty() =>
        {
            vec![parsed.config.fstype]
        }
        _ => Vec::new(),
    }
}

fn devices(bs: &BootStateConfig) -> Vec<String> {
    let Ok((parsed, _)) = config::UbootEnvConfig::read(bs) else {
        return Vec::new();
    };
    parsed
        .config
        .fw_env
        .iter()
        .filter_map(|line| line.split('#').next()?.split_whitespace().next())
        .map(str::to_string)
        .collect()
}
