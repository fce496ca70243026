//! The mounts: a plan of steps built from the config, run by the executor
//! through `Sys`, and the machine-id it keeps.

pub(crate) mod executor;
pub(crate) mod machine_id;
pub(crate) mod plan;
