//! The metadata bytes (fixtures built field by field), the config table, and
//! the whole backend through the recording fake: decide, the ordered write,
//! repair, the marks, and every torn or lost write of a commit.

use super::backend::open_fwu;
use super::mdata::{self, BankState, Geometry, Mdata, MdataError};
use super::*;
use crate::config::Config;
use crate::disk::devices::Resolved;
use crate::kernel::fake::Fake;
use crate::state::decision::{Hint, Line, Problem, Source};
use crate::state::{Backend, Mark, MarkError};
use crate::types::Slot;
use std::path::Path;

const GEO: Geometry = Geometry {
    images: 1,
    banks: 2,
};
const PRIMARY: &str = "/dev/vda3";
const SECONDARY: &str = "/dev/vda4";
/// The partitions' size in the fake.
const PART: usize = 4096;

/// A GUID that tells where it came from.
fn guid(tag: u8) -> [u8; 16] {
    [tag; 16]
}

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// One image entry: type GUID (16), location GUID (16), then per bank
/// {image GUID (16), accepted (u32), reserved (u32)}.
fn image_entry(image: u8, accepted: &[bool]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(guid(0x10 + image)); // +0 image_type_guid
    b.extend(guid(0x20 + image)); // +16 location_guid
    for (bank, ok) in accepted.iter().enumerate() {
        b.extend(guid(0x30 + image * 4 + bank as u8)); // +32+24k image_guid
        b.extend(le32(u32::from(*ok))); // +48+24k accepted
        b.extend(le32(0)); // +52+24k reserved
    }
    b
}

fn seal(mut b: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&b[4..]);
    b[..4].copy_from_slice(&crc.to_le_bytes());
    b
}

/// v1: crc32 (0), version (4), active_index (8), previous_active_index
/// (12), the image entries (16). `accepted[image][bank]`.
fn v1(active: u32, previous: u32, accepted: &[&[bool]]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(le32(0)); // 0 crc32
    b.extend(le32(1)); // 4 version
    b.extend(le32(active)); // 8 active_index
    b.extend(le32(previous)); // 12 previous_active_index
    for (i, a) in accepted.iter().enumerate() {
        b.extend(image_entry(i as u8, a)); // 16 img_entry[]
    }
    seal(b)
}

/// v2: crc32 (0), version (4), active_index (8), previous_active_index
/// (12), metadata_size (16), desc_offset (20), reserved1 (22),
/// bank_state[4] (24), reserved2 (28); descriptor (32): num_banks,
/// reserved, num_images (34), img_entry_size (36), bank_info_entry_size
/// (38); image entries (40).
fn v2(active: u32, previous: u32, states: [u8; 4], accepted: &[&[bool]]) -> Vec<u8> {
    let banks = accepted[0].len();
    let entry = 32 + 24 * banks;
    let size = 40 + accepted.len() * entry;
    let mut b = Vec::new();
    b.extend(le32(0)); // 0 crc32
    b.extend(le32(2)); // 4 version
    b.extend(le32(active)); // 8 active_index
    b.extend(le32(previous)); // 12 previous_active_index
    b.extend(le32(size as u32)); // 16 metadata_size
    b.extend(0x20u16.to_le_bytes()); // 20 desc_offset
    b.extend(0u16.to_le_bytes()); // 22 reserved1
    b.extend(states); // 24 bank_state[4]
    b.extend(le32(0)); // 28 reserved2
    b.push(banks as u8); // 32 num_banks
    b.push(0); // 33 reserved
    b.extend((accepted.len() as u16).to_le_bytes()); // 34 num_images
    b.extend((entry as u16).to_le_bytes()); // 36 img_entry_size
    b.extend(24u16.to_le_bytes()); // 38 bank_info_entry_size
    for (i, a) in accepted.iter().enumerate() {
        b.extend(image_entry(i as u8, a)); // 40 img_entry[]
    }
    assert_eq!(b.len(), size);
    seal(b)
}

const ACC: u8 = mdata::STATE_ACCEPTED;
const VAL: u8 = mdata::STATE_VALID;
const INV: u8 = mdata::STATE_INVALID;

/// Both banks accepted, bank 0 active: a committed slot A.
fn v2_committed_a() -> Vec<u8> {
    v2(0, 0, [ACC, ACC, INV, INV], &[&[true, true]])
}

/// Bank 1 on trial, bank 0 accepted and previous.
fn v2_trial_b() -> Vec<u8> {
    v2(1, 0, [ACC, VAL, INV, INV], &[&[true, false]])
}

fn v1_trial_b() -> Vec<u8> {
    v1(1, 0, &[&[true, false]])
}

fn parse(b: &[u8]) -> Result<Mdata, MdataError> {
    mdata::parse(b, GEO)
}

fn with(mut b: Vec<u8>, at: usize, bytes: &[u8], reseal: bool) -> Vec<u8> {
    b[at..at + bytes.len()].copy_from_slice(bytes);
    if reseal {
        seal(b)
    } else {
        b
    }
}

// ---------------------------------------------------------------------------
// the bytes

