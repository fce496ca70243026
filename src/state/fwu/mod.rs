//! Arm FWU metadata (`backend = "fwu-metadata"`, Arm DEN0118 "Platform
//! Security Firmware Update for the A-profile Arm Architecture"): the boot
//! state of a device whose first-stage firmware (TF-A BL2 on STM32MP) picks
//! the bank and counts its trials.
//!
//! The firmware's contract (TF-A `drivers/fwu/fwu.c`,
//! `plat/st/common/bl2_io_storage.c` `plat_fwu_get_boot_idx`):
//! - two copies of the metadata on GPT partitions `metadata1` / `metadata2`;
//!   TF-A reads the primary, and the secondary when the primary is not valid;
//! - the active bank (`active_index`) boots. Accepted: the trial counter (a
//!   backup register, `stm32_set_max_fwu_trial_boot_cnt`) is reset to its
//!   maximum. Valid (a trial): the counter is decremented; at 0 TF-A warns
//!   and boots `fwu_get_alternate_boot_bank` (the previous bank when it is
//!   accepted). Invalid: the alternate bank;
//! - ST's U-Boot passes the bank on (`rauc.slot=A|B`); bank 0 is slot A,
//!   bank 1 slot B.
//!
//! slotinit's part (the bytes in [`mdata`], the copies in [`store`]):
//! slotinit never counts (the counter lives in a register Linux cannot
//! read); it follows the firmware (the slot sources' hint), reports a
//! fallback, records what U-Boot's `fwu_boottime_checks` records after one
//! (the active bank invalid, the booted one active), repairs a bad copy,
//! and writes mark-good / mark-bad / mark-active and `boot_next` to both
//! copies, the secondary first.

mod backend;
pub mod mdata;
mod store;

use crate::config::BootStateConfig;
use crate::state::decision::{DecideCtx, DecideError, Outcome};
use crate::state::{CheckError, Checked, Entry};
use serde::{Deserialize, Serialize};

/// The backend's name and the name of its table in `[bootstate]`.
pub(crate) const NAME: &str = "fwu-metadata";

/// The registry line.
pub(crate) const BACKEND: Entry = Entry {
    name: NAME,
    legacy_keys: &[],
    check,
    reference,
    open: backend::open,
    unavailable,
    bootloader_decides: |_| true,
    devices,
    // The metadata are read raw from their partitions.
    filesystems: |_| Vec::new(),
    foreign_lock: |_| None,
};

/// `[bootstate.fwu-metadata]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FwuConfig {
    /// The primary and the secondary copy: GPT partition names on the boot
    /// disk (the disk holding the layout), or absolute paths (a device or
    /// a file, used as they are).
    pub(crate) partitions: Vec<String>,
    /// v1 geometry (v1 has no descriptor): images per bank.
    pub(crate) images: usize,
    /// v1 geometry: banks; bank 0 is slot A, bank 1 slot B.
    pub(crate) banks: usize,
    /// TF-A's trial count (`FWU_MAX_TRIAL_REBOOT`, 3 on STM32MP): what
    /// `status` shows as left of a trial. TF-A counts, not slotinit.
    pub(crate) attempts: u32,
}

impl Default for FwuConfig {
    fn default() -> Self {
        FwuConfig {
            partitions: vec!["metadata1".into(), "metadata2".into()],
            images: 1,
            banks: 2,
            attempts: 3,
        }
    }
}

impl FwuConfig {
    pub(crate) fn geometry(&self) -> mdata::Geometry {
        mdata::Geometry {
            images: self.images,
            banks: self.banks,
        }
    }

    fn reference_table() -> toml::Table {
        match toml::Value::try_from(FwuConfig::default()) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        }
    }
}

fn key_error(key: &str, message: String) -> CheckError {
    crate::state::table_key_error(NAME, key, message)
}

/// Reads and checks the table.
pub(crate) fn table(bs: &BootStateConfig) -> Result<FwuConfig, CheckError> {
    let c: FwuConfig = crate::state::read_table(bs, NAME, FwuConfig::reference_table)?;
    let bad_name =
        |p: &String| p.is_empty() || p.contains('\0') || (!p.starts_with('/') && p.contains('/'));
    if c.partitions.len() != 2 || c.partitions.iter().any(bad_name) {
        return Err(key_error(
            "partitions",
            format!(
                "{:?}: two GPT partition names (primary, secondary) or absolute paths",
                c.partitions
            ),
        ));
    }
    if c.partitions[0] == c.partitions[1] {
        return Err(key_error(
            "partitions",
            format!(
                "{:?} twice: the two copies must be on two partitions",
                c.partitions[0]
            ),
        ));
    }
    if !(2..=mdata::MAX_BANKS).contains(&c.banks) {
        return Err(key_error(
            "banks",
            format!("{}: between 2 and {} (DEN0118)", c.banks, mdata::MAX_BANKS),
        ));
    }
    if c.images == 0 || c.geometry().v1_size() > mdata::CAP {
        return Err(key_error(
            "images",
            format!(
                "{}: at least 1, and a v1 copy of {} banks within {} bytes",
                c.images,
                c.banks,
                mdata::CAP
            ),
        ));
    }
    if c.attempts == 0 || c.attempts > 255 {
        return Err(key_error(
            "attempts",
            format!("{}: between 1 and 255", c.attempts),
        ));
    }
    Ok(c)
}

fn check(bs: &BootStateConfig) -> Result<Checked, CheckError> {
    table(bs).map(|_| Checked::default())
}

fn reference() -> toml::Table {
    [(
        NAME.to_string(),
        toml::Value::Table(FwuConfig::reference_table()),
    )]
    .into_iter()
    .collect()
}

/// The copies given as device paths (they tell the boot disk).
fn devices(bs: &BootStateConfig) -> Vec<String> {
    match table(bs) {
        Ok(c) if bs.backend == NAME => c
            .partitions
            .into_iter()
            .filter(|p| p.starts_with("/dev/"))
            .collect(),
        _ => Vec::new(),
    }
}

/// Without the copies (no partition found): the firmware's word, never a
/// slot that failed in this boot.
fn unavailable(_: &BootStateConfig, ctx: &DecideCtx) -> Result<Outcome, DecideError> {
    crate::state::decision::follow_bootloader(ctx)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
