//! Interop of slotinit's env codec and store with the real tools: `fw_printenv`/`fw_setenv` (libubootenv) and `mkenvimage` (U-Boot).
//!
//! These tests fail, not skip, when a tool is missing: an env that only
//! slotinit can read is worthless on a device, so the oracle must run.

// The helpers below are test code too, but clippy's allow-unwrap-in-tests
// only covers #[test] functions and #[cfg(test)] modules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use slotinit::state::uboot::envblock::{self, CopyIndex, Env, EnvError, Header};
use slotinit::state::uboot::envstore::{
    self, CopyFault, EnvLocation, EnvStoreError, Health, IfAllCorrupt,
};
use slotinit::state::uboot::rauc::{self, Bootname, Config, State};

const SIZE: usize = 0x4000;

/// Path of a required tool; panics with the fix when it is not installed.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found in PATH; run tools/install-deps \
                 (needs Debian packages libubootenv-tool and u-boot-tools)"
            )
        })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A temp dir with a libubootenv config naming one or two env files.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    files: Vec<PathBuf>,
}

impl Setup {
    fn new(copies: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let names = ["uboot.env", "uboot-redund.env"];
        let files: Vec<PathBuf> = names[..copies].iter().map(|n| dir.path().join(n)).collect();
        // libubootenv: device offset size, size always hex; the files must exist.
        let text: String = files
            .iter()
            .map(|f| format!("{} 0x0 {:#x}\n", f.display(), SIZE))
            .collect();
        let config = dir.path().join("fw_env.config");
        fs::write(&config, text).unwrap();
        Self { dir, config, files }
    }

    /// The location as slotinit sees it, via slotinit's own config parser.
    fn location(&self) -> EnvLocation {
        EnvLocation::from_fwenv(&envstore::read_config(&self.config).unwrap())
    }

    fn zero_files(&self) {
        for f in &self.files {
            fs::write(f, vec![0u8; SIZE]).unwrap();
        }
    }

    fn printenv(&self) -> Env {
        let text = run(Command::new(tool("fw_printenv"))
            .arg("-c")
            .arg(&self.config));
        let mut env = Env::new();
        for line in text.lines() {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("odd line {line:?}"));
            env.set(k, v).unwrap();
        }
        env
    }

    /// `fw_setenv`, seeding a default env if the files hold none yet.
    fn setenv(&self, name: &str, value: &str) {
        let defaults = self.dir.path().join("defaults.txt");
        if !defaults.exists() {
            fs::write(&defaults, "BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n").unwrap();
        }
        run(Command::new(tool("fw_setenv"))
            .arg("-c")
            .arg(&self.config)
            .arg("-f")
            .arg(&defaults)
            .arg(name)
            .arg(value));
    }

    fn bytes(&self) -> Vec<Vec<u8>> {
        self.files.iter().map(|f| fs::read(f).unwrap()).collect()
    }
}

fn flags_of(path: &Path) -> u8 {
    fs::read(path).unwrap()[4]
}

fn set_flags(path: &Path, flags: u8) {
    // The flags byte is outside the CRC, so this keeps the copy valid.
    let mut bytes = fs::read(path).unwrap();
    bytes[4] = flags;
    fs::write(path, bytes).unwrap();
}

fn flip_data_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    bytes[8] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(pairs.iter().copied()).unwrap()
}

fn base_env() -> Env {
    env(&[
        ("bootcmd", "run distro_bootcmd"),
        ("bootargs", "console=ttyAMA0 rauc.slot=A"),
        ("weird", "a=b c\\d"),
    ])
}

#[test]
fn slotinit_single_file_reads_back_in_fw_printenv() {
    let s = Setup::new(1);
    let loc = s.location();
    let fresh = envstore::load(&loc).unwrap();
    assert!(fresh.is_all_corrupt());
    let e = rauc::default_env(&Config::default(), &base_env()).unwrap();
    let mut loaded = envstore::store(&loc, &e, &fresh, IfAllCorrupt::Overwrite).unwrap();
    assert_eq!(s.printenv(), e);

    // Successive boot-state commits, each read by libubootenv: three tries
    // of A, three of B, then the exhausted reset.
    let cfg = Config::default();
    for _ in 0..7 {
        let current = loaded.env.clone().unwrap();
        let choice =
            rauc::choose_and_decrement(&State::read(&current, &cfg).unwrap(), &cfg).unwrap();
        let mut next = current.clone();
        rauc::apply(&choice.state, &mut next).unwrap();
        loaded = envstore::store(&loc, &next, &loaded, IfAllCorrupt::Refuse).unwrap();
        assert_eq!(s.printenv(), next);
    }
    let last = s.printenv();
    assert_eq!(
        last.get("BOOT_A_LEFT"),
        Some(&b"2"[..]),
        "reset to 3, then picked"
    );
    assert_eq!(last.get("BOOT_B_LEFT"), Some(&b"3"[..]));
}

