//! The rpi-tryboot backend on the recording fake: every decide row, the
//! re-arm and its count, the marks, status and the record.

use super::*;
use crate::disk::devices::Partition;
use crate::kernel::fake::Fake;
use crate::state::decision::Hint;

/// The first call starting with `prefix`.
fn starts(sys: &crate::kernel::fake::Fake, prefix: &str) -> Option<usize> {
    sys.calls.iter().position(|c| c.starts_with(prefix))
}

/// rpi-image-gen's `pre-image.sh` autoboot.txt.
const AUTOBOOT: &str = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n";
const DIR: &str = "/run/slotinit/bootstate";
const DT: &str = "/proc/device-tree/chosen/bootloader";

fn part(n: u32, name: &str) -> Option<Partition> {
    Some(Partition {
        dev: format!("mmcblk0p{n}"),
        disk: "mmcblk0".into(),
        number: n,
        name: Some(name.into()),
        uuid: None,
    })
}

fn resolved() -> Resolved {
    Resolved {
        bootconfig: part(1, "bootconfig"),
        boot_a: part(2, "boot_a"),
        boot_b: part(3, "boot_b"),
        system_a: part(4, "system_a"),
        system_b: part(5, "system_b"),
        ..Resolved::default()
    }
}

/// A Pi that booted partition `dt` (tryboot flag `tryboot`), with `autoboot`.
fn pi(autoboot: Option<&str>, dt: Option<(u32, bool)>) -> Fake {
    let mut sys = Fake::default();
    if let Some(text) = autoboot {
        sys.files.insert(
            Path::new(DIR).join("autoboot.txt"),
            text.as_bytes().to_vec(),
        );
    }
    if let Some((partition, tryboot)) = dt {
        let dir = Path::new(DT);
        sys.files
            .insert(dir.join("partition"), partition.to_be_bytes().to_vec());
        sys.files.insert(
            dir.join("tryboot"),
            u32::from(tryboot).to_be_bytes().to_vec(),
        );
        sys.files
            .insert(dir.join("boot-mode"), 1u32.to_be_bytes().to_vec());
        sys.files
            .insert(dir.join("pm_rsts"), 0x1000u32.to_be_bytes().to_vec());
    }
    sys
}

fn config(extra: &str) -> Config {
    Config::parse(
        &format!("[bootstate]\nbackend = \"rpi-tryboot\"\n[bootstate.rpi-tryboot]\n{extra}"),
        "t",
    )
    .unwrap()
}

fn open(sys: &mut Fake) -> Rpi {
    open_rpi(sys, &config(""), &resolved(), Path::new(DIR)).unwrap()
}

/// The same Pi after a reset: the medium kept, the firmware's new word.
fn reboot(sys: &mut Fake, dt: Option<(u32, bool)>) {
    let medium = pi(None, dt);
    sys.files.retain(|p, _| !p.starts_with(DT));
    sys.files.extend(medium.files);
    sys.calls.clear();
}

fn ctx<'a>(failed: &'a [(Slot, String)], over: Option<Slot>) -> DecideCtx<'a> {
    DecideCtx {
        override_slot: over,
        default_slot: Slot::A,
        hint: None::<&Hint>,
        failed,
    }
}

fn autoboot(sys: &Fake) -> String {
    String::from_utf8(sys.files[&Path::new(DIR).join("autoboot.txt")].clone()).unwrap()
}

fn wrote(sys: &Fake) -> bool {
    sys.calls
        .iter()
        .any(|c| c.starts_with("fsync") || c.starts_with("write") || c.starts_with("rename"))
}

fn record(sys: &Fake) -> trial::Record {
    let dir = Path::new(DIR);
    let store = TrialStore::open(
        &mut sys.clone_files(),
        None,
        "",
        "vfat",
        &RpiConfig::default().trial_files,
        0x1000,
        dir,
    )
    .unwrap();
    store.record()
}

trait CloneFiles {
    fn clone_files(&self) -> Fake;
}

