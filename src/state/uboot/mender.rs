//! Mender's contract, as meta-mender's U-Boot integration keeps it
//! (meta-mender `meta-mender-core/recipes-bsp/u-boot/patches/0001-Generic-boot-code-for-Mender.patch`,
//! `include/env_mender.h`) with U-Boot's boot counter in the env
//! (u-boot `drivers/bootcount/bootcount_env.c`, `include/bootcount.h`
//! `bootcount_inc`/`bootcount_error`, `common/autoboot.c`):
//!
//! - `mender_boot_part` is the root partition's number (`mender_setup` makes
//!   `root=<storage>${mender_boot_part}` of it), `mender_boot_part_hex` the
//!   same number in hex (`load mmc 0:${mender_boot_part_hex}`). The slots'
//!   bootnames are these numbers (`bootname_a = "2"`, `bootname_b = "3"`).
//!   A value naming neither slot is the first slot: `mender_altbootcmd`
//!   tests `${mender_boot_part} = <A>` and takes A for anything else.
//! - `upgrade_available` non-zero (read as `env_get_ulong(.., 10, 0)`) is a
//!   trial: U-Boot counts `bootcount` (decimal) up at each boot and saves it;
//!   with `upgrade_available` 0 it neither loads nor saves it
//!   (`bootcount_load`/`bootcount_store`).
//! - When `bootlimit` (decimal; 0 or missing: no limit) is set and
//!   `bootcount > bootlimit`, U-Boot runs `altbootcmd`: `mender_altbootcmd`
//!   switches `mender_boot_part` to the other slot, sets
//!   `upgrade_available=0` and saves. meta-mender's default is `bootlimit=1`.
//! - Commit (the client's `mender commit`): `upgrade_available=0`,
//!   `bootcount=0`. Install: the new slot in `mender_boot_part`,
//!   `upgrade_available=1`, `bootcount=0`.
//!
//! As the backend's [`State`] (a counter per slot): the order is
//! `mender_boot_part`'s slot, then the other. A committed slot reads
//! `bootlimit + 1` ([`Contract::state_config`] makes that `attempts`), a
//! trial `bootlimit - bootcount` (at most `bootlimit`; never 0 without a
//! limit), the other slot is always the fallback `altbootcmd` takes (it reads
//! committed: Mender keeps no mark of its own for it). So mark-good is the
//! commit, mark-active the install, mark-bad of the booted slot the
//! rollback; mark-bad of the other slot has no variable to go to (the
//! backend refuses it rather than write nothing).
//!
//! [`Contract::state_config`]: super::contract::Contract::state_config

use super::envblock::Env;
use super::rauc::{self, BootStateError, Bootname, State};
use super::vars::{self, strtoul};

pub(crate) const BOOT_PART: &str = "mender_boot_part";
pub(crate) const BOOT_PART_HEX: &str = "mender_boot_part_hex";
pub(crate) const UPGRADE_AVAILABLE: &str = "upgrade_available";
pub(crate) const BOOTCOUNT: &str = "bootcount";
/// U-Boot's: read, never written here.
pub(crate) const BOOTLIMIT: &str = "bootlimit";

pub(super) fn absent(env: &Env) -> bool {
    env.get(BOOT_PART).is_none() && env.get(UPGRADE_AVAILABLE).is_none()
}

/// What the env says, as U-Boot and meta-mender's scripts read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vars {
    current: Bootname,
    trial: bool,
    bootcount: u32,
    /// 0: no limit.
    bootlimit: u32,
}

fn vars(env: &Env, config: &rauc::Config) -> Result<Vars, BootStateError> {
    let [first, second] = match config.slots.as_slice() {
        [a, b] => [a, b],
        _ => return Err(BootStateError::NoSlots),
    };
    let current = match env.get(BOOT_PART) {
        Some(v) if v == second.as_str().as_bytes() => second.clone(),
        _ => first.clone(),
    };
    let ulong = |name: &str| env.get(name).map_or(0, |v| strtoul(v, 10));
    let trial = ulong(UPGRADE_AVAILABLE) != 0;
    Ok(Vars {
        current,
        trial,
        // bootcount_load: 0 unless upgrade_available
        bootcount: if trial { ulong(BOOTCOUNT) } else { 0 },
        bootlimit: ulong(BOOTLIMIT),
    })
}

/// The counter of the booted slot: committed `attempts`; a trial what is left
/// of `bootlimit`, at most `attempts_primary` (the configured bootlimit), so
/// that a trial never reads committed.
fn trial_left(v: &Vars, config: &rauc::Config) -> u32 {
    if v.bootlimit == 0 {
        // No limit: altbootcmd never runs, the trial never runs out.
        return config.attempts_primary;
    }
    v.bootlimit
        .saturating_sub(v.bootcount)
        .min(config.attempts_primary)
}

