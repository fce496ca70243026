//! The Raspberry Pi tryboot contract as a [`Backend`]: the firmware's word
//! (device tree), `autoboot.txt`, the trial record; the decision, the
//! re-arm (`boot_next`), the commit and the marks (module docs of
//! `state::rpi`).

use super::autoboot::{self, Autoboot, AutobootError};
use super::trial::{self, Loaded, Trial, TrialStore};
use super::RpiConfig;
use crate::config::Config;
use crate::disk::devices::Resolved;
use crate::kernel::sys::Sys;
use crate::paths::DT_PARTITION;
use crate::state::decision::{DecideCtx, DecideError, Decision, Line, Outcome, Problem, Source};
use crate::state::sources::parse_dt_u32;
use crate::state::{
    Backend, BootStatus, CommitError, Mark, MarkError, NextBoot, OpenError, Record,
};
use crate::types::Slot;
use std::path::{Path, PathBuf};

/// The reboot argument that sets the firmware's one-shot tryboot flag
/// (raspberrypi/documentation autoboot.adoc: `reboot "0 tryboot"`, 0 = the
/// default partition, the flag makes it the `[tryboot]` one).
pub(crate) const TRYBOOT_ARG: &str = "0 tryboot";

/// What the firmware put in `/chosen/bootloader`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Firmware {
    pub(crate) partition: Option<u32>,
    pub(crate) tryboot: bool,
    pub(crate) boot_mode: Option<u32>,
    /// Raw, as read (shown in the record).
    pub(crate) pm_rsts: Option<Vec<u8>>,
}

impl Firmware {
    /// Reads the properties next to [`DT_PARTITION`] through `sys`.
    pub(crate) fn read(sys: &mut dyn Sys) -> Firmware {
        let dir = Path::new(DT_PARTITION)
            .parent()
            .unwrap_or(Path::new("/proc/device-tree/chosen/bootloader"));
        let mut raw = |name: &str| sys.read_file(&dir.join(name)).ok().flatten();
        let partition = raw("partition").as_deref().and_then(parse_dt_u32);
        let tryboot = raw("tryboot").as_deref().and_then(parse_dt_u32) == Some(1);
        let boot_mode = raw("boot-mode").as_deref().and_then(parse_dt_u32);
        let pm_rsts = raw("pm_rsts");
        Firmware {
            partition,
            tryboot,
            boot_mode,
            pm_rsts,
        }
    }

    fn describe(&self) -> String {
        let num = |v: Option<u32>| v.map_or("-".to_string(), |n| n.to_string());
        let rsts = self.pm_rsts.as_deref().map_or("-".to_string(), |b| {
            parse_dt_u32(b).map_or_else(|| format!("{b:02x?}"), |v| format!("{v:#010x}"))
        });
        format!(
            "firmware: partition={} tryboot={} boot-mode={} pm_rsts={rsts}",
            num(self.partition),
            u8::from(self.tryboot),
            num(self.boot_mode)
        )
    }
}

/// An open rpi-tryboot store.
pub(super) struct Rpi {
    config: RpiConfig,
    dir: PathBuf,
    autoboot_path: PathBuf,
    autoboot: Result<Autoboot, AutobootError>,
    trial: TrialStore,
    firmware: Firmware,
    /// Each slot's boot partition number.
    parts: [Option<u32>; 2],
}

/// The registry's `open`.
pub(super) fn open(
    sys: &mut dyn Sys,
    config: &Config,
    resolved: &Resolved,
    mount_dir: &Path,
) -> Result<Box<dyn Backend>, OpenError> {
    Ok(Box::new(open_rpi(sys, config, resolved, mount_dir)?))
}

/// [`open`], unboxed.
pub(super) fn open_rpi(
    sys: &mut dyn Sys,
    config: &Config,
    resolved: &Resolved,
    mount_dir: &Path,
) -> Result<Rpi, OpenError> {
    let cfg = super::table(&config.bootstate)?;
    let partition = resolved.member(&cfg.partition);
    let trial = TrialStore::open(
        sys,
        partition,
        &cfg.partition,
        &cfg.fstype,
        &cfg.trial_files,
        cfg.trial_size,
        mount_dir,
    )
    .map_err(|e| OpenError::Backend(Box::new(e)))?;
    let autoboot_path = mount_dir.join(&cfg.autoboot);
    let autoboot = autoboot::read(sys, &autoboot_path);
    let firmware = Firmware::read(sys);
    let parts = [
        resolved.boot(Slot::A).map(|p| p.number),
        resolved.boot(Slot::B).map(|p| p.number),
    ];
    Ok(Rpi {
        config: cfg,
        dir: mount_dir.to_path_buf(),
        autoboot_path,
        autoboot,
        trial,
        firmware,
        parts,
    })
}

