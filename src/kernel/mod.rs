//! The kernel as PID 1 meets it: its command line, its log, its modules, the
//! switch to the system, and `sys::Sys`, the one trait every kernel call goes
//! through (`fake` is its recording double for the tests). The one exception
//! is `kmsg`: the logger is a global `log::Log` that cannot borrow a `Sys`, so
//! it keeps its own /dev/kmsg descriptor.

pub mod cmdline;
#[cfg(test)]
pub(crate) mod fake;
pub mod kmsg;
pub(crate) mod modules;
pub(crate) mod switch_root;
pub(crate) mod sys;
pub(crate) mod watchdog;
