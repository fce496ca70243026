//! The init's report of a boot: every error and warning is logged to the
//! kernel log and recorded in the handoff in one call, with its kind.

use crate::handoff::{Handoff, Problem};
use std::time::Instant;

/// The stable kinds of the problems a boot records (`handoff.json`'s
/// `errors[].kind` and `warnings[].kind`, `status --json`). Tests and health
/// checks match these, never the English.
///
/// The `cfg(test)` ones are the kinds state/ gives its own errors (their
/// `kind()`): state/ comes before init/ and spells them itself, so here they
/// serve only the test that holds the two spellings together.
pub(super) mod kind {
    pub(crate) const CMDLINE: &str = "cmdline";
    #[cfg(test)]
    pub(crate) const CONFIG: &str = "config";
    pub(crate) const CONFIG_DEPRECATED: &str = "config-deprecated";
    pub(crate) const MODULE: &str = "module-load";
    pub(crate) const DEVICE_TIMEOUT: &str = "device-timeout";
    pub(crate) const DEVICES: &str = "devices";
    pub(crate) const BOOTSTATE_UNUSABLE: &str = "bootstate-unusable";
    #[cfg(test)]
    pub(crate) const BOOTSTATE_UNAVAILABLE: &str = "bootstate-unavailable";
    #[cfg(test)]
    pub(crate) const BOOTSTATE_WRITE: &str = "bootstate-write";
    #[cfg(test)]
    pub(crate) const BOOTSTATE_REPAIR: &str = "bootstate-repair";
    #[cfg(test)]
    pub(crate) const DECISION: &str = "decision";
    pub(crate) const OVERRIDE_REFUSED: &str = "override-refused";
    #[cfg(test)]
    pub(crate) const COMMIT: &str = "commit";
    pub(crate) const LINK: &str = "link";
    pub(crate) const SLOT_UNUSABLE: &str = "slot-unusable";
    pub(crate) const PERSISTENT_MISSING: &str = "persistent-missing";
    pub(crate) const PERSISTENT_FSCK: &str = "persistent-fsck";
    pub(crate) const PERSISTENT_MOUNT: &str = "persistent-mount";
    pub(crate) const PERSISTENT_READ_ONLY: &str = "persistent-read-only";
    pub(crate) const PERSISTENT_REPAIR: &str = "persistent-repair";
    pub(crate) const PERSISTENT_STEP: &str = "persistent-step";
    pub(crate) const BIND_REPLACED: &str = "bind-replaced";
    pub(crate) const MACHINE_ID: &str = "machine-id";
    pub(crate) const FALLBACK: &str = "fallback";
    pub(crate) const FATAL: &str = "fatal";
}

/// The handoff being filled and the stage clock.
pub(super) struct Report {
    pub(super) handoff: Handoff,
    start: Instant,
    last: Instant,
}

impl Default for Report {
    fn default() -> Self {
        Report::new()
    }
}

impl Report {
    pub(super) fn new() -> Self {
        let now = Instant::now();
        Report {
            handoff: Handoff::new(),
            start: now,
            last: now,
        }
    }

    /// Logs an error and records it.
    pub(super) fn error(&mut self, kind: &str, message: impl Into<String>) {
        let problem = Problem::new(kind, message);
        log::error!("{}", problem.message);
        self.handoff.errors.push(problem);
    }

    /// Logs a warning and records it.
    pub(super) fn warn(&mut self, kind: &str, message: impl Into<String>) {
        let problem = Problem::new(kind, message);
        log::warn!("{}", problem.message);
        self.handoff.warnings.push(problem);
    }

    /// Records an error the stage that met it has logged already.
    pub(super) fn record_error(&mut self, kind: &str, message: impl Into<String>) {
        self.handoff.errors.push(Problem::new(kind, message));
    }

    /// Ends a stage: logs and records how long it took since the last one.
    pub(super) fn stage(&mut self, name: &str) {
        let now = Instant::now();
        let us = now.duration_since(self.last).as_micros() as u64;
        self.last = now;
        log::info!("{name}: {us} us");
        self.handoff.timings_us.push((name.to_string(), us));
    }

    pub(super) fn total_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// The kinds recorded so far, errors then warnings (for tests).
    #[cfg(test)]
    pub(super) fn kinds(&self) -> Vec<&str> {
        let h = &self.handoff;
        h.errors
            .iter()
            .chain(&h.warnings)
            .map(|p| p.kind.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_warnings_are_recorded_with_their_kind() {
        let mut r = Report::new();
        r.error(kind::PERSISTENT_MISSING, "no persistent partition");
        r.warn(kind::LINK, "cannot create /dev/disk/by-slot/active");
        assert_eq!(
            r.handoff.errors,
            vec![Problem::new(
                "persistent-missing",
                "no persistent partition"
            )]
        );
        assert_eq!(r.handoff.warnings[0].kind, "link");
        assert_eq!(r.kinds(), ["persistent-missing", "link"]);
    }

    #[test]
    fn stages_are_timed_in_order() {
        let mut r = Report::new();
        r.stage("setup");
        r.stage("devices");
        let names: Vec<_> = r
            .handoff
            .timings_us
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(names, ["setup", "devices"]);
    }
}
