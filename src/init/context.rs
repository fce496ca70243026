//! The boot context: what PID 1's stages read and fill, passed from one stage
//! to the next with the kernel ([`Sys`]) they all go through.

use super::report::Report;
use crate::config::Config;
use crate::disk::devices::Resolved;
use crate::kernel::cmdline::{BootArgs, Cmdline};
use crate::kernel::sys::Sys;
use crate::kernel::watchdog::Watchdog;
use crate::mount::plan::Roots;

/// One boot. `S` is [`crate::kernel::sys::Real`] in PID 1 and the recording
/// fake in the stage tests.
pub(super) struct Boot<'s, S: Sys + ?Sized> {
    pub(super) sys: &'s mut S,
    pub(super) report: Report,
    pub(super) cmdline: Cmdline,
    pub(super) args: BootArgs,
    /// The built-in defaults until the setup stage has loaded the config.
    pub(super) config: Config,
    pub(super) roots: Roots,
    /// The layout's members as found by the devices stage.
    pub(super) resolved: Resolved,
    /// The hardware watchdog while PID 1 holds it open (`init::watchdog`).
    pub(super) watchdog: Option<Watchdog>,
}

impl<'s, S: Sys + ?Sized> Boot<'s, S> {
    pub(super) fn new(sys: &'s mut S) -> Self {
        Boot {
            sys,
            report: Report::new(),
            cmdline: Cmdline::default(),
            args: BootArgs::default(),
            config: Config::default(),
            roots: Roots::default(),
            resolved: Resolved::default(),
            watchdog: None,
        }
    }

    /// Ends a stage: feeds the watchdog, if one is armed, then logs and
    /// records how long the stage took (the keepalive included).
    pub(super) fn stage(&mut self, name: &str) {
        if let Some(w) = &self.watchdog {
            w.feed(self.sys);
        }
        self.report.stage(name);
    }

    /// The system's init: `init=` on the cmdline, else the config's.
    pub(super) fn init_path(&self) -> String {
        self.args
            .init
            .clone()
            .unwrap_or_else(|| self.config.boot.init.clone())
    }
}
