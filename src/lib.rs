//! slotinit: the A/B boot pipeline as a library, so every stage is testable on the host.
#![deny(unsafe_code)]

pub mod boot;
pub mod bootenv;
pub mod bootstate;
pub mod cli;
pub mod cmdline;
pub mod config;
pub mod devices;
pub mod envblock;
pub mod envstore;
pub mod executor;
pub mod fwenv;
pub mod gpt;
pub mod handoff;
pub mod kmsg;
pub mod machine_id;
pub mod modules;
pub mod plan;
pub mod slot;
pub mod sources;
pub mod switch_root;
pub mod sys;
pub mod udevlinks;
pub mod uevent;