#[test]
fn fixtures_have_the_documented_sizes_and_fields() {
    let one = v1_trial_b();
    assert_eq!(one.len(), 96);
    assert_eq!(GEO.v1_size(), 96);
    let m = parse(&one).unwrap();
    assert_eq!((m.version(), m.active(), m.previous()), (1, 1, 0));
    assert_eq!((m.banks(), m.images()), (2, 1));
    assert_eq!(m.state(0), BankState::Accepted);
    assert_eq!(m.state(1), BankState::Valid);
    assert_eq!(m.raw_state(0), None);
    assert_eq!(m.bytes(), &one[..]);
    let two = v2_trial_b();
    assert_eq!(two.len(), 120);
    let m = parse(&two).unwrap();
    assert_eq!((m.version(), m.active(), m.previous()), (2, 1, 0));
    assert_eq!(m.raw_state(1), Some(VAL));
    assert_eq!(m.state(1), BankState::Valid);
    assert_eq!(m.state(0), BankState::Accepted);
    assert_eq!(m.state(2), BankState::Invalid);
    // Read from a partition: the bytes after the copy are not part of it.
    let mut part = two.clone();
    part.resize(PART, 0xA5);
    assert_eq!(parse(&part).unwrap().bytes(), &two[..]);
    // 0xFC with an image not accepted is still a trial; an unknown state
    // value is not bootable (TF-A boots the alternate bank).
    let m = parse(&v2(0, 0, [ACC, 0x00, INV, INV], &[&[false, true]])).unwrap();
    assert_eq!(m.state(0), BankState::Valid);
    assert_eq!(m.state(1), BankState::Invalid);
}

#[test]
fn every_changed_byte_fails_the_crc_or_a_field() {
    for good in [v1_trial_b(), v2_trial_b()] {
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(parse(&bad).is_err(), "byte {at} of {:?}", &good[..8]);
        }
        let mut bad = good.clone();
        bad[50] ^= 1;
        assert!(matches!(parse(&bad), Err(MdataError::Crc { .. })));
        // Every prefix is too short, never a panic.
        for len in 0..good.len() {
            assert!(parse(&good[..len]).is_err(), "{len}");
        }
    }
}

#[test]
fn versions_indexes_and_sizes_that_lie_are_refused() {
    let v = v2_trial_b();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (with(v.clone(), 4, &le32(3), true), "version 3"),
        (with(v.clone(), 4, &le32(0), true), "version 0"),
        (with(v1_trial_b(), 8, &le32(2), true), "active_index 2"),
        (with(v.clone(), 8, &le32(7), true), "active_index 7"),
        (
            with(v.clone(), 12, &le32(2), true),
            "previous_active_index 2",
        ),
        (with(v.clone(), 16, &le32(31), true), "metadata_size 31"),
        (with(v.clone(), 16, &le32(0x10001), true), "cap"),
        (
            with(v.clone(), 16, &le32(121), true),
            "larger than the partition (120 bytes)",
        ),
        (with(v.clone(), 16, &le32(100), true), "image entries"),
        (
            with(v.clone(), 20, &0x10u16.to_le_bytes(), true),
            "desc_offset 0x10",
        ),
        (with(v.clone(), 32, &[5], true), "num_banks 5"),
        (with(v.clone(), 32, &[1], true), "num_banks 1"),
        (
            with(v.clone(), 34, &0u16.to_le_bytes(), true),
            "num_images 0",
        ),
        (
            with(v.clone(), 36, &56u16.to_le_bytes(), true),
            "img_entry_size 56",
        ),
        (
            with(v.clone(), 38, &20u16.to_le_bytes(), true),
            "bank_info_entry_size 20",
        ),
    ];
    for (bytes, want) in cases {
        let err = parse(&bytes).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    // num_banks 3 with entries sized for 2 banks: the entry size lies.
    let three = with(v.clone(), 32, &[3], true);
    assert!(matches!(
        parse(&three),
        Err(MdataError::EntrySize { got: 80, want: 104 })
    ));
}

#[test]
fn v2_without_descriptor_and_with_vendor_data() {
    // desc_offset 0: the 32-byte header alone, banks from the geometry.
    let mut b = v2_trial_b()[..32].to_vec();
    b[16..20].copy_from_slice(&le32(32));
    b[20..22].copy_from_slice(&0u16.to_le_bytes());
    let m = parse(&seal(b)).unwrap();
    assert_eq!((m.banks(), m.images()), (2, 0));
    assert_eq!(m.state(1), BankState::Valid);
    assert_eq!(m.state(0), BankState::Accepted);
    // mkfwumdata --vendor-file: data after the entries, in metadata_size.
    let mut b = v2_trial_b();
    b.extend([0xEE; 16]);
    b[16..20].copy_from_slice(&le32(136));
    let mut m = parse(&seal(b)).unwrap();
    assert!(m.accept(1).unwrap());
    assert_eq!(&m.bytes()[120..], &[0xEE; 16]);
    assert_eq!(parse(m.bytes()).unwrap(), m);
}