#[test]
fn slotinit_redundant_files_read_back_in_fw_printenv() {
    let s = Setup::new(2);
    s.zero_files();
    let loc = s.location();
    let mut loaded = envstore::load(&loc).unwrap();
    assert!(loaded.is_all_corrupt());
    let mut e = rauc::default_env(&Config::default(), &base_env()).unwrap();
    let mut force = IfAllCorrupt::Overwrite;
    for n in 0..5 {
        e.set("counter", &n.to_string()).unwrap();
        loaded = envstore::store(&loc, &e, &loaded, force).unwrap();
        force = IfAllCorrupt::Refuse;
        assert_eq!(s.printenv(), e, "after store {n}");
    }
    // Stores alternate copies: 1, 2, 3, 4, 5 into first, second, first, ...
    assert_eq!((flags_of(&s.files[0]), flags_of(&s.files[1])), (5, 4));

    // And fw_setenv continues from where slotinit left off.
    s.setenv("counter", "fw");
    assert_eq!(flags_of(&s.files[1]), 6);
    let reloaded = envstore::load(&loc).unwrap();
    assert_eq!(
        reloaded.health,
        Health::BothGood {
            current: CopyIndex::Second
        }
    );
    assert_eq!(reloaded.env.unwrap().get("counter"), Some(&b"fw"[..]));
}

#[test]
fn fw_setenv_single_reads_in_slotinit() {
    let s = Setup::new(1);
    s.zero_files();
    let loc = s.location();
    for (i, value) in ["1", "2", "value with spaces", ""].iter().enumerate() {
        s.setenv("X", value);
        s.setenv(&format!("K{i}"), "v");
        let loaded = envstore::load(&loc).unwrap();
        assert_eq!(loaded.health, Health::SingleGood);
        assert_eq!(loaded.env.unwrap(), s.printenv(), "after write {i}");
    }
}

#[test]
fn fw_setenv_redundant_reads_in_slotinit_and_flags_advance() {
    let s = Setup::new(2);
    s.zero_files();
    let loc = s.location();
    let cfg = Config::default();
    let mut last_flags = None;
    for n in 1..=6 {
        s.setenv("BOOT_A_LEFT", &format!("{n:x}"));
        let loaded = envstore::load(&loc).unwrap();
        let (Health::BothGood { current } | Health::OneCorrupt { current, .. }) = loaded.health
        else {
            panic!("after write {n}: {:?}", loaded.health);
        };
        let flags = loaded.current_flags().unwrap();
        if let Some(last) = last_flags {
            assert_eq!(flags, envblock::next_flags(last), "after write {n}");
        }
        last_flags = Some(flags);
        assert_eq!(flags, flags_of(&s.files[current.index()]));
        let e = loaded.env.unwrap();
        assert_eq!(e, s.printenv(), "after write {n}");
        assert_eq!(
            State::read(&e, &cfg)
                .unwrap()
                .left(&Bootname::new("A").unwrap()),
            n
        );
    }
}

#[test]
fn flags_wraparound_agrees_with_libubootenv() {
    let s = Setup::new(2);
    s.zero_files();
    let loc = s.location();
    s.setenv("step", "0"); // second copy, flags 1
    s.setenv("step", "1"); // first copy, flags 2
    set_flags(&s.files[0], 0xFE);
    s.setenv("step", "2"); // second copy, flags 0xFF
    assert_eq!(flags_of(&s.files[1]), 0xFF);
    s.setenv("step", "3"); // first copy, flags 0x00: wins over 0xFF
    assert_eq!(flags_of(&s.files[0]), 0x00);
    let loaded = envstore::load(&loc).unwrap();
    assert_eq!(
        loaded.health,
        Health::BothGood {
            current: CopyIndex::First
        }
    );
    assert_eq!(loaded.env.as_ref().unwrap().get("step"), Some(&b"3"[..]));
    assert_eq!(s.printenv().get("step"), Some(&b"3"[..]));

    // slotinit continues with 0x01 into the second copy; libubootenv agrees.
    let mut e = loaded.env.clone().unwrap();
    e.set("step", "4").unwrap();
    envstore::store(&loc, &e, &loaded, IfAllCorrupt::Refuse).unwrap();
    assert_eq!(flags_of(&s.files[1]), 0x01);
    assert_eq!(s.printenv(), e);

    // The reverse: slotinit writes the 0xFF -> 0x00 step, libubootenv reads it.
    set_flags(&s.files[0], 0xFE);
    set_flags(&s.files[1], 0xFF);
    let loaded = envstore::load(&loc).unwrap();
    assert_eq!(
        loaded.health,
        Health::BothGood {
            current: CopyIndex::Second
        }
    );
    e.set("step", "5").unwrap();
    envstore::store(&loc, &e, &loaded, IfAllCorrupt::Refuse).unwrap();
    assert_eq!(flags_of(&s.files[0]), 0x00);
    assert_eq!(s.printenv(), e);
}

