//! The words of this boot's decision every backend shares: what the
//! bootloader said it booted ([`Hint`]), the slot chosen and why
//! ([`Decision`]), what a backend's decision reports ([`Outcome`], with each
//! problem's stable kind), and the decision without a store (backend "none":
//! the bootloader's word).

use crate::kind;
use crate::types::Slot;
use serde::{Deserialize, Serialize};

/// A slot source's statement: which slot the bootloader booted, and which
/// source said so (`rauc.slot="B"`, `root=PARTLABEL=system_b`, ...). `slot` is
/// None when the source spoke but named no slot this layout has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    pub slot: Option<Slot>,
    pub(crate) source: String,
}

/// Where the decision came from; recorded in the handoff and shown by `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Source {
    /// `slotinit.slot=` on the cmdline.
    Override,
    /// slotinit's walk of BOOT_ORDER (counter = "init").
    Counters,
    /// The bootloader's `rauc.slot=` (counter = "bootloader").
    Bootloader,
    /// No usable boot state: the configured default slot.
    Default,
    /// The first choice could not be used; the other slot in the same boot.
    Fallback,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub slot: Slot,
    pub(crate) source: Source,
}

/// What every backend's decision is given.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecideCtx<'a> {
    /// `slotinit.slot=` from the cmdline, if allowed.
    pub(crate) override_slot: Option<Slot>,
    pub(crate) default_slot: Slot,
    /// What the bootloader said it booted (the first slot source that spoke).
    pub(crate) hint: Option<&'a Hint>,
    /// Slots that already failed in this boot, and why.
    pub(crate) failed: &'a [(Slot, String)],
}

impl DecideCtx<'_> {
    pub(crate) fn usable(&self, slot: Slot) -> bool {
        !self.failed.iter().any(|(s, _)| *s == slot)
    }

    /// Why `slot` failed in this boot ("" if it did not).
    pub(crate) fn why_failed(&self, slot: Slot) -> &str {
        self.failed
            .iter()
            .find(|(s, _)| *s == slot)
            .map_or("", |(_, w)| w.as_str())
    }

    /// "slot X failed to boot: <why>".
    pub(crate) fn failure(&self, slot: Slot) -> String {
        format!("slot {slot} failed to boot: {}", self.why_failed(slot))
    }
}

/// A problem of the decision or of making it durable, which the boot goes on
/// with; [`Problem::kind`] is the stable kind the handoff records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Problem {
    /// No slot had attempts left; the counters were reset.
    #[error("{0}")]
    Exhausted(String),
    #[error("the bootloader named no slot (no slot source spoke)")]
    NoHint,
    #[error("ignoring {hint}: it names no slot")]
    HintNamesNoSlot { hint: String },
    #[error("the bootloader booted slot {slot}, which the boot state marks bad; refusing it")]
    RefusedBad { slot: Slot },
    #[error(
        "boot state not written ({why}): slot {chosen} would boot uncounted, \
         so slot {slot} boots instead, the other bootable slot of the stored BOOT_ORDER"
    )]
    Uncounted {
        why: String,
        chosen: Slot,
        slot: Slot,
    },
    #[error(
        "boot state not written ({why}): booting slot {chosen} UNCOUNTED, as no other \
         slot of the stored BOOT_ORDER is bootable; if it fails, it is tried again on every boot"
    )]
    BootsUncounted { why: String, chosen: Slot },
    #[error("boot state not written: {0}")]
    NotWritten(String),
    #[error("boot state committed, but {0}")]
    RepairFailed(String),
}

impl Problem {
    /// The handoff kind.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Problem::Exhausted(_)
            | Problem::NoHint
            | Problem::HintNamesNoSlot { .. }
            | Problem::RefusedBad { .. } => kind::DECISION,
            Problem::Uncounted { .. } | Problem::BootsUncounted { .. } | Problem::NotWritten(_) => {
                kind::BOOTSTATE_WRITE
            }
            Problem::RepairFailed(_) => kind::BOOTSTATE_REPAIR,
        }
    }
}

/// One line of what a decision did, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// For the log.
    Note(String),
    /// For the log and the handoff, with its kind.
    Problem(Problem),
}

/// This boot's decision, with its state committed durably where the backend
/// counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) decision: Decision,
    /// Why a slot was given up, in words `status` shows on later boots.
    pub(crate) fallback: Option<String>,
    pub(crate) lines: Vec<Line>,
}

