//! FWU metadata as a [`Backend`]: the decision follows the bank the firmware
//! booted, the marks and `boot_next` change the metadata in both copies
//! (module docs of `state::fwu`).

use super::mdata::{BankState, Mdata};
use super::store::{Store, WriteError};
use super::FwuConfig;
use crate::config::Config;
use crate::disk::devices::{self, Resolved};
use crate::kernel::sys::Sys;
use crate::state::decision::{DecideCtx, DecideError, Decision, Line, Outcome, Problem, Source};
use crate::state::{
    Backend, BootStatus, CommitError, Mark, MarkError, NextBoot, OpenError, Record,
};
use crate::types::Slot;
use std::path::{Path, PathBuf};

/// Where the partitions are listed.
const SYSFS: &str = "/sys";

/// An open fwu-metadata store.
pub(super) struct Fwu {
    config: FwuConfig,
    store: Store,
    /// What the last decision saw of a firmware fallback, for the record.
    fallback: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("bootstate.fwu-metadata.partitions: {0}")]
struct NoPartition(String);

/// The registry's `open`.
pub(super) fn open(
    sys: &mut dyn Sys,
    config: &Config,
    resolved: &Resolved,
    _mount_dir: &Path,
) -> Result<Box<dyn Backend>, OpenError> {
    Ok(Box::new(open_fwu(sys, config, resolved)?))
}

/// [`open`], unboxed.
pub(super) fn open_fwu(
    sys: &mut dyn Sys,
    config: &Config,
    resolved: &Resolved,
) -> Result<Fwu, OpenError> {
    let cfg = super::table(&config.bootstate)?;
    let mut paths: Vec<(String, PathBuf)> = Vec::new();
    for name in &cfg.partitions {
        let path = if name.starts_with('/') {
            PathBuf::from(name)
        } else {
            devices::find_named(sys, Path::new(SYSFS), resolved, name)
                .map_err(|e| OpenError::Backend(Box::new(NoPartition(e))))?
                .node()
        };
        paths.push((name.clone(), path));
    }
    let [primary, secondary]: [(String, PathBuf); 2] = paths
        .try_into()
        .map_err(|_| OpenError::Backend(Box::new(NoPartition("two partitions needed".into()))))?;
    let store = Store::open(sys, [primary, secondary], cfg.geometry());
    Ok(Fwu {
        config: cfg,
        store,
        fallback: None,
    })
}

/// Bank 0 is slot A, bank 1 slot B.
fn bank(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

fn slot_of(bank: usize) -> Option<Slot> {
    match bank {
        0 => Some(Slot::A),
        1 => Some(Slot::B),
        _ => None,
    }
}

fn state_word(s: BankState) -> &'static str {
    match s {
        BankState::Invalid => "invalid",
        BankState::Valid => "valid (trial)",
        BankState::Accepted => "accepted",
    }
}

fn bank_name(bank: usize) -> String {
    match slot_of(bank) {
        Some(s) => format!("bank {bank} (slot {s})"),
        None => format!("bank {bank} (no slot)"),
    }
}

fn write_error(e: WriteError) -> MarkError {
    match e {
        WriteError::Locked(m) => MarkError::Locked(m),
        WriteError::Failed(m) => MarkError::Write(m),
    }
}

impl Fwu {
    fn current(&self) -> Result<&Mdata, MarkError> {
        self.store.current().ok_or_else(|| {
            MarkError::Unusable(format!(
                "no valid FWU metadata copy ({}); nothing written",
                self.store.why_unusable()
            ))
        })
    }

    /// The slot of the active bank (what the firmware boots next).
    fn active_slot(&self) -> Option<Slot> {
        self.store.current().and_then(|m| slot_of(m.active()))
    }

    fn slot_state(&self, slot: Slot) -> Option<BankState> {
        self.store.current().map(|m| m.state(bank(slot)))
    }

    /// The active bank's slot while it is on trial.
    fn trial_slot(&self) -> Option<Slot> {
        let slot = self.active_slot()?;
        (self.slot_state(slot) == Some(BankState::Valid)).then_some(slot)
    }

    /// Applies `change` to the copy in use and writes it to both copies
    /// (after restoring nothing: the write covers a stale copy too).
    fn write(
        &mut self,
        sys: &mut dyn Sys,
        change: impl FnOnce(&mut Mdata) -> Result<bool, super::mdata::MdataError>,
    ) -> Result<bool, MarkError> {
        let mut new = self.current()?.clone();
        change(&mut new).map_err(|e| MarkError::Invalid(e.to_string()))?;
        self.store.write_both(sys, &new).map_err(write_error)
    }

    fn describe(&self) -> String {
        let Some(m) = self.store.current() else {
            return "no valid copy".into();
        };
        let states = (0..m.banks())
            .map(|b| format!("{b} {}", state_word(m.state(b))))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "v{}, active {}, previous bank {}; banks: {states}",
            m.version(),
            bank_name(m.active()),
            m.previous()
        )
    }

    fn outcome(slot: Slot, source: Source, lines: Vec<Line>) -> Outcome {
        Outcome {
            decision: Decision { slot, source },
            fallback: None,
            lines,
        }
    }
}

