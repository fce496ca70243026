//! The A/B article's contract (REFERENCE.md "Other boot-state conventions"):
//! `boot_slot=<name>` names the slot to boot, `boot_<name>_left` counts the
//! attempts each slot has left. Its boot script, uboot/article.cmd, run by
//! U-Boot:
//!
//! - a missing or empty `boot_slot` is the first slot (`a`), a missing or
//!   empty counter is `attempts` (the script's `test -n ... || setenv`);
//! - `boot_slot` is compared as a string (`test "${boot_slot}" = <b>`): any
//!   value but the second slot's name boots the first slot;
//! - a counter is read as `setexpr` reads its operands (`cmd/setexpr.c`,
//!   `hextoul`): hex, a `0x` prefix allowed, the leading hex digits only,
//!   garbage 0; and written as `setexpr` writes (`env_set_hex`, "%lx": hex
//!   without `0x`). A decimal "10" typed by hand is 16 to the script, and so
//!   here;
//! - the script decrements the counter of `boot_slot`; a slot at zero is not
//!   booted: `boot_slot` switches to the other slot, whose counter is then
//!   decremented; with both at zero both are reset to `attempts` and the first
//!   slot boots (the script cannot reach a bootable state otherwise);
//! - commit (mark-good) sets the slot's counter back to `attempts`.
//!
//! As the backend's [`State`]: the order is `boot_slot`'s slot then the
//! other, the counters are the counters; RAUC's choice over that order is the
//! script's choice. Writing back, `boot_slot` names the slot the script boots
//! next ([`vars::next_slot`]): a slot marked bad (left 0, out of the
//! order) hands `boot_slot` to the other.

use super::envblock::Env;
use super::rauc::{self, BootStateError, Bootname, State};
use super::vars::{self, strtoul};

/// The variable naming the slot to boot.
pub(crate) const BOOT_SLOT: &str = "boot_slot";

/// `boot_<name>_left`.
pub(crate) fn left_variable(slot: &Bootname) -> String {
    format!("boot_{}_left", slot.as_str())
}

/// True when none of the article's variables is set (the slots' counters are
/// named by the configured slots; any `boot_*_left` counts).
pub(super) fn absent(env: &Env) -> bool {
    env.get(BOOT_SLOT).is_none()
        && !env.iter().any(|(k, _)| {
            k.starts_with(b"boot_") && k.ends_with(b"_left") && k.len() > b"boot__left".len()
        })
}

/// Reads the state as uboot/article.cmd does (module docs). Never fails on a
/// value: the script boots whatever it holds; only an env with none of the
/// variables is [`BootStateError::MissingVariable`].
pub(super) fn read(env: &Env, config: &rauc::Config) -> Result<State, BootStateError> {
    if absent(env) {
        return Err(BootStateError::MissingVariable {
            variable: BOOT_SLOT.into(),
        });
    }
    let [first, second] = slots(config)?;
    let current = match env.get(BOOT_SLOT) {
        Some(v) if v == second.as_str().as_bytes() => second.clone(),
        _ => first.clone(),
    };
    let other = if current == *first { second } else { first };
    let left = config
        .slots
        .iter()
        .map(|s| {
            let count = match env.get(&left_variable(s)) {
                None | Some([]) => config.attempts,
                Some(v) => strtoul(v, 16),
            };
            (s.clone(), count)
        })
        .collect();
    Ok(State {
        order: vec![current, other.clone()],
        left,
    })
}

/// Writes `boot_slot` (the slot the script boots next) and every configured
/// slot's counter, hex without `0x` as `setexpr` writes.
pub(super) fn apply(
    state: &State,
    config: &rauc::Config,
    env: &mut Env,
) -> Result<(), BootStateError> {
    let next = vars::next_slot(state, config)?;
    vars::set(env, BOOT_SLOT, next.as_str())?;
    for slot in &config.slots {
        vars::set(
            env,
            &left_variable(slot),
            &format!("{:x}", state.left(slot)),
        )?;
    }
    Ok(())
}

