//! The variable contract of the U-Boot env backend: which variables of the env
//! hold the boot state, and how they map to the backend's state (the order the
//! slots are tried in, the attempts each has left, committed or on trial) and
//! back. RAUC's (`BOOT_ORDER`, `BOOT_<name>_LEFT`), the A/B article's
//! (`boot_slot`, `boot_<name>_left`) and Mender's (`mender_boot_part`,
//! `upgrade_available`, `bootcount` against `bootlimit`).
//!
//! The backend decides and marks over one state, [`State`] (RAUC's model: an
//! order and a counter per slot); a contract only reads it from the env and
//! writes it back, as the boot script of that contract reads it. Writing
//! touches only the contract's own variables, on top of the env that was read
//! (`bootcmd`, `bootlimit`, `altbootcmd`... stay as the bootloader keeps them).
//! Pure: no Sys here.

use super::envblock::Env;
use super::rauc::{self, BootStateError, Bootnames, State};
pub use super::vars::next_slot;
use super::{article, mender};
use serde::{Deserialize, Serialize};

/// `[bootstate.uboot-env] contract`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contract {
    /// RAUC's `BOOT_ORDER` and `BOOT_<name>_LEFT` (uboot/boot.cmd).
    #[default]
    Rauc,
    /// The A/B article's `boot_slot=<name>`, `boot_<name>_left` (uboot/article.cmd).
    Article,
    /// Mender's `mender_boot_part`, `upgrade_available`, `bootcount`,
    /// `bootlimit` (uboot/mender.cmd).
    Mender,
}

impl Contract {
    pub fn name(self) -> &'static str {
        match self {
            Contract::Rauc => "rauc",
            Contract::Article => "article",
            Contract::Mender => "mender",
        }
    }

    /// The backend's state config for this contract: the slots in their
    /// default order, the counter a commit sets and the one mark-active sets.
    ///
    /// `attempts`/`attempts_primary` are the config's keys. Mender keeps no
    /// counter of its own, only a trial flag and U-Boot's count: there
    /// `attempts` is `bootlimit` (a trial's boots), a trial's counter is
    /// `bootlimit - bootcount`, and a committed slot reads one above
    /// `bootlimit` ([`mender`] module docs), so committed and trial stay apart.
    pub fn state_config(
        self,
        names: &Bootnames,
        attempts: u32,
        attempts_primary: u32,
    ) -> Result<rauc::Config, BootStateError> {
        let slots = vec![names.a.clone(), names.b.clone()];
        match self {
            Contract::Rauc | Contract::Article => {
                rauc::Config::new(slots, attempts, attempts_primary)
            }
            Contract::Mender => rauc::Config::new(slots, attempts.saturating_add(1), attempts),
        }
    }

    /// The state as this contract's boot script reads the env. Fails with
    /// [`BootStateError::MissingVariable`] when the env holds none of the
    /// contract's variables ([`Contract::absent`]: a fresh env).
    pub fn read(self, env: &Env, config: &rauc::Config) -> Result<State, BootStateError> {
        match self {
            Contract::Rauc => State::read(env, config),
            Contract::Article => article::read(env, config),
            Contract::Mender => mender::read(env, config),
        }
    }

    /// True when the env holds none of this contract's variables: a board's
    /// default env (or another tool's) that adding them destroys nothing of.
    pub fn absent(self, env: &Env) -> bool {
        match self {
            Contract::Rauc => env.get(rauc::BOOT_ORDER).is_none(),
            Contract::Article => article::absent(env),
            Contract::Mender => mender::absent(env),
        }
    }

    /// Writes `state` into `env` as this contract's variables; every other
    /// variable stays as it was.
    pub fn apply(
        self,
        state: &State,
        config: &rauc::Config,
        env: &mut Env,
    ) -> Result<(), BootStateError> {
        match self {
            Contract::Rauc => rauc::apply(state, env),
            Contract::Article => article::apply(state, config, env),
            Contract::Mender => mender::apply(state, config, env),
        }
    }

    /// `base` with the initial state written in this contract's variables.
    pub fn default_env(self, config: &rauc::Config, base: &Env) -> Result<Env, BootStateError> {
        let mut env = base.clone();
        self.apply(&State::initial(config), config, &mut env)?;
        Ok(env)
    }

    /// Whether the bootloader can still boot `slot` from `state`. Mender's
    /// script reaches the slot that is not `mender_boot_part` only through
    /// `altbootcmd`, the rollback of a trial: while the booted slot is
    /// committed (it reads `attempts`, `upgrade_available=0`) that slot is
    /// never booted, as good as marked bad (RAUC marks it bad before it
    /// writes it). The other contracts: a slot with attempts left.
    pub fn reachable(self, state: &State, config: &rauc::Config, slot: &rauc::Bootname) -> bool {
        if !state.bootable(config).contains(slot) {
            return false;
        }
        match self {
            Contract::Mender => match state.order.first() {
                Some(first) if first != slot => state.left(first) < config.attempts,
                _ => true,
            },
            Contract::Rauc | Contract::Article => true,
        }
    }

    /// The contract's variables as `name=value` words, for messages (what a
    /// mark wrote, or would write).
    pub fn describe(self, state: &State, config: &rauc::Config) -> String {
        let mut env = Env::new();
        if self.apply(state, config, &mut env).is_err() {
            return String::from("(not representable)");
        }
        env.iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::uboot::rauc::Bootname;
    use crate::state::uboot::vars::strtoul;

    #[test]
    fn strtoul_is_u_boots() {
        // hex as setexpr writes it (env_set_hex: "%lx", no 0x)
        assert_eq!(strtoul(b"a", 16), 10);
        assert_eq!(strtoul(b"10", 16), 16);
        assert_eq!(strtoul(b"0x10", 16), 16);
        // decimal as env_get_ulong(.., 10, ..) reads; a 0x prefix wins
        assert_eq!(strtoul(b"10", 10), 10);
        assert_eq!(strtoul(b"0x10", 10), 16);
        assert_eq!(strtoul(b"0X1f", 10), 31);
        // garbage: the digits that come first, else 0; no blank skipped
        assert_eq!(strtoul(b"3z", 10), 3);
        assert_eq!(strtoul(b"zz", 16), 0);
        assert_eq!(strtoul(b" 3", 10), 0);
        assert_eq!(strtoul(b"", 10), 0);
        assert_eq!(strtoul(b"-1", 10), 0);
        assert_eq!(strtoul(b"a", 10), 0);
        assert_eq!(strtoul(b"99999999999", 10), u32::MAX);
    }

    #[test]
    fn mender_committed_reads_above_a_trial() {
        let names = Bootnames {
            a: Bootname::new("2").unwrap(),
            b: Bootname::new("3").unwrap(),
        };
        let c = Contract::Mender.state_config(&names, 1, 1).unwrap();
        assert_eq!((c.attempts, c.attempts_primary), (2, 1));
        let c = Contract::Article.state_config(&names, 3, 3).unwrap();
        assert_eq!((c.attempts, c.attempts_primary), (3, 3));
    }
}