pub(super) fn read(env: &Env, config: &rauc::Config) -> Result<State, BootStateError> {
    if absent(env) {
        return Err(BootStateError::MissingVariable {
            variable: BOOT_PART.into(),
        });
    }
    let v = vars(env, config)?;
    let left = config
        .slots
        .iter()
        .map(|s| {
            let l = if *s == v.current && v.trial {
                trial_left(&v, config)
            } else {
                config.attempts
            };
            (s.clone(), l)
        })
        .collect();
    let other = config
        .slots
        .iter()
        .find(|s| **s != v.current)
        .cloned()
        .ok_or(BootStateError::NoSlots)?;
    Ok(State {
        order: vec![v.current, other],
        left,
    })
}

/// Writes the slot the script boots next, its trial flag and count. A count
/// the env already holds for that slot is left as U-Boot wrote it.
pub(super) fn apply(
    state: &State,
    config: &rauc::Config,
    env: &mut Env,
) -> Result<(), BootStateError> {
    let next = vars::next_slot(state, config)?;
    let left = state.left(&next);
    let committed = left >= config.attempts;
    let before = (!absent(env)).then(|| vars(env, config).ok()).flatten();
    let unchanged = before.as_ref().is_some_and(|v| {
        v.current == next
            && v.trial != committed
            && (committed || trial_left(v, config) == left)
            && env.get(BOOT_PART) == Some(next.as_str().as_bytes())
    });
    vars::set(env, BOOT_PART, next.as_str())?;
    vars::set(env, BOOT_PART_HEX, &part_hex(&next))?;
    if unchanged {
        return Ok(());
    }
    if committed {
        vars::set(env, UPGRADE_AVAILABLE, "0")?;
        vars::set(env, BOOTCOUNT, "0")?;
    } else {
        let limit = match before.as_ref().map_or(0, |v| v.bootlimit) {
            0 => config.attempts_primary,
            l => l,
        };
        vars::set(env, UPGRADE_AVAILABLE, "1")?;
        // env_set_ulong writes decimal
        vars::set(env, BOOTCOUNT, &limit.saturating_sub(left).to_string())?;
    }
    Ok(())
}