fn index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

impl Rpi {
    /// The slot whose boot partition is `number` (one slot only: a shared
    /// boot partition tells no slot).
    fn slot_of(&self, number: u32) -> Option<Slot> {
        let a = self.parts[0] == Some(number);
        let b = self.parts[1] == Some(number);
        match (a, b) {
            (true, false) => Some(Slot::A),
            (false, true) => Some(Slot::B),
            _ => None,
        }
    }

    fn part(&self, slot: Slot) -> Option<u32> {
        self.parts[index(slot)]
    }

    /// R: the slot whose kernel the firmware loaded.
    fn running(&self) -> Option<Slot> {
        self.firmware.partition.and_then(|n| self.slot_of(n))
    }

    /// C, or why there is none.
    fn committed(&self) -> Result<Slot, String> {
        let a = self.autoboot.as_ref().map_err(|e| e.to_string())?;
        self.slot_of(a.committed()).ok_or_else(|| {
            format!(
                "{}: [all] boot_partition={} is no slot's boot partition",
                self.autoboot_path.display(),
                a.committed()
            )
        })
    }

    /// T, when it is a slot other than C.
    fn trial_slot(&self) -> Option<Slot> {
        let a = self.autoboot.as_ref().ok()?;
        let t = self.slot_of(a.trial())?;
        (Some(t) != self.slot_of(a.committed())).then_some(t)
    }

    /// This boot is a trial: the flag was set and the firmware loaded T.
    fn is_trial(&self) -> bool {
        self.firmware.tryboot && self.trial_slot().is_some_and(|t| self.running() == Some(t))
    }

    fn pending(&self) -> Option<Trial> {
        self.trial.record().pending
    }

    /// Writes the trial record with `change` applied.
    fn write_record(
        &mut self,
        sys: &mut dyn Sys,
        overwrite: bool,
        change: impl FnOnce(&mut trial::Record),
    ) -> Result<(), String> {
        let mut record = self.trial.record();
        change(&mut record);
        let dir = self.dir.clone();
        self.trial.write(sys, &dir, &record, overwrite)
    }

    /// Rewrites `autoboot.txt` in place so that C = `committed` and T =
    /// `trial` (partition numbers); nothing when it says so already.
    fn set_autoboot(
        &mut self,
        sys: &mut dyn Sys,
        committed: u32,
        trial: u32,
    ) -> Result<bool, String> {
        let a = self.autoboot.as_ref().map_err(|e| e.to_string())?;
        if a.committed() == committed && a.trial() == trial {
            return Ok(false);
        }
        let new = a.rewrite(committed, trial).map_err(|e| e.to_string())?;
        let old = a.bytes.clone();
        let path = self.autoboot_path.clone();
        let dir = self.dir.clone();
        trial::writable(sys, &dir, |sys| {
            autoboot::write_in_place(sys, &path, &old, &new).map_err(|e| e.to_string())
        })?;
        self.autoboot = Autoboot::parse(&path, &new);
        Ok(true)
    }

    fn autoboot_text(&self) -> String {
        match &self.autoboot {
            Ok(a) => format!(
                "[all] boot_partition={}, [tryboot] boot_partition={}",
                a.committed(),
                a.trial()
            ),
            Err(e) => e.to_string(),
        }
    }

    /// The swap: the running trial slot becomes C, the old C becomes T;
    /// then the pending trial is cleared.
    fn commit(&mut self, sys: &mut dyn Sys, slot: Slot) -> Result<String, String> {
        let old = self.committed()?;
        let (Some(new_c), Some(new_t)) = (self.part(slot), self.part(old)) else {
            return Err(format!("slot {slot} has no boot partition in this layout"));
        };
        self.set_autoboot(sys, new_c, new_t)?;
        let mut line = format!(
            "slot {slot} committed: {} now says {}",
            self.autoboot_path.display(),
            self.autoboot_text()
        );
        if self.pending().is_some() {
            if let Err(e) = self.write_record(sys, false, |r| r.pending = None) {
                // autoboot.txt is the commit; a stale record is cleared by
                // the next boot's decision.
                line.push_str(&format!("; trial record not cleared: {e}"));
            }
        }
        Ok(line)
    }

