//! The userspace subcommands as a user runs them: the real binary against a
//! boot-state file described by fw_env lines, checked with Debian's fw_printenv.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Device {
    dir: tempfile::TempDir,
}

impl Device {
    /// The config in the backend's own table, `[bootstate.uboot-env]`.
    fn new() -> Device {
        Device::spelled("[bootstate.uboot-env]")
    }

    /// The config with the keys directly in `table` (`[bootstate]`: the
    /// deprecated spelling, still read).
    fn spelled(table: &str) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("uboot.env");
        // The built-in backend is the Raspberry Pi's: name this one.
        let table = match table {
            "[bootstate]" => String::new(),
            other => format!("{other}\n"),
        };
        let config = format!(
            "[bootstate]\nbackend = \"uboot-env\"\n{table}fw_env = [\"{} 0x0 0x4000\"]\n",
            env.display()
        );
        std::fs::write(dir.path().join("slotinit.toml"), config).unwrap();
        std::fs::write(
            dir.path().join("fw_env.config"),
            format!("{} 0x0 0x4000\n", env.display()),
        )
        .unwrap();
        Device { dir }
    }

    fn env(&self) -> PathBuf {
        self.dir.path().join("uboot.env")
    }

    /// A handoff record as the init leaves it, for a boot of `slot`.
    fn booted(&self, slot: &str) -> PathBuf {
        let path = self.dir.path().join("handoff.json");
        std::fs::write(&path, format!("{{\"version\":1,\"slot\":\"{slot}\"}}")).unwrap();
        path
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_slotinit"))
            .arg("--config")
            .arg(self.dir.path().join("slotinit.toml"))
            .arg("--handoff")
            .arg(self.dir.path().join("handoff.json"))
            .args(args)
            .output()
            .unwrap()
    }

    /// `fw_setenv VAR VALUE`, or `fw_setenv VAR` (deletes it) for None.
    fn setenv(&self, var: &str, value: Option<&str>) {
        let status = Command::new("fw_setenv")
            .arg("-c")
            .arg(self.dir.path().join("fw_env.config"))
            .arg(var)
            .args(value)
            .status()
            .expect("fw_setenv missing: run tools/install-deps");
        assert!(status.success(), "fw_setenv {var} {value:?}");
    }

    fn printenv(&self, var: &str) -> String {
        common::fw_printenv(&self.dir.path().join("fw_env.config"), var)
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn update_flow_mark_active_then_good() {
    for table in ["[bootstate.uboot-env]", "[bootstate]"] {
        update_flow(Device::spelled(table));
    }
}

fn update_flow(d: Device) {
    d.booted("a");
    let out = d.run(&["mark-active", "b"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.printenv("BOOT_ORDER"), "B A");
    assert_eq!(d.printenv("BOOT_B_LEFT"), "3");
    // The trial boot of B decremented it (as the init or U-Boot would).
    Command::new("fw_setenv")
        .arg("-c")
        .arg(d.dir.path().join("fw_env.config"))
        .args(["BOOT_B_LEFT", "2"])
        .status()
        .unwrap();
    d.booted("b");
    let out = d.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["boot"], "trial");
    assert_eq!(status["attempts_left"], 2);
    let out = d.run(&["mark-good"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("slot b (B) marked good"),
        "{}",
        text(&out)
    );
    assert_eq!(d.printenv("BOOT_B_LEFT"), "3");
    let status: serde_json::Value =
        serde_json::from_slice(&d.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["boot"], "committed");
}

#[test]
fn mark_bad_takes_the_slot_out_but_never_the_last() {
    for table in ["[bootstate.uboot-env]", "[bootstate]"] {
        mark_bad_never_the_last(Device::spelled(table));
    }
}

fn mark_bad_never_the_last(d: Device) {
    d.booted("a");
    assert!(d.run(&["mark-bad", "b"]).status.success());
    assert_eq!(d.printenv("BOOT_ORDER"), "A");
    assert_eq!(d.printenv("BOOT_B_LEFT"), "0");
    let out = d.run(&["mark-bad"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("no other slot"), "{}", text(&out));
    assert_eq!(d.printenv("BOOT_ORDER"), "A");
}

/// The slots left in BOOT_ORDER have no attempts: marking the booted slot
/// bad would make the next boot reset every counter and boot it again.
#[test]
fn mark_bad_refuses_when_no_slot_would_have_attempts_left() {
    let d = Device::new();
    d.booted("a");
    assert!(d.run(&["mark-active", "a"]).status.success());
    // B used up its attempts while U-Boot counted; it is still in the order.
    d.setenv("BOOT_B_LEFT", Some("0"));
    let out = d.run(&["mark-bad"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("refusing to mark slot a (A) bad") && msg.contains("nothing written"),
        "{msg}"
    );
    assert_eq!(d.printenv("BOOT_ORDER"), "A B");
    assert_eq!(d.printenv("BOOT_A_LEFT"), "3");
    // The user insists.
    let out = d.run(&["mark-bad", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("resets every counter"),
        "{}",
        text(&out)
    );
    assert_eq!(d.printenv("BOOT_ORDER"), "B");
    assert_eq!(d.printenv("BOOT_A_LEFT"), "0");
}

/// An empty BOOT_ORDER is the default order to the boot script: marking one
/// slot bad is fine while the other has attempts left.
#[test]
fn mark_bad_on_an_empty_order_follows_the_counters() {
    let d = Device::new();
    d.booted("b");
    assert!(d.run(&["mark-active", "a"]).status.success());
    d.setenv("BOOT_ORDER", Some(""));
    let out = d.run(&["mark-bad", "a"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.printenv("BOOT_ORDER"), "B");
    assert_eq!(d.printenv("BOOT_A_LEFT"), "0");
}

/// States RAUC and its U-Boot script accept are usable, and what slotinit
/// does not know is written back untouched.
#[test]
fn rauc_written_states_are_usable() {
    let d = Device::new();
    d.booted("b");
    assert!(d.run(&["mark-active", "a"]).status.success());
    // rauc 1.8's mark-active B on a fresh env: BOOT_ORDER=B, only BOOT_B_LEFT;
    // plus RAUC's recovery slot R, and a repeat.
    d.setenv("BOOT_A_LEFT", None);
    d.setenv("BOOT_ORDER", Some("B R B"));
    d.setenv("BOOT_B_LEFT", Some("2"));
    let out = d.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["store"]["error"], serde_json::Value::Null);
    assert_eq!(status["store"]["order"], serde_json::json!(["B", "R", "B"]));
    assert_eq!(status["boot"], "trial");
    let out = d.run(&["mark-good"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.printenv("BOOT_B_LEFT"), "3");
    assert_eq!(d.printenv("BOOT_ORDER"), "B R B", "unknown names kept");
    // A missing counter is boot-attempts, as the script's `setenv BOOT_A_LEFT 3`.
    assert_eq!(d.printenv("BOOT_A_LEFT"), "3");
    let out = d.run(&["mark-active", "a"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.printenv("BOOT_ORDER"), "A B R B");
}

#[test]
fn status_fails_when_the_boot_state_cannot_be_read() {
    let d = Device::new();
    d.booted("a");
    // The env's directory is a regular file: the store cannot even be opened.
    let blocker = d.dir.path().join("notadir");
    std::fs::write(&blocker, b"x").unwrap();
    let config = format!(
        "[bootstate]\nbackend = \"uboot-env\"\nfw_env = [\"{} 0x0 0x4000\"]\n",
        blocker.join("uboot.env").display()
    );
    std::fs::write(d.dir.path().join("slotinit.toml"), config).unwrap();
    for args in [&["status"][..], &["status", "--json"][..]] {
        let out = d.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("the boot state cannot be read"),
            "{}",
            text(&out)
        );
    }
    let status: serde_json::Value =
        serde_json::from_slice(&d.run(&["status", "--json"]).stdout).unwrap();
    assert!(status["store_error"].as_str().unwrap().contains("notadir"));
    assert_eq!(status["store_error_kind"], "bootstate-unavailable");
}

#[test]
fn corrupt_store_is_reported_and_left_alone() {
    let d = Device::new();
    d.booted("a");
    let garbage = vec![0xa5u8; 0x4000];
    std::fs::write(d.env(), &garbage).unwrap();
    let out = d.run(&["mark-good"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("nothing written"), "{}", text(&out));
    assert_eq!(std::fs::read(d.env()).unwrap(), garbage);
    let out = d.run(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("CORRUPT"), "{}", text(&out));
    // The user decides: a fresh state with A active.
    let out = d.run(&["mark-active", "a", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.printenv("BOOT_ORDER"), "A B");
}

#[test]
fn usage_errors() {
    let d = Device::new();
    let out = d.run(&["mark-active", "c"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unknown slot \"c\""), "{}", text(&out));
    let out = d.run(&["mark-good"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no handoff, no slot: {}",
        text(&out)
    );
    assert_eq!(d.run(&["frobnicate"]).status.code(), Some(2));
    // `other` needs to know the booted slot; --reboot goes with a mark that
    // changes what boots next.
    let out = d.run(&["mark-active", "other"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not `other`"), "{}", text(&out));
    d.booted("a");
    let out = d.run(&["mark-good", "--reboot"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!Path::new(&d.env()).exists(), "nothing was written");
}

#[test]
fn mark_active_other_is_the_slot_not_booted() {
    let d = Device::new();
    d.booted("b");
    let out = d.run(&["mark-active", "other"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).starts_with("slot a (A) marked active"),
        "{}",
        text(&out)
    );
    assert_eq!(d.printenv("BOOT_ORDER"), "A B");
}

#[test]
fn check_config_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[bootstate]\ncounter = \"uboot\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slotinit"))
        .args(["check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = text(&out);
    assert!(msg.contains("bad.toml:2:11"), "{msg}");
    assert!(msg.contains("unknown variant `uboot`"), "{msg}");
}

/// Each shipped profile passes check-config, and a broken copy of each is caught
/// with a message that says where and what.
#[test]
fn check_config_on_every_profile() {
    let dir = tempfile::tempdir().unwrap();
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    // (profile, text replaced, replacement, what the message must say)
    let broken: &[(&str, &str, &str, &[&str])] = &[
        (
            "rpi-ab-userdata.toml",
            "default_slot = \"a\"",
            "default_slot = \"c\"",
            &[
                ":8:16:",
                "[boot] default_slot: unknown variant `c`, expected `a` or `b`",
            ],
        ),
        (
            "mapio.toml",
            "system_b = { number = 3 }",
            "system_b = { number = 2 }",
            &["partitions.system_b: partition 2 is already partitions.system_a"],
        ),
        (
            "generic-ab.toml",
            "size = \"64m\"",
            "size = 64",
            &[
                ":35:8:",
                "[overlay] size: invalid type: integer `64`, expected a string",
            ],
        ),
        (
            "stm32mp.toml",
            "banks = 2",
            "bankz = 2",
            &[
                ":37:1:",
                "[bootstate.fwu-metadata] bankz: unknown field `bankz`",
            ],
        ),
        (
            "rpi-uboot-rauc.toml",
            "counter = \"init\"",
            "counter = \"uboot\"",
            &["unknown variant `uboot`, expected `init` or `bootloader`"],
        ),
        (
            "rpi-ab-userdata.toml",
            "attempts = 3",
            "attempts = 0",
            &["attempts"],
        ),
        (
            "mapio.toml",
            "counter = \"bootloader\"",
            "counter = \"uboot\"",
            &["unknown variant `uboot`, expected `init` or `bootloader`"],
        ),
        (
            "mender.toml",
            "counter = \"bootloader\"",
            "counter = \"init\"",
            &["bootstate.uboot-env.counter: the mender contract is counted by U-Boot"],
        ),
        (
            "mender.toml",
            "bootname_b = \"3\"",
            "bootname_b = \"B\"",
            &["bootstate.uboot-env.bootname_b: \"B\": the mender contract names a slot by its partition number"],
        ),
        (
            "mender.toml",
            "contract = \"mender\"",
            "contract = \"menderr\"",
            &["contract", "unknown variant `menderr`, expected one of `rauc`, `article`, `mender`"],
        ),
    ];
    for (profile, old, new, needles) in broken {
        let text = std::fs::read_to_string(configs.join(profile)).unwrap();
        let good = dir.path().join(profile);
        std::fs::write(&good, &text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_slotinit"))
            .arg("check-config")
            .arg(&good)
            .output()
            .unwrap();
        assert!(out.status.success(), "{profile}: {}", text_of(&out));
        assert!(text.contains(old), "{profile} lost {old:?}");
        let bad = dir.path().join(format!("broken-{profile}"));
        std::fs::write(&bad, text.replacen(old, new, 1)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_slotinit"))
            .arg("check-config")
            .arg(&bad)
            .output()
            .unwrap();
        let msg = text_of(&out);
        assert_eq!(out.status.code(), Some(1), "{profile}: {msg}");
        assert!(msg.contains(&bad.display().to_string()), "{msg}");
        for needle in *needles {
            assert!(msg.contains(needle), "{profile}: {needle:?} not in {msg}");
        }
    }
}

/// The keys directly in [bootstate] are read for one release, with a
/// warning; both spellings with different values are an error naming both.
#[test]
fn check_config_reads_both_spellings() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_slotinit"))
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = check(
        "old.toml",
        "[bootstate]\ncounter = \"bootloader\"\nsize = 0x2000\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let warning = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        warning.contains("deprecated") && warning.contains("counter, size"),
        "{warning}"
    );
    let out = check(
        "new.toml",
        "[bootstate.uboot-env]\ncounter = \"bootloader\"\nsize = 0x2000\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
    let out = check(
        "both.toml",
        "[bootstate]\nsize = 0x2000\n[bootstate.uboot-env]\nsize = 0x4000\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("bootstate.size") && msg.contains("bootstate.uboot-env.size"),
        "{msg}"
    );
    let out = check(
        "same.toml",
        "[bootstate]\nsize = 0x2000\n[bootstate.uboot-env]\nsize = 0x2000\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = check("unknown.toml", "[bootstate]\nbackend = \"tryboot\"\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("unknown backend \"tryboot\""),
        "{}",
        text(&out)
    );
}

fn text_of(out: &Output) -> String {
    text(out)
}

/// The systemd generator: a unit per mount of the handoff, an existing unit
/// kept, nothing at all when slotinit did not boot the system.
#[test]
fn mount_units_are_written_from_the_handoff() {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    std::fs::create_dir(&units).unwrap();
    let handoff = dir.path().join("handoff.json");
    std::fs::write(
        &handoff,
        r#"{"version": 3, "mounts": [
            {"what": "/dev/vda3", "target": "/", "fstype": "ext4", "options": "ro"},
            {"what": "/dev/vda6", "target": "/persistent", "fstype": "ext4", "options": "rw,nosuid,nodev"},
            {"what": "/persistent/slots/system_a/var", "target": "/var", "fstype": "none", "options": "bind"},
            {"what": "/persistent/log/journal", "target": "/var/log/journal", "fstype": "none", "options": "bind"}]}"#,
    )
    .unwrap();
    std::fs::write(units.join("var.mount"), "from fstab").unwrap();
    let run = |handoff: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_slotinit"))
            .arg("--handoff")
            .arg(handoff)
            .arg("mount-units")
            .arg(&units)
            .arg("/early")
            .arg("/late")
            .output()
            .unwrap()
    };
    let out = run(&handoff);
    assert!(out.status.success(), "{}", text(&out));
    let mut names: Vec<String> = std::fs::read_dir(&units)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["persistent.mount", "var-log-journal.mount", "var.mount"]
    );
    assert_eq!(
        std::fs::read_to_string(units.join("var.mount")).unwrap(),
        "from fstab"
    );
    let journal = std::fs::read_to_string(units.join("var-log-journal.mount")).unwrap();
    assert!(
        journal.contains(
            "What=/persistent/log/journal\nWhere=/var/log/journal\nType=none\nOptions=bind\n"
        ),
        "{journal}"
    );
    assert!(text(&out).contains("var.mount exists"), "{}", text(&out));
    // Not booted by slotinit: no handoff, no units, success.
    std::fs::remove_dir_all(&units).unwrap();
    std::fs::create_dir(&units).unwrap();
    let out = run(&dir.path().join("missing.json"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_dir(&units).unwrap().count(), 0);
}