impl Outcome {
    #[cfg(test)]
    pub(crate) fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.lines.iter().filter_map(|l| match l {
            Line::Problem(p) => Some(p),
            Line::Note(_) => None,
        })
    }
}

/// A decision that cannot boot anything; the boot ends in the fallback.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("both slots failed in this boot")]
    BothFailed,
    #[error("boot state")]
    State(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("boot state names unknown slot {0}")]
    UnknownSlot(String),
}

impl DecideError {
    #[cfg(test)]
    pub(crate) fn kind(&self) -> &'static str {
        kind::DECISION
    }
}

/// Without a store (backend "none"): the override, else the slot the
/// bootloader named, else the default; never a slot that failed in this boot.
pub(super) fn follow_bootloader(ctx: &DecideCtx) -> Result<Outcome, DecideError> {
    let mut out = Outcome {
        decision: Decision {
            slot: ctx.default_slot,
            source: Source::Default,
        },
        fallback: None,
        lines: Vec::new(),
    };
    for (slot, why) in ctx.failed {
        out.fallback = Some(format!("slot {slot} failed to boot: {why}"));
    }
    if !Slot::ALL.iter().any(|s| ctx.usable(*s)) {
        return Err(DecideError::BothFailed);
    }
    if let Some(slot) = ctx.override_slot.filter(|s| ctx.usable(*s)) {
        out.lines.push(Line::Note(format!(
            "slotinit.slot={slot} overrides; counters untouched"
        )));
        out.decision = Decision {
            slot,
            source: Source::Override,
        };
        return Ok(out);
    }
    let named = match ctx.hint {
        None => {
            out.lines.push(Line::Note(Problem::NoHint.to_string()));
            None
        }
        Some(Hint { slot: None, source }) => {
            out.lines.push(Line::Problem(Problem::HintNamesNoSlot {
                hint: source.clone(),
            }));
            None
        }
        Some(Hint {
            slot: Some(slot), ..
        }) => Some(*slot),
    };
    let slot = named
        .filter(|s| ctx.usable(*s))
        .unwrap_or(if ctx.usable(ctx.default_slot) {
            ctx.default_slot
        } else {
            ctx.default_slot.other()
        });
    let source = if Some(slot) == named {
        Source::Bootloader
    } else if named.is_some() || !ctx.failed.is_empty() {
        Source::Fallback
    } else {
        Source::Default
    };
    out.decision = Decision { slot, source };
    Ok(out)
}

/// Whether this boot can carry out its decision (slot coherence): where each
/// slot has its own kernel, the slot that boots is the one whose kernel runs,
/// known from the firmware's word (the slot sources' hint); a decision for
/// the other slot goes through the firmware and a restart, never by mounting
/// the other slot's system under this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coherence {
    /// The decided slot's kernel runs, or both slots share one: mount it.
    Mount,
    /// Kernels are per slot but no slot source said which one runs: mount
    /// the decided slot, and say so.
    MountUnknownKernel,
    /// The running kernel is `running`'s: the decided slot boots only
    /// through the firmware.
    Restart { running: Slot },
}

pub(crate) fn coherence(decided: Slot, running: Option<Slot>, per_slot: bool) -> Coherence {
    match running {
        _ if !per_slot => Coherence::Mount,
        None => Coherence::MountUnknownKernel,
        Some(running) if running == decided => Coherence::Mount,
        Some(running) => Coherence::Restart { running },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_slots_kernel_never_mounts_a_system_where_kernels_are_per_slot() {
        use Coherence::*;
        let rows = [
            // decided, running, per slot -> what the boot does
            (Slot::A, Some(Slot::A), true, Mount),
            (Slot::B, Some(Slot::A), true, Restart { running: Slot::A }),
            (Slot::A, Some(Slot::B), true, Restart { running: Slot::B }),
            (Slot::B, None, true, MountUnknownKernel),
            // One kernel for both: the same boot mounts either system.
            (Slot::B, Some(Slot::A), false, Mount),
            (Slot::A, None, false, Mount),
        ];
        for (decided, running, per_slot, want) in rows {
            assert_eq!(
                coherence(decided, running, per_slot),
                want,
                "{decided} {running:?} {per_slot}"
            );
        }
    }
}