#[test]
fn mkenvimage_images_read_in_slotinit() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("env.txt");
    fs::write(
        &text,
        "# comment\nbootcmd=run distro_bootcmd\n\nBOOT_ORDER=B A\nBOOT_A_LEFT=0\nBOOT_B_LEFT=3\n",
    )
    .unwrap();
    let want = env(&[
        ("bootcmd", "run distro_bootcmd"),
        ("BOOT_ORDER", "B A"),
        ("BOOT_A_LEFT", "0"),
        ("BOOT_B_LEFT", "3"),
    ]);
    let single = dir.path().join("single.bin");
    let redundant = dir.path().join("redundant.bin");
    let padded = dir.path().join("padded.bin");
    let size = format!("{SIZE:#x}");
    run(Command::new(tool("mkenvimage"))
        .args(["-s", &size, "-o"])
        .arg(&single)
        .arg(&text));
    run(Command::new(tool("mkenvimage"))
        .args(["-r", "-s", &size, "-o"])
        .arg(&redundant)
        .arg(&text));
    run(Command::new(tool("mkenvimage"))
        .args(["-p", "0", "-s", &size, "-o"])
        .arg(&padded)
        .arg(&text));

    assert_eq!(
        envblock::parse_single(&fs::read(&single).unwrap()).unwrap(),
        want
    );
    assert_eq!(
        envblock::parse_single(&fs::read(&padded).unwrap()).unwrap(),
        want
    );
    let copy = envblock::parse_redundant(&fs::read(&redundant).unwrap()).unwrap();
    assert_eq!((copy.flags, copy.env), (1, want.clone()));

    // Same env through slotinit's encoder: same variables, sorted, and with
    // U-Boot's 0x00 padding the bytes equal mkenvimage's for sorted input.
    let sorted = dir.path().join("sorted.txt");
    fs::write(&sorted, want.to_string()).unwrap();
    let sorted_img = dir.path().join("sorted.bin");
    run(Command::new(tool("mkenvimage"))
        .args(["-p", "0", "-s", &size, "-o"])
        .arg(&sorted_img)
        .arg(&sorted));
    assert_eq!(
        envblock::serialize(&want, SIZE, Header::Single).unwrap(),
        fs::read(&sorted_img).unwrap()
    );

    // Big-endian images are not ours: the CRC is read as a mismatch.
    let be = dir.path().join("be.bin");
    run(Command::new(tool("mkenvimage"))
        .args(["-b", "-s", &size, "-o"])
        .arg(&be)
        .arg(&text));
    assert!(matches!(
        envblock::parse_single(&fs::read(&be).unwrap()),
        Err(EnvError::CrcMismatch { .. })
    ));
}

#[test]
fn one_corrupt_copy_falls_back_like_libubootenv() {
    for bad in [CopyIndex::First, CopyIndex::Second] {
        let s = Setup::new(2);
        s.zero_files();
        s.setenv("v", "older"); // second copy
        s.setenv("v", "newer"); // first copy
        flip_data_byte(&s.files[bad.index()]);
        let good_value = if bad == CopyIndex::First {
            "older"
        } else {
            "newer"
        };

        let loaded = envstore::load(&s.location()).unwrap();
        let Health::OneCorrupt {
            current,
            corrupt,
            fault,
        } = &loaded.health
        else {
            panic!("{bad}: {:?}", loaded.health);
        };
        assert_eq!((*corrupt, *current), (bad, bad.other()));
        assert!(
            matches!(fault, CopyFault::Invalid { source: EnvError::CrcMismatch { .. }, path, .. } if *path == s.files[bad.index()]),
            "{fault:?}"
        );
        let e = loaded.env.clone().unwrap();
        assert_eq!(e.get("v"), Some(good_value.as_bytes()));
        assert_eq!(s.printenv(), e, "libubootenv picks the same copy");

        // The store repairs the corrupt copy, and libubootenv reads the result.
        let mut next = e.clone();
        next.set("v", "repaired").unwrap();
        let stored = envstore::store(&s.location(), &next, &loaded, IfAllCorrupt::Refuse).unwrap();
        assert_eq!(stored.health, Health::BothGood { current: bad });
        assert_eq!(s.printenv(), next);
    }
}

