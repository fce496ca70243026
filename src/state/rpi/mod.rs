//! The Raspberry Pi firmware's boot state (`backend = "rpi-tryboot"`):
//! `autoboot.txt` on bootconfig picks the partition, the one-shot tryboot
//! flag gives the `[tryboot]` partition one boot, the device tree says what
//! the firmware did, and slotinit keeps a trial record that lets a trial be
//! re-armed up to `attempts` times.
//!
//! The firmware's contract, from raspberrypi/documentation
//! (`computers/config_txt/autoboot.adoc` and `conditional.adoc`;
//! `computers/raspberry-pi.adoc` "Fail-safe OS updates (TRYBOOT)";
//! `computers/configuration/device-tree.adoc` "Firmware parameters",
//! `/chosen/bootloader`):
//! - `autoboot.txt` (at most 512 bytes, filters `[all]`, `[none]`,
//!   `[tryboot]`) names the boot partition of a normal boot (`[all]`,
//!   committed partition C) and of a tryboot (`[tryboot]`, trial partition
//!   T); rpi-image-gen's `image/gpt/ab_userdata/pre-image.sh` writes
//!   `[all] tryboot_a_b=1 boot_partition=2 [tryboot] boot_partition=3`;
//! - `reboot "0 tryboot"` sets a flag the firmware clears before it starts
//!   the OS: exactly one boot of T; any reset after it boots C. The firmware
//!   never writes storage, so it counts nothing;
//! - the kernel reads `/proc/device-tree/chosen/bootloader/partition` (the
//!   partition loaded), `tryboot` (1 in a tryboot), `boot-mode` (1 SD/eMMC,
//!   6 NVMe) and `pm_rsts` (the power manager's reset status);
//! - a trial is committed by rewriting `autoboot.txt` with the partitions
//!   swapped (the documentation's "Update Service" flow).
//!
//! What the firmware does with a bad `autoboot.txt` is not written down
//! beyond "optional" and "limited to 512 bytes": without a usable
//! `boot_partition` it boots the default (partition 0: the first bootable
//! FAT partition). slotinit then follows the firmware's word (the device
//! tree), reports the file by name, and never writes it.
//!
//! slotinit's part (this module; the trial record in [`trial`]):
//! - decide: the running slot R is the device tree's partition. A trial
//!   boot of R (tryboot=1 on T) boots R; nothing is written. A normal boot
//!   with a pending trial of S != R re-arms S while fewer than `attempts`
//!   trial boots were armed (the init then calls `boot_next(S)` and reboots
//!   with "0 tryboot"), else gives S up durably with the reason. A slot that
//!   failed in this boot: the other slot (through the firmware).
//! - `boot_next(S)`: the count is taken at arming, so a trial kernel that
//!   never reaches the initramfs still uses a try.
//! - mark-good of the running trial slot: the swap, in place (same length,
//!   no rename, fsync, read back); a torn write of the ≤512-byte file
//!   leaves each of the two values old or new, and every combination names
//!   a slot's boot partition.

pub(crate) mod autoboot;
mod backend;
pub(crate) mod trial;

use crate::config::BootStateConfig;
use crate::state::decision::{DecideCtx, DecideError, Outcome};
use crate::state::{CheckError, Checked, Entry};
use serde::{Deserialize, Serialize};

/// The backend's name and the name of its table in `[bootstate]`.
pub(crate) const NAME: &str = "rpi-tryboot";

/// The registry line.
pub(crate) const BACKEND: Entry = Entry {
    name: NAME,
    legacy_keys: &[],
    check,
    reference,
    open: backend::open,
    unavailable,
    bootloader_decides: |_| true,
    devices: |_| Vec::new(),
    filesystems: |bs| match table(bs) {
        Ok(c) if !c.partition.is_empty() => vec![c.fstype],
        _ => Vec::new(),
    },
    foreign_lock: |_| None,
};

/// `[bootstate.rpi-tryboot]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RpiConfig {
    /// The layout member holding `autoboot.txt` and the trial record ("" =
    /// the directory given is used as it is, nothing mounted).
    pub(crate) partition: String,
    pub(crate) fstype: String,
    /// `autoboot.txt`, relative to that partition's root.
    pub(crate) autoboot: String,
    /// The trial record: a redundant pair of env files.
    pub(crate) trial_files: Vec<String>,
    pub(crate) trial_size: usize,
    /// Trial boots armed for one slot before it is given up.
    pub(crate) attempts: u32,
}