impl CloneFiles for Fake {
    fn clone_files(&self) -> Fake {
        Fake {
            files: self.files.clone(),
            dirs: self.dirs.clone(),
            ..Fake::default()
        }
    }
}

fn slot(out: &Outcome) -> (Slot, Source) {
    (out.decision.slot, out.decision.source)
}

#[test]
fn committed_boot_boots_r_and_writes_nothing() {
    let mut sys = pi(Some(AUTOBOOT), Some((2, false)));
    let mut b = open(&mut sys);
    let out = b.decide(&mut sys, &ctx(&[], None)).unwrap();
    assert_eq!(slot(&out), (Slot::A, Source::Bootloader));
    assert!(out.problems().next().is_none(), "{:?}", out.lines);
    assert!(!wrote(&sys), "{:?}", sys.calls);
    // The bootconfig was mounted read-only, and is unmounted at close.
    assert!(
        sys.calls
            .iter()
            .any(|c| c.starts_with("mount /dev/mmcblk0p1 /run/slotinit/bootstate vfat ro")),
        "{:?}",
        sys.calls
    );
    Box::new(b).close(&mut sys);
    assert!(starts(&sys, "umount /run/slotinit/bootstate").is_some());
}

#[test]
fn trial_boot_of_t_is_the_trial_and_writes_nothing() {
    let mut sys = pi(Some(AUTOBOOT), Some((3, true)));
    let mut b = open(&mut sys);
    let out = b.decide(&mut sys, &ctx(&[], None)).unwrap();
    assert_eq!(slot(&out), (Slot::B, Source::Bootloader));
    assert!(!wrote(&sys), "{:?}", sys.calls);
    assert_eq!(
        b.status(Some(Slot::B)),
        BootStatus {
            boot: "trial",
            attempts_left: Some(0)
        }
    );
    // The flag on C's partition ([tryboot] = C) is no trial.
    let mut sys = pi(
        Some("[all]\nboot_partition=2\n[tryboot]\nboot_partition=2\n"),
        Some((2, true)),
    );
    let b = open(&mut sys);
    assert_eq!(b.status(Some(Slot::A)).boot, "committed");
}

/// mark-active arms (tries 0); each boot_next counts one armed trial boot;
/// a normal boot with tries < attempts re-arms, at attempts gives up.
#[test]
fn a_trial_is_rearmed_up_to_attempts_then_given_up() {
    let mut sys = pi(Some(AUTOBOOT), Some((2, false)));
    let mut b = open(&mut sys);
    let line = b.mark(&mut sys, Mark::Active, Slot::B, false).unwrap();
    assert!(line.starts_with("slot b marked active"), "{line}");
    assert_eq!(
        record(&sys).pending,
        Some(Trial {
            slot: Slot::B,
            tries: 0
        })
    );
    assert_eq!(
        b.boot_next(&mut sys, Slot::B).unwrap().as_deref(),
        Some("0 tryboot")
    );
    assert_eq!(
        record(&sys).pending,
        Some(Trial {
            slot: Slot::B,
            tries: 1
        })
    );
    // autoboot.txt was right already: not rewritten.
    assert_eq!(autoboot(&sys), AUTOBOOT);
    Box::new(b).close(&mut sys);
    for armed in 1..=3u32 {
        // The trial boot (B, tryboot) reaches the system but never mark-good;
        // the firmware's next reset boots A.
        reboot(&mut sys, Some((3, true)));
        let mut b = open(&mut sys);
        let out = b.decide(&mut sys, &ctx(&[], None)).unwrap();
        assert_eq!(slot(&out), (Slot::B, Source::Bootloader));
        assert_eq!(b.status(Some(Slot::B)).attempts_left, Some(3 - armed));
        reboot(&mut sys, Some((2, false)));
        let mut b = open(&mut sys);
        let out = b.decide(&mut sys, &ctx(&[], None)).unwrap();
        if armed < 3 {
            assert_eq!(slot(&out), (Slot::B, Source::Counters), "{armed}");
            assert!(!wrote(&sys), "decide counts nothing: {:?}", sys.calls);
            assert_eq!(
                b.boot_next(&mut sys, Slot::B).unwrap().as_deref(),
                Some("0 tryboot")
            );
            assert_eq!(record(&sys).pending.unwrap().tries, armed + 1);
        } else {
            assert_eq!(slot(&out), (Slot::A, Source::Bootloader));
            let reason = "slot b: 3 trial boots did not reach mark-good";
            assert_eq!(out.fallback.as_deref(), Some(reason));
            assert_eq!(
                out.problems()
                    .map(|p| (p.kind(), p.to_string()))
                    .collect::<Vec<_>>(),
                [("decision", reason.to_string())]
            );
            let r = record(&sys);
            assert_eq!((r.pending, r.given_up.as_deref()), (None, Some(reason)));
            assert_eq!(b.record().last_fallback.as_deref(), Some(reason));
            assert!(b.record().left.is_empty());
        }
        Box::new(b).close(&mut sys);
    }
    // Given up: the next boot is A with nothing to do.
    reboot(&mut sys, Some((2, false)));
    let mut b = open(&mut sys);
    let out = b.decide(&mut sys, &ctx(&[], None)).unwrap();
    assert_eq!(slot(&out), (Slot::A, Source::Bootloader));
    assert!(!wrote(&sys));
}

