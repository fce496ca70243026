//! Replays saved fuzz inputs (`tests/fixtures/fuzz/<target>/*`) and the
//! checked-in fixtures the fuzzers are seeded from through the fuzz targets'
//! own checks, so a crash once found stays fixed under a plain `cargo test`.

// The checks panic on purpose when a property fails; they use no unwrap on
// runtime data of slotinit itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::fs;
use std::path::{Path, PathBuf};

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 11] = [
    ("envblock", checks::envblock),
    ("cmdline", checks::cmdline),
    ("config", checks::config),
    ("gpt", checks::gpt),
    ("uevent", checks::uevent),
    ("fwenv", checks::fwenv),
    ("bootstate", checks::bootstate),
    ("fwu_mdata", fwu::fwu_mdata),
    ("contract", contract::contract),
    ("luks2", crypt::luks2),
    ("verity", crypt::verity),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    files.retain(|p| p.is_file());
    files.sort();
    files
}

/// Runs `check` on every file; the files whose checks panicked.
fn replay(check: Check, inputs: &[PathBuf]) -> Vec<String> {
    let mut failed = Vec::new();
    for path in inputs {
        let data = fs::read(path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    failed
}

#[test]
fn saved_fuzz_inputs() {
    let dir = root().join("tests/fixtures/fuzz");
    for entry in fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let known = TARGETS.iter().any(|(t, _)| *t == name) || name == "README.md";
        assert!(known, "tests/fixtures/fuzz/{name} is no fuzz target");
    }
    let failed: Vec<String> = TARGETS
        .iter()
        .flat_map(|(target, check)| replay(*check, &files(&dir.join(target))))
        .collect();
    assert!(
        failed.is_empty(),
        "inputs failing their checks: {failed:#?}"
    );
}

/// The seeds `fuzz/run` starts from must pass too, or every run starts red.
#[test]
fn seed_fixtures() {
    let env = files(&root().join("tests/fixtures/env"));
    let blocks: Vec<PathBuf> = env
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "env"))
        .cloned()
        .collect();
    assert!(!blocks.is_empty());
    let mut failed = replay(checks::envblock, &blocks);
    for block in &blocks {
        let data = fs::read(block).unwrap();
        // The data areas of single and redundant copies.
        for area in [&data[4..], &data[5..]] {
            if std::panic::catch_unwind(|| checks::bootstate(area)).is_err() {
                failed.push(format!("{} as bootstate data", block.display()));
            }
        }
    }
    failed.extend(replay(
        checks::gpt,
        &[
            root().join("tests/fixtures/gpt/rpi.gpt"),
            root().join("tests/fixtures/gpt/corrupt-primary.gpt"),
        ],
    ));
    let configs = files(&root().join("configs"));
    assert!(!configs.is_empty());
    failed.extend(replay(checks::config, &configs));
    assert!(
        failed.is_empty(),
        "fixtures failing their checks: {failed:#?}"
    );
}

#[path = "../fuzz/src/fwu.rs"]
mod fwu;

/// The `fwu_mdata` target's checks over its saved inputs and over copies
/// built here from the structures (U-Boot `include/fwu_mdata.h`): v1 and v2,
/// 1 image, 2 banks, bank 1 on trial; the first byte is the geometry.
#[test]
fn fwu_mdata_inputs() {
    fn seal(mut b: Vec<u8>) -> Vec<u8> {
        let crc = crc32fast::hash(&b[4..]);
        b[..4].copy_from_slice(&crc.to_le_bytes());
        b
    }
    let entry = |accepted: [u32; 2]| {
        let mut e = vec![0x11; 32]; // image_type_guid, location_guid
        for a in accepted {
            e.extend([0x22; 16]); // image_guid
            e.extend(a.to_le_bytes()); // accepted
            e.extend([0; 4]); // reserved
        }
        e
    };
    let mut v1 = Vec::new();
    for w in [0u32, 1, 1, 0] {
        v1.extend(w.to_le_bytes()); // crc32, version, active, previous
    }
    v1.extend(entry([1, 0]));
    let mut v2 = Vec::new();
    for w in [0u32, 2, 1, 0, 120] {
        v2.extend(w.to_le_bytes()); // crc32, version, active, previous, metadata_size
    }
    v2.extend([0x20, 0, 0, 0]); // desc_offset, reserved1
    v2.extend([0xFC, 0xFE, 0xFF, 0xFF, 0, 0, 0, 0]); // bank_state, reserved2
    v2.extend([2, 0, 1, 0, 80, 0, 24, 0]); // num_banks, -, num_images, sizes
    v2.extend(entry([1, 0]));
    let mut inputs = Vec::new();
    for copy in [seal(v1), seal(v2)] {
        assert_eq!(copy.len() % 24, 0); // 96 and 120
        let geo = slotinit::state::fwu::mdata::Geometry {
            images: 1,
            banks: 2,
        };
        assert!(slotinit::state::fwu::mdata::parse(&copy, geo).is_ok());
        inputs.push([&[0u8][..], &copy].concat());
        inputs.push([&[0u8][..], &copy, &copy].concat());
        let mut torn = copy.clone();
        torn[40] ^= 1;
        inputs.push([&[0u8][..], &torn, &copy].concat());
    }
    for input in &inputs {
        fwu::fwu_mdata(input);
    }
    let saved = files(&root().join("tests/fixtures/fuzz/fwu_mdata"));
    let failed = replay(fwu::fwu_mdata, &saved);
    assert!(failed.is_empty(), "{failed:#?}");
}

