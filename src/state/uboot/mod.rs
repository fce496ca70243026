//! The U-Boot environment with RAUC's contract (BOOT_ORDER, BOOT_x_LEFT): the
//! env format, where its copies live, the store that reads and writes it,
//! RAUC's decision over it, and the backend the init and the CLI use.

mod backend;
pub mod config;
pub mod decide;
pub mod envblock;
pub mod envstore;
pub mod fwenv;
pub mod rauc;
pub mod store;

pub use backend::UbootEnv;

use crate::state::{CheckError, Checked, Entry};

/// The registry line.
pub const BACKEND: Entry = Entry {
    name: config::NAME,
    legacy_keys: config::KEYS,
    check,
    reference: config::UbootEnvConfig::reference,
    open: backend::open,
};

fn check(bs: &crate::config::BootStateConfig) -> Result<Checked, CheckError> {
    let parsed = config::UbootEnvConfig::from_bootstate(bs).map_err(check_error)?;
    let deprecated = if parsed.deprecated.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "[bootstate] {} directly in [bootstate] is deprecated and read for one more \
             release: move it to [bootstate.{}]",
            parsed.deprecated.join(", "),
            config::NAME
        )]
    };
    Ok(Checked { deprecated })
}

pub(crate) fn check_error(e: config::UbootConfigError) -> CheckError {
    match e {
        config::UbootConfigError::Key(k) => CheckError::Key(k),
        e => CheckError::Backend(Box::new(e)),
    }
}