#[cfg(test)]
impl Fwu {
    /// The copy in use, as the firmware reads it.
    pub(super) fn store_current(&self) -> Option<Mdata> {
        self.store.current().cloned()
    }

    /// The ordered write of `new`, as the marks do it.
    pub(super) fn write_for_test(
        &mut self,
        sys: &mut dyn Sys,
        new: &Mdata,
    ) -> Result<bool, String> {
        self.store.write_both(sys, new).map_err(|e| e.to_string())
    }
}

impl Backend for Fwu {
    #[cfg(test)]
    fn name(&self) -> &'static str {
        super::NAME
    }

    fn record(&self) -> Record {
        let mut health = Vec::new();
        let mut error = None;
        match self.store.in_use() {
            Some(used) => {
                health.push(format!(
                    "FWU metadata {}; in use: {}",
                    self.describe(),
                    self.store.copies[used].label()
                ));
                if let Some(stale) = self.store.stale() {
                    let c = &self.store.copies[stale];
                    let why = c.read.as_ref().err().map_or("valid but different", |e| e);
                    health.push(format!(
                        "{}: {why}; restored from the other copy at the next boot or write",
                        c.label()
                    ));
                }
            }
            None => {
                error = Some(format!(
                    "no valid FWU metadata copy: {}",
                    self.store.why_unusable()
                ));
            }
        }
        // TF-A's trial counter is in a backup register (STM32MP TAMP),
        // which Linux cannot read: `left` is the configured maximum.
        health.push(format!(
            "trial count kept by the firmware (not readable from Linux); left shows attempts = {}",
            self.config.attempts
        ));
        let mut order = Vec::new();
        if let Some(m) = self.store.current() {
            let active = m.active();
            let mut banks = vec![active, m.previous()];
            banks.extend(0..m.banks());
            for b in banks {
                if m.state(b) == BankState::Invalid {
                    continue;
                }
                if let Some(s) = slot_of(b) {
                    if !order.contains(&s.to_string()) {
                        order.push(s.to_string());
                    }
                }
            }
        }
        Record {
            location: self.store.location(),
            health: health.join("; "),
            error,
            order,
            left: self
                .trial_slot()
                .map(|s| (s.to_string(), self.config.attempts))
                .into_iter()
                .collect(),
            last_fallback: self.fallback.clone(),
        }
    }

    fn decide(&mut self, sys: &mut dyn Sys, ctx: &DecideCtx) -> Result<Outcome, DecideError> {
        if !Slot::ALL.iter().any(|s| ctx.usable(*s)) {
            return Err(DecideError::BothFailed);
        }
        let Some(current) = self.store.current().cloned() else {
            // Unusable: the firmware's word, nothing written.
            let mut out = crate::state::decision::follow_bootloader(ctx)?;
            out.lines.insert(
                0,
                Line::Note(format!(
                    "no valid FWU metadata copy ({}); following the firmware, nothing written",
                    self.store.why_unusable()
                )),
            );
            return Ok(out);
        };
        let mut lines = Vec::new();
        match self.store.repair(sys) {
            Ok(Some(note)) => lines.push(Line::Note(note)),
            Ok(None) => {}
            Err(e) => lines.push(Line::Problem(Problem::NotWritten(e.to_string()))),
        }
        if let Some(slot) = ctx.override_slot.filter(|s| ctx.usable(*s)) {
            lines.push(Line::Note(format!(
                "slotinit.slot={slot} overrides; FWU metadata untouched"
            )));
            return Ok(Self::outcome(slot, Source::Override, lines));
        }
        let active = slot_of(current.active());
        let running = match ctx.hint {
            Some(h) => match h.slot {
                Some(s) => Some(s),
                None => {
                    lines.push(Line::Problem(Problem::HintNamesNoSlot {
                        hint: h.source.clone(),
                    }));
                    None
                }
            },
            None => {
                lines.push(Line::Problem(Problem::NoHint));
                None
            }
        };
        let Some(running) = running else {
            let slot = active.unwrap_or(ctx.default_slot);
            let slot = if ctx.usable(slot) { slot } else { slot.other() };
            return Ok(Self::outcome(slot, Source::Default, lines));
        };
        let running_bank = bank(running);
        if !ctx.usable(running) {
            // The running bank's system failed in this boot: a trial is
            // rejected (DEN0118), so the firmware boots the other bank.
            let reason = ctx.failure(running);
            if self.trial_slot() == Some(running) {
                match self.write(sys, |m| m.reject(running_bank)) {
                    Ok(_) => lines.push(Line::Note(format!(
                        "trial of slot {running} rejected: bank {running_bank} invalid, \
                         active bank {}",
                        bank(running.other())
                    ))),
                    Err(e) => lines.push(Line::Problem(Problem::NotWritten(e.to_string()))),
                }
            }
            let mut out = Self::outcome(running.other(), Source::Fallback, lines);
            out.fallback = Some(reason);
            return Ok(out);
        }
        if active != Some(running) {
            // TF-A booted another bank than the active one: the trial ran
            // out of tries, or the active bank is invalid.
            let reason = format!(
                "the firmware booted slot {running}, not the active {}: its trial was given up \
                 (TF-A's trial count ran out, or the bank is invalid)",
                bank_name(current.active())
            );
            lines.push(Line::Problem(Problem::Exhausted(reason.clone())));
            if current.state(running_bank) != BankState::Invalid {
                match self.write(sys, |m| m.follow_boot(running_bank)) {
                    Ok(_) => lines.push(Line::Note(format!(
                        "FWU metadata follows the firmware: {} invalid, slot {running} active",
                        bank_name(current.active())
                    ))),
                    Err(e) => lines.push(Line::Problem(Problem::NotWritten(e.to_string()))),
                }
            }
            self.fallback = Some(reason.clone());
            let mut out = Self::outcome(running, Source::Bootloader, lines);
            out.fallback = Some(reason);
            return Ok(out);
        }
        lines.push(Line::Note(match current.state(running_bank) {
            BankState::Valid => format!(
                "trial boot of slot {running} (bank {running_bank} not accepted; the firmware \
                 counts up to {} tries)",
                self.config.attempts
            ),
            s => format!("slot {running}: bank {running_bank} {}", state_word(s)),
        }));
        Ok(Self::outcome(running, Source::Bootloader, lines))
    }

    fn commit_good(&mut self, sys: &mut dyn Sys, slot: Slot) -> Result<bool, CommitError> {
        if self.trial_slot() != Some(slot) {
            return Ok(false);
        }
        self.write(sys, |m| m.accept(bank(slot)))
            .map_err(|e| CommitError {
                slot,
                message: e.to_string(),
            })
    }

    fn mark(
        &mut self,
        sys: &mut dyn Sys,
        how: Mark,
        slot: Slot,
        force: bool,
    ) -> Result<String, MarkError> {
        let current = self.current()?.clone();
        let b = bank(slot);
        let state = current.state(b);
        match how {
            Mark::Good => {
                if self.active_slot() != Some(slot) && !force {
                    return Err(MarkError::Invalid(format!(
                        "slot {slot} is not the active bank ({}); mark-good accepts the active \
                         bank; nothing written",
                        self.describe()
                    )));
                }
                if self.write(sys, |m| m.accept(b))? {
                    Ok(format!(
                        "slot {slot} marked good: bank {b} accepted in both copies"
                    ))
                } else {
                    Ok(format!("slot {slot} is already accepted; nothing written"))
                }
            }
            Mark::Active => {
                if self.active_slot() == Some(slot) && state != BankState::Invalid {
                    return Ok(format!(
                        "slot {slot} is already the active bank ({}); nothing written",
                        state_word(state)
                    ));
                }
                self.write(sys, |m| m.activate(b))?;
                Ok(format!(
                    "slot {slot} marked active: bank {b} active and valid (a trial); the \
                     firmware boots it at the next reset, up to {} times until mark-good",
                    self.config.attempts
                ))
            }
            Mark::Bad => {
                let other = bank(slot.other());
                let other_good = current.state(other) == BankState::Accepted;
                if !other_good && !force {
                    return Err(MarkError::Refused(format!(
                        "refusing to mark slot {slot} bad: slot {} (bank {other}) is {}, not \
                         accepted, so no bank known good would be left; nothing written. \
                         `--force` marks it anyway",
                        slot.other(),
                        state_word(current.state(other))
                    )));
                }
                if !self.write(sys, |m| m.reject(b))? {
                    return Ok(format!("slot {slot} is already bad; nothing written"));
                }
                let now = self.active_slot().map_or("-".into(), |s| s.to_string());
                Ok(format!(
                    "slot {slot} marked bad: bank {b} invalid; active slot {now}"
                ))
            }
        }
    }

    fn boot_next(&mut self, sys: &mut dyn Sys, slot: Slot) -> Result<Option<String>, MarkError> {
        self.write(sys, |m| m.steer(bank(slot)))?;
        Ok(None)
    }

    fn next_boot(&self) -> NextBoot {
        NextBoot::InOrder
    }

    fn status(&self, booted: Option<Slot>) -> BootStatus {
        match booted.and_then(|s| Some((s, self.slot_state(s)?))) {
            Some((s, BankState::Valid)) if self.active_slot() == Some(s) => BootStatus {
                boot: "trial",
                attempts_left: Some(self.config.attempts),
            },
            Some((_, BankState::Accepted)) => BootStatus {
                boot: "committed",
                attempts_left: None,
            },
            _ => BootStatus {
                boot: "unknown",
                attempts_left: None,
            },
        }
    }

    fn close(self: Box<Self>, _sys: &mut dyn Sys) {}
}