fn slots(config: &rauc::Config) -> Result<[&Bootname; 2], BootStateError> {
    match config.slots.as_slice() {
        [a, b] => Ok([a, b]),
        _ => Err(BootStateError::NoSlots),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::uboot::contract::Contract;
    use crate::state::uboot::rauc::{Bootnames, Change, Chosen};

    fn b(n: &str) -> Bootname {
        Bootname::new(n).unwrap()
    }

    fn config() -> rauc::Config {
        let names = Bootnames {
            a: b("a"),
            b: b("b"),
        };
        Contract::Article.state_config(&names, 3, 3).unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied()).unwrap()
    }

    fn read_env(pairs: &[(&str, &str)]) -> State {
        read(&env(pairs), &config()).unwrap()
    }

    fn vars(state: &State) -> Env {
        let mut e = Env::new();
        apply(state, &config(), &mut e).unwrap();
        e
    }

    fn get(e: &Env, k: &str) -> String {
        String::from_utf8_lossy(e.get(k).unwrap_or(b"<unset>")).into_owned()
    }

    #[test]
    fn reads_what_the_script_reads() {
        let s = read_env(&[
            ("boot_slot", "b"),
            ("boot_a_left", "3"),
            ("boot_b_left", "2"),
        ]);
        assert_eq!(s.order, [b("b"), b("a")]);
        assert_eq!((s.left(&b("a")), s.left(&b("b"))), (3, 2));
        // missing or empty: the script's defaults (slot a, 3 attempts)
        for pairs in [
            &[("boot_a_left", "1")][..],
            &[("boot_slot", ""), ("boot_a_left", "1")][..],
            &[("boot_slot", "c"), ("boot_a_left", "1")][..],
            &[("boot_slot", "B"), ("boot_a_left", "1")][..],
            &[("boot_slot", "b "), ("boot_a_left", "1")][..],
        ] {
            let s = read_env(pairs);
            assert_eq!(s.order[0], b("a"), "{pairs:?}");
            assert_eq!((s.left(&b("a")), s.left(&b("b"))), (1, 3), "{pairs:?}");
        }
        let s = read_env(&[("boot_slot", "a"), ("boot_b_left", "")]);
        assert_eq!(s.left(&b("b")), 3);
        // counters are hex as setexpr reads them; garbage is 0
        for (value, left) in [
            ("a", 10),
            ("10", 16),
            ("0x2", 2),
            ("2z", 2),
            ("zz", 0),
            ("-1", 0),
        ] {
            let s = read_env(&[("boot_slot", "a"), ("boot_a_left", value)]);
            assert_eq!(s.left(&b("a")), left, "{value}");
        }
        // none of the variables: a fresh env
        assert!(matches!(
            read(&env(&[("bootcmd", "run x")]), &config()),
            Err(BootStateError::MissingVariable { variable }) if variable == "boot_slot"
        ));
        assert!(!absent(&env(&[("boot_q_left", "1")])));
        assert!(absent(&env(&[("boot__left", "1"), ("BOOT_ORDER", "A B")])));
    }

    #[test]
    fn writes_only_its_variables_hex_without_prefix() {
        let mut e = env(&[
            ("bootcmd", "run x"),
            ("boot_slot", "a"),
            ("boot_a_left", "3"),
        ]);
        let mut s = read(&e, &config()).unwrap();
        s.left.insert(b("a"), 12);
        apply(&s, &config(), &mut e).unwrap();
        assert_eq!(get(&e, "bootcmd"), "run x");
        assert_eq!(get(&e, "boot_a_left"), "c");
        assert_eq!(get(&e, "boot_b_left"), "3");
        assert_eq!(get(&e, "boot_slot"), "a");
        assert_eq!(read(&e, &config()).unwrap(), s);
    }

    #[test]
    fn marks() {
        let c = config();
        let trial = read_env(&[
            ("boot_slot", "b"),
            ("boot_a_left", "3"),
            ("boot_b_left", "2"),
        ]);
        // mark-good: the counter back to 3, boot_slot stays
        let good = rauc::mark_good(&trial, &b("b"), c.attempts).unwrap();
        let e = vars(&good.state);
        assert_eq!(
            (get(&e, "boot_slot"), get(&e, "boot_b_left")),
            ("b".into(), "3".into())
        );
        assert_eq!(
            rauc::mark_good(&good.state, &b("b"), 3).unwrap().change,
            Change::Unchanged
        );
        // mark-bad of the current slot: boot_slot goes to the other
        let bad = rauc::mark_bad(&trial, &b("b")).unwrap();
        let e = vars(&bad.state);
        assert_eq!(
            (get(&e, "boot_slot"), get(&e, "boot_b_left")),
            ("a".into(), "0".into())
        );
        let back = read(&e, &c).unwrap();
        assert_eq!(back.bootable(&c), [b("a")]);
        // mark-active: boot_slot and a fresh count
        let active = rauc::mark_active(&good.state, &b("a"), c.attempts_primary).unwrap();
        let e = vars(&active.state);
        assert_eq!(
            (get(&e, "boot_slot"), get(&e, "boot_a_left")),
            ("a".into(), "3".into())
        );
        // boot_next: boot_slot only, counters kept
        let next = rauc::put_first(&trial, &b("a")).unwrap();
        let e = vars(&next.state);
        assert_eq!(
            (
                get(&e, "boot_slot"),
                get(&e, "boot_a_left"),
                get(&e, "boot_b_left")
            ),
            ("a".into(), "3".into(), "2".into())
        );
    }

    #[test]
    fn the_scripts_pick_decrement_switch_and_reset() {
        let c = config();
        // decrement the current slot
        let s = read_env(&[
            ("boot_slot", "a"),
            ("boot_a_left", "3"),
            ("boot_b_left", "3"),
        ]);
        let ch = rauc::choose_and_decrement(&s, &c).unwrap();
        assert_eq!(ch.slot, b("a"));
        assert_eq!(get(&vars(&ch.state), "boot_a_left"), "2");
        // at zero: switch boot_slot to the other and count it
        let s = read_env(&[
            ("boot_slot", "a"),
            ("boot_a_left", "0"),
            ("boot_b_left", "3"),
        ]);
        let ch = rauc::choose_and_decrement(&s, &c).unwrap();
        assert_eq!(ch.slot, b("b"));
        let e = vars(&ch.state);
        assert_eq!(
            (
                get(&e, "boot_slot"),
                get(&e, "boot_a_left"),
                get(&e, "boot_b_left")
            ),
            ("b".into(), "0".into(), "2".into())
        );
        // both exhausted: both reset, slot a counted
        let s = read_env(&[
            ("boot_slot", "b"),
            ("boot_a_left", "0"),
            ("boot_b_left", "0"),
        ]);
        let ch = rauc::choose_and_decrement(&s, &c).unwrap();
        assert!(matches!(ch.how, Chosen::Exhausted { reset_to: 3 }));
        let e = vars(&ch.state);
        assert_eq!(
            (
                get(&e, "boot_slot"),
                get(&e, "boot_a_left"),
                get(&e, "boot_b_left")
            ),
            ("a".into(), "2".into(), "3".into())
        );
    }
}