impl Default for RpiConfig {
    fn default() -> Self {
        RpiConfig {
            partition: "bootconfig".into(),
            fstype: "vfat".into(),
            autoboot: "autoboot.txt".into(),
            trial_files: vec![
                "slotinit-trial.env".into(),
                "slotinit-trial-redund.env".into(),
            ],
            trial_size: 0x1000,
            attempts: 3,
        }
    }
}

fn key_error(key: &str, message: String) -> CheckError {
    crate::state::table_key_error(NAME, key, message)
}

/// Reads and checks the table.
pub(crate) fn table(bs: &BootStateConfig) -> Result<RpiConfig, CheckError> {
    let c: RpiConfig = crate::state::read_table(bs, NAME, RpiConfig::reference_table)?;
    if !c.partition.is_empty() && !crate::config::MEMBERS.contains(&c.partition.as_str()) {
        return Err(key_error(
            "partition",
            format!(
                "{:?}: one of {} (or \"\" for the directory as it is)",
                c.partition,
                crate::config::MEMBERS.join(", ")
            ),
        ));
    }
    if c.trial_files.len() != 2 || c.trial_files.iter().any(|f| f.is_empty()) {
        return Err(key_error(
            "trial_files",
            "two file names (a redundant pair)".into(),
        ));
    }
    if !(0x100..=0x10000).contains(&c.trial_size) {
        return Err(key_error(
            "trial_size",
            format!("{:#x}: between 0x100 and 0x10000", c.trial_size),
        ));
    }
    if c.attempts == 0 || c.attempts > 100 {
        return Err(key_error(
            "attempts",
            format!("{}: between 1 and 100", c.attempts),
        ));
    }
    if c.autoboot.is_empty() || c.autoboot.starts_with('/') || c.autoboot.contains("..") {
        return Err(key_error(
            "autoboot",
            format!("{:?}: a path relative to the partition's root", c.autoboot),
        ));
    }
    Ok(c)
}

impl RpiConfig {
    fn reference_table() -> toml::Table {
        match toml::Value::try_from(RpiConfig::default()) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        }
    }
}

fn check(bs: &BootStateConfig) -> Result<Checked, CheckError> {
    table(bs).map(|_| Checked::default())
}

fn reference() -> toml::Table {
    [(
        NAME.to_string(),
        toml::Value::Table(RpiConfig::reference_table()),
    )]
    .into_iter()
    .collect()
}

/// Without the store (bootconfig could not be mounted): the firmware's word
/// (the device-tree slot source), never a slot that failed in this boot.
fn unavailable(_: &BootStateConfig, ctx: &DecideCtx) -> Result<Outcome, DecideError> {
    crate::state::decision::follow_bootloader(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn bs(text: &str) -> BootStateConfig {
        Config::parse(text, "t").unwrap().bootstate
    }

    /// configs/rpi-ab-userdata.toml shows the table's defaults.
    #[test]
    fn shipped_table_is_the_defaults() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/rpi-ab-userdata.toml"
        ));
        let c = Config::parse(text, "rpi-ab-userdata.toml").unwrap();
        assert_eq!(c.bootstate.backend, NAME);
        assert!(c.bootstate.keys.contains_key(NAME));
        assert_eq!(table(&c.bootstate).unwrap(), RpiConfig::default());
    }

    #[test]
    fn table_defaults_and_checks() {
        assert_eq!(table(&bs("")).unwrap(), RpiConfig::default());
        let c = table(&bs("[bootstate.rpi-tryboot]\nattempts = 5\n")).unwrap();
        assert_eq!(c.attempts, 5);
        for (text, key) in [
            ("attempts = 0", "attempts"),
            ("attempts = \"x\"", "attempts"),
            ("trial_files = [\"a\"]", "trial_files"),
            ("trial_size = 0x10", "trial_size"),
            ("autoboot = \"/x\"", "autoboot"),
            ("atempts = 1", "atempts"),
            ("partition = \"boot\"", "partition"),
        ] {
            match table(&bs(&format!("[bootstate.rpi-tryboot]\n{text}\n"))) {
                Err(CheckError::Key(k)) => {
                    assert_eq!(k.key, key, "{text}");
                    assert_eq!(k.table, "bootstate.rpi-tryboot");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
