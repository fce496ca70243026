//! RAUC's decision over the U-Boot env: which slot boots, why, and the boot
//! state to commit before it does. Pure: the state comes in as a value and the
//! new state goes out as one.

use crate::state::decision::{DecideError, Decision, Hint, Problem, Source};
use crate::state::uboot::config::Counter;
use crate::state::uboot::rauc::Bootnames;
use crate::state::uboot::rauc::{self, Chosen, State};
use crate::types::Slot;

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// `slotinit.slot=` from the cmdline, if allowed.
    pub override_slot: Option<Slot>,
    pub default_slot: Slot,
    /// Who counts; `Bootloader` also when there is no store (follow the hints).
    pub counter: Counter,
    /// What the bootloader said it booted (the first slot source that spoke).
    pub hint: Option<&'a Hint>,
    /// The boot state read from the store; None when there is none to use.
    pub state: Option<&'a State>,
    pub names: &'a Bootnames,
    pub config: &'a rauc::Config,
    /// Slots that already failed in this boot, and why.
    pub failed: &'a [(Slot, String)],
}

/// The outcome: the slot, the state to commit (None: nothing to write), and
/// what to tell the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    pub(crate) state: Option<State>,
    /// True when `state` holds this boot's decrement of the chosen slot: if it
    /// cannot be made durable, [`uncounted`] decides what boots instead.
    pub(crate) counted: bool,
    /// Why a slot was given up, in words `status` shows on later boots.
    pub(crate) fallback: Option<String>,
    pub(crate) notes: Vec<String>,
    pub(crate) errors: Vec<Problem>,
}

/// Decides the slot. Fails only when no slot is left to try in this boot.
pub fn decide(inputs: &Inputs) -> Result<Outcome, DecideError> {
    let mut out = Outcome {
        decision: Decision {
            slot: inputs.default_slot,
            source: Source::Default,
        },
        state: None,
        counted: false,
        fallback: None,
        notes: Vec::new(),
        errors: Vec::new(),
    };
    let state = failed_marked_bad(inputs, &mut out);
    if !Slot::ALL.iter().any(|s| usable(inputs, *s)) {
        return Err(DecideError::BothFailed);
    }

    if let Some(slot) = inputs.override_slot {
        if usable(inputs, slot) {
            out.notes.push(format!(
                "slotinit.slot={slot} overrides; counters untouched"
            ));
            out.decision = Decision {
                slot,
                source: Source::Override,
            };
            out.state = changed(inputs.state, state);
            return Ok(out);
        }
    }

    let state_known = state.is_some();
    let Some(st) = state.or_else(|| {
        // No store: only the bootloader's word or the default can decide.
        (inputs.counter == Counter::Bootloader).then(|| State {
            order: Vec::new(),
            left: Default::default(),
        })
    }) else {
        out.decision = Decision {
            slot: default_or_other(inputs),
            source: fallback_source(inputs, Source::Default),
        };
        return Ok(out);
    };

    match inputs.counter {
        Counter::Init => by_counters(inputs, st, &mut out)?,
        Counter::Bootloader => by_bootloader(inputs, st, state_known, &mut out),
    }
    Ok(out)
}

/// Whether `slot` has not failed in this boot.
fn usable(inputs: &Inputs, slot: Slot) -> bool {
    !inputs.failed.iter().any(|(s, _)| *s == slot)
}

/// `source`, or [`Source::Fallback`] once a slot failed in this boot.
fn fallback_source(inputs: &Inputs, source: Source) -> Source {
    if inputs.failed.is_empty() {
        source
    } else {
        Source::Fallback
    }
}

/// The default slot, or the other one if the default failed in this boot.
fn default_or_other(inputs: &Inputs) -> Slot {
    if usable(inputs, inputs.default_slot) {
        inputs.default_slot
    } else {
        inputs.default_slot.other()
    }
}