    /// Gives `slot`'s trial up durably with `reason`.
    fn give_up(&mut self, sys: &mut dyn Sys, reason: &str, overwrite: bool) -> Result<(), String> {
        let reason = reason.to_string();
        self.write_record(sys, overwrite, |r| {
            r.pending = None;
            r.given_up = Some(reason);
        })
    }

    fn outcome(slot: Slot, source: Source) -> Outcome {
        Outcome {
            decision: Decision { slot, source },
            fallback: None,
            lines: Vec::new(),
        }
    }
}

impl Backend for Rpi {
    #[cfg(test)]
    fn name(&self) -> &'static str {
        super::NAME
    }

    fn record(&self) -> Record {
        let rec = self.trial.record();
        let mut health = vec![
            format!("autoboot.txt: {}", self.autoboot_text()),
            format!(
                "trial record {}: {}",
                self.trial.location(),
                self.trial.health()
            ),
            self.firmware.describe(),
        ];
        if let Ok(a) = &self.autoboot {
            if !a.tryboot_a_b {
                // autoboot.adoc: without it a tryboot loads the partition's
                // tryboot.txt / tryboot.img instead of config.txt / boot.img.
                health.push(
                    "autoboot.txt: tryboot_a_b is not 1, so a tryboot loads tryboot.txt \
                     of the trial partition"
                        .into(),
                );
            }
            for (line, filter) in &a.ignored {
                health.push(format!(
                    "autoboot.txt line {line}: [{filter}] is no filter of autoboot.txt; its lines are ignored"
                ));
            }
        }
        let mut errors = Vec::new();
        if let Err(e) = self.committed() {
            errors.push(e);
        }
        if let Loaded::Corrupt(why) = &self.trial.loaded {
            errors.push(format!(
                "trial record {}: {why}; taken as no pending trial",
                self.trial.location()
            ));
        }
        let mut order: Vec<String> = Vec::new();
        for s in [self.committed().ok(), self.trial_slot()]
            .into_iter()
            .flatten()
        {
            if !order.contains(&s.to_string()) {
                order.push(s.to_string());
            }
        }
        Record {
            location: self.autoboot_path.display().to_string(),
            health: health.join("; "),
            error: (!errors.is_empty()).then(|| errors.join("; ")),
            order,
            left: rec
                .pending
                .map(|t| {
                    (
                        t.slot.to_string(),
                        self.config.attempts.saturating_sub(t.tries),
                    )
                })
                .into_iter()
                .collect(),
            last_fallback: rec.given_up,
        }
    }

    fn decide(&mut self, sys: &mut dyn Sys, ctx: &DecideCtx) -> Result<Outcome, DecideError> {
        if !Slot::ALL.iter().any(|s| ctx.usable(*s)) {
            return Err(DecideError::BothFailed);
        }
        let mut lines = Vec::new();
        if let Loaded::Corrupt(why) = &self.trial.loaded {
            lines.push(Line::Note(format!(
                "trial record {}: {why}; taken as no pending trial, not written back",
                self.trial.location()
            )));
        }
        if let Err(e) = self.committed() {
            lines.push(Line::Note(format!(
                "{e}: the firmware boots its default; following the device tree, nothing written"
            )));
        }
        // slotinit.slot= : as every backend, the override, nothing written.
        if let Some(slot) = ctx.override_slot.filter(|s| ctx.usable(*s)) {
            let mut out = Self::outcome(slot, Source::Override);
            lines.push(Line::Note(format!(
                "slotinit.slot={slot} overrides; trial record untouched"
            )));
            out.lines = lines;
            return Ok(out);
        }
        let usable_or_other = |s: Slot| if ctx.usable(s) { s } else { s.other() };
        let Some(running) = self.running() else {
            // Not a Pi, or no firmware word: C (else the default slot).
            match self.firmware.partition {
                None => {
                    lines.push(Line::Problem(Problem::NoHint));
                    lines.push(Line::Note(format!(
                        "no {DT_PARTITION}: not booted by the Raspberry Pi firmware?"
                    )));
                }
                Some(n) => lines.push(Line::Problem(Problem::HintNamesNoSlot {
                    hint: format!("device-tree boot partition {n}"),
                })),
            }
            let slot = usable_or_other(self.committed().unwrap_or(ctx.default_slot));
            let mut out = Self::outcome(slot, Source::Default);
            out.lines = lines;
            return Ok(out);
        };
        let pending = self.pending();
        let attempts = self.config.attempts;
        // R cannot be used in this boot: the other slot, through the firmware.
        if !ctx.usable(running) {
            let reason = ctx.failure(running);
            let mut out = Self::outcome(running.other(), Source::Fallback);
            if self.is_trial() || pending.is_some_and(|t| t.slot == running) {
                match self.give_up(sys, &reason, false) {
                    Ok(()) => lines.push(Line::Note(format!(
                        "trial of slot {running} given up: {}",
                        ctx.why_failed(running)
                    ))),
                    Err(e) => lines.push(Line::Problem(Problem::NotWritten(e))),
                }
            }
            out.fallback = Some(reason);
            out.lines = lines;
            return Ok(out);
        }
        if self.is_trial() {
            let tries = pending.filter(|t| t.slot == running).map(|t| t.tries);
            lines.push(Line::Note(match tries {
                Some(n) => format!("trial boot of slot {running} (armed {n} of {attempts} times)"),
                None => format!(
                    "trial boot of slot {running}, not armed by slotinit (no trial record for it)"
                ),
            }));
            let mut out = Self::outcome(running, Source::Bootloader);
            out.lines = lines;
            return Ok(out);
        }
        let mut out = Self::outcome(running, Source::Bootloader);
        // Without a usable autoboot.txt nothing can be armed or committed:
        // the firmware's word alone.
        let pending = pending.filter(|_| self.committed().is_ok());
        match pending {
            Some(t) if Ok(t.slot) == self.committed() || t.slot == running => {
                // A commit whose record-clear was cut, or a trial of the
                // slot running normally: nothing left to try.
                match self.write_record(sys, false, |r| r.pending = None) {
                    Ok(()) => lines.push(Line::Note(format!(
                        "pending trial of slot {} is the slot booted normally; cleared",
                        t.slot
                    ))),
                    Err(e) => lines.push(Line::Problem(Problem::NotWritten(e))),
                }
            }
            Some(t) if t.tries < attempts && ctx.usable(t.slot) => {
                lines.push(Line::Note(format!(
                    "trial of slot {} armed {} of {attempts} times and not committed: \
                     re-arming it (tryboot)",
                    t.slot, t.tries
                )));
                out = Self::outcome(t.slot, Source::Counters);
            }
            Some(t) => {
                let reason = format!(
                    "slot {}: {} trial boots did not reach mark-good",
                    t.slot, t.tries
                );
                match self.give_up(sys, &reason, false) {
                    Ok(()) => {}
                    Err(e) => lines.push(Line::Problem(Problem::NotWritten(e))),
                }
                lines.push(Line::Problem(Problem::Exhausted(reason.clone())));
                out.fallback = Some(reason);
            }
            None => {}
        }
        out.lines = lines;
        Ok(out)
    }

    fn commit_good(&mut self, sys: &mut dyn Sys, slot: Slot) -> Result<bool, CommitError> {
        if !self.is_trial() || self.running() != Some(slot) {
            return Ok(false);
        }
        self.commit(sys, slot)
            .map(|_| true)
            .map_err(|message| CommitError { slot, message })
    }

    fn mark(
        &mut self,
        sys: &mut dyn Sys,
        how: Mark,
        slot: Slot,
        force: bool,
    ) -> Result<String, MarkError> {
        let committed = self
            .committed()
            .map_err(|e| MarkError::Unusable(format!("{e}; nothing written")))?;
        let pending = self.pending();
        match how {
            Mark::Good if slot == committed => {
                if pending.is_some_and(|t| t.slot == slot) {
                    self.write_record(sys, false, |r| r.pending = None)
                        .map_err(MarkError::Write)?;
                    return Ok(format!(
                        "slot {slot} is the committed slot; its stale trial record cleared"
                    ));
                }
                Ok(format!(
                    "slot {slot} is already the committed slot; nothing written"
                ))
            }
            Mark::Good => {
                let running_trial = self.is_trial() && self.running() == Some(slot);
                if !running_trial && !force {
                    return Err(MarkError::Invalid(format!(
                        "slot {slot} is not running as a trial ({}); mark-good commits only \
                         the trial running now; nothing written",
                        self.firmware.describe()
                    )));
                }
                self.commit(sys, slot).map_err(MarkError::Write)
            }
            Mark::Active if slot == committed => match pending {
                Some(t) => {
                    self.write_record(sys, false, |r| r.pending = None)
                        .map_err(MarkError::Write)?;
                    Ok(format!(
                        "slot {slot} is the committed slot; the pending trial of slot {} is cancelled",
                        t.slot
                    ))
                }
                None => Ok(format!("slot {slot} is already active; nothing written")),
            },
            Mark::Active => {
                let (Some(c), Some(t)) = (self.part(committed), self.part(slot)) else {
                    return Err(MarkError::Invalid(format!(
                        "slot {slot} has no boot partition in this layout"
                    )));
                };
                self.set_autoboot(sys, c, t).map_err(MarkError::Write)?;
                self.write_record(sys, true, |r| r.pending = Some(Trial { slot, tries: 0 }))
                    .map_err(MarkError::Write)?;
                Ok(format!(
                    "slot {slot} marked active: armed for a trial ({} says {}); the next \
                     reboot with \"{TRYBOOT_ARG}\" boots it, up to {} times until mark-good",
                    self.autoboot_path.display(),
                    self.autoboot_text(),
                    self.config.attempts
                ))
            }
            Mark::Bad if slot == committed => {
                if !force {
                    return Err(MarkError::Refused(format!(
                        "refusing to mark slot {slot} bad: it is the committed slot and no \
                         other slot is known good, so nothing would be left to boot; \
                         nothing written. `--force` makes slot {} the committed slot",
                        slot.other()
                    )));
                }
                let (Some(c), Some(t)) = (self.part(slot.other()), self.part(slot)) else {
                    return Err(MarkError::Invalid(format!(
                        "slot {} has no boot partition in this layout",
                        slot.other()
                    )));
                };
                self.set_autoboot(sys, c, t).map_err(MarkError::Write)?;
                self.give_up(sys, &format!("slot {slot}: marked bad"), true)
                    .map_err(MarkError::Write)?;
                Ok(format!(
                    "slot {slot} marked bad (--force): {} now says {}",
                    self.autoboot_path.display(),
                    self.autoboot_text()
                ))
            }
            Mark::Bad => {
                self.give_up(sys, &format!("slot {slot}: marked bad"), true)
                    .map_err(MarkError::Write)?;
                Ok(format!(
                    "slot {slot} marked bad: its trial is given up; a normal boot boots slot {committed}"
                ))
            }
        }
    }

    /// Makes the firmware boot `slot` at the next reset, durably: the
    /// reboot argument (`"0 tryboot"`), or None for a plain restart (C).
    fn boot_next(&mut self, sys: &mut dyn Sys, slot: Slot) -> Result<Option<String>, MarkError> {
        let committed = self
            .committed()
            .map_err(|e| MarkError::Unusable(format!("{e}; nothing written")))?;
        if slot == committed {
            // The firmware boots C on any reset without the flag.
            return Ok(None);
        }
        let (Some(c), Some(t)) = (self.part(committed), self.part(slot)) else {
            return Err(MarkError::Invalid(format!(
                "slot {slot} has no boot partition in this layout"
            )));
        };
        self.set_autoboot(sys, c, t).map_err(MarkError::Write)?;
        // Counted now, durably, before the reboot: a trial kernel that never
        // reaches the initramfs has used its try.
        let pending = self.pending();
        self.write_record(sys, true, |r| {
            let tries = match pending {
                Some(p) if p.slot == slot => p.tries.saturating_add(1),
                _ => 1,
            };
            r.pending = Some(Trial { slot, tries });
        })
        .map_err(MarkError::Write)?;
        Ok(Some(TRYBOOT_ARG.to_string()))
    }

    fn next_boot(&self) -> NextBoot {
        NextBoot::Tryboot
    }

    fn status(&self, booted: Option<Slot>) -> BootStatus {
        match booted {
            Some(s) if self.is_trial() && self.running() == Some(s) => BootStatus {
                boot: "trial",
                attempts_left: Some(
                    self.pending()
                        .filter(|t| t.slot == s)
                        .map_or(0, |t| self.config.attempts.saturating_sub(t.tries)),
                ),
            },
            Some(s) if self.committed() == Ok(s) => BootStatus {
                boot: "committed",
                attempts_left: None,
            },
            _ => BootStatus {
                boot: "unknown",
                attempts_left: None,
            },
        }
    }

    fn close(self: Box<Self>, sys: &mut dyn Sys) {
        self.trial.close(sys);
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
