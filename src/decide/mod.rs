//! Which slot boots: what the bootloader says it booted (the slot sources);
//! the boot-state backend decides from it (`state::Backend::decide`).

pub mod slot;
pub mod sources;
