//! The init's report of a boot: every error and warning is logged to the
//! kernel log and recorded in the handoff in one call, with its kind.

use crate::handoff::{Handoff, Problem};
use std::time::Instant;

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
    use crate::kind;

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
