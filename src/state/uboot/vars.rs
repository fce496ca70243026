//! What the contracts' boot scripts share: U-Boot's reading of a number
//! (`simple_strtoul`), the slot a script boots next from the backend's state,
//! and setting a variable with its name in the error. A leaf under the
//! contracts (`contract`, `article`, `mender`).

use super::envblock::Env;
use super::rauc::{self, BootStateError, Bootname, State};

/// The slot the boot script boots next from `state`: the first slot of the
/// walk with attempts left; with none left, the first of the walk (the
/// script's reset), or the first configured slot.
pub fn next_slot(state: &State, config: &rauc::Config) -> Result<Bootname, BootStateError> {
    let walk = state.walk(config);
    walk.iter()
        .find(|s| state.left(s) > 0)
        .or(walk.first())
        .or(config.slots.first())
        .cloned()
        .ok_or(BootStateError::NoSlots)
}

/// U-Boot's `simple_strtoul(value, NULL, base)` (`lib/strto.c`): no blanks
/// skipped, a `0x`/`0X` prefix switches to base 16 whatever the base asked
/// for, then digits of the base as long as they come; none is 0. Wraps as
/// U-Boot's `ulong` does on aarch64, then saturates to u32.
pub(crate) fn strtoul(value: &[u8], base: u32) -> u32 {
    let (digits, base) = match value {
        [b'0', x, rest @ ..] if x.eq_ignore_ascii_case(&b'x') => (rest, 16),
        _ => (value, base),
    };
    let mut result: u64 = 0;
    for &c in digits {
        let Some(d) = (c as char).to_digit(36).filter(|d| *d < base) else {
            break;
        };
        result = result
            .wrapping_mul(u64::from(base))
            .wrapping_add(u64::from(d));
    }
    u32::try_from(result).unwrap_or(u32::MAX)
}

/// Sets `variable`, naming it on failure.
pub(crate) fn set(env: &mut Env, variable: &str, value: &str) -> Result<(), BootStateError> {
    env.set(variable, value)
        .map(drop)
        .map_err(|source| BootStateError::WriteVariable {
            variable: variable.into(),
            source,
        })
}
