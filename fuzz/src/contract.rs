//! The `contract` target's check: the article's and Mender's variable contracts
//! (`slotinit::state::uboot::contract`) over an arbitrary env data area.
//!
//! - reading never panics, whatever the variables hold;
//! - a state that reads names every configured slot, and its walk has both;
//! - written back (over the same env) it reads to a state that boots the same
//!   slot next, and writing that again changes nothing (a fixed point); every
//!   variable that is not the contract's stays byte for byte;
//! - each mark the backend would write (mark-good, mark-active, boot_next, and
//!   a mark-bad that leaves another slot bootable) gives an env that reads,
//!   with at least one bootable slot where the mark left one: mark-good leaves the slot committed,
//!   mark-active and boot_next make it the next boot, mark-bad makes it not
//!   the next boot or is a mark the contract cannot hold (Mender: the slot not
//!   booted; the backend refuses it).
//!
//! Depends only on slotinit, so `tests/fuzz_regressions.rs` includes it too.

use slotinit::state::uboot::contract::{self, Contract};
use slotinit::state::uboot::envblock::{self, Env};
use slotinit::state::uboot::rauc::{self, Bootname, Bootnames, State};

/// (contract, bootnames, attempts): the shipped profiles' and variants.
fn configs() -> Vec<(Contract, rauc::Config, Vec<&'static str>)> {
    let names = |a: &str, b: &str| Bootnames {
        a: Bootname::new(a).unwrap_or_else(|e| panic!("{e}")),
        b: Bootname::new(b).unwrap_or_else(|e| panic!("{e}")),
    };
    let mut out = Vec::new();
    for (contract, a, b, attempts, vars) in [
        (
            Contract::Article,
            "a",
            "b",
            3,
            vec!["boot_slot", "boot_a_left", "boot_b_left"],
        ),
        (
            Contract::Article,
            "A",
            "B",
            1,
            vec!["boot_slot", "boot_A_left", "boot_B_left"],
        ),
        (Contract::Mender, "2", "3", 1, mender_vars()),
        (Contract::Mender, "2", "3", 3, mender_vars()),
        (Contract::Mender, "5", "10", 2, mender_vars()),
    ] {
        let config = contract
            .state_config(&names(a, b), attempts, attempts)
            .unwrap_or_else(|e| panic!("{e}"));
        out.push((contract, config, vars));
    }
    out
}

fn mender_vars() -> Vec<&'static str> {
    vec![
        "mender_boot_part",
        "mender_boot_part_hex",
        "upgrade_available",
        "bootcount",
    ]
}

pub fn contract(data: &[u8]) {
    let Ok(env) = envblock::parse_data(data) else {
        return;
    };
    for (contract, config, vars) in configs() {
        let state = match contract.read(&env, &config) {
            Ok(s) => s,
            Err(e) => {
                assert!(contract.absent(&env), "{}: {e}", contract.name());
                continue;
            }
        };
        assert!(!contract.absent(&env));
        assert!(state.left.keys().count() == config.slots.len());
        let walk = state.walk(&config);
        assert_eq!(walk.len(), 2, "{state:?}");

        let (written, back) = round_trip(contract, &config, &env, &state);
        assert_eq!(
            next(&back, &config),
            next(&state, &config),
            "{state:?} -> {back:?}"
        );
        let (again, back2) = round_trip(contract, &config, &written, &back);
        assert_eq!(again, written, "writing {back:?} twice differs");
        assert_eq!(back2, back);
        for (k, v) in env.iter() {
            if !vars.iter().any(|n| n.as_bytes() == k) {
                let now = written.iter().find(|(k2, _)| *k2 == k).map(|(_, v2)| v2);
                assert_eq!(now, Some(v), "{} changed", String::from_utf8_lossy(k));
            }
        }

        for slot in &config.slots {
            let good =
                rauc::mark_good(&state, slot, config.attempts).unwrap_or_else(|e| panic!("{e}"));
            let (_, r) = round_trip(contract, &config, &env, &good.state);
            if next(&good.state, &config) == *slot {
                assert!(r.left(slot) >= config.attempts, "good {slot}: {r:?}");
            }
            assert!(!bootable(&r, &config).is_empty());

            for marked in [
                rauc::mark_active(&state, slot, config.attempts_primary),
                rauc::put_first(&state, slot),
            ] {
                let m = marked.unwrap_or_else(|e| panic!("{e}"));
                let (_, r) = round_trip(contract, &config, &env, &m.state);
                // Counters are kept by boot_next: none left stays none left
                // (the script's reset then boots the first slot).
                if !bootable(&m.state, &config).is_empty() {
                    assert!(!bootable(&r, &config).is_empty(), "{r:?}");
                }
                if m.state.left(slot) > 0 {
                    assert_eq!(next(&r, &config), *slot, "{m:?} -> {r:?}");
                }
            }

            let bad = rauc::mark_bad(&state, slot).unwrap_or_else(|e| panic!("{e}"));
            if bootable(&bad.state, &config).is_empty() {
                continue; // refused without --force
            }
            let (_, r) = round_trip(contract, &config, &env, &bad.state);
            assert!(!bootable(&r, &config).is_empty(), "{r:?}");
            // The next boot is never the slot marked bad; a mark that leaves
            // it bootable and the next boot as it was is lost, and the
            // backend refuses it: only Mender's slot not booted.
            assert_ne!(next(&r, &config), *slot, "bad {slot}: {r:?}");
            if bootable(&r, &config).contains(slot) && next(&r, &config) == next(&state, &config) {
                assert_eq!(contract, Contract::Mender);
            }
        }
    }
}

/// The slots the boot script would boot, in its order (`State::bootable`).
fn bootable(state: &State, config: &rauc::Config) -> Vec<Bootname> {
    state
        .walk(config)
        .into_iter()
        .filter(|s| state.left(s) > 0)
        .collect()
}

fn next(state: &State, config: &rauc::Config) -> Bootname {
    contract::next_slot(state, config).unwrap_or_else(|e| panic!("{e}"))
}

/// `state` written over `env`, and what reads back.
fn round_trip(contract: Contract, config: &rauc::Config, env: &Env, state: &State) -> (Env, State) {
    let mut written = env.clone();
    if let Err(e) = contract.apply(state, config, &mut written) {
        panic!("{}: apply {state:?}: {e}", contract.name());
    }
    match contract.read(&written, config) {
        Ok(back) => (written, back),
        Err(e) => panic!("{}: {state:?} written does not read: {e}", contract.name()),
    }
}