#[test]
fn a_pending_trial_of_the_committed_slot_is_cleared() {
    let mut sys = pi(Some(AUTOBOOT), Some((3, true)));
    let mut b = open(&mut sys);
    b.mark(&mut sys, Mark::Active, Slot::B, false).unwrap();
    b.boot_next(&mut sys, Slot::B).unwrap();
    // A commit cut after autoboot.txt, before the record's clear.
    let swapped = "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n";
    sys.files.insert(
        Path::new(DIR).join("autoboot.txt"),
        swapped.as_bytes().to_vec(),
    );
    reboot(&mut sys, Some((3, false)));
    let mut b = open(&mut sys);
    let out = b.decide(&mut sys, &ctx(&[], None)).unwrap();
    assert_eq!(slot(&out), (Slot::B, Source::Bootloader));
    assert!(out
        .lines
        .iter()
        .any(|l| matches!(l, Line::Note(n) if n.contains("cleared"))));
    assert_eq!(record(&sys).pending, None);
    assert_eq!(b.status(Some(Slot::B)).boot, "committed");
}

#[test]
fn a_failed_running_slot_boots_the_other_through_the_firmware() {
    // A committed slot whose system cannot be used: B (the init then
    // boot_next()s it: a trial).
    let failed = [(Slot::A, "no init".to_string())];
    let mut sys = pi(Some(AUTOBOOT), Some((2, false)));
    let mut b = open(&mut sys);
    let out = b.decide(&mut sys, &ctx(&failed, None)).unwrap();
    assert_eq!(slot(&out), (Slot::B, Source::Fallback));
    assert_eq!(
        out.fallback.as_deref(),
        Some("slot a failed to boot: no init")
    );
    assert!(!wrote(&sys));
    assert_eq!(
        b.boot_next(&mut sys, Slot::B).unwrap().as_deref(),
        Some("0 tryboot")
    );
    // A trial that cannot be used: given up, and A is a plain reboot.
    let failed = [(Slot::B, "no init".to_string())];
    let mut sys = pi(Some(AUTOBOOT), Some((3, true)));
    let mut b = open(&mut sys);
    b.mark(&mut sys, Mark::Active, Slot::B, false).unwrap();
    let out = b.decide(&mut sys, &ctx(&failed, None)).unwrap();
    assert_eq!(slot(&out), (Slot::A, Source::Fallback));
    let r = record(&sys);
    assert_eq!(r.pending, None);
    assert_eq!(
        r.given_up.as_deref(),
        Some("slot b failed to boot: no init")
    );
    assert_eq!(b.boot_next(&mut sys, Slot::A).unwrap(), None);
    // Both failed: no slot.
    let both = [(Slot::A, "x".to_string()), (Slot::B, "y".to_string())];
    assert!(matches!(
        b.decide(&mut sys, &ctx(&both, None)),
        Err(DecideError::BothFailed)
    ));
}

