//! slotinit: the A/B boot pipeline as a library, so every stage is testable on the host.
//!
//! The folders are the stages, lowest first; a module uses only modules above it
//! in this list (tests/cycles checks it):
//! `types`, `paths` (shared words and places), `kernel` (every call into the
//! kernel, behind `kernel::sys::Sys`), `config`, `disk` (partitions found and
//! named), `state` (the boot-state backends), `decide` (which slot boots),
//! `mount` (the plan and its executor), `handoff` (what the init tells the
//! booted system), `init` (PID 1's stages), `cli` (the subcommands after boot).
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod disk;
pub mod handoff;
pub mod init;
pub mod kernel;
pub mod mount;
pub mod paths;
pub mod state;
pub mod types;