#[test]
fn all_corrupt_is_reported_and_nothing_is_written() {
    let s = Setup::new(2);
    s.zero_files();
    s.setenv("v", "1");
    s.setenv("v", "2");
    flip_data_byte(&s.files[0]);
    flip_data_byte(&s.files[1]);
    let before = s.bytes();

    let loc = s.location();
    let loaded = envstore::load(&loc).unwrap();
    let Health::AllCorrupt { faults } = &loaded.health else {
        panic!("{:?}", loaded.health);
    };
    assert_eq!(faults.len(), 2);
    assert!(loaded.env.is_none());
    let fallback = rauc::default_env(&Config::default(), &base_env()).unwrap();
    assert!(matches!(
        envstore::store(&loc, &fallback, &loaded, IfAllCorrupt::Refuse),
        Err(EnvStoreError::AllCorrupt)
    ));
    assert_eq!(s.bytes(), before, "a refused store must not touch any copy");

    // libubootenv agrees there is no env (it exits non-zero without a default).
    let out = Command::new(tool("fw_printenv"))
        .arg("-c")
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Single copy: same verdict, same refusal.
    let single = Setup::new(1);
    single.zero_files();
    single.setenv("v", "1");
    flip_data_byte(&single.files[0]);
    let before = single.bytes();
    let loaded = envstore::load(&single.location()).unwrap();
    assert!(loaded.is_all_corrupt());
    assert!(envstore::store(&single.location(), &fallback, &loaded, IfAllCorrupt::Refuse).is_err());
    assert_eq!(single.bytes(), before);
}

#[test]
fn checked_in_fixtures_agree_with_fw_printenv() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/env");
    let s = Setup::new(2);
    fs::copy(fixtures.join("redundant-1.env"), &s.files[0]).unwrap();
    fs::copy(fixtures.join("redundant-2.env"), &s.files[1]).unwrap();
    let loaded = envstore::load(&s.location()).unwrap();
    assert_eq!(loaded.env.unwrap(), s.printenv());

    let single = Setup::new(1);
    fs::copy(fixtures.join("single.env"), &single.files[0]).unwrap();
    let loaded = envstore::load(&single.location()).unwrap();
    assert_eq!(loaded.env.unwrap(), single.printenv());
}

/// Issue 11, item 14: which copy is current depends only on the CRCs and the
/// flags (U-Boot env/common.c `env_import_redund`, libubootenv
/// src/uboot_env.c `libuboot_load`), even when the newer copy holds an entry
/// without '=' that slotinit's strict parser rejects. For every flags pair,
/// slotinit must read the env `fw_printenv` prints, and a store must go to
/// the other copy.
#[test]
fn copy_selection_with_junk_agrees_with_fw_printenv() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/env");
    let cases: &[(u8, u8, CopyIndex)] = &[
        (2, 3, CopyIndex::Second),
        (3, 2, CopyIndex::First),
        (5, 5, CopyIndex::First),
        (0xFF, 0x00, CopyIndex::Second),
        (0x00, 0xFF, CopyIndex::First),
        (0xFE, 0x00, CopyIndex::First),
        (0x01, 0xFF, CopyIndex::Second),
    ];
    for &(first, second, want) in cases {
        for junk_in in [CopyIndex::First, CopyIndex::Second] {
            let s = Setup::new(2);
            let (junk, plain) = match junk_in {
                CopyIndex::First => (&s.files[0], &s.files[1]),
                CopyIndex::Second => (&s.files[1], &s.files[0]),
            };
            fs::copy(fixtures.join("redundant-junk.env"), junk).unwrap();
            fs::copy(fixtures.join("redundant-1.env"), plain).unwrap();
            set_flags(&s.files[0], first);
            set_flags(&s.files[1], second);
            let what = format!("flags {first:#x}/{second:#x}, junk in the {junk_in}");
            let loaded = envstore::load(&s.location()).unwrap();
            assert_eq!(loaded.health, Health::BothGood { current: want }, "{what}");
            let printed = s.printenv();
            assert_eq!(loaded.env.as_ref(), Some(&printed), "{what}");
            assert_eq!(
                !loaded.anomalies.is_empty(),
                want == junk_in,
                "{what}: {:?}",
                loaded.anomalies
            );

            let before = fs::read(&s.files[want.index()]).unwrap();
            let mut e = printed.clone();
            e.set("written", "by slotinit").unwrap();
            envstore::store(&s.location(), &e, &loaded, IfAllCorrupt::Refuse).unwrap();
            assert_eq!(
                fs::read(&s.files[want.index()]).unwrap(),
                before,
                "{what}: the current copy was overwritten"
            );
            assert_eq!(s.printenv(), e, "{what}");
        }
    }
}