#[test]
fn the_override_is_followed_and_nothing_written() {
    let mut sys = pi(Some(AUTOBOOT), Some((2, false)));
    let mut b = open(&mut sys);
    let out = b.decide(&mut sys, &ctx(&[], Some(Slot::B))).unwrap();
    assert_eq!(slot(&out), (Slot::B, Source::Override));
    assert!(!wrote(&sys));
}

#[test]
fn no_firmware_word_is_a_problem_and_decides_c() {
    let swapped = "[all]\nboot_partition=3\n[tryboot]\nboot_partition=2\n";
    let mut sys = pi(Some(swapped), None);
    let mut b = open(&mut sys);
    let out = b.decide(&mut sys, &ctx(&[], None)).unwrap();
    assert_eq!(slot(&out), (Slot::B, Source::Default));
    assert_eq!(
        out.problems().map(|p| p.kind()).collect::<Vec<_>>(),
        ["decision"]
    );
    assert!(
        b.record().health.contains("partition=- tryboot=0"),
        "{}",
        b.record().health
    );
    // A partition that is no slot's.
    let mut sys = pi(Some(AUTOBOOT), Some((7, false)));
    let mut b = open(&mut sys);
    let out = b.decide(&mut sys, &ctx(&[], None)).unwrap();
    assert_eq!(slot(&out), (Slot::A, Source::Default));
    assert!(matches!(
        out.problems().next(),
        Some(Problem::HintNamesNoSlot { .. })
    ));
}

#[test]
fn mark_good_of_the_running_trial_swaps_in_place_and_is_idempotent() {
    let mut sys = pi(Some(AUTOBOOT), Some((3, true)));
    let mut b = open(&mut sys);
    b.mark(&mut sys, Mark::Active, Slot::B, false).unwrap();
    b.boot_next(&mut sys, Slot::B).unwrap();
    sys.calls.clear();
    let line = b.mark(&mut sys, Mark::Good, Slot::B, false).unwrap();
    assert!(line.starts_with("slot b committed"), "{line}");
    assert_eq!(
        autoboot(&sys),
        "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"
    );
    // In place: opened without truncate, synced, no rename; then the record.
    let open_at = starts(&sys, "open /run/slotinit/bootstate/autoboot.txt").unwrap();
    assert!(
        !sys.calls[open_at].contains("truncate"),
        "{}",
        sys.calls[open_at]
    );
    assert!(
        sys.calls.iter().all(|c| !c.starts_with("rename")),
        "{:?}",
        sys.calls
    );
    let sync_at = starts(&sys, "fsync /run/slotinit/bootstate/autoboot.txt").unwrap();
    let record_at = sys
        .calls
        .iter()
        .position(|c| c.starts_with("fsync /run/slotinit/bootstate/slotinit-trial"))
        .unwrap();
    assert!(open_at < sync_at && sync_at < record_at, "{:?}", sys.calls);
    assert_eq!(record(&sys).pending, None);
    assert_eq!(b.status(Some(Slot::B)).boot, "committed");
    assert_eq!(b.record().order, ["b", "a"]);
    // Again: nothing written.
    sys.calls.clear();
    let line = b.mark(&mut sys, Mark::Good, Slot::B, false).unwrap();
    assert!(
        line.contains("already the committed slot; nothing written"),
        "{line}"
    );
    assert!(!wrote(&sys));
}

#[test]
fn commit_on_mount_commits_only_the_running_trial() {
    let mut sys = pi(Some(AUTOBOOT), Some((2, false)));
    let mut b = open(&mut sys);
    assert!(!b.commit_good(&mut sys, Slot::A).unwrap());
    assert!(!wrote(&sys));
    let mut sys = pi(Some(AUTOBOOT), Some((3, true)));
    let mut b = open(&mut sys);
    assert!(b.commit_good(&mut sys, Slot::B).unwrap());
    assert!(autoboot(&sys).contains("[all]\ntryboot_a_b=1\nboot_partition=3\n"));
}

