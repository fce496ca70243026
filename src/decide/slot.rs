//! The words of the decision, where the handoff finds them; the decision
//! itself is each boot-state backend's (`state::Backend::decide`).

pub use crate::state::decision::{Decision, Hint, Source};
