//! The userspace subcommands of the booted system: `status`, `mark-good`,
//! `mark-bad`, `mark-active`, `check-config`. They read the config and handoff
//! the init left under /run/slotinit and change the boot state with RAUC's
//! semantics, never partially.

pub(crate) mod initramfs;
pub(crate) mod mount_units;
pub(crate) mod rauc;
pub(crate) mod udev;

use crate::config::{Config, BACKEND_NONE};
use crate::handoff::Handoff;
use crate::kernel::sys::{Real, Sys};
use crate::kind;
use crate::paths::{CONFIG_PATH, HANDOFF_PATH, RUN_CONFIG, STATE_MOUNT};
use crate::state::{self, Backend, Mark, MarkError, Record};
use crate::types::{error_chain, Slot};
use serde::Serialize;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub(crate) const USAGE: &str = "usage: slotinit [--config FILE] [--handoff FILE] <command>
  status [--json]          the booted slot, trial or committed, attempts left,
                           the last fallback and why, the boot-state store's health
  mark-good [SLOT]         commit a trial: attempts back to boot-attempts (default: booted slot)
  mark-bad [SLOT]          attempts 0 and out of BOOT_ORDER (default: booted slot)
  mark-active SLOT         first in BOOT_ORDER with boot-attempts-primary attempts
                           (Raspberry Pi tryboot: arms a trial of SLOT)
  SLOT                     a, b, a bootname, or `other` (the slot not booted)
  check-config FILE        validate a config as the init would
  initramfs-needs FILE     what an initramfs for this config must carry: the kernel
                           modules its boot loads, the programs it runs (initramfs/build)
  udev-links DEVNAME [--handoff FILE] [--sys DIR]
                           the /dev/disk/by-slot names of a partition (for the udev rule)
  mount-units DIR [EARLY LATE]
                           systemd generator: a .mount unit in DIR for each mount slotinit made
                           (from the handoff; none when slotinit did not boot this system)
  rauc-backend REQUEST     RAUC's custom bootloader backend: get-primary, get-state B,
                           set-primary B, set-state B good|bad, get-current (B: a bootname)
  --force                  (mark-*) write a fresh state over a store whose copies are all corrupt;
                           (mark-bad) mark it even if no slot would have attempts left
  --reboot                 (mark-active, mark-bad) then restart into the slot that boots next,
                           through the firmware (Raspberry Pi: reboot \"0 tryboot\" for a trial);
                           systemctl reboot under systemd
exit codes: 0 ok, 1 error (status: the boot state cannot be read), 2 usage,
  3 boot state corrupt or invalid, 4 store locked,
  5 refused: the mark would leave no slot with attempts left (nothing written)
(run as PID 1, slotinit boots the system)";

/// Exit statuses scripts can tell apart.
const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_CORRUPT: u8 = 3;
const EXIT_LOCKED: u8 = 4;
const EXIT_REFUSED: u8 = 5;

struct Options {
    config: Option<PathBuf>,
    handoff: PathBuf,
    json: bool,
    force: bool,
    reboot: bool,
    words: Vec<String>,
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("slotinit: {message}");
    ExitCode::from(code)
}

pub fn main(args: Vec<String>) -> ExitCode {
    if args.first().is_some_and(|a| a == "udev-links") {
        return crate::cli::udev::udev_main(args.into_iter().skip(1).collect());
    }
    let mut opts = Options {
        config: None,
        handoff: PathBuf::from(HANDOFF_PATH),
        json: false,
        force: false,
        reboot: false,
        words: Vec::new(),
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => opts.json = true,
            "--force" => opts.force = true,
            "--reboot" => opts.reboot = true,
            "--config" | "--handoff" => {
                let Some(value) = it.next() else {
                    return fail(EXIT_USAGE, format!("{arg} needs a file\n{USAGE}"));
                };
                if arg == "--config" {
                    opts.config = Some(value.into());
                } else {
                    opts.handoff = value.into();
                }
            }
            "-h" | "--help" | "help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if arg.starts_with("--") => {
                return fail(EXIT_USAGE, format!("unknown option {arg:?}\n{USAGE}"))
            }
            _ => opts.words.push(arg),
        }
    }
    let words: Vec<&str> = opts.words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["status"] => status(&opts),
        ["mark-good"] => mark(&opts, Mark::Good, None),
        ["mark-good", slot] => mark(&opts, Mark::Good, Some(slot)),
        ["mark-bad"] => mark(&opts, Mark::Bad, None),
        ["mark-bad", slot] => mark(&opts, Mark::Bad, Some(slot)),
        ["mark-active", slot] => mark(&opts, Mark::Active, Some(slot)),
        ["check-config", file] => check_config(file),
        ["initramfs-needs", file] => initramfs_needs(file),
        ["mount-units", dir, ..] => mount_units(&opts, dir),
        ["rauc-backend", rest @ ..] => rauc::main(&opts, rest),
        _ => fail(EXIT_USAGE, USAGE),
    }
}