#[test]
fn mark_good_of_a_slot_not_on_trial_is_refused() {
    let mut sys = pi(Some(AUTOBOOT), Some((2, false)));
    let mut b = open(&mut sys);
    let e = b.mark(&mut sys, Mark::Good, Slot::B, false).unwrap_err();
    assert_eq!(e.kind(), "bootstate-invalid");
    assert!(e.to_string().contains("not running as a trial"), "{e}");
    assert_eq!(autoboot(&sys), AUTOBOOT);
}

#[test]
fn mark_active_rewrites_tryboot_when_it_names_another_partition() {
    let same = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=2\n";
    let mut sys = pi(Some(same), Some((2, false)));
    let mut b = open(&mut sys);
    b.mark(&mut sys, Mark::Active, Slot::B, false).unwrap();
    assert_eq!(autoboot(&sys), AUTOBOOT);
    assert_eq!(b.record().order, ["a", "b"]);
    assert_eq!(b.record().left, [("b".to_string(), 3)]);
    // mark-active of C cancels the pending trial.
    let line = b.mark(&mut sys, Mark::Active, Slot::A, false).unwrap();
    assert!(
        line.contains("pending trial of slot b is cancelled"),
        "{line}"
    );
    assert_eq!(record(&sys).pending, None);
    let line = b.mark(&mut sys, Mark::Active, Slot::A, false).unwrap();
    assert!(line.contains("already active"), "{line}");
}

#[test]
fn mark_bad_gives_a_trial_up_and_refuses_the_committed_slot() {
    let mut sys = pi(Some(AUTOBOOT), Some((3, true)));
    let mut b = open(&mut sys);
    b.mark(&mut sys, Mark::Active, Slot::B, false).unwrap();
    b.mark(&mut sys, Mark::Bad, Slot::B, false).unwrap();
    let r = record(&sys);
    assert_eq!(
        (r.pending, r.given_up.as_deref()),
        (None, Some("slot b: marked bad"))
    );
    let e = b.mark(&mut sys, Mark::Bad, Slot::A, false).unwrap_err();
    assert_eq!(e.kind(), "mark-refused");
    assert_eq!(autoboot(&sys), AUTOBOOT);
    // --force: the other slot becomes C.
    b.mark(&mut sys, Mark::Bad, Slot::A, true).unwrap();
    assert!(autoboot(&sys).contains("[all]\ntryboot_a_b=1\nboot_partition=3\n"));
    assert_eq!(record(&sys).given_up.as_deref(), Some("slot a: marked bad"));
}

#[test]
fn a_corrupt_trial_record_is_no_trial_and_never_written_back() {
    let mut sys = pi(Some(AUTOBOOT), Some((2, false)));
    for f in RpiConfig::default().trial_files {
        sys.files.insert(Path::new(DIR).join(f), vec![0x5a; 0x1000]);
    }
    let mut b = open(&mut sys);
    let out = b.decide(&mut sys, &ctx(&[], None)).unwrap();
    assert_eq!(slot(&out), (Slot::A, Source::Bootloader));
    assert!(out
        .lines
        .iter()
        .any(|l| matches!(l, Line::Note(n) if n.contains("taken as no pending trial"))));
    assert!(!wrote(&sys), "{:?}", sys.calls);
    assert!(b.record().error.unwrap().contains("no pending trial"));
    // An explicit mark writes a fresh record.
    b.mark(&mut sys, Mark::Active, Slot::B, false).unwrap();
    assert_eq!(
        record(&sys).pending,
        Some(Trial {
            slot: Slot::B,
            tries: 0
        })
    );
}