/// `mender_boot_part_hex`: the partition number in hex, as meta-mender's
/// `MENDER_ROOTFS_PART_A_NUMBER_HEX`; a name that is not a number as it is.
fn part_hex(name: &Bootname) -> String {
    name.as_str()
        .parse::<u32>()
        .map_or_else(|_| name.as_str().to_string(), |n| format!("{n:x}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::uboot::contract::Contract;
    use crate::state::uboot::rauc::{Bootnames, Change};

    fn b(n: &str) -> Bootname {
        Bootname::new(n).unwrap()
    }

    /// meta-mender's numbers and bootlimit=1.
    fn config() -> rauc::Config {
        let names = Bootnames {
            a: b("2"),
            b: b("3"),
        };
        Contract::Mender.state_config(&names, 1, 1).unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied()).unwrap()
    }

    /// meta-mender's default env (env_mender.h) plus what the test adds.
    fn mender_env(extra: &[(&str, &str)]) -> Env {
        let mut e = env(&[
            ("altbootcmd", "run mender_altbootcmd; run bootcmd"),
            ("bootlimit", "1"),
            ("bootcount", "0"),
            ("upgrade_available", "0"),
            ("mender_boot_part", "2"),
            ("mender_boot_part_hex", "2"),
        ]);
        for (k, v) in extra {
            e.set(k, v).unwrap();
        }
        e
    }

    fn get(e: &Env, k: &str) -> String {
        String::from_utf8_lossy(e.get(k).unwrap_or(b"<unset>")).into_owned()
    }

    fn written(state: &State, base: &Env) -> Env {
        let mut e = base.clone();
        apply(state, &config(), &mut e).unwrap();
        e
    }

    #[test]
    fn reads_committed_trial_and_counted_trial() {
        let c = config();
        let s = read(&mender_env(&[]), &c).unwrap();
        assert_eq!(s.order, [b("2"), b("3")]);
        assert_eq!((s.left(&b("2")), s.left(&b("3"))), (2, 2));
        // after the install, before U-Boot counted
        let s = read(
            &mender_env(&[("mender_boot_part", "3"), ("upgrade_available", "1")]),
            &c,
        )
        .unwrap();
        assert_eq!(s.order, [b("3"), b("2")]);
        assert_eq!((s.left(&b("3")), s.left(&b("2"))), (1, 2));
        // U-Boot counted this boot: nothing left, the next boot rolls back
        let s = read(
            &mender_env(&[
                ("mender_boot_part", "3"),
                ("upgrade_available", "1"),
                ("bootcount", "1"),
            ]),
            &c,
        )
        .unwrap();
        assert_eq!((s.left(&b("3")), s.left(&b("2"))), (0, 2));
        assert_eq!(s.bootable(&c), [b("2")]);
    }

    #[test]
    fn foreign_values_read_as_u_boot_reads_them() {
        let c = config();
        let left3 = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("mender_boot_part", "3")];
            pairs.extend_from_slice(extra);
            read(&mender_env(&pairs), &c).unwrap().left(&b("3"))
        };
        // upgrade_available: decimal, garbage 0 (not a trial), 0x is hex
        assert_eq!(left3(&[("upgrade_available", "yes")]), 2);
        assert_eq!(left3(&[("upgrade_available", "")]), 2);
        assert_eq!(left3(&[("upgrade_available", "0x1")]), 1);
        assert_eq!(left3(&[("upgrade_available", "2")]), 1);
        // bootcount: decimal ("a" is 0), only counted during a trial
        assert_eq!(left3(&[("upgrade_available", "1"), ("bootcount", "a")]), 1);
        assert_eq!(left3(&[("upgrade_available", "0"), ("bootcount", "9")]), 2);
        assert_eq!(
            left3(&[("upgrade_available", "1"), ("bootcount", "0x1")]),
            0
        );
        // bootlimit: missing or 0 is no limit; a larger one is capped
        let mut e = mender_env(&[("mender_boot_part", "3"), ("upgrade_available", "1")]);
        e.set("bootcount", "7").unwrap();
        e.set("bootlimit", "0").unwrap();
        assert_eq!(read(&e, &c).unwrap().left(&b("3")), 1);
        e.set("bootlimit", "9").unwrap();
        assert_eq!(read(&e, &c).unwrap().left(&b("3")), 1);
        e.set("bootlimit", "7").unwrap();
        assert_eq!(read(&e, &c).unwrap().left(&b("3")), 0);
        // a partition number of neither slot: altbootcmd's else, slot A
        let s = read(&mender_env(&[("mender_boot_part", "7")]), &c).unwrap();
        assert_eq!(s.order[0], b("2"));
        let s = read(&mender_env(&[("mender_boot_part", "")]), &c).unwrap();
        assert_eq!(s.order[0], b("2"));
        // not a mender env
        assert!(matches!(
            read(&env(&[("bootcmd", "x"), ("bootcount", "1")]), &c),
            Err(BootStateError::MissingVariable { variable }) if variable == BOOT_PART
        ));
    }

    #[test]
    fn install_commit_and_rollback_are_menders() {
        let c = config();
        let base = mender_env(&[]);
        let committed = read(&base, &c).unwrap();
        // mark-active 3: the install
        let active = rauc::mark_active(&committed, &b("3"), c.attempts_primary).unwrap();
        let e = written(&active.state, &base);
        assert_eq!(
            [BOOT_PART, BOOT_PART_HEX, UPGRADE_AVAILABLE, BOOTCOUNT].map(|k| get(&e, k)),
            ["3", "3", "1", "0"]
        );
        assert_eq!(get(&e, "altbootcmd"), "run mender_altbootcmd; run bootcmd");
        assert_eq!(get(&e, "bootlimit"), "1");
        // U-Boot counts the boot, then mark-good: the commit
        let mut counted = e.clone();
        counted.set(BOOTCOUNT, "1").unwrap();
        let trial = read(&counted, &c).unwrap();
        let good = rauc::mark_good(&trial, &b("3"), c.attempts).unwrap();
        let e = written(&good.state, &counted);
        assert_eq!(
            [BOOT_PART, UPGRADE_AVAILABLE, BOOTCOUNT].map(|k| get(&e, k)),
            ["3", "0", "0"]
        );
        assert_eq!(
            rauc::mark_good(&read(&e, &c).unwrap(), &b("3"), c.attempts)
                .unwrap()
                .change,
            Change::Unchanged
        );
        // mark-bad of the trial: the rollback altbootcmd does
        let bad = rauc::mark_bad(&trial, &b("3")).unwrap();
        let e = written(&bad.state, &counted);
        assert_eq!(
            [BOOT_PART, BOOT_PART_HEX, UPGRADE_AVAILABLE, BOOTCOUNT].map(|k| get(&e, k)),
            ["2", "2", "0", "0"]
        );
        // boot_next of the other slot during a trial: as altbootcmd, committed
        let next = rauc::put_first(&trial, &b("2")).unwrap();
        let e = written(&next.state, &counted);
        assert_eq!(
            [BOOT_PART, UPGRADE_AVAILABLE].map(|k| get(&e, k)),
            ["2", "0"]
        );
    }

    #[test]
    fn an_unchanged_trial_keeps_u_boots_count() {
        let c = config();
        let mut e = mender_env(&[("mender_boot_part", "3"), ("upgrade_available", "1")]);
        e.set("bootlimit", "5").unwrap();
        e.set("bootcount", "3").unwrap();
        let s = read(&e, &c).unwrap();
        assert_eq!(s.left(&b("3")), 1);
        let after = written(&s, &e);
        assert_eq!(get(&after, BOOTCOUNT), "3");
        assert_eq!(read(&after, &c).unwrap(), s);
    }

    #[test]
    fn partition_numbers_in_hex() {
        assert_eq!(part_hex(&b("10")), "a");
        assert_eq!(part_hex(&b("2")), "2");
        assert_eq!(part_hex(&b("x")), "x");
    }
}
