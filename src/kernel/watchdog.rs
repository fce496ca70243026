//! The hardware watchdog across the handoff: PID 1 arms `/dev/watchdog`
//! (`boot.watchdog_s`, `slotinit.watchdog=`), feeds it between its stages and
//! inside its waits, and leaves it running into the system (closed without
//! the magic `V`), whose init (systemd's `RuntimeWatchdogSec=`) opens it
//! again and feeds it from then on. A hang anywhere from the arming to the
//! system's first feed is reset by the hardware.
//!
//! Linux's watchdog core (drivers/watchdog/watchdog_dev.c) is modelled here:
//! the open starts the watchdog; `watchdog_release` stops it on close only
//! after a magic `V` or when the driver lacks WDIOF_MAGICCLOSE (then a close
//! always stops it, and nothing can be handed over), and never under
//! nowayout; WDIOC_SETTIMEOUT is EOPNOTSUPP without WDIOF_SETTIMEOUT and the
//! driver may round or clamp the value (bcm2835_wdt: at most 15 s).

use crate::kernel::sys::{Sys, WatchdogInfo};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `WDIOF_*` of include/uapi/linux/watchdog.h.
pub(crate) const WDIOF_CARDRESET: u32 = 0x0020;
pub(crate) const WDIOF_SETTIMEOUT: u32 = 0x0080;
pub(crate) const WDIOF_MAGICCLOSE: u32 = 0x0100;
pub(crate) const WDIOF_KEEPALIVEPING: u32 = 0x8000;

/// Whether the last reset of the machine was the watchdog's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LastReset {
    /// The driver read WDIOF_CARDRESET from the hardware.
    Watchdog,
    /// The driver says it tells (WDIOF_CARDRESET among its options) and the
    /// flag is not set.
    Other,
    /// The driver does not tell: bcm2835_wdt never sets its boot status (the
    /// Pi's reset reason is the firmware's DT `pm_rsts`), and the boot status
    /// could not be read.
    #[default]
    Unknown,
}

impl std::fmt::Display for LastReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LastReset::Watchdog => "the watchdog",
            LastReset::Other => "not the watchdog",
            LastReset::Unknown => "unknown (the driver does not tell)",
        })
    }
}

/// What WDIOC_GETBOOTSTATUS says of the last reset. A set WDIOF_CARDRESET is
/// the driver's word whatever its options say: i6300esb sets it from its
/// hardware's timeout flag (`esb_initdevice`) without listing it in its
/// options. An unset one means "not the watchdog" only from a driver that
/// lists it; from any other it means nothing.
pub(crate) fn last_reset(options: u32, boot_status: Option<u32>) -> LastReset {
    match boot_status {
        Some(s) if s & WDIOF_CARDRESET != 0 => LastReset::Watchdog,
        Some(_) if options & WDIOF_CARDRESET != 0 => LastReset::Other,
        _ => LastReset::Unknown,
    }
}

/// The watchdog, open and running.
#[derive(Debug)]
pub(crate) struct Watchdog {
    file: File,
    pub(crate) device: PathBuf,
    /// The timeout it runs with, seconds, when the driver says.
    pub(crate) timeout_s: Option<u32>,
    pub(crate) info: WatchdogInfo,
    pub(crate) last_reset: LastReset,
}

/// A watchdog armed, and what arming it met that the boot should know.
#[derive(Debug)]
pub(crate) struct Armed {
    pub(crate) watchdog: Watchdog,
    pub(crate) warnings: Vec<String>,
}

