//! The disk: GPT reading, the wait for the partitions, and which partition is
//! which member of the layout.

pub mod devices;
pub mod gpt;
pub mod slotmap;
pub(crate) mod uevent;