#[path = "../fuzz/src/contract.rs"]
mod contract;

/// The `contract` target's check over the env fixtures and the contracts'
/// own states, foreign values included (hex and decimal counters, garbage,
/// unknown slot names, a missing variable).
#[test]
fn contract_seeds() {
    let mut inputs: Vec<Vec<u8>> = files(&root().join("tests/fixtures/env"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "env"))
        .flat_map(|p| {
            let block = fs::read(p).unwrap();
            [
                block.get(4..).unwrap_or(&[]).to_vec(),
                block.get(5..).unwrap_or(&[]).to_vec(),
            ]
        })
        .collect();
    for text in [
        "boot_slot=a\nboot_a_left=3\nboot_b_left=3",
        "boot_slot=b\nboot_a_left=0\nboot_b_left=0\nbootcmd=run x",
        "boot_slot=c\nboot_a_left=zz\nboot_b_left=0x10",
        "boot_slot=\nboot_a_left=\nboot_b_left=a",
        "boot_b_left=ffffffffff",
        "mender_boot_part=2\nmender_boot_part_hex=2\nupgrade_available=0\nbootcount=0\nbootlimit=1",
        "mender_boot_part=3\nupgrade_available=1\nbootcount=1\nbootlimit=1",
        "mender_boot_part=3\nupgrade_available=1\nbootcount=7\nbootlimit=0",
        "mender_boot_part=9\nupgrade_available=yes\nbootcount=0x2\nbootlimit=0x1",
        "upgrade_available=1",
        "mender_boot_part=10\nupgrade_available=1\nbootlimit=99999999999",
    ] {
        let mut data: Vec<u8> = text
            .bytes()
            .map(|b| if b == b'\n' { 0 } else { b })
            .collect();
        data.extend_from_slice(&[0, 0]);
        inputs.push(data);
    }
    // Found by the fuzzer: a name that is not UTF-8 next to the contract's.
    inputs.push(
        b"bootboot_slot=a\0boot_a_left=3\0boo_slot=c\0boot_a_lt_b_lefteft=zz\0\xff\xff\xff\xff_b_2le=f3\0\0"
            .to_vec(),
    );
    let failed: Vec<usize> = inputs
        .iter()
        .enumerate()
        .filter(|(_, d)| std::panic::catch_unwind(|| contract::contract(d)).is_err())
        .map(|(i, _)| i)
        .collect();
    assert!(
        failed.is_empty(),
        "inputs failing the contract check: {failed:?}"
    );
}

#[path = "../fuzz/src/crypt.rs"]
mod crypt;

/// The `luks2` and `verity` targets' checks over their seeds: the
/// cryptsetup-made containers (their pbkdf2 keyslot opens; argon2 ones are
/// over the fuzz limit), each with its primary header damaged, and a
/// veritysetup-made superblock at several offsets (made here with the real
/// tool) and the sgdisk GPTs of containers.
#[test]
fn crypt_seeds() {
    let mut luks = Vec::new();
    for path in files(&root().join("tests/fixtures/luks2")) {
        if !path.to_string_lossy().ends_with(".img.gz") {
            continue;
        }
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "gzip -dc {}", path.display());
        luks.push(out.stdout);
    }
    assert_eq!(luks.len(), 4);
    // xts512-pbkdf2's keyslot 0 is pbkdf2 (1000 iterations): it unlocks
    // under the fuzz target's memory limit.
    let opened = luks
        .iter()
        .filter(|image| {
            slotinit::crypt::bytes::luks2_unlock(image, b"correct horse battery staple", 1024)
                .is_ok()
        })
        .count();
    assert_eq!(opened, 1);
    for image in &luks {
        crypt::luks2(image);
        let mut damaged = image.clone();
        damaged[4096..4608].fill(0xff);
        assert!(slotinit::crypt::bytes::luks2_header(&damaged)
            .unwrap()
            .ends_with("Secondary"));
        crypt::luks2(&damaged);
        crypt::luks2(&image[..image.len().min(20_000)]);
    }
    let dir = tempfile::tempdir().unwrap();
    let (data, hash) = (dir.path().join("data"), dir.path().join("hash"));
    std::fs::File::create(&data)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let out = std::process::Command::new("veritysetup")
        .arg("format")
        .args([&data, &hash])
        .output()
        .expect("veritysetup (cryptsetup-bin, tools/install-deps)");
    assert!(out.status.success(), "{out:?}");
    let superblock = fs::read(&hash).unwrap();
    assert!(
        slotinit::crypt::bytes::verity_table(&superblock, 1 << 20, "00".repeat(32).as_str())
            .is_ok()
    );
    for first in [0u8, 8, 255] {
        crypt::verity(&[&[first][..], &superblock].concat());
    }
    for gpt in files(&root().join("tests/fixtures/verity")) {
        if gpt.extension().is_some_and(|e| e == "gpt") {
            crypt::verity(&[&[0u8][..], &fs::read(&gpt).unwrap()].concat());
        }
    }
}
