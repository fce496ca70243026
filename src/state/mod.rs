//! The boot state: what the firmware booted, the trial counters, and the
//! commit. Each backend is a folder.

pub mod uboot;
