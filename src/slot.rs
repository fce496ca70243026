//! Slot identity and the slot decision: which slot boots, and why.

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

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn letter(self) -> &'static str {
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

/// Where the decision came from; recorded in the handoff and shown by `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `slotinit.slot=` on the cmdline.
    Override,
    /// Nothing chose: the configured default slot.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub slot: Slot,
    pub source: Source,
}

/// The slot decision. Inputs are values; the result says which slot and why.
pub fn decide(override_slot: Option<Slot>, default_slot: Slot) -> Decision {
    match override_slot {
        Some(slot) => Decision {
            slot,
            source: Source::Override,
        },
        None => Decision {
            slot: default_slot,
            source: Source::Default,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_other() {
        assert_eq!(Slot::parse("a"), Some(Slot::A));
        assert_eq!(Slot::parse("B"), Some(Slot::B));
        assert_eq!(Slot::parse("ab"), None);
        assert_eq!(Slot::parse(""), None);
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::B.other(), Slot::A);
    }

    #[test]
    fn override_wins_else_default() {
        assert_eq!(
            decide(Some(Slot::B), Slot::A),
            Decision {
                slot: Slot::B,
                source: Source::Override
            }
        );
        assert_eq!(
            decide(None, Slot::A),
            Decision {
                slot: Slot::A,
                source: Source::Default
            }
        );
        assert_eq!(decide(None, Slot::B).slot, Slot::B);
    }
}