/// Why the watchdog could not be armed: the boot goes on without it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchdogError {
    #[error(
        "cannot open the watchdog {}; booting without it (is its driver among \
         the initramfs's modules?)",
        device.display()
    )]
    Open {
        device: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How long the device may take to appear after its driver's module loaded:
/// a driver that probes asynchronously (`PROBE_PREFER_ASYNCHRONOUS`) or
/// defers its probe registers the watchdog, and devtmpfs makes the node,
/// after `finit_module` returned.
pub(crate) const APPEAR_WAIT: Duration = Duration::from_millis(500);
const APPEAR_POLL: Duration = Duration::from_millis(20);

/// Opens `device` (which starts the watchdog), reads what the driver tells
/// (options, boot status), asks for `seconds` and feeds it once. A node
/// that is missing (ENOENT) or has no driver yet (ENODEV) is waited for up
/// to [`APPEAR_WAIT`].
pub(crate) fn arm<S: Sys + ?Sized>(
    sys: &mut S,
    device: &Path,
    seconds: u32,
) -> Result<Armed, WatchdogError> {
    let mut waited = Duration::ZERO;
    let file = loop {
        match sys.watchdog_open(device) {
            Ok(file) => break file,
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV))
                    && waited < APPEAR_WAIT =>
            {
                sys.sleep(APPEAR_POLL);
                waited += APPEAR_POLL;
            }
            Err(source) => {
                return Err(WatchdogError::Open {
                    device: device.to_path_buf(),
                    source,
                })
            }
        }
    };
    let mut warnings = Vec::new();
    let name = device.display();
    let info = sys.watchdog_support(&file).unwrap_or_else(|e| {
        warnings.push(format!("watchdog {name}: WDIOC_GETSUPPORT failed: {e}"));
        WatchdogInfo::default()
    });
    let boot_status = sys.watchdog_boot_status(&file).ok();
    let timeout_s = if info.options & WDIOF_SETTIMEOUT != 0 {
        match sys.watchdog_set_timeout(&file, seconds) {
            Ok(set) if set == seconds => Some(set),
            Ok(set) => {
                warnings.push(format!(
                    "watchdog {name}: asked for {seconds} s, the driver set {set} s"
                ));
                Some(set)
            }
            Err(e) => {
                warnings.push(format!(
                    "watchdog {name}: cannot set {seconds} s ({e}); it keeps the driver's timeout"
                ));
                sys.watchdog_get_timeout(&file).ok()
            }
        }
    } else {
        let current = sys.watchdog_get_timeout(&file).ok();
        let runs = current.map_or("its own timeout".to_string(), |t| format!("{t} s"));
        warnings.push(format!(
            "watchdog {name}: the driver cannot set a timeout (no WDIOF_SETTIMEOUT); \
             it runs with {runs}, not {seconds} s"
        ));
        current
    };
    if info.options & WDIOF_MAGICCLOSE == 0 {
        warnings.push(format!(
            "watchdog {name}: the driver has no magic close, so closing it at the \
             handoff stops it: the system runs unwatched until its init opens it"
        ));
    }
    let watchdog = Watchdog {
        file,
        device: device.to_path_buf(),
        timeout_s,
        last_reset: last_reset(info.options, boot_status),
        info,
    };
    watchdog.feed(sys);
    Ok(Armed { watchdog, warnings })
}

impl Watchdog {
    /// One keepalive; a failure is logged (the next one may pass, and if
    /// none does the hardware resets, which is what it is for).
    pub(crate) fn feed<S: Sys + ?Sized>(&self, sys: &mut S) {
        let by_write = self.info.options & WDIOF_KEEPALIVEPING == 0;
        if let Err(e) = sys.watchdog_keepalive(&self.file, by_write) {
            log::warn!("cannot feed the watchdog {}: {e}", self.device.display());
        }
    }

    /// How long a wait may go without feeding: half the timeout (a second
    /// when the driver does not say), at least 100 ms.
    pub(crate) fn interval(&self) -> Duration {
        let ms = self.timeout_s.map_or(1000, |s| u64::from(s) * 500);
        Duration::from_millis(ms.max(100))
    }

    /// Runs `program` (an fsck) as [`Sys::run`] does, feeding the watchdog
    /// while the program makes progress.
    pub(crate) fn run<S: Sys + ?Sized>(
        &self,
        sys: &mut S,
        program: &str,
        args: &[&std::ffi::OsStr],
    ) -> io::Result<Option<i32>> {
        let by_write = self.info.options & WDIOF_KEEPALIVEPING == 0;
        sys.watchdog_run(program, args, &self.file, by_write, self.interval())
    }

