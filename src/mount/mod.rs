//! The mounts: a plan of steps built from the config, run by the executor
//! through `Sys`, and the machine-id it keeps.

pub mod executor;
pub mod machine_id;
pub mod plan;