/// The stored state with the slots that failed in this boot marked bad; the
/// last failure is the fallback reason.
fn failed_marked_bad(inputs: &Inputs, out: &mut Outcome) -> Option<State> {
    let mut state = inputs.state.cloned();
    for (slot, why) in inputs.failed {
        let reason = format!("slot {slot} failed to boot: {why}");
        if let Some(st) = &mut state {
            if let Ok(m) = rauc::mark_bad(st, inputs.names.of(*slot)) {
                *st = m.state;
            }
            out.notes.push(format!("{reason}; marked bad"));
        }
        out.fallback = Some(reason);
    }
    state
}

/// `counter = "init"`: RAUC's boot script run here, this boot's attempt
/// counted in the new state.
fn by_counters(inputs: &Inputs, mut st: State, out: &mut Outcome) -> Result<(), DecideError> {
    drop_used_up(inputs, &mut st, out);
    let mut choice = rauc::choose_and_decrement(&st, inputs.config)
        .map_err(|e| DecideError::State(Box::new(e)))?;
    if let Chosen::Exhausted { .. } = choice.how {
        out.errors.push(Problem::Exhausted(choice.to_string()));
    } else {
        out.notes.push(choice.to_string());
    }
    // After a reset the first slot may be one that already failed now.
    // Bounded: each pass takes one failed slot out, and one slot is usable.
    for _ in 0..Slot::ALL.len() {
        let Some(slot) = inputs
            .names
            .slot(choice.slot.as_str())
            .filter(|s| !usable(inputs, *s))
        else {
            break;
        };
        let bad = rauc::mark_bad(&choice.state, inputs.names.of(slot))
            .map_err(|e| DecideError::State(Box::new(e)))?;
        choice = rauc::choose_and_decrement(&bad.state, inputs.config)
            .map_err(|e| DecideError::State(Box::new(e)))?;
    }
    let slot = inputs
        .names
        .slot(choice.slot.as_str())
        .ok_or_else(|| DecideError::UnknownSlot(choice.slot.to_string()))?;
    out.decision = Decision {
        slot,
        source: fallback_source(inputs, Source::Counters),
    };
    out.state = changed(inputs.state, Some(choice.state));
    out.counted = out.state.is_some();
    Ok(())
}

/// A slot that used up its attempts leaves BOOT_ORDER, so the record says it
/// was given up (RAUC's script only skips it), unless it is the last one:
/// then the reset in `choose_and_decrement` gives every slot a new chance.
fn drop_used_up(inputs: &Inputs, st: &mut State, out: &mut Outcome) {
    if st.order.is_empty() {
        // The script's `setenv BOOT_ORDER "A B"`. Only a slot that
        // failed in this boot empties the order here (reading makes an
        // empty one the default), and that slot stays out.
        st.order = inputs
            .config
            .slots
            .iter()
            .filter(|n| inputs.names.exact(n).is_none_or(|s| usable(inputs, s)))
            .cloned()
            .collect();
    }
    let walk = st.walk(inputs.config);
    let bootable = walk.iter().filter(|s| st.left(s) > 0).count();
    if bootable == 0 {
        return;
    }
    for name in walk {
        if st.left(&name) == 0 {
            if let Ok(m) = rauc::mark_bad(st, &name) {
                *st = m.state;
            }
            let reason = format!("slot {name} used up its boot attempts");
            out.notes.push(format!("{reason}; removed from BOOT_ORDER"));
            out.fallback = Some(reason);
        }
    }
}

