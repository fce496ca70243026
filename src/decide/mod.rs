//! Which slot boots: what the bootloader says it booted, and the decision.

pub mod slot;
pub mod sources;
