//! The stable kinds of the problems slotinit reports, in one place below every
//! stage that reports one (config, state, init, cli). Tests, health checks and
//! the QEMU tests match these strings, never the English, so they never change.
//!
//! Where each reaches:
//! - the handoff (`handoff.json`'s `errors[].kind` and `warnings[].kind`, which
//!   `status --json` repeats in `errors`): every kind down to [`FATAL`], written
//!   by the init's report, some of them by the `kind()` of state/'s errors;
//! - `status --json`'s `store_error_kind` only: [`CONFIG`] and
//!   [`BOOTSTATE_UNAVAILABLE`] (the store cannot be opened, as in the handoff)
//!   and [`BOOTSTATE_NONE`] (backend "none" keeps no store);
//! - nothing yet: the kinds of a mark that wrote nothing
//!   (`state::MarkError::kind`: [`BOOTSTATE_UNUSABLE`], [`BOOTSTATE_WRITE`] and
//!   the three below [`BOOTSTATE_NONE`]). The CLI tells those apart by its exit
//!   status; only the tests read them, so the three of their own build only for
//!   the tests.

// The init's report (handoff errors and warnings).
pub(crate) const CMDLINE: &str = "cmdline";
pub(crate) const CONFIG: &str = "config";
pub(crate) const CONFIG_DEPRECATED: &str = "config-deprecated";
pub(crate) const MODULE: &str = "module-load";
pub(crate) const DEVICE_TIMEOUT: &str = "device-timeout";
pub(crate) const DEVICES: &str = "devices";
pub(crate) const BOOTSTATE_UNUSABLE: &str = "bootstate-unusable";
pub(crate) const BOOTSTATE_UNAVAILABLE: &str = "bootstate-unavailable";
pub(crate) const BOOTSTATE_WRITE: &str = "bootstate-write";
pub(crate) const BOOTSTATE_REPAIR: &str = "bootstate-repair";
pub(crate) const DECISION: &str = "decision";
/// Kernels are per slot and no slot source said which one runs; or the
/// restart that boots the decided slot through the firmware failed.
pub(crate) const SLOT_KERNEL: &str = "slot-kernel";
pub(crate) const OVERRIDE_REFUSED: &str = "override-refused";
pub(crate) const COMMIT: &str = "commit";
pub(crate) const LINK: &str = "link";
pub(crate) const SLOT_UNUSABLE: &str = "slot-unusable";
/// A LUKS2 container did not open (named in the message).
pub(crate) const CRYPT: &str = "crypt";
/// A slot's dm-verity could not be set up, or found corruption.
pub(crate) const VERITY: &str = "verity";
pub(crate) const PERSISTENT_MISSING: &str = "persistent-missing";
pub(crate) const PERSISTENT_FSCK: &str = "persistent-fsck";
pub(crate) const PERSISTENT_MOUNT: &str = "persistent-mount";
pub(crate) const PERSISTENT_READ_ONLY: &str = "persistent-read-only";
pub(crate) const PERSISTENT_REPAIR: &str = "persistent-repair";
pub(crate) const PERSISTENT_STEP: &str = "persistent-step";
pub(crate) const BIND_REPLACED: &str = "bind-replaced";
pub(crate) const MACHINE_ID: &str = "machine-id";
pub(crate) const FALLBACK: &str = "fallback";
/// The watchdog asked for could not be armed as asked (no device, a timeout
/// the driver does not take, no magic close).
pub(crate) const WATCHDOG: &str = "watchdog";
pub(crate) const FATAL: &str = "fatal";

// `status --json` only.
pub(crate) const BOOTSTATE_NONE: &str = "bootstate-none";

// A mark that wrote nothing (tests only, see above).
#[cfg(test)]
pub(crate) const BOOTSTATE_INVALID: &str = "bootstate-invalid";
#[cfg(test)]
pub(crate) const BOOTSTATE_LOCKED: &str = "bootstate-locked";
#[cfg(test)]
pub(crate) const MARK_REFUSED: &str = "mark-refused";

#[cfg(test)]
mod tests {
    use super::*;

    /// The spellings the QEMU tests, health checks and older handoffs match:
    /// a renamed constant is fine, a changed string is not.
    #[test]
    fn every_kind_keeps_its_spelling() {
        let kinds = [
            (CMDLINE, "cmdline"),
            (CONFIG, "config"),
            (CONFIG_DEPRECATED, "config-deprecated"),
            (MODULE, "module-load"),
            (DEVICE_TIMEOUT, "device-timeout"),
            (DEVICES, "devices"),
            (BOOTSTATE_UNUSABLE, "bootstate-unusable"),
            (BOOTSTATE_UNAVAILABLE, "bootstate-unavailable"),
            (BOOTSTATE_WRITE, "bootstate-write"),
            (BOOTSTATE_REPAIR, "bootstate-repair"),
            (DECISION, "decision"),
            (SLOT_KERNEL, "slot-kernel"),
            (OVERRIDE_REFUSED, "override-refused"),
            (COMMIT, "commit"),
            (LINK, "link"),
            (SLOT_UNUSABLE, "slot-unusable"),
            (PERSISTENT_MISSING, "persistent-missing"),
            (PERSISTENT_FSCK, "persistent-fsck"),
            (PERSISTENT_MOUNT, "persistent-mount"),
            (PERSISTENT_READ_ONLY, "persistent-read-only"),
            (PERSISTENT_REPAIR, "persistent-repair"),
            (PERSISTENT_STEP, "persistent-step"),
            (BIND_REPLACED, "bind-replaced"),
            (MACHINE_ID, "machine-id"),
            (FALLBACK, "fallback"),
            (WATCHDOG, "watchdog"),
            (FATAL, "fatal"),
            (BOOTSTATE_NONE, "bootstate-none"),
            (BOOTSTATE_INVALID, "bootstate-invalid"),
            (BOOTSTATE_LOCKED, "bootstate-locked"),
            (MARK_REFUSED, "mark-refused"),
        ];
        for (constant, spelling) in kinds {
            assert_eq!(constant, spelling);
        }
        let mut unique: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), kinds.len(), "two kinds spelled the same");
    }
}