/// Reads and checks the config file a build-time subcommand names.
fn read_checked(file: &str) -> Result<(Config, state::Checked), ExitCode> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| fail(EXIT_ERROR, format!("cannot read {file}: {e}")))?;
    state::parse(&text, file).map_err(|e| fail(EXIT_ERROR, error_chain(&e)))
}

fn check_config(file: &str) -> ExitCode {
    match read_checked(file) {
        Ok((_, checked)) => {
            for warning in &checked.deprecated {
                eprintln!("slotinit: {file}: warning: {warning}");
            }
            println!("{file}: ok");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn initramfs_needs(file: &str) -> ExitCode {
    match read_checked(file) {
        Ok((config, _)) => {
            println!("# what {file} needs in the initramfs (slotinit initramfs-needs)");
            for need in initramfs::needs(&config) {
                println!("{need}");
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The config the init used (/run/slotinit), else the system's, else defaults.
/// The init's copy is read leniently: it may come from a newer release.
fn load_config(opts: &Options) -> Result<Config, String> {
    if opts.config.is_none() {
        if let Ok(text) = std::fs::read_to_string(RUN_CONFIG) {
            let (config, dropped) =
                state::parse_lenient(&text, RUN_CONFIG).map_err(|e| error_chain(&e))?;
            if !dropped.is_empty() {
                eprintln!(
                    "slotinit: {RUN_CONFIG}: ignoring keys this release does not know: {}",
                    dropped.join(", ")
                );
            }
            return Ok(config);
        }
    }
    let path = opts
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(CONFIG_PATH));
    state::load(&mut Real, &path)
        .map(|(config, _)| config)
        .map_err(|e| error_chain(&e))
}

/// The systemd generator's run: no handoff, no units (not booted by slotinit).
fn mount_units(opts: &Options, dir: &str) -> ExitCode {
    let dir = Path::new(dir);
    if !dir.is_dir() {
        return fail(
            EXIT_USAGE,
            format!("mount-units: {} is not a directory", dir.display()),
        );
    }
    let handoff = match Handoff::load(&opts.handoff) {
        Ok(h) => h,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ExitCode::SUCCESS,
        Err(e) => return fail(EXIT_ERROR, format!("mount-units: {e}")),
    };
    for problem in mount_units::write(&handoff, dir) {
        eprintln!("slotinit mount-units: {problem}");
    }
    ExitCode::SUCCESS
}

fn load_handoff(opts: &Options) -> Option<Handoff> {
    Handoff::load(&opts.handoff).ok()
}

/// The kind `status --json` gives a store that backend "none" does not keep.
const KIND_NO_STORE: &str = kind::BOOTSTATE_NONE;

/// The open backend, or the kind and message of why not.
fn open_store(
    config: &Config,
    handoff: Option<&Handoff>,
) -> Result<Box<dyn Backend>, (&'static str, String)> {
    let devices = handoff.map(|h| h.devices.clone()).unwrap_or_default();
    match state::open(&mut Real, config, &devices, Path::new(STATE_MOUNT)) {
        Ok(Some(store)) => Ok(store),
        Ok(None) => Err((
            KIND_NO_STORE,
            "boot state: backend is \"none\" in the config".into(),
        )),
        Err(e) => Err((e.kind(), error_chain(&e))),
    }
}

/// How long a subcommand that writes waits for a foreign writer's lock:
/// `fw_setenv` holds libubootenv's for one load and store (milliseconds).
const FOREIGN_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Takes the store's foreign writers' lock ([`state::foreign_lock`]: for the
/// U-Boot env, libubootenv's, which `fw_setenv`, RAUC's `uboot` backend and
/// SWUpdate hold from their load to their store) and holds it until the
/// returned file is dropped, so that neither a mark nor their write is lost
/// between the other's load and store. Waits up to [`FOREIGN_LOCK_WAIT`].
/// None when there is none to take: no lock configured, or its directory
/// missing (libubootenv then runs unlocked too; a note on stderr).
fn hold_foreign_lock(config: &Config) -> Result<Option<std::fs::File>, String> {
    let Some(path) = state::foreign_lock(config) else {
        return Ok(None);
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true);
    let file = match Real.open(&path, &options) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "slotinit: not holding {} (libubootenv's writers' lock): {e}",
                path.display()
            );
            return Ok(None);
        }
    };
    let start = Instant::now();
    loop {
        match Real.flock_exclusive(&file) {
            Ok(()) => return Ok(Some(file)),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                if start.elapsed() >= FOREIGN_LOCK_WAIT {
                    return Err(format!(
                        "{} is held by another writer of the boot state (fw_setenv, RAUC, \
                         SWUpdate?) for more than {} s: nothing written",
                        path.display(),
                        FOREIGN_LOCK_WAIT.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                eprintln!("slotinit: not holding {}: {e}", path.display());
                return Ok(None);
            }
        }
    }
}

/// The exit status of a mark that wrote nothing.
fn mark_exit(e: &MarkError) -> u8 {
    match e {
        MarkError::Unusable(_) | MarkError::Invalid(_) => EXIT_CORRUPT,
        MarkError::Locked(_) => EXIT_LOCKED,
        MarkError::Refused(_) => EXIT_REFUSED,
        MarkError::Write(_) => EXIT_ERROR,
    }
}

fn mark(opts: &Options, how: Mark, slot_arg: Option<&str>) -> ExitCode {
    let config = match load_config(opts) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    let names = match state::slot_names(&config) {
        Ok((names, _)) => names,
        Err(e) => return fail(EXIT_ERROR, format!("bootstate config: {e}")),
    };
    let handoff = load_handoff(opts);
    let booted = handoff.as_ref().and_then(|h| h.slot);
    if opts.reboot && how == Mark::Good {
        return fail(EXIT_USAGE, "--reboot goes with mark-active or mark-bad");
    }
    let slot = match slot_arg {
        Some("other") => match booted {
            Some(s) => s.other(),
            None => {
                return fail(
                    EXIT_USAGE,
                    format!(
                        "no booted slot known ({} unreadable): name the slot, not `other`",
                        opts.handoff.display()
                    ),
                )
            }
        },
        Some(text) => match names.slot(text) {
            Some(s) => s,
            None => {
                return fail(
                    EXIT_USAGE,
                    format!(
                        "unknown slot {text:?}: expected a, b, {}, or {}",
                        names.a, names.b
                    ),
                )
            }
        },
        None => match booted {
            Some(s) => s,
            None => {
                return fail(
                    EXIT_USAGE,
                    format!(
                        "no booted slot known ({} unreadable): name the slot",
                        opts.handoff.display()
                    ),
                )
            }
        },
    };
    let lock = match hold_foreign_lock(&config) {
        Ok(lock) => lock,
        Err(e) => return fail(EXIT_LOCKED, e),
    };
    let mut store = match open_store(&config, handoff.as_ref()) {
        Ok(s) => s,
        Err((_, e)) => return fail(EXIT_ERROR, e),
    };
    let result = store.mark(&mut Real, how, slot, opts.force);
    // What boots next: the marked-active slot, or the other one of a slot
    // marked bad; the backend writes what makes the firmware choose it.
    let next = match how {
        Mark::Bad => slot.other(),
        _ => slot,
    };
    let restart = match &result {
        Ok(_) if opts.reboot => Some(store.boot_next(&mut Real, next)),
        _ => None,
    };
    store.close(&mut Real);
    drop(lock);
    let message = match result {
        Ok(message) => message,
        Err(e) => return fail(mark_exit(&e), e),
    };
    println!("{message}");
    match restart {
        None => ExitCode::SUCCESS,
        Some(Err(e)) => fail(mark_exit(&e), format!("not restarting: {e}")),
        Some(Ok(arg)) => restart_system(&mut Real, arg.as_deref()),
    }
}

/// Restarts the booted system with `arg` for the firmware: `systemctl
/// reboot ARG` under systemd (an orderly shutdown that passes ARG to
/// reboot(2)), else sync and reboot(2) directly.
fn restart_system(sys: &mut dyn Sys, arg: Option<&str>) -> ExitCode {
    println!(
        "restarting{}",
        arg.map_or(String::new(), |a| format!(" with {a:?}"))
    );
    if sys.is_dir(Path::new("/run/systemd/system")) {
        let mut args: Vec<&OsStr> = vec![OsStr::new("reboot")];
        args.extend(arg.map(OsStr::new));
        return match sys.run("systemctl", &args) {
            Ok(Some(0)) => ExitCode::SUCCESS,
            other => fail(EXIT_ERROR, format!("systemctl reboot: {other:?}")),
        };
    }
    let e = match arg.map(std::ffi::CString::new) {
        Some(Ok(a)) => sys.restart(&a),
        Some(Err(_)) => return fail(EXIT_ERROR, "restart argument holds a NUL byte"),
        None => sys.reboot(),
    };
    fail(EXIT_ERROR, format!("reboot: {e}"))
}

/// `status --json`.
#[derive(Debug, Serialize)]
struct Status {
    booted_slot: Option<Slot>,
    source: Option<String>,
    /// "trial" (attempts counting down), "committed", or "unknown".
    boot: String,
    attempts_left: Option<u32>,
    store: Option<Record>,
    store_error: Option<String>,
    /// The stable kind of `store_error`.
    store_error_kind: Option<String>,
    last_fallback: Option<String>,
    persistent_degraded: Option<bool>,
    errors: Vec<crate::handoff::Problem>,
    /// The hardware watchdog as the init left it, and whether the reset
    /// before this boot was its doing (`last_reset`: "watchdog", "other" or
    /// "unknown" when the driver does not tell); null when it was off.
    watchdog: Option<crate::handoff::WatchdogRecord>,
}

fn status(opts: &Options) -> ExitCode {
    let config = match load_config(opts) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    let handoff = load_handoff(opts);
    let slot = handoff.as_ref().and_then(|h| h.slot);
    let (store, boot, store_error) = match open_store(&config, handoff.as_ref()) {
        Ok(store) => {
            let record = store.record();
            let boot = store.status(slot);
            store.close(&mut Real);
            (Some(record), Some(boot), None)
        }
        Err(e) => (None, None, Some(e)),
    };
    let attempts_left = boot.as_ref().and_then(|b| b.attempts_left);
    let boot = boot.map_or("unknown", |b| b.boot);
    let status = Status {
        booted_slot: slot,
        source: handoff
            .as_ref()
            .and_then(|h| h.decision.as_ref())
            .map(|d| format!("{:?}", d.source).to_lowercase()),
        boot: boot.into(),
        attempts_left,
        last_fallback: handoff
            .as_ref()
            .and_then(|h| h.fallback.clone())
            .or_else(|| store.as_ref().and_then(|r| r.last_fallback.clone())),
        store,
        store_error_kind: store_error.as_ref().map(|(k, _)| k.to_string()),
        store_error: store_error.map(|(_, e)| e),
        persistent_degraded: handoff.as_ref().map(|h| h.persistent_degraded),
        errors: handoff
            .as_ref()
            .map(|h| h.errors.clone())
            .unwrap_or_default(),
        watchdog: handoff.as_ref().and_then(|h| h.watchdog.clone()),
    };
    // Backend "none" has no store to read: that is the config, not a fault.
    let unreadable = status
        .store_error
        .as_ref()
        .filter(|_| config.bootstate.backend != BACKEND_NONE);
    if opts.json {
        match serde_json::to_string_pretty(&status) {
            Ok(text) => println!("{text}"),
            Err(e) => return fail(EXIT_ERROR, e),
        }
    } else {
        print_status(&status, unreadable.is_some());
    }
    let corrupt = status.store.as_ref().is_some_and(|r| r.error.is_some());
    if corrupt {
        ExitCode::from(EXIT_CORRUPT)
    } else if let Some(e) = unreadable {
        let why = e.strip_prefix("boot state: ").unwrap_or(e);
        fail(EXIT_ERROR, format!("the boot state cannot be read: {why}"))
    } else {
        ExitCode::SUCCESS
    }
}

fn print_status(s: &Status, unreadable: bool) {
    let slot = s
        .booted_slot
        .map_or("unknown".to_string(), |x| x.to_string());
    println!(
        "booted slot:   {slot} ({})",
        s.source.as_deref().unwrap_or("no handoff record")
    );
    match s.attempts_left {
        Some(l) => println!("boot:          {} ({l} attempts left)", s.boot),
        None => println!("boot:          {}", s.boot),
    }
    if let Some(r) = &s.store {
        println!("boot state:    {} ({})", r.location, r.health);
        if let Some(e) = &r.error {
            println!(
                "  CORRUPT:     {e}; slotinit will not write it until `mark-active <slot> --force`"
            );
        }
        println!("  BOOT_ORDER:  {}", r.order.join(" "));
        for (name, left) in &r.left {
            println!("  {name}: {left} attempts left");
        }
    }
    if let Some(e) = &s.store_error {
        let what = if unreadable { "UNREADABLE: " } else { "" };
        println!("boot state:    {what}{e}");
    }
    if let Some(f) = &s.last_fallback {
        println!("last fallback: {f}");
    }
    if s.persistent_degraded == Some(true) {
        println!("persistent:    UNAVAILABLE (tmpfs /var)");
    }
    if let Some(w) = &s.watchdog {
        println!("watchdog:      {}", watchdog_line(w));
    }
    for e in &s.errors {
        println!("boot error:    {e}");
    }
}

/// The watchdog in one line of `status`.
fn watchdog_line(w: &crate::handoff::WatchdogRecord) -> String {
    use crate::kernel::watchdog::LastReset;
    if let Some(e) = &w.error {
        return format!("NOT ARMED ({} s asked): {e}", w.requested_s);
    }
    let identity = w
        .identity
        .as_deref()
        .map_or(String::new(), |i| format!(" ({i})"));
    let timeout = w
        .timeout_s
        .map_or("driver's timeout".into(), |t| format!("{t} s"));
    let state = if w.running {
        "left running for the system"
    } else {
        "stopped"
    };
    let reset = match w.last_reset {
        LastReset::Watchdog => "the last reset WAS the watchdog's",
        LastReset::Other => "the last reset was not the watchdog's",
        LastReset::Unknown => {
            "whether it reset the last boot is unknown (the driver does not tell)"
        }
    };
    format!("{}{identity}, {timeout}, {state}; {reset}", w.device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::WatchdogRecord;
    use crate::kernel::watchdog::LastReset;

    /// `status` shows the watchdog the init left, text and JSON, and says
    /// when the last reset was its doing (or that the driver does not tell).
    #[test]
    fn status_shows_the_watchdog() {
        let mut w = WatchdogRecord {
            device: "/dev/watchdog".into(),
            requested_s: 30,
            timeout_s: Some(30),
            identity: Some("i6300ESB timer".into()),
            last_reset: LastReset::Watchdog,
            running: true,
            error: None,
        };
        assert_eq!(
            watchdog_line(&w),
            "/dev/watchdog (i6300ESB timer), 30 s, left running for the system; \
             the last reset WAS the watchdog's"
        );
        w.last_reset = LastReset::Unknown;
        assert!(watchdog_line(&w).ends_with("unknown (the driver does not tell)"));
        w.last_reset = LastReset::Other;
        assert!(watchdog_line(&w).ends_with("was not the watchdog's"));
        let missing = WatchdogRecord {
            device: "/dev/watchdog".into(),
            requested_s: 20,
            error: Some("cannot open the watchdog /dev/watchdog".into()),
            ..WatchdogRecord::default()
        };
        assert!(watchdog_line(&missing).starts_with("NOT ARMED (20 s asked)"));
        let status = Status {
            booted_slot: Some(Slot::A),
            source: None,
            boot: "unknown".into(),
            attempts_left: None,
            store: None,
            store_error: None,
            store_error_kind: None,
            last_fallback: None,
            persistent_degraded: None,
            errors: Vec::new(),
            watchdog: Some(WatchdogRecord {
                last_reset: LastReset::Watchdog,
                ..w
            }),
        };
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&status).unwrap()).unwrap();
        assert_eq!(json["watchdog"]["last_reset"], "watchdog");
        assert_eq!(json["watchdog"]["timeout_s"], 30);
        assert_eq!(json["watchdog"]["running"], true);
    }
}