/// Issue 11, item 15: U-Boot's usual single-copy uboot.env where the config
/// names a redundant pair. libubootenv with a one-line config reads it; slotinit
/// with a pair must refuse with the layout error, and write nothing.
#[test]
fn single_copy_env_in_a_pair_config_is_refused() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/env");
    let single = Setup::new(1);
    fs::copy(fixtures.join("single.env"), &single.files[0]).unwrap();
    let printed = single.printenv();
    assert_eq!(printed.get("bootcmd"), Some(&b"run distro_bootcmd"[..]));

    let pair = Setup::new(2);
    fs::copy(fixtures.join("single.env"), &pair.files[0]).unwrap();
    fs::write(&pair.files[1], vec![0u8; SIZE]).unwrap();
    let before = pair.bytes();
    let err = envstore::load(&pair.location()).unwrap_err();
    assert!(
        matches!(
            &err,
            EnvStoreError::WrongLayout {
                found: envblock::Layout::Single,
                expected: envblock::Layout::Redundant,
                path,
                ..
            } if *path == pair.files[0]
        ),
        "{err}"
    );
    assert_eq!(pair.bytes(), before);
}

/// What Mender's client and U-Boot write with libubootenv / `saveenv`, read by
/// slotinit under the mender contract, and slotinit's marks read back by
/// `fw_printenv`, on a redundant pair as meta-mender configures it
/// (CONFIG_ENV_REDUNDANT).
#[test]
fn mender_contract_both_ways_with_fw_setenv() {
    use slotinit::state::uboot::contract::Contract;
    use slotinit::state::uboot::rauc::Bootnames;

    let s = Setup::new(2);
    s.zero_files();
    let loc = s.location();
    // meta-mender's default env (include/env_mender.h), what fw_setenv starts from.
    let defaults = s.dir.path().join("defaults.txt");
    fs::write(
        &defaults,
        "bootcmd=run mender_setup; run bootcmd_distro\naltbootcmd=run mender_altbootcmd; run bootcmd\n\
         bootlimit=1\nbootcount=0\nupgrade_available=0\nmender_boot_part=2\nmender_boot_part_hex=2\n",
    )
    .unwrap();
    let fw_setenv_script = |lines: &str| {
        let script = s.dir.path().join("script.txt");
        fs::write(&script, lines).unwrap();
        run(Command::new(tool("fw_setenv"))
            .arg("-c")
            .arg(&s.config)
            .arg("-f")
            .arg(&defaults)
            .arg("-s")
            .arg(&script));
    };
    let names = Bootnames {
        a: Bootname::new("2").unwrap(),
        b: Bootname::new("3").unwrap(),
    };
    let cfg = Contract::Mender.state_config(&names, 1, 1).unwrap();
    let read = || {
        let loaded = envstore::load(&loc).unwrap();
        let state = Contract::Mender
            .read(loaded.env.as_ref().unwrap(), &cfg)
            .unwrap();
        (loaded, state)
    };
    let get = |e: &Env, k: &str| String::from_utf8_lossy(e.get(k).unwrap_or(b"-")).into_owned();

    // The client's install of partition 3 (one fw_setenv -s script of
    // name=value lines, libubootenv's script format).
    fw_setenv_script(
        "mender_boot_part=3\nmender_boot_part_hex=3\nupgrade_available=1\nbootcount=0\n",
    );
    let (_, st) = read();
    assert_eq!(st.order, [names.b.clone(), names.a.clone()]);
    assert_eq!((st.left(&names.b), st.left(&names.a)), (1, 2));
    // U-Boot's bootcount_store (env_set_ulong + env_save) on the trial's boot.
    s.setenv("bootcount", "1");
    let (loaded, st) = read();
    assert_eq!(st.left(&names.b), 0);

    // slotinit mark-good: the commit; fw_printenv sees Mender's committed state
    // and every variable of the bootloader's kept.
    let good = rauc::mark_good(&st, &names.b, cfg.attempts).unwrap();
    let mut e = loaded.env.clone().unwrap();
    Contract::Mender.apply(&good.state, &cfg, &mut e).unwrap();
    envstore::store(&loc, &e, &loaded, IfAllCorrupt::Refuse).unwrap();
    let seen = s.printenv();
    assert_eq!(seen, e);
    assert_eq!(
        [
            "mender_boot_part",
            "mender_boot_part_hex",
            "upgrade_available",
            "bootcount",
            "bootlimit"
        ]
        .map(|k| get(&seen, k)),
        ["3", "3", "0", "0", "1"]
    );
    assert_eq!(
        get(&seen, "altbootcmd"),
        "run mender_altbootcmd; run bootcmd"
    );

    // slotinit mark-active 2: the install as the client writes it.
    let (loaded, st) = read();
    let active = rauc::mark_active(&st, &names.a, cfg.attempts_primary).unwrap();
    let mut e = loaded.env.clone().unwrap();
    Contract::Mender.apply(&active.state, &cfg, &mut e).unwrap();
    envstore::store(&loc, &e, &loaded, IfAllCorrupt::Refuse).unwrap();
    let seen = s.printenv();
    assert_eq!(
        [
            "mender_boot_part",
            "mender_boot_part_hex",
            "upgrade_available",
            "bootcount"
        ]
        .map(|k| get(&seen, k)),
        ["2", "2", "1", "0"]
    );

    // The client's commit (`fw_setenv upgrade_available 0`, bootcount 0):
    // slotinit reads partition 2 committed.
    fw_setenv_script("upgrade_available=0\nbootcount=0\n");
    let (_, st) = read();
    assert_eq!(st.order[0], names.a);
    assert!(st.left(&names.a) >= cfg.attempts);
}