/// `counter = "bootloader"` (or no store): the slot the bootloader says it
/// booted, unless the state knows it as bad or it failed in this boot.
fn by_bootloader(inputs: &Inputs, st: State, state_known: bool, out: &mut Outcome) {
    let named = named_by_hint(inputs, state_known, out);
    // Without a store there is no order: the default slot follows.
    let walk = if state_known {
        st.walk(inputs.config)
    } else {
        Vec::new()
    };
    let refused = named.filter(|s| state_known && !walk.contains(inputs.names.of(*s)));
    if let Some(slot) = refused {
        out.errors.push(Problem::RefusedBad { slot });
    }
    let slot = named
        .filter(|s| usable(inputs, *s) && refused != Some(*s))
        .or_else(|| {
            walk.iter()
                .filter_map(|n| inputs.names.exact(n))
                .find(|s| usable(inputs, *s))
        })
        .unwrap_or(default_or_other(inputs));
    let source = if Some(slot) == named {
        Source::Bootloader
    } else if named.is_some() || !inputs.failed.is_empty() {
        Source::Fallback
    } else if state_known {
        Source::Counters
    } else {
        Source::Default
    };
    out.decision = Decision { slot, source };
    if state_known {
        out.state = changed(inputs.state, Some(st));
    }
}

/// The slot the hint names; a missing hint or one naming no slot is a
/// problem (only a note without a store).
fn named_by_hint(inputs: &Inputs, state_known: bool, out: &mut Outcome) -> Option<Slot> {
    match inputs.hint {
        None => {
            if state_known {
                out.errors.push(Problem::NoHint);
            } else {
                out.notes.push(Problem::NoHint.to_string());
            }
            None
        }
        Some(Hint { slot: None, source }) => {
            out.errors.push(Problem::HintNamesNoSlot {
                hint: source.clone(),
            });
            None
        }
        // The slot sources already logged what they found.
        Some(Hint {
            slot: Some(slot), ..
        }) => Some(*slot),
    }
}

/// What boots when the state of a counted boot ([`Outcome::counted`]) could
/// not be made durable (`why`): a read-only medium, a copy on a bad block.
///
/// Booting the chosen slot anyway would boot it uncounted, and a broken
/// update would then be tried on every power-up. The state alone cannot tell
/// a trial from a committed slot (mark-active and mark-good both write 3
/// attempts with RAUC's defaults), so every counted boot is treated as a
/// trial, and the last committed slot boots instead: the slot the unchanged
/// state on the medium (`on_disk`) would boot if the chosen slot were skipped,
/// that is the first other slot of its `BOOT_ORDER` walk with attempts left
/// that has not failed in this boot. Nothing is written: the medium just
/// refused, and the state on it already says what the next boot should try.
///
/// Without such a slot (no other bootable slot, or nothing stored yet) the
/// chosen slot boots uncounted, since a boot beats none; the error says so.
pub(crate) fn uncounted(
    inputs: &Inputs,
    outcome: &Outcome,
    on_disk: Option<&State>,
    why: &str,
) -> Outcome {
    let chosen = outcome.decision.slot;
    let usable = |slot: Slot| slot != chosen && !inputs.failed.iter().any(|(s, _)| *s == slot);
    let committed = on_disk.and_then(|st| {
        st.bootable(inputs.config)
            .iter()
            .filter_map(|n| inputs.names.exact(n))
            .find(|s| usable(*s))
    });
    let mut out = Outcome {
        decision: outcome.decision.clone(),
        state: None,
        counted: false,
        fallback: outcome.fallback.clone(),
        notes: Vec::new(),
        errors: Vec::new(),
    };
    match committed {
        Some(slot) => {
            out.errors.push(Problem::Uncounted {
                why: why.to_string(),
                chosen,
                slot,
            });
            out.fallback = Some(format!(
                "the attempt on slot {chosen} could not be counted ({why}); booted slot {slot}"
            ));
            out.decision = Decision {
                slot,
                source: Source::Fallback,
            };
        }
        None => out.errors.push(Problem::BootsUncounted {
            why: why.to_string(),
            chosen,
        }),
    }
    out
}