/// A missing, oversized or slotless autoboot.txt: the firmware's word
/// decides, the file is named, nothing is written.
#[test]
fn a_bad_autoboot_follows_the_firmware_and_writes_nothing() {
    let long = format!("{AUTOBOOT}{}", "#".repeat(600));
    let cases: [(Option<&str>, &str); 3] = [
        (None, "autoboot.txt: missing"),
        (Some(&long), "more than the firmware's limit of 512"),
        (
            Some("[all]\nboot_partition=6\n[tryboot]\nboot_partition=3\n"),
            "[all] boot_partition=6 is no slot's boot partition",
        ),
    ];
    for (text, needle) in cases {
        let mut sys = pi(text, Some((3, false)));
        let mut b = open(&mut sys);
        let out = b.decide(&mut sys, &ctx(&[], None)).unwrap();
        assert_eq!(slot(&out), (Slot::B, Source::Bootloader), "{needle}");
        let error = b.record().error.unwrap();
        assert!(
            error.contains(needle) && error.contains("/run/slotinit/bootstate/autoboot.txt"),
            "{error}"
        );
        let e = b.mark(&mut sys, Mark::Active, Slot::A, false).unwrap_err();
        assert_eq!(e.kind(), "bootstate-unusable");
        assert!(b.boot_next(&mut sys, Slot::A).is_err());
        assert!(!wrote(&sys), "{needle}: {:?}", sys.calls);
        if let Some(t) = text {
            assert_eq!(autoboot(&sys), t);
        }
    }
}

#[test]
fn a_swap_that_changes_the_length_is_refused_naming_the_file() {
    let text = "[all]\nboot_partition=9\n[tryboot]\nboot_partition=10\n";
    let mut sys = pi(Some(text), Some((10, true)));
    let mut r = resolved();
    r.boot_a = part(9, "boot_a");
    r.boot_b = part(10, "boot_b");
    let mut b = open_rpi(&mut sys, &config(""), &r, Path::new(DIR)).unwrap();
    let e = b.mark(&mut sys, Mark::Good, Slot::B, false).unwrap_err();
    assert!(
        e.to_string()
            .contains("/run/slotinit/bootstate/autoboot.txt: boot_partition=9 cannot become 10"),
        "{e}"
    );
    assert_eq!(autoboot(&sys), text);
}

#[test]
fn status_and_record() {
    let mut sys = pi(Some(AUTOBOOT), Some((2, false)));
    let mut b = open(&mut sys);
    assert_eq!(
        b.status(Some(Slot::A)),
        BootStatus {
            boot: "committed",
            attempts_left: None
        }
    );
    assert_eq!(b.status(Some(Slot::B)).boot, "unknown");
    assert_eq!(b.status(None).boot, "unknown");
    b.mark(&mut sys, Mark::Active, Slot::B, false).unwrap();
    b.boot_next(&mut sys, Slot::B).unwrap();
    let r = b.record();
    assert_eq!(r.location, "/run/slotinit/bootstate/autoboot.txt");
    assert_eq!(r.order, ["a", "b"]);
    assert_eq!(r.left, [("b".to_string(), 2)]);
    assert_eq!(r.error, None);
    assert!(
        r.health
            .contains("[all] boot_partition=2, [tryboot] boot_partition=3"),
        "{}",
        r.health
    );
    assert!(r.health.contains("pm_rsts=0x00001000"), "{}", r.health);
    assert!(r.health.contains("boot-mode=1"), "{}", r.health);
    assert!(!r.health.contains("tryboot_a_b"), "{}", r.health);
    let mut sys = pi(
        Some("[all]\nboot_partition=2\n[tryboot]\nboot_partition=3\n"),
        Some((2, false)),
    );
    let health = open(&mut sys).record().health;
    assert!(health.contains("tryboot_a_b is not 1"), "{health}");
    assert_eq!(b.name(), "rpi-tryboot");
}