    /// Closes the device without the magic `V`: the watchdog keeps running
    /// into the system (unless the driver has no magic close).
    pub(crate) fn leave_running<S: Sys + ?Sized>(self, sys: &mut S) {
        self.feed(sys);
        if let Err(e) = sys.watchdog_close(self.file, false) {
            log::warn!("closing the watchdog {}: {e}", self.device.display());
        }
    }

    /// Closes the device with the magic `V` (where the driver knows it): the
    /// watchdog stops, unless the kernel or the driver has nowayout.
    pub(crate) fn stop<S: Sys + ?Sized>(self, sys: &mut S) {
        let magic = self.info.options & WDIOF_MAGICCLOSE != 0;
        if let Err(e) = sys.watchdog_close(self.file, magic) {
            log::warn!("stopping the watchdog {}: {e}", self.device.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::Fake;

    #[test]
    fn arming_opens_reads_sets_and_feeds() {
        let mut sys = Fake::default();
        let armed = arm(&mut sys, Path::new("/dev/watchdog"), 12).unwrap();
        assert!(armed.warnings.is_empty(), "{:?}", armed.warnings);
        let w = armed.watchdog;
        assert_eq!(w.timeout_s, Some(12));
        assert_eq!(w.last_reset, LastReset::Unknown);
        assert_eq!(w.interval(), Duration::from_secs(6));
        w.leave_running(&mut sys);
        assert_eq!(
            sys.calls,
            [
                "watchdog-open /dev/watchdog",
                "watchdog-getsupport",
                "watchdog-getbootstatus",
                "watchdog-settimeout 12",
                "watchdog-keepalive ioctl",
                "watchdog-keepalive ioctl",
                "watchdog-close",
            ]
        );
    }

    /// A driver that clamps (bcm2835_wdt: 15 s at most) and one that cannot
    /// set a timeout at all: both run, each with a warning naming the
    /// timeout it really has.
    #[test]
    fn a_timeout_the_driver_does_not_take_is_a_warning() {
        let mut sys = Fake::default();
        sys.watchdog.max_timeout = 15;
        let armed = arm(&mut sys, Path::new("/dev/watchdog"), 60).unwrap();
        assert_eq!(armed.watchdog.timeout_s, Some(15));
        assert!(
            armed.warnings[0].contains("the driver set 15 s"),
            "{:?}",
            armed.warnings
        );

        let mut sys = Fake::default();
        sys.watchdog.info.options &= !WDIOF_SETTIMEOUT;
        sys.watchdog.timeout = 20;
        let armed = arm(&mut sys, Path::new("/dev/watchdog"), 60).unwrap();
        assert_eq!(armed.watchdog.timeout_s, Some(20));
        assert!(
            armed.warnings[0].contains("no WDIOF_SETTIMEOUT"),
            "{:?}",
            armed.warnings
        );
        assert!(
            armed.warnings[0].contains("20 s, not 60 s"),
            "{:?}",
            armed.warnings
        );
        assert!(sys.calls_starting("watchdog-settimeout").is_empty());
        assert_eq!(armed.watchdog.interval(), Duration::from_secs(10));

        // SETTIMEOUT refused (EINVAL: out of the driver's range).
        let mut sys = Fake {
            errno: vec![("watchdog-settimeout".into(), libc::EINVAL)],
            ..Fake::default()
        };
        let armed = arm(&mut sys, Path::new("/dev/watchdog"), 9999).unwrap();
        assert_eq!(armed.watchdog.timeout_s, Some(30), "the driver's default");
        assert!(armed.warnings[0].contains("cannot set 9999 s"));
    }

    #[test]
    fn a_missing_device_is_an_error_naming_it() {
        let mut sys = Fake {
            errno: vec![("watchdog-open".into(), libc::ENOENT)],
            ..Fake::default()
        };
        let e = arm(&mut sys, Path::new("/dev/watchdog1"), 10).unwrap_err();
        assert!(e.to_string().contains("/dev/watchdog1"), "{e}");
        // Waited for, APPEAR_WAIT in polls, then given up.
        let polls = (APPEAR_WAIT.as_millis() / APPEAR_POLL.as_millis()) as usize;
        assert_eq!(sys.calls_starting("watchdog-open").len(), polls + 1);
        assert_eq!(sys.calls_starting("sleep").len(), polls);
        // Any other error is not waited for.
        let mut sys = Fake {
            errno: vec![("watchdog-open".into(), libc::EBUSY)],
            ..Fake::default()
        };
        arm(&mut sys, Path::new("/dev/watchdog"), 10).unwrap_err();
        assert_eq!(sys.calls, ["watchdog-open /dev/watchdog"]);
    }

    /// A driver that registers its device after its module load returned
    /// (asynchronous or deferred probe): the node appears a little later.
    #[test]
    fn a_device_that_appears_late_is_armed() {
        let mut sys = Fake {
            errno_once: vec![
                ("watchdog-open".into(), libc::ENOENT),
                ("watchdog-open".into(), libc::ENODEV),
            ],
            ..Fake::default()
        };
        arm(&mut sys, Path::new("/dev/watchdog"), 10).unwrap();
        assert_eq!(sys.calls_starting("watchdog-open").len(), 3);
        assert_eq!(sys.calls_starting("sleep"), ["sleep 20ms", "sleep 20ms"]);
    }

    /// Without WDIOF_KEEPALIVEPING the core refuses WDIOC_KEEPALIVE: feed by
    /// writing. Without WDIOF_MAGICCLOSE the close stops it: say so.
    #[test]
    fn an_old_driver_is_fed_by_write_and_its_close_stops_it() {
        let mut sys = Fake::default();
        sys.watchdog.info.options = WDIOF_SETTIMEOUT;
        let armed = arm(&mut sys, Path::new("/dev/watchdog"), 10).unwrap();
        assert!(
            armed.warnings[0].contains("no magic close"),
            "{:?}",
            armed.warnings
        );
        armed.watchdog.stop(&mut sys);
        assert_eq!(
            sys.calls_starting("watchdog-keepalive"),
            ["watchdog-keepalive write"]
        );
        assert_eq!(sys.calls_starting("watchdog-close"), ["watchdog-close"]);
        // With a magic close the stop writes it.
        let mut sys = Fake::default();
        arm(&mut sys, Path::new("/dev/watchdog"), 10)
            .unwrap()
            .watchdog
            .stop(&mut sys);
        assert_eq!(
            sys.calls_starting("watchdog-close"),
            ["watchdog-close magic"]
        );
    }

    #[test]
    fn the_last_reset_as_the_driver_tells_it() {
        let cases = [
            // i6300esb: the flag set, not among its options.
            (WDIOF_SETTIMEOUT, Some(WDIOF_CARDRESET), LastReset::Watchdog),
            (WDIOF_SETTIMEOUT, Some(0), LastReset::Unknown),
            (WDIOF_CARDRESET, Some(0), LastReset::Other),
            (WDIOF_CARDRESET, Some(WDIOF_CARDRESET), LastReset::Watchdog),
            (WDIOF_CARDRESET, None, LastReset::Unknown),
        ];
        for (options, status, want) in cases {
            assert_eq!(last_reset(options, status), want, "{options:#x} {status:?}");
        }
        let mut sys = Fake::default();
        sys.watchdog.boot_status = WDIOF_CARDRESET;
        let armed = arm(&mut sys, Path::new("/dev/watchdog"), 10).unwrap();
        assert_eq!(armed.watchdog.last_reset, LastReset::Watchdog);
        let mut sys = Fake {
            fail: vec!["watchdog-getbootstatus".into()],
            ..Fake::default()
        };
        sys.watchdog.info.options |= WDIOF_CARDRESET;
        let armed = arm(&mut sys, Path::new("/dev/watchdog"), 10).unwrap();
        assert_eq!(armed.watchdog.last_reset, LastReset::Unknown);
        assert_eq!(
            serde_json::to_string(&LastReset::Watchdog).unwrap(),
            "\"watchdog\""
        );
        assert_eq!(LastReset::Watchdog.to_string(), "the watchdog");
    }
}
