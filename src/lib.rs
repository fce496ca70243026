//! slotinit: the A/B boot pipeline as a library, so every stage is testable on the host.
//!
//! The folders are the stages, lowest first; a module uses only modules above it
//! in this list (`tools/module-cycles` checks it):
//! `types`, `paths`, `kind` (shared words, places and problem kinds), `kernel`
//! (every call into the kernel, behind `kernel::sys::Sys`), `config`, `disk`
//! (partitions found and named), `state` (the boot-state backends and which
//! slot boots), `mount` (the plan and its executor), `handoff` (what the init
//! tells the booted system), `init` (PID 1's stages), `cli` (the subcommands
//! after boot).
//!
//! Items are `pub` only where the binary (`main.rs`), the integration tests or
//! the fuzz checks (`fuzz/src/checks.rs`) use them (or a `pub` signature names
//! them), `pub(crate)` or narrower otherwise, so that `dead_code` (denied in
//! Cargo.toml's `[lints]`) sees every item nothing calls.
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod crypt;
pub mod disk;
pub(crate) mod handoff;
pub mod init;
pub mod kernel;
pub(crate) mod kind;
pub(crate) mod mount;
pub(crate) mod paths;
pub mod state;
pub mod types;
