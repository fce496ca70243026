//! The `fwu_mdata` target's properties: Arm FWU metadata (v1 and v2) from
//! arbitrary bytes never panics the parser; a copy that parses serializes
//! back to the same bytes; every transition of a valid copy yields a valid
//! copy that says what the transition did, and changes no byte but the CRC,
//! the indexes, the bank states and the images' accepted words.
//!
//! Shared with `tests/fuzz_regressions.rs` (included with `#[path]`), so it
//! depends on slotinit alone, as `checks.rs` does.

use slotinit::state::fwu::mdata::{self, BankState, Geometry, Mdata};

/// The platform geometry the first byte picks: 1 to 4 images, 2 to 4 banks.
fn geometry(b: u8) -> Geometry {
    Geometry {
        images: 1 + usize::from(b & 3),
        banks: 2 + usize::from((b >> 2) % 3),
    }
}

/// `copy` with its CRC made right over the size its header gives, so that
/// the fuzzer reaches the fields behind the CRC.
fn fix_crc(copy: &[u8], geo: Geometry) -> Option<Vec<u8>> {
    let word = |at: usize| {
        copy.get(at..at + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let size = match word(4)? {
        1 => geo.v1_size(),
        2 => word(16)? as usize,
        _ => return None,
    };
    if size < 8 || size > copy.len() {
        return None;
    }
    let mut fixed = copy.to_vec();
    let crc = mdata::crc_of(&fixed[..size]);
    fixed[..4].copy_from_slice(&crc.to_le_bytes());
    Some(fixed)
}

/// Byte `at` may change in a transition: the CRC, the indexes, v2's bank
/// states, an image's accepted word.
fn may_change(m: &Mdata, at: usize) -> bool {
    if at < 4 || (8..16).contains(&at) || (m.version() == 2 && (24..28).contains(&at)) {
        return true;
    }
    let (entries, entry) = if m.version() == 1 {
        (
            mdata::HEADER_V1,
            mdata::IMAGE_HEAD + m.banks() * mdata::BANK_INFO,
        )
    } else {
        (
            mdata::HEADER_V2 + mdata::DESC_HEAD,
            mdata::IMAGE_HEAD + m.banks() * mdata::BANK_INFO,
        )
    };
    (0..m.images()).any(|i| {
        (0..m.banks()).any(|b| {
            let acc = entries + i * entry + mdata::IMAGE_HEAD + b * mdata::BANK_INFO + 16;
            (acc..acc + 4).contains(&at)
        })
    })
}

type Transition = fn(&mut Mdata, usize) -> Result<bool, mdata::MdataError>;

/// One copy: parse, round trip, every transition on every bank (and one
/// past the last).
fn one(copy: &[u8], geo: Geometry) {
    let Ok(m) = mdata::parse(copy, geo) else {
        return;
    };
    let len = m.bytes().len();
    assert!(len <= copy.len() && len <= mdata::CAP);
    assert_eq!(m.bytes(), &copy[..len], "a parsed copy is its bytes");
    assert_eq!(mdata::parse(m.bytes(), geo).as_ref(), Ok(&m));
    assert!(m.active() < m.banks() && m.previous() < m.banks());
    assert!((2..=mdata::MAX_BANKS).contains(&m.banks()));
    let transitions: [(&str, Transition); 5] = [
        ("accept", |m, b| m.accept(b)),
        ("activate", |m, b| m.activate(b)),
        ("reject", |m, b| m.reject(b)),
        ("steer", |m, b| m.steer(b)),
        ("follow_boot", |m, b| m.follow_boot(b)),
    ];
    for (name, t) in transitions {
        for bank in 0..=m.banks() {
            let mut new = m.clone();
            let changed = match t(&mut new, bank) {
                Ok(c) => c,
                Err(_) => {
                    assert_eq!(bank, m.banks(), "{name} {bank}: refused a bank in range");
                    assert_eq!(new, m, "{name}: a refused transition changed the copy");
                    continue;
                }
            };
            assert!(bank < m.banks(), "{name} {bank}: took a bank out of range");
            let again = mdata::parse(new.bytes(), geo)
                .unwrap_or_else(|e| panic!("{name} {bank}: invalid result: {e}"));
            assert_eq!(again, new);
            assert_eq!(changed, new.bytes() != m.bytes(), "{name} {bank}");
            assert_eq!(new.bytes().len(), len);
            for at in 0..len {
                if new.bytes()[at] != m.bytes()[at] {
                    assert!(may_change(&m, at), "{name} {bank}: byte {at} changed");
                }
            }
            match name {
                "accept" => assert_eq!(new.state(bank), BankState::Accepted),
                "activate" => {
                    assert_eq!(new.active(), bank);
                    assert_eq!(new.state(bank), BankState::Valid);
                }
                "reject" => {
                    assert_ne!(new.active(), bank);
                    if m.version() == 2 {
                        assert_eq!(new.state(bank), BankState::Invalid);
                    }
                }
                "steer" => {
                    assert_eq!(new.active(), bank);
                    assert_ne!(new.state(bank), BankState::Invalid);
                }
                _ => assert_eq!(new.active(), bank),
            }
            // Twice is once (reject and activate may move the indexes
            // again, the rest settle).
            if matches!(name, "accept" | "steer" | "follow_boot") {
                let mut twice = new.clone();
                assert_eq!(t(&mut twice, bank).ok(), Some(false), "{name} {bank} twice");
            }
        }
    }
}

/// `data`: a geometry byte, then one copy (as stored, and with its CRC made
/// right); the same bytes cut in two are a primary and a secondary, and the
/// copy in use is the primary when it parses, as TF-A's `fwu_init`.
pub fn fwu_mdata(data: &[u8]) {
    let Some((&g, rest)) = data.split_first() else {
        return;
    };
    let geo = geometry(g);
    one(rest, geo);
    if let Some(fixed) = fix_crc(rest, geo) {
        one(&fixed, geo);
    }
    let half = rest.len() / 2;
    let (a, b) = rest.split_at(half);
    let used = mdata::parse(a, geo).or_else(|_| mdata::parse(b, geo));
    if let Ok(m) = used {
        assert!(a.starts_with(m.bytes()) || b.starts_with(m.bytes()));
    }
}