#[test]
fn mark_good_accepts_the_bank_and_every_image() {
    let mut m = parse(&v2(
        1,
        0,
        [ACC, VAL, INV, INV],
        &[&[true, false], &[true, false]],
    ))
    .unwrap();
    assert_eq!(m.state(1), BankState::Valid);
    assert!(m.accept(1).unwrap());
    assert_eq!(m.raw_state(1), Some(ACC));
    assert!(m.accepted(0, 1) && m.accepted(1, 1));
    assert_eq!(m.state(1), BankState::Accepted);
    assert_eq!(parse(m.bytes()).unwrap(), m);
    assert!(!m.accept(1).unwrap(), "accepting twice changes nothing");
    let mut one = parse(&v1_trial_b()).unwrap();
    assert!(one.accept(1).unwrap());
    assert_eq!(one.state(1), BankState::Accepted);
    assert_eq!(one.bytes()[16 + 32 + 24 + 16], 1);
    assert!(matches!(one.accept(2), Err(MdataError::Index { .. })));
}

#[test]
fn mark_active_bad_steer_and_follow_move_the_indexes() {
    // mark-active B from a committed A: a trial of B.
    let mut m = parse(&v2_committed_a()).unwrap();
    assert!(m.activate(1).unwrap());
    assert_eq!((m.active(), m.previous()), (1, 0));
    assert_eq!(m.raw_state(1), Some(VAL));
    assert!(!m.accepted(0, 1));
    assert_eq!(m.state(1), BankState::Valid);
    // mark-bad of the trial: invalid, and back to the previous bank.
    let mut bad = m.clone();
    assert!(bad.reject(1).unwrap());
    assert_eq!((bad.active(), bad.previous()), (0, 1));
    assert_eq!(bad.state(1), BankState::Invalid);
    assert_eq!(bad.state(0), BankState::Accepted);
    // boot_next to the accepted bank keeps it accepted.
    let mut steer = m.clone();
    assert!(steer.steer(0).unwrap());
    assert_eq!((steer.active(), steer.previous()), (0, 1));
    assert_eq!(steer.state(0), BankState::Accepted);
    assert!(!steer.steer(0).unwrap());
    // boot_next to an invalid bank makes it valid (a trial).
    let mut back = bad.clone();
    assert!(back.steer(1).unwrap());
    assert_eq!(back.active(), 1);
    assert_eq!(back.state(1), BankState::Valid);
    // The firmware fell back to bank 0: as U-Boot's boot-time check.
    let mut follow = m.clone();
    assert!(follow.follow_boot(0).unwrap());
    assert_eq!((follow.active(), follow.previous()), (0, 1));
    assert_eq!(follow.state(1), BankState::Invalid);
    assert!(!follow.follow_boot(0).unwrap());
    // v1 has no bank state: the accepted bits and the indexes.
    let mut one = parse(&v1(0, 0, &[&[true, true]])).unwrap();
    assert!(one.activate(1).unwrap());
    assert_eq!(one.state(1), BankState::Valid);
    assert!(one.reject(1).unwrap());
    assert_eq!((one.active(), one.previous()), (0, 1));
    for m in [m, bad, steer, back, follow, one] {
        assert_eq!(parse(m.bytes()).unwrap(), m);
    }
}

/// U-Boot's own tool (`tools/fwumdata_src/mkfwumdata.c`, built on the host
/// with `cc mkfwumdata.c -luuid -lz`, zlib's crc32 for `lib/crc32.c`):
/// `mkfwumdata -v 1 -i 1 -b 2 -a 0 -p 1 LOC,TYPE,IMG0,IMG1 v1.bin` and
/// `mkfwumdata -v 2 -i 1 -b 2 -a 1 -p 0 ... v2.bin`, UUIDs 0000000N-0000-4000-8000-00000000000N.
const MKFWUMDATA_V1: [u8; 96] = [
    0x50, 0x6b, 0xa3, 0x24, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x40, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x40, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x40, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x40, 0x00,
    0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];
