//! Property checks behind the fuzz targets, shared with `tests/fuzz_regressions.rs`.
//!
//! `checks.rs` depends only on slotinit and its own dependencies so that the
//! regression test can include the same file with `#[path]` and replay crash
//! inputs under a plain `cargo test`.

pub mod checks;
pub mod fwu;
pub mod contract;
pub mod crypt;