/// The registry: checked, opened and used through the trait alone.
#[test]
fn opens_through_the_registry() {
    let mut sys = pi(Some(AUTOBOOT), Some((2, false)));
    let c = config("attempts = 2\n");
    crate::state::check(&c).unwrap();
    let mut b = crate::state::open(&mut sys, &c, &resolved(), Path::new(DIR))
        .unwrap()
        .unwrap();
    assert_eq!(b.name(), "rpi-tryboot");
    let out = b.decide(&mut sys, &ctx(&[], None)).unwrap();
    assert_eq!(out.decision.slot, Slot::A);
    b.close(&mut sys);
    // No bootconfig partition: the store cannot be opened, and the
    // firmware's word decides.
    let err = crate::state::open(&mut sys, &c, &Resolved::default(), Path::new("/x"))
        .err()
        .unwrap();
    assert_eq!(err.kind(), "bootstate-unavailable");
    let hint = Hint {
        slot: Some(Slot::B),
        source: "device-tree boot partition 3".into(),
    };
    let ctx = DecideCtx {
        hint: Some(&hint),
        ..ctx(&[], None)
    };
    let out = crate::state::decide_unopened(&c, &ctx).unwrap();
    assert_eq!(out.decision.slot, Slot::B);
}

/// boot_next of the other slot points [tryboot] at it (in place) and counts.
#[test]
fn boot_next_points_tryboot_at_the_slot_and_counts() {
    let same = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=2\n";
    let mut sys = pi(Some(same), Some((2, false)));
    let mut b = open(&mut sys);
    assert_eq!(b.boot_next(&mut sys, Slot::A).unwrap(), None);
    assert!(!wrote(&sys));
    assert_eq!(
        b.boot_next(&mut sys, Slot::B).unwrap().as_deref(),
        Some("0 tryboot")
    );
    assert_eq!(autoboot(&sys), AUTOBOOT);
    assert_eq!(
        record(&sys).pending,
        Some(Trial {
            slot: Slot::B,
            tries: 1
        })
    );
    // The count is on the medium before the restart: autoboot.txt, then
    // the record, each synced.
    let a = starts(&sys, "fsync /run/slotinit/bootstate/autoboot.txt").unwrap();
    let r = starts(&sys, "fsync /run/slotinit/bootstate/slotinit-trial").unwrap();
    assert!(a < r, "{:?}", sys.calls);
}

/// The same contract on real files in a temp dir (partition "": nothing
/// mounted): arm, count, commit in place (the same inode), then the next
/// boot of the new committed slot.
#[test]
fn on_a_temp_dir_with_the_real_kernel() {
    use crate::kernel::sys::Real;
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("autoboot.txt");
    std::fs::write(&file, AUTOBOOT).unwrap();
    let inode = std::fs::metadata(&file).unwrap().ino();
    let c = config("partition = \"\"\n");
    let fw = |partition: u32, tryboot: bool| Firmware {
        partition: Some(partition),
        tryboot,
        boot_mode: Some(1),
        pm_rsts: None,
    };
    let mut b = open_rpi(&mut Real, &c, &resolved(), dir.path()).unwrap();
    b.firmware = fw(2, false);
    b.mark(&mut Real, Mark::Active, Slot::B, false).unwrap();
    assert_eq!(
        b.boot_next(&mut Real, Slot::B).unwrap().as_deref(),
        Some("0 tryboot")
    );
    Box::new(b).close(&mut Real);
    // The trial boot: B, tryboot; the health check commits it.
    let mut b = open_rpi(&mut Real, &c, &resolved(), dir.path()).unwrap();
    b.firmware = fw(3, true);
    assert_eq!(b.status(Some(Slot::B)).attempts_left, Some(2));
    let out = b.decide(&mut Real, &ctx(&[], None)).unwrap();
    assert_eq!(slot(&out), (Slot::B, Source::Bootloader));
    b.mark(&mut Real, Mark::Good, Slot::B, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"
    );
    assert_eq!(std::fs::metadata(&file).unwrap().ino(), inode);
    Box::new(b).close(&mut Real);
    // Any reset now boots B, committed, with nothing pending.
    let mut b = open_rpi(&mut Real, &c, &resolved(), dir.path()).unwrap();
    b.firmware = fw(3, false);
    assert_eq!(b.status(Some(Slot::B)).boot, "committed");
    assert!(b.record().left.is_empty());
    let out = b.decide(&mut Real, &ctx(&[], None)).unwrap();
    assert_eq!(slot(&out), (Slot::B, Source::Bootloader));
}