const MKFWUMDATA_V2: [u8; 120] = [
    0x03, 0xc0, 0x95, 0x93, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x78, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0xfc, 0xfc, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x01, 0x00, 0x50, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x40, 0x00,
    0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x40, 0x00,
    0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x40, 0x00,
    0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x40, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

#[test]
fn mkfwumdata_output_parses_as_its_options_say() {
    let one = parse(&MKFWUMDATA_V1).unwrap();
    assert_eq!((one.version(), one.active(), one.previous()), (1, 0, 1));
    assert_eq!((one.banks(), one.images()), (2, 1));
    assert_eq!(one.state(0), BankState::Accepted);
    assert_eq!(one.state(1), BankState::Accepted);
    assert_eq!(one.bytes(), &MKFWUMDATA_V1[..]);
    let two = parse(&MKFWUMDATA_V2).unwrap();
    assert_eq!((two.version(), two.active(), two.previous()), (2, 1, 0));
    assert_eq!((two.banks(), two.images()), (2, 1));
    // Banks past num_banks are 0xFF (invalid).
    assert_eq!(
        (0..4).map(|b| two.raw_state(b)).collect::<Vec<_>>(),
        [Some(ACC), Some(ACC), Some(INV), Some(INV)]
    );
    assert_eq!(two.bytes(), &MKFWUMDATA_V2[..]);
    // The fixtures built here from the structures have the same layout:
    // the same bytes but for the GUIDs.
    let ours = v2(1, 0, [ACC, ACC, INV, INV], &[&[true, true]]);
    let guids = [40..56, 56..72, 72..88, 96..112];
    for at in 4..120 {
        if !guids.iter().any(|g| g.contains(&at)) {
            assert_eq!(ours[at], MKFWUMDATA_V2[at], "byte {at}");
        }
    }
    let ours = v1(0, 1, &[&[true, true]]);
    for at in 4..96 {
        if !guids.iter().any(|g| g.contains(&(at + 24))) {
            assert_eq!(ours[at], MKFWUMDATA_V1[at], "byte {at}");
        }
    }
}

// ---------------------------------------------------------------------------
// the config table

fn bs(text: &str) -> crate::config::BootStateConfig {
    Config::parse(text, "t").unwrap().bootstate
}

#[test]
fn table_defaults_and_errors_name_the_key() {
    assert_eq!(table(&bs("")).unwrap(), FwuConfig::default());
    let c = table(&bs(
        "[bootstate.fwu-metadata]\npartitions = [\"m1\", \"/dev/mmcblk0p2\"]\nattempts = 5\n",
    ))
    .unwrap();
    assert_eq!(c.attempts, 5);
    for (text, key) in [
        ("partitions = [\"a\"]", "partitions"),
        ("partitions = [\"a\", \"a\"]", "partitions"),
        ("partitions = [\"a\", \"x/y\"]", "partitions"),
        ("partitions = \"a\"", "partitions"),
        ("banks = 1", "banks"),
        ("banks = 5", "banks"),
        ("images = 0", "images"),
        ("images = 100000", "images"),
        ("attempts = 0", "attempts"),
        ("atempts = 3", "atempts"),
    ] {
        match table(&bs(&format!("[bootstate.fwu-metadata]\n{text}\n"))) {
            Err(e @ CheckError::Key(_)) => {
                let CheckError::Key(k) = &e else {
                    unreachable!()
                };
                assert_eq!(k.key, key, "{text}");
                assert!(
                    e.to_string()
                        .starts_with(&format!("bootstate.fwu-metadata.{key}: ")),
                    "{e}"
                );
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    // Through check-config's parse.
    let (c, _) = crate::state::parse(
        "[bootstate]\nbackend = \"fwu-metadata\"\n[bootstate.fwu-metadata]\nbanks = 2\n",
        "t",
    )
    .unwrap();
    assert!(crate::state::bootloader_decides(&c));
    let err = crate::state::parse(
        "[bootstate]\nbackend = \"fwu-metadata\"\n[bootstate.fwu-metadata]\nbanks = 9\n",
        "t",
    )
    .unwrap_err();
    assert!(
        crate::types::error_chain(&err).contains("[bootstate.fwu-metadata] banks: 9"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// the backend through the fake

fn config() -> Config {
    Config::parse(
        &format!(
            "[bootstate]\nbackend = \"fwu-metadata\"\n[bootstate.fwu-metadata]\npartitions = [\"{PRIMARY}\", \"{SECONDARY}\"]\n"
        ),
        "t",
    )
    .unwrap()
}

fn partition(copy: &[u8]) -> Vec<u8> {
    let mut p = copy.to_vec();
    p.resize(PART, 0);
    p
}

fn fake(primary: &[u8], secondary: &[u8]) -> Fake {
    let mut sys = Fake::default();
    sys.files.insert(PRIMARY.into(), partition(primary));
    sys.files.insert(SECONDARY.into(), partition(secondary));
    sys
}

fn open(sys: &mut Fake) -> super::backend::Fwu {
    open_fwu(sys, &config(), &Resolved::default()).unwrap()
}

fn copy_of(sys: &Fake, path: &str) -> Result<Mdata, MdataError> {
    parse(&sys.files[Path::new(path)])
}

fn hint(slot: Slot) -> Hint {
    Hint {
        slot: Some(slot),
        source: format!("rauc.slot=\"{}\"", slot.letter().to_uppercase()),
    }
}

fn ctx<'a>(hint: Option<&'a Hint>, failed: &'a [(Slot, String)]) -> DecideCtx<'a> {
    DecideCtx {
        override_slot: None,
        default_slot: Slot::A,
        hint,
        failed,
    }
}

fn writes(sys: &Fake) -> Vec<&str> {
    sys.calls
        .iter()
        .filter(|c| {
            c.contains(",write")
                || c.contains(" write")
                || c.starts_with("fsync")
                || c.starts_with("fdatasync")
        })
        .map(String::as_str)
        .collect()
}

#[test]
fn committed_boot_follows_the_firmware_and_writes_nothing() {
    let mut sys = fake(&v2_committed_a(), &v2_committed_a());
    let mut b = open(&mut sys);
    let h = hint(Slot::A);
    let out = b.decide(&mut sys, &ctx(Some(&h), &[])).unwrap();
    assert_eq!(
        (out.decision.slot, out.decision.source),
        (Slot::A, Source::Bootloader)
    );
    assert!(out.problems().next().is_none(), "{:?}", out.lines);
    assert!(writes(&sys).is_empty(), "{:?}", sys.calls);
    assert_eq!(b.status(Some(Slot::A)).boot, "committed");
    assert_eq!(b.next_boot(), crate::state::NextBoot::InOrder);
    let rec = b.record();
    assert_eq!(rec.order, ["a", "b"]);
    assert!(rec.left.is_empty());
    assert!(rec.error.is_none());
    assert!(
        rec.location.contains(PRIMARY) && rec.location.contains(SECONDARY),
        "{}",
        rec.location
    );
    // commit on mount: nothing to accept.
    assert!(!b.commit_good(&mut sys, Slot::A).unwrap());
    assert!(writes(&sys).is_empty());
}

#[test]
fn trial_boot_then_mark_good_writes_secondary_then_primary_synced() {
    for (copy, version) in [(v2_trial_b(), 2), (v1_trial_b(), 1)] {
        let mut sys = fake(&copy, &copy);
        let mut b = open(&mut sys);
        let h = hint(Slot::B);
        let out = b.decide(&mut sys, &ctx(Some(&h), &[])).unwrap();
        assert_eq!(out.decision.slot, Slot::B);
        assert!(writes(&sys).is_empty());
        let st = b.status(Some(Slot::B));
        assert_eq!((st.boot, st.attempts_left), ("trial", Some(3)));
        assert_eq!(b.record().left, [("b".to_string(), 3)]);
        assert_eq!(b.record().order, ["b", "a"]);
        let line = b.mark(&mut sys, Mark::Good, Slot::B, false).unwrap();
        assert!(line.contains("accepted"), "{line}");
        let at = |line: &str| {
            sys.position(line)
                .unwrap_or_else(|| panic!("{line} not in {:#?}", sys.calls))
        };
        let order = [
            at(&format!("flock {PRIMARY}")),
            at(&format!("open {SECONDARY} write")),
            at(&format!("fsync {SECONDARY}")),
            at(&format!("open {PRIMARY} write")),
            at(&format!("fsync {PRIMARY}")),
        ];
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "v{version}: {:#?}",
            sys.calls
        );
        // Read back after each sync.
        let reads: Vec<usize> = sys
            .calls
            .iter()
            .enumerate()
            .filter(|(_, c)| *c == &format!("open {PRIMARY}"))
            .map(|(i, _)| i)
            .collect();
        assert!(reads.iter().any(|r| *r > order[4]), "{:#?}", sys.calls);
        for path in [PRIMARY, SECONDARY] {
            let m = copy_of(&sys, path).unwrap();
            assert_eq!(m.state(1), BankState::Accepted, "v{version} {path}");
            assert_eq!(m.active(), 1);
        }
        assert_eq!(b.status(Some(Slot::B)).boot, "committed");
        // Idempotent: nothing written again.
        let before = sys.calls.len();
        let line = b.mark(&mut sys, Mark::Good, Slot::B, false).unwrap();
        assert!(line.contains("nothing written"), "{line}");
        assert!(
            !sys.calls[before..].iter().any(|c| c.contains("write")),
            "{:?}",
            &sys.calls[before..]
        );
        assert!(!b.commit_good(&mut sys, Slot::B).unwrap());
    }
}

#[test]
fn commit_on_mount_accepts_the_running_trial() {
    let mut sys = fake(&v2_trial_b(), &v2_trial_b());
    let mut b = open(&mut sys);
    assert!(!b.commit_good(&mut sys, Slot::A).unwrap(), "A is no trial");
    assert!(b.commit_good(&mut sys, Slot::B).unwrap());
    assert_eq!(
        copy_of(&sys, PRIMARY).unwrap().state(1),
        BankState::Accepted
    );
    assert_eq!(
        copy_of(&sys, SECONDARY).unwrap().state(1),
        BankState::Accepted
    );
}

#[test]
fn firmware_fallback_is_reported_and_recorded_as_uboot_does() {
    let mut sys = fake(&v2_trial_b(), &v2_trial_b());
    let mut b = open(&mut sys);
    let h = hint(Slot::A);
    let out = b.decide(&mut sys, &ctx(Some(&h), &[])).unwrap();
    assert_eq!(
        (out.decision.slot, out.decision.source),
        (Slot::A, Source::Bootloader)
    );
    let kinds: Vec<_> = out.problems().map(Problem::kind).collect();
    assert_eq!(kinds, ["decision"]);
    assert!(out
        .fallback
        .as_deref()
        .unwrap()
        .contains("not the active bank 1 (slot b)"));
    for path in [PRIMARY, SECONDARY] {
        let m = copy_of(&sys, path).unwrap();
        assert_eq!((m.active(), m.previous()), (0, 1));
        assert_eq!(m.state(1), BankState::Invalid);
    }
    assert_eq!(b.status(Some(Slot::A)).boot, "committed");
    assert_eq!(b.record().order, ["a"]);
    assert!(b.record().last_fallback.is_some());
}

#[test]
fn a_trial_that_failed_in_this_boot_is_rejected() {
    let mut sys = fake(&v2_trial_b(), &v2_trial_b());
    let mut b = open(&mut sys);
    let h = hint(Slot::B);
    let failed = [(Slot::B, "no /sbin/init".to_string())];
    let out = b.decide(&mut sys, &ctx(Some(&h), &failed)).unwrap();
    assert_eq!(
        (out.decision.slot, out.decision.source),
        (Slot::A, Source::Fallback)
    );
    assert!(out.fallback.unwrap().contains("no /sbin/init"));
    let m = copy_of(&sys, PRIMARY).unwrap();
    assert_eq!((m.active(), m.state(1)), (0, BankState::Invalid));
    // The init then steers the firmware to A: already active, nothing written.
    let before = sys.calls.len();
    assert_eq!(b.boot_next(&mut sys, Slot::A).unwrap(), None);
    assert!(!sys.calls[before..].iter().any(|c| c.contains("write")));
    let both = [(Slot::A, "x".to_string()), (Slot::B, "y".to_string())];
    assert!(b.decide(&mut sys, &ctx(Some(&h), &both)).is_err());
}

#[test]
fn a_bad_copy_is_restored_from_the_good_one() {
    let good = v2_trial_b();
    let mut corrupt = good.clone();
    corrupt[60] ^= 0xFF;
    for (primary, secondary, fixed) in [
        (corrupt.clone(), good.clone(), PRIMARY),
        (good.clone(), corrupt.clone(), SECONDARY),
        // Both valid but different: the primary wins (U-Boot fwu_get_mdata).
        (good.clone(), v2_committed_a(), SECONDARY),
    ] {
        let mut sys = fake(&primary, &secondary);
        let mut b = open(&mut sys);
        let rec = b.record();
        assert!(rec.error.is_none());
        assert!(rec.health.contains(fixed), "{}", rec.health);
        assert_eq!(b.status(Some(Slot::B)).boot, "trial", "{fixed}");
        let h = hint(Slot::B);
        let out = b.decide(&mut sys, &ctx(Some(&h), &[])).unwrap();
        assert!(
            out.lines
                .iter()
                .any(|l| matches!(l, Line::Note(n) if n.contains("restored"))),
            "{:?}",
            out.lines
        );
        // Only the bad copy was written.
        let opened: Vec<_> = sys
            .calls_starting("open ")
            .into_iter()
            .filter(|c| c.contains("write"))
            .collect();
        assert_eq!(opened, [format!("open {fixed} write")]);
        assert_eq!(
            sys.files[Path::new(PRIMARY)],
            sys.files[Path::new(SECONDARY)]
        );
        assert_eq!(copy_of(&sys, fixed).unwrap().bytes(), &good[..]);
    }
}

#[test]
fn both_copies_bad_follows_the_firmware_and_never_writes() {
    let mut bad = v2_trial_b();
    bad[4] = 9; // version 9
    let mut sys = fake(&bad, &[0xFF; 64]);
    let mut b = open(&mut sys);
    let rec = b.record();
    let error = rec.error.unwrap();
    assert!(
        error.contains(PRIMARY) && error.contains(SECONDARY),
        "{error}"
    );
    assert!(error.contains("version 9"), "{error}");
    let h = hint(Slot::B);
    let out = b.decide(&mut sys, &ctx(Some(&h), &[])).unwrap();
    assert_eq!(
        (out.decision.slot, out.decision.source),
        (Slot::B, Source::Bootloader)
    );
    for how in [Mark::Good, Mark::Bad, Mark::Active] {
        let err = b.mark(&mut sys, how, Slot::B, true).unwrap_err();
        assert_eq!(err.kind(), "bootstate-unusable");
    }
    assert!(b.boot_next(&mut sys, Slot::A).is_err());
    assert!(!b.commit_good(&mut sys, Slot::B).unwrap());
    assert!(writes(&sys).is_empty(), "{:?}", sys.calls);
    assert_eq!(b.status(Some(Slot::B)).boot, "unknown");
}

#[test]
fn marks_active_bad_and_boot_next() {
    let mut sys = fake(&v2_committed_a(), &v2_committed_a());
    let mut b = open(&mut sys);
    let line = b.mark(&mut sys, Mark::Active, Slot::A, false).unwrap();
    assert!(line.contains("nothing written"), "{line}");
    let line = b.mark(&mut sys, Mark::Active, Slot::B, false).unwrap();
    assert!(line.contains("marked active"), "{line}");
    let m = copy_of(&sys, PRIMARY).unwrap();
    assert_eq!(
        (m.active(), m.previous(), m.raw_state(1)),
        (1, 0, Some(VAL))
    );
    assert_eq!(b.record().order, ["b", "a"]);
    // mark-good of the slot that is not active is refused.
    let err = b.mark(&mut sys, Mark::Good, Slot::A, false).unwrap_err();
    assert!(matches!(err, MarkError::Invalid(_)), "{err}");
    // mark-bad of A: B is only on trial, so nothing known good is left.
    let err = b.mark(&mut sys, Mark::Bad, Slot::A, false).unwrap_err();
    assert_eq!(err.kind(), "mark-refused");
    // mark-bad of the trial B: A is accepted; back to A.
    let line = b.mark(&mut sys, Mark::Bad, Slot::B, false).unwrap();
    assert!(line.contains("active slot a"), "{line}");
    let m = copy_of(&sys, SECONDARY).unwrap();
    assert_eq!((m.active(), m.state(1)), (0, BankState::Invalid));
    // boot_next(B): the firmware's next pick, valid again; a plain restart.
    assert_eq!(b.boot_next(&mut sys, Slot::B).unwrap(), None);
    let m = copy_of(&sys, PRIMARY).unwrap();
    assert_eq!((m.active(), m.state(1)), (1, BankState::Valid));
    // --force marks the only accepted bank bad.
    let err = b.mark(&mut sys, Mark::Bad, Slot::A, false).unwrap_err();
    assert_eq!(err.kind(), "mark-refused");
    b.mark(&mut sys, Mark::Bad, Slot::A, true).unwrap();
    assert_eq!(copy_of(&sys, PRIMARY).unwrap().state(0), BankState::Invalid);
}

#[test]
fn a_held_lock_writes_nothing() {
    let mut sys = fake(&v2_trial_b(), &v2_trial_b());
    sys.errno
        .push((format!("flock {PRIMARY}"), libc::EWOULDBLOCK));
    let mut b = open(&mut sys);
    let err = b.mark(&mut sys, Mark::Good, Slot::B, false).unwrap_err();
    assert_eq!(err.kind(), "bootstate-locked");
    assert!(writes(&sys).is_empty(), "{:?}", sys.calls);
}

#[test]
fn partitions_are_found_by_name_on_the_boot_disk() {
    let mut sys = fake(&v2_trial_b(), &v2_trial_b());
    for (n, name) in [(3, "metadata1"), (4, "metadata2")] {
        let dir = format!("/sys/devices/virtio/block/vda/vda{n}");
        sys.links.insert(
            format!("/sys/class/block/vda{n}").into(),
            dir.clone().into(),
        );
        sys.files.insert(
            format!("{dir}/uevent").into(),
            format!("DEVNAME=vda{n}\nDEVTYPE=partition\nPARTN={n}\nPARTNAME={name}\n").into_bytes(),
        );
    }
    let c = Config::parse("[bootstate]\nbackend = \"fwu-metadata\"\n", "t").unwrap();
    let resolved = Resolved {
        boot_disk: Some("vda".into()),
        ..Default::default()
    };
    let b = open_fwu(&mut sys, &c, &resolved).unwrap();
    let loc = b.record().location;
    assert_eq!(
        loc,
        format!("primary metadata1 ({PRIMARY}), secondary metadata2 ({SECONDARY})")
    );
    let other = Resolved {
        boot_disk: Some("vdb".into()),
        ..Default::default()
    };
    let err = open_fwu(&mut sys, &c, &other).err().unwrap();
    assert_eq!(err.kind(), "bootstate-unavailable");
    assert_eq!(
        crate::types::error_chain(&err),
        "bootstate.fwu-metadata.partitions: no partition named \"metadata1\" on disk vdb"
    );
}

/// The medium after a write of `new` over `old` cut at byte `cut` of copy
/// `index` of the write order (secondary, primary): the copies before it
/// new, it torn (new up to `cut`, old after), the ones after old.
fn torn(old: &[u8], new: &[u8], index: usize, cut: usize) -> (Vec<u8>, Vec<u8>) {
    let tear = || {
        let mut b = old.to_vec();
        b[..cut].copy_from_slice(&new[..cut]);
        b
    };
    match index {
        0 => (old.to_vec(), tear()),
        _ => (tear(), new.to_vec()),
    }
}

/// Every commit and mark the backend writes, every cut of each of its two
/// copy writes (every 512-byte sector boundary and, finer than a sector
/// write can tear, every word), and every write lost before its sync: the
/// next open finds a valid copy holding the old or the new state, its
/// active bank bootable, and its repair makes the copies equal.
#[test]
fn every_torn_or_lost_write_leaves_a_valid_bootable_copy() {
    type Op = fn(&mut Mdata) -> Result<bool, MdataError>;
    let ops: [(&str, Op); 5] = [
        ("mark-good b", |m| m.accept(1)),
        ("mark-active a", |m| m.activate(0)),
        ("mark-bad b", |m| m.reject(1)),
        ("boot_next a", |m| m.steer(0)),
        ("follow a", |m| m.follow_boot(0)),
    ];
    let mut states = 0;
    for start in [v2_trial_b(), v1_trial_b(), v2_committed_a()] {
        for (name, op) in ops {
            let old = parse(&start).unwrap();
            let mut new = old.clone();
            if !op(&mut new).unwrap() {
                continue;
            }
            let (old, new) = (partition(old.bytes()), partition(new.bytes()));
            // Sector cuts (a copy fits one sector: none or all of it) and,
            // finer than a sector write can tear, every 4-byte word of
            // the copy and every byte of its header.
            let mut cuts: Vec<usize> = (0..=PART).step_by(512).collect();
            cuts.extend((0..=start.len()).step_by(4));
            cuts.extend(1..32);
            for index in 0..2 {
                for &cut in &cuts {
                    let (p, s) = torn(&old, &new, index, cut);
                    let mut sys = Fake::default();
                    sys.files.insert(PRIMARY.into(), p);
                    sys.files.insert(SECONDARY.into(), s);
                    let mut b = open(&mut sys);
                    let rec = b.record();
                    assert!(
                        rec.error.is_none(),
                        "{name} copy {index} cut {cut}: {rec:?}"
                    );
                    let cur = b.store_current().unwrap();
                    assert!(
                        cur.bytes() == &old[..start.len()] || cur.bytes() == &new[..start.len()],
                        "{name} copy {index} cut {cut}: neither old nor new"
                    );
                    assert_ne!(
                        cur.state(cur.active()),
                        BankState::Invalid,
                        "{name} {index} {cut}"
                    );
                    assert!(!rec.order.is_empty());
                    let h = hint(slot_of_test(cur.active()));
                    b.decide(&mut sys, &ctx(Some(&h), &[])).unwrap();
                    assert_eq!(
                        sys.files[Path::new(PRIMARY)][..start.len()],
                        sys.files[Path::new(SECONDARY)][..start.len()],
                        "{name} {index} {cut}: not repaired"
                    );
                    states += 1;
                }
            }
            // Lost writes: the sync of each copy fails, so the fake keeps
            // what was there; the mark fails and says so, never a panic.
            for lost in [SECONDARY, PRIMARY] {
                let mut sys = Fake::default();
                sys.files.insert(PRIMARY.into(), old.clone());
                sys.files.insert(SECONDARY.into(), old.clone());
                sys.fail.push(format!("fsync {lost}"));
                let mut b = open(&mut sys);
                let mut m = b.store_current().unwrap();
                op(&mut m).unwrap();
                let err = b.write_for_test(&mut sys, &m).unwrap_err();
                assert!(err.contains(lost) && err.contains("sync"), "{err}");
                sys.fail.clear();
                let again = open(&mut sys);
                let cur = again.store_current().unwrap();
                assert!(cur.bytes() == &old[..start.len()] || cur.bytes() == &new[..start.len()]);
                assert_ne!(cur.state(cur.active()), BankState::Invalid);
                states += 1;
            }
        }
    }
    assert!(states > 500, "{states}");
}

fn slot_of_test(bank: usize) -> Slot {
    if bank == 0 {
        Slot::A
    } else {
        Slot::B
    }
}

#[test]
fn opens_through_the_registry_and_decides_without_a_hint() {
    let mut sys = fake(&v2_trial_b(), &v2_trial_b());
    let mut b = crate::state::open(&mut sys, &config(), &Resolved::default(), Path::new("/mnt"))
        .unwrap()
        .unwrap();
    assert_eq!(b.name(), "fwu-metadata");
    // No slot source spoke: the active bank's slot, reported.
    let out = b.decide(&mut sys, &ctx(None, &[])).unwrap();
    assert_eq!(
        (out.decision.slot, out.decision.source),
        (Slot::B, Source::Default)
    );
    assert_eq!(
        out.problems().map(Problem::kind).collect::<Vec<_>>(),
        ["decision"]
    );
    // A hint naming no slot: reported, the active bank's slot.
    let nameless = Hint {
        slot: None,
        source: "rauc.slot=\"Z\"".into(),
    };
    let out = b.decide(&mut sys, &ctx(Some(&nameless), &[])).unwrap();
    assert_eq!(out.decision.slot, Slot::B);
    assert!(matches!(
        out.problems().next(),
        Some(Problem::HintNamesNoSlot { .. })
    ));
    // The override: nothing written.
    let c = DecideCtx {
        override_slot: Some(Slot::A),
        ..ctx(None, &[])
    };
    let out = b.decide(&mut sys, &c).unwrap();
    assert_eq!(
        (out.decision.slot, out.decision.source),
        (Slot::A, Source::Override)
    );
    assert!(writes(&sys).is_empty(), "{:?}", sys.calls);
    b.close(&mut sys);
}

#[test]
fn a_copy_larger_than_its_partition_is_refused_naming_it() {
    let mut sys = fake(&v2_trial_b(), &v2_trial_b());
    sys.files
        .insert(PRIMARY.into(), v2_trial_b()[..100].to_vec());
    let b = open(&mut sys);
    let health = b.record().health;
    assert!(
        health.contains(&format!(
            "{PRIMARY}: metadata_size 120: larger than the partition (100 bytes)"
        )),
        "{health}"
    );
    assert_eq!(b.status(Some(Slot::B)).boot, "trial");
}