/// The article's variables set by fw_setenv read in slotinit, and slotinit's
/// commit read by fw_printenv (hex counters, as U-Boot's setexpr writes).
#[test]
fn article_contract_both_ways_with_fw_setenv() {
    use slotinit::state::uboot::contract::Contract;
    use slotinit::state::uboot::rauc::Bootnames;

    let s = Setup::new(1);
    s.zero_files();
    let loc = s.location();
    fs::write(
        s.dir.path().join("defaults.txt"),
        "bootcmd=run distro_bootcmd\nboot_slot=a\nboot_a_left=3\nboot_b_left=3\n",
    )
    .unwrap();
    let names = Bootnames {
        a: Bootname::new("a").unwrap(),
        b: Bootname::new("b").unwrap(),
    };
    let cfg = Contract::Article.state_config(&names, 3, 3).unwrap();
    // An update tool switches to b; the script has counted b twice, then
    // once more past 9 in hex ("a" = 10 to setexpr).
    s.setenv("boot_slot", "b");
    s.setenv("boot_b_left", "1");
    let loaded = envstore::load(&loc).unwrap();
    let st = Contract::Article
        .read(loaded.env.as_ref().unwrap(), &cfg)
        .unwrap();
    assert_eq!(st.order[0], names.b);
    assert_eq!(st.left(&names.b), 1);
    s.setenv("boot_a_left", "a");
    let loaded = envstore::load(&loc).unwrap();
    let st = Contract::Article
        .read(loaded.env.as_ref().unwrap(), &cfg)
        .unwrap();
    assert_eq!(st.left(&names.a), 10);

    let good = rauc::mark_good(&st, &names.b, cfg.attempts).unwrap();
    let mut e = loaded.env.clone().unwrap();
    Contract::Article.apply(&good.state, &cfg, &mut e).unwrap();
    envstore::store(&loc, &e, &loaded, IfAllCorrupt::Refuse).unwrap();
    let seen = s.printenv();
    assert_eq!(seen, e);
    assert_eq!(seen.get("boot_slot"), Some(&b"b"[..]));
    assert_eq!(seen.get("boot_b_left"), Some(&b"3"[..]));
    assert_eq!(seen.get("boot_a_left"), Some(&b"a"[..]));
    assert_eq!(seen.get("bootcmd"), Some(&b"run distro_bootcmd"[..]));
}
