//! Words every stage shares: the slots, the slot sources, and how an error
//! chain reads in one line.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One of the two system slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// Accepts `a`, `b`, `A`, `B` (users type both; RAUC's bootnames are upper case).
    pub fn parse(text: &str) -> Option<Slot> {
        match text {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }

    pub(crate) fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub(crate) fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// `rauc.slot=<bootname>` (the key is `bootstate.cmdline_key`).
    Rauc,
    /// `root=PARTLABEL=...`, `root=PARTUUID=...` or `root=/dev/...`.
    Root,
    /// `androidboot.slot_suffix=_a|_b`.
    Android,
    /// The firmware's boot partition in the device tree.
    Devicetree,
}

pub const DEFAULT_ORDER: [SourceKind; 4] = [
    SourceKind::Rauc,
    SourceKind::Root,
    SourceKind::Android,
    SourceKind::Devicetree,
];

/// `error: cause: cause` in one line, for kmsg and the handoff.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