/// The new state if it differs from what was read.
fn changed(before: Option<&State>, after: Option<State>) -> Option<State> {
    after.filter(|a| Some(a) != before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::uboot::rauc::Bootname;

    fn names() -> Bootnames {
        Bootnames {
            a: Bootname::new("A").unwrap(),
            b: Bootname::new("B").unwrap(),
        }
    }

    fn st(order: &str, a: u32, b: u32) -> State {
        State {
            order: order
                .split_whitespace()
                .map(|n| Bootname::new(n).unwrap())
                .collect(),
            left: [
                (Bootname::new("A").unwrap(), a),
                (Bootname::new("B").unwrap(), b),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn run(
        counter: Counter,
        state: Option<&State>,
        override_slot: Option<Slot>,
        bl: Option<&str>,
        failed: &[(Slot, String)],
    ) -> Result<Outcome, DecideError> {
        let names = names();
        let config = rauc::Config::default();
        let hint = bl.map(|raw| Hint {
            slot: names.slot(raw),
            source: format!("rauc.slot={raw:?}"),
        });
        decide(&Inputs {
            override_slot,
            default_slot: Slot::A,
            counter,
            hint: hint.as_ref(),
            state,
            names: &names,
            config: &config,
            failed,
        })
    }

    #[test]
    fn parse_and_other() {
        assert_eq!(Slot::parse("a"), Some(Slot::A));
        assert_eq!(Slot::parse("B"), Some(Slot::B));
        assert_eq!(Slot::parse("ab"), None);
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(names().slot("B"), Some(Slot::B));
        assert_eq!(names().slot("b"), Some(Slot::B));
        assert_eq!(names().slot("C"), None);
    }

    /// Counter = init: (state before) -> (slot, source, state after or None).
    #[test]
    fn init_counter_table() {
        type Row = (State, Slot, Source, Option<State>, bool);
        let rows: Vec<Row> = vec![
            // First in order with attempts: decremented.
            (
                st("A B", 3, 3),
                Slot::A,
                Source::Counters,
                Some(st("A B", 2, 3)),
                false,
            ),
            (
                st("B A", 3, 3),
                Slot::B,
                Source::Counters,
                Some(st("B A", 3, 2)),
                false,
            ),
            (
                st("B A", 3, 1),
                Slot::B,
                Source::Counters,
                Some(st("B A", 3, 0)),
                false,
            ),
            // B used up its attempts: out of the order, A boots.
            (
                st("B A", 3, 0),
                Slot::A,
                Source::Counters,
                Some(st("A", 2, 0)),
                false,
            ),
            // A bad slot stays out.
            (
                st("A", 3, 0),
                Slot::A,
                Source::Counters,
                Some(st("A", 2, 0)),
                false,
            ),
            // Nothing left: reset to the configured order, boot the first; an error.
            (
                st("B A", 0, 0),
                Slot::A,
                Source::Counters,
                Some(st("A B", 2, 3)),
                true,
            ),
            (
                st("", 0, 0),
                Slot::A,
                Source::Counters,
                Some(st("A B", 2, 3)),
                true,
            ),
        ];
        for (before, slot, source, after, error) in rows {
            let out = run(Counter::Init, Some(&before), None, None, &[]).unwrap();
            assert_eq!(out.decision, Decision { slot, source }, "{before:?}");
            assert_eq!(out.state, after, "{before:?}");
            assert_eq!(
                !out.errors.is_empty(),
                error,
                "{before:?}: {:?}",
                out.errors
            );
        }
    }

    #[test]
    fn used_up_slot_is_recorded_as_the_fallback() {
        let out = run(Counter::Init, Some(&st("B A", 3, 0)), None, None, &[]).unwrap();
        assert_eq!(
            out.fallback.as_deref(),
            Some("slot B used up its boot attempts")
        );
    }

    #[test]
    fn override_wins_and_leaves_counters() {
        let out = run(
            Counter::Init,
            Some(&st("A B", 3, 3)),
            Some(Slot::B),
            None,
            &[],
        )
        .unwrap();
        assert_eq!(
            out.decision,
            Decision {
                slot: Slot::B,
                source: Source::Override
            }
        );
        assert_eq!(out.state, None);
    }

    #[test]
    fn no_state_boots_the_default() {
        let out = run(Counter::Init, None, None, None, &[]).unwrap();
        assert_eq!(
            out.decision,
            Decision {
                slot: Slot::A,
                source: Source::Default
            }
        );
        assert_eq!(out.state, None);
    }

    #[test]
    fn failed_slot_falls_back_in_the_same_boot() {
        let failed = [(Slot::B, "cannot mount /dev/vda5".to_string())];
        // The counters had picked B (and decremented it); B failed: B is marked
        // bad and A is chosen, decremented in turn.
        let out = run(Counter::Init, Some(&st("B A", 3, 2)), None, None, &failed).unwrap();
        assert_eq!(
            out.decision,
            Decision {
                slot: Slot::A,
                source: Source::Fallback
            }
        );
        assert_eq!(out.state, Some(st("A", 2, 0)));
        assert!(out.fallback.unwrap().contains("cannot mount /dev/vda5"));
        // Without a state the other slot boots all the same.
        let out = run(Counter::Init, None, None, None, &[(Slot::A, "x".into())]).unwrap();
        assert_eq!(
            out.decision,
            Decision {
                slot: Slot::B,
                source: Source::Fallback
            }
        );
        // An override to a failed slot falls back too.
        let out = run(Counter::Init, None, Some(Slot::B), None, &failed).unwrap();
        assert_eq!(out.decision.slot, Slot::A);
    }

    #[test]
    fn failed_last_slot_of_the_order_never_leaves_it_empty() {
        let failed = [(Slot::A, "no init".to_string())];
        let out = run(Counter::Init, Some(&st("A", 3, 3)), None, None, &failed).unwrap();
        assert_eq!(out.decision.slot, Slot::B);
        assert_eq!(out.state, Some(st("B", 0, 2)));
        assert_eq!(
            out.fallback.as_deref(),
            Some("slot a failed to boot: no init")
        );
    }

    #[test]
    fn failed_slot_after_a_reset_is_not_chosen_again() {
        let failed = [(Slot::A, "no init".to_string())];
        let out = run(Counter::Init, Some(&st("A B", 0, 0)), None, None, &failed).unwrap();
        assert_eq!(out.decision.slot, Slot::B);
        assert_eq!(out.state, Some(st("B", 0, 2)));
    }

    #[test]
    fn both_failed_is_an_error() {
        let failed = [(Slot::A, "x".to_string()), (Slot::B, "y".to_string())];
        assert!(run(Counter::Init, Some(&st("A B", 3, 3)), None, None, &failed).is_err());
    }

    #[test]
    fn bootloader_counter_never_decrements() {
        let before = st("B A", 3, 2);
        let out = run(Counter::Bootloader, Some(&before), None, Some("B"), &[]).unwrap();
        assert_eq!(
            out.decision,
            Decision {
                slot: Slot::B,
                source: Source::Bootloader
            }
        );
        assert_eq!(out.state, None);
        assert!(out.errors.is_empty());
        // LEFT=0 after the bootloader's own decrement is still a legal last try.
        let out = run(
            Counter::Bootloader,
            Some(&st("B A", 3, 0)),
            None,
            Some("B"),
            &[],
        )
        .unwrap();
        assert_eq!(out.decision.slot, Slot::B);
    }

    #[test]
    fn bootloader_slot_marked_bad_is_refused() {
        let out = run(
            Counter::Bootloader,
            Some(&st("A", 3, 0)),
            None,
            Some("B"),
            &[],
        )
        .unwrap();
        assert_eq!(
            out.decision,
            Decision {
                slot: Slot::A,
                source: Source::Fallback
            }
        );
        assert!(
            out.errors[0].to_string().contains("marks bad"),
            "{:?}",
            out.errors
        );
        assert_eq!(out.errors[0].kind(), "decision");
    }

    #[test]
    fn bootloader_without_a_slot_follows_the_order() {
        let out = run(Counter::Bootloader, Some(&st("B A", 3, 3)), None, None, &[]).unwrap();
        assert_eq!(out.decision.slot, Slot::B);
        assert_eq!(out.errors.len(), 1);
        let out = run(
            Counter::Bootloader,
            Some(&st("B A", 3, 3)),
            None,
            Some("Z"),
            &[],
        )
        .unwrap();
        assert!(out.errors[0].to_string().contains("\"Z\""));
        assert_eq!(out.errors[0].kind(), "decision");
    }

    #[test]
    fn without_a_store_the_hint_decides() {
        let out = run(Counter::Bootloader, None, None, Some("B"), &[]).unwrap();
        assert_eq!(
            out.decision,
            Decision {
                slot: Slot::B,
                source: Source::Bootloader
            }
        );
        assert_eq!(out.state, None);
        let out = run(Counter::Bootloader, None, None, None, &[]).unwrap();
        assert_eq!(
            out.decision,
            Decision {
                slot: Slot::A,
                source: Source::Default
            }
        );
        assert!(out.errors.is_empty());
        // counter = init ignores the bootloader: slotinit counts, it decides.
        let out = run(Counter::Init, Some(&st("A B", 3, 3)), None, Some("B"), &[]).unwrap();
        assert_eq!(out.decision.slot, Slot::A);
    }

    /// RAUC-compatible orders: the recovery `R` and repeats are skipped and
    /// kept; an empty order is the default one and the counters decide.
    #[test]
    fn init_counter_walks_the_order_as_the_script_does() {
        let rows: Vec<(State, Slot, Option<State>, Option<&str>)> = vec![
            (st("R B A", 3, 3), Slot::B, Some(st("R B A", 3, 2)), None),
            (
                st("R B A", 3, 0),
                Slot::A,
                Some(st("R A", 2, 0)),
                Some("slot B used up its boot attempts"),
            ),
            (st("B B A", 3, 1), Slot::B, Some(st("B B A", 3, 0)), None),
            (
                st("", 0, 3),
                Slot::B,
                Some(st("B", 0, 2)),
                Some("slot A used up its boot attempts"),
            ),
            (st("R", 3, 3), Slot::A, Some(st("A B R", 2, 3)), None),
        ];
        for (before, slot, after, fallback) in rows {
            let out = run(Counter::Init, Some(&before), None, None, &[]).unwrap();
            assert_eq!(out.decision.slot, slot, "{before:?}");
            assert_eq!(out.state, after, "{before:?}");
            assert_eq!(out.fallback.as_deref(), fallback, "{before:?}");
            assert!(out.counted, "{before:?}");
        }
    }

    #[test]
    fn bootloader_counter_follows_the_walk_without_a_hint() {
        let out = run(
            Counter::Bootloader,
            Some(&st("R B A", 3, 3)),
            None,
            None,
            &[],
        )
        .unwrap();
        assert_eq!(out.decision.slot, Slot::B);
        // A lowercase word is no bootname to the script, though a person may type it.
        let out = run(Counter::Bootloader, Some(&st("b A", 3, 3)), None, None, &[]).unwrap();
        assert_eq!(out.decision.slot, Slot::A);
        assert!(!out.counted);
    }

    /// decide, then the commit of its state fails: what boots instead.
    fn not_durable(
        on_disk: Option<&State>,
        state: &State,
        failed: &[(Slot, String)],
    ) -> (Outcome, Outcome) {
        let names = names();
        let config = rauc::Config::default();
        let inputs = Inputs {
            override_slot: None,
            default_slot: Slot::A,
            counter: Counter::Init,
            hint: None,
            state: Some(state),
            names: &names,
            config: &config,
            failed,
        };
        let out = decide(&inputs).unwrap();
        let instead = uncounted(&inputs, &out, on_disk, "cannot write /x");
        (out, instead)
    }

    #[test]
    fn uncountable_trial_boots_the_last_committed_slot() {
        // B is on trial; A is the other bootable slot of the stored order.
        let disk = st("B A", 3, 2);
        let (out, instead) = not_durable(Some(&disk), &disk, &[]);
        assert_eq!(out.decision.slot, Slot::B);
        assert!(out.counted);
        assert_eq!(
            instead.decision,
            Decision {
                slot: Slot::A,
                source: Source::Fallback
            }
        );
        assert_eq!(instead.state, None, "nothing more is written");
        assert!(
            instead.errors[0].to_string().contains("cannot write /x")
                && instead.errors[0]
                    .to_string()
                    .contains("slot b would boot uncounted")
                && instead.errors[0].kind() == "bootstate-write",
            "{:?}",
            instead.errors
        );
        assert!(instead.fallback.unwrap().contains("could not be counted"));
        // An unknown name in the stored order is no slot to fall back to.
        let disk = st("B R", 3, 2);
        let (_, instead) = not_durable(Some(&disk), &disk, &[]);
        assert_eq!(instead.decision.slot, Slot::B);
    }

    #[test]
    fn uncountable_boot_without_another_bootable_slot_boots_uncounted() {
        type Case = (Option<State>, State, Vec<(Slot, String)>, Slot);
        let cases: Vec<Case> = vec![
            // The other slot used up its attempts, or left the order.
            (Some(st("B A", 0, 2)), st("B A", 0, 2), vec![], Slot::B),
            (Some(st("B", 3, 2)), st("B", 3, 2), vec![], Slot::B),
            // Nothing stored yet: no slot was ever committed.
            (None, st("A B", 3, 3), vec![], Slot::A),
            // The other slot failed to mount in this boot.
            (
                Some(st("B A", 3, 2)),
                st("B A", 3, 2),
                vec![(Slot::B, "no init".to_string())],
                Slot::A,
            ),
            // All counters were reset: the stored state boots nothing.
            (Some(st("A B", 0, 0)), st("A B", 0, 0), vec![], Slot::A),
        ];
        for (disk, state, failed, slot) in cases {
            let (out, instead) = not_durable(disk.as_ref(), &state, &failed);
            assert_eq!(out.decision.slot, slot, "{state:?}");
            assert_eq!(instead.decision, out.decision, "{state:?}");
            assert_eq!(instead.state, None);
            assert!(
                instead.errors[0]
                    .to_string()
                    .contains(&format!("booting slot {slot} UNCOUNTED"))
                    && instead.errors[0].kind() == "bootstate-write",
                "{:?}",
                instead.errors
            );
        }
    }

    #[test]
    fn only_a_decrement_is_counted() {
        let failed = [(Slot::B, "fsck".to_string())];
        let out = run(
            Counter::Bootloader,
            Some(&st("B A", 3, 2)),
            None,
            Some("B"),
            &failed,
        )
        .unwrap();
        assert!(out.state.is_some() && !out.counted);
        let out = run(
            Counter::Init,
            Some(&st("A B", 3, 3)),
            Some(Slot::B),
            None,
            &[],
        )
        .unwrap();
        assert!(!out.counted);
        let out = run(Counter::Init, None, None, None, &[]).unwrap();
        assert!(!out.counted);
    }

    #[test]
    fn bootloader_slot_failing_marks_it_bad() {
        let failed = [(Slot::B, "fsck".to_string())];
        let out = run(
            Counter::Bootloader,
            Some(&st("B A", 3, 2)),
            None,
            Some("B"),
            &failed,
        )
        .unwrap();
        assert_eq!(
            out.decision,
            Decision {
                slot: Slot::A,
                source: Source::Fallback
            }
        );
        assert_eq!(out.state, Some(st("A", 3, 0)));
    }
}
