//! `slotinit rauc-backend` as RAUC runs it: the protocol of RAUC's custom
//! bootloader backend on a U-Boot env file (checked with Debian's
//! fw_printenv), and Debian's real `rauc` 1.8 (`rauc service` on a private
//! D-Bus, `bootloader=custom`) reading and marking slots through it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Device {
    dir: tempfile::TempDir,
}

impl Device {
    /// A U-Boot env store in a file, `extra` keys in `[bootstate.uboot-env]`.
    fn uboot(extra: &str) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("uboot.env");
        std::fs::write(
            dir.path().join("slotinit.toml"),
            format!(
                "[bootstate]\nbackend = \"uboot-env\"\n[bootstate.uboot-env]\n\
                 fw_env = [\"{} 0x0 0x4000\"]\n{extra}",
                env.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("fw_env.config"),
            format!("{} 0x0 0x4000\n", env.display()),
        )
        .unwrap();
        Device { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The handoff the init leaves for a boot of `slot`.
    fn booted(&self, slot: &str) {
        std::fs::write(
            self.path("handoff.json"),
            format!("{{\"version\":1,\"slot\":\"{slot}\"}}"),
        )
        .unwrap();
    }

    fn slotinit(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_slotinit"));
        c.arg("--config")
            .arg(self.path("slotinit.toml"))
            .arg("--handoff")
            .arg(self.path("handoff.json"));
        c
    }

    /// `slotinit rauc-backend ARGS`, as RAUC runs the handler.
    fn backend(&self, args: &[&str]) -> Output {
        self.slotinit()
            .arg("rauc-backend")
            .args(args)
            .output()
            .unwrap()
    }

    /// The handler script RAUC's system.conf names: slotinit with this
    /// device's config and handoff (on a device: debian-image/rauc's).
    fn handler(&self) -> PathBuf {
        let path = self.path("slotinit-rauc-backend");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec '{}' --config '{}' --handoff '{}' rauc-backend \"$@\"\n",
                env!("CARGO_BIN_EXE_slotinit"),
                self.path("slotinit.toml").display(),
                self.path("handoff.json").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn printenv(&self, var: &str) -> String {
        common::fw_printenv(&self.path("fw_env.config"), var)
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit 0 and exactly `line` on stdout (RAUC strips it, we are stricter).
fn says(out: &Output, line: &str) {
    assert!(out.status.success(), "{}", stderr(out));
    assert_eq!(stdout(out), format!("{line}\n"), "stderr: {}", stderr(out));
}

/// A set request: exit 0, nothing on stdout (RAUC's), what was done on stderr.
fn done(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
    assert_eq!(stdout(out), "", "stdout of a set request");
    assert!(stderr(out).contains("marked"), "{}", stderr(out));
}

#[test]
fn rauc_backend_protocol_on_the_uboot_env() {
    let d = Device::uboot("");
    d.booted("a");
    // A fresh env (no file yet) names no slot: an error, not a guess.
    let out = d.backend(&["get-primary"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("names no slot"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    says(&d.backend(&["get-current"]), "A");
    // RAUC's install into B: the target bad first, then primary.
    done(&d.backend(&["set-state", "B", "bad"]));
    assert_eq!(d.printenv("BOOT_ORDER"), "A");
    assert_eq!(d.printenv("BOOT_B_LEFT"), "0");
    says(&d.backend(&["get-state", "B"]), "bad");
    says(&d.backend(&["get-state", "A"]), "good");
    says(&d.backend(&["get-primary"]), "A");
    done(&d.backend(&["set-primary", "B"]));
    assert_eq!(d.printenv("BOOT_ORDER"), "B A");
    assert_eq!(d.printenv("BOOT_B_LEFT"), "3");
    says(&d.backend(&["get-primary"]), "B");
    says(&d.backend(&["get-state", "B"]), "good");
    // The trial of B (U-Boot counted one attempt), then RAUC's mark-good.
    let status = Command::new("fw_setenv")
        .arg("-c")
        .arg(d.path("fw_env.config"))
        .args(["BOOT_B_LEFT", "2"])
        .status()
        .unwrap();
    assert!(status.success());
    d.booted("b");
    says(&d.backend(&["get-current"]), "B");
    done(&d.backend(&["set-state", "B", "good"]));
    assert_eq!(d.printenv("BOOT_B_LEFT"), "3");
    // RAUC's mark-bad of the booted slot: the other boots next.
    done(&d.backend(&["set-state", "B", "bad"]));
    assert_eq!(d.printenv("BOOT_ORDER"), "A");
    says(&d.backend(&["get-primary"]), "A");
    // ... but never the last slot: refused, nothing written.
    let out = d.backend(&["set-state", "A", "bad"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("refusing"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(d.printenv("BOOT_ORDER"), "A");
    assert_eq!(d.printenv("BOOT_A_LEFT"), "3");
}

#[test]
fn rauc_backend_rejects_what_rauc_would_misread() {
    let d = Device::uboot("bootname_a = \"rootfs0\"\nbootname_b = \"rootfs1\"\n");
    d.booted("b");
    says(&d.backend(&["get-current"]), "rootfs1");
    done(&d.backend(&["set-primary", "rootfs0"]));
    says(&d.backend(&["get-primary"]), "rootfs0");
    // A bootname that is not slotinit's (a system.conf that disagrees):
    // usage error naming both, nothing written.
    for args in [
        &["get-state", "A"][..],
        &["set-primary", "B"],
        &["set-state", "rootfs0", "fine"],
        &["get-primary", "extra"],
        &["get-everything"],
    ] {
        let out = d.backend(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
    }
    let out = d.backend(&["get-state", "A"]);
    assert!(
        stderr(&out).contains("\"rootfs0\" (slot a)") && stderr(&out).contains("bootname="),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.printenv("BOOT_ORDER"), "rootfs0 rootfs1");
    // No handoff (slotinit did not boot this system): get-current fails
    // naming the file, so RAUC >= 1.11 falls back to the cmdline.
    std::fs::remove_file(d.path("handoff.json")).unwrap();
    let out = d.backend(&["get-current"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("handoff.json"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    // A corrupt env: exit 3, the reason on stderr.
    let mut bytes = std::fs::read(d.path("uboot.env")).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(d.path("uboot.env"), bytes).unwrap();
    let out = d.backend(&["get-primary"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn rauc_backend_with_backend_none_knows_only_the_booted_slot() {
    let d = Device::uboot("");
    let conf = std::fs::read_to_string(d.path("slotinit.toml")).unwrap();
    std::fs::write(
        d.path("slotinit.toml"),
        conf.replace("backend = \"uboot-env\"", "backend = \"none\""),
    )
    .unwrap();
    d.booted("b");
    says(&d.backend(&["get-current"]), "B");
    for args in [&["get-primary"][..], &["set-primary", "A"]] {
        let out = d.backend(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("backend is \"none\""),
            "{}",
            stderr(&out)
        );
    }
    assert!(!d.path("uboot.env").exists(), "nothing written");
}

/// Mender's contract through RAUC's bootnames (the partition numbers): the
/// install is mark-active, the commit mark-good. RAUC's install marks the
/// target bad first; Mender keeps no variable for that while the booted
/// slot is committed, so the backend refuses it (see the report: RAUC needs
/// this to be a no-op there).
#[test]
fn rauc_backend_on_the_mender_contract() {
    let d = Device::uboot(
        "contract = \"mender\"\nbootname_a = \"2\"\nbootname_b = \"3\"\n\
         attempts = 1\nattempts_primary = 1\ncounter = \"bootloader\"\n",
    );
    d.booted("a");
    done(&d.backend(&["set-primary", "2"]));
    says(&d.backend(&["get-primary"]), "2");
    assert_eq!(d.printenv("mender_boot_part"), "2");
    let out = d.backend(&["set-state", "3", "bad"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("no variable"), "{}", stderr(&out));
    done(&d.backend(&["set-primary", "3"]));
    assert_eq!(d.printenv("mender_boot_part"), "3");
    assert_eq!(d.printenv("upgrade_available"), "1");
    says(&d.backend(&["get-primary"]), "3");
    d.booted("b");
    says(&d.backend(&["get-current"]), "3");
    done(&d.backend(&["set-state", "3", "good"]));
    assert_eq!(d.printenv("upgrade_available"), "0");
    says(&d.backend(&["get-state", "3"]), "good");
}

/// The command `rauc-slotinit.conf` (the image's rauc.service drop-in)
/// starts the service with, for this device: its ExecStart= with systemd's
/// `$$` unescaped, slotinit the device's handler, rauc given `conf`.
fn service_command(d: &Device, conf: &Path) -> String {
    let dropin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/debian-image/rauc/rauc-slotinit.conf"
    );
    let text = std::fs::read_to_string(dropin).unwrap();
    let exec = text
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .rfind(|l| !l.is_empty())
        .expect("rauc-slotinit.conf: no ExecStart= command")
        .replace("$$", "$");
    let handler = d.handler();
    let mount = d.path("mnt");
    std::fs::create_dir_all(&mount).unwrap();
    let pairs = [
        (
            "/usr/bin/slotinit rauc-backend".to_string(),
            handler.display().to_string(),
        ),
        (
            "/usr/bin/rauc --mount=/run/rauc".to_string(),
            format!("rauc --conf={} --mount={}", conf.display(), mount.display()),
        ),
    ];
    let mut command = exec;
    for (from, to) in pairs {
        assert!(
            command.contains(&from),
            "{dropin}: no {from:?} in {command}"
        );
        command = command.replace(&from, &to);
    }
    command
}

/// Runs `script` (sh) with Debian's rauc 1.8 serving `conf` on a private
/// session bus, started as debian-image/rauc/rauc-slotinit.conf starts it
/// (`--override-boot-slot=$(slotinit rauc-backend get-current)`), `rauc
/// status ...` as the user runs it. Returns the script's output.
fn with_rauc_service(d: &Device, conf: &Path, script: &str) -> Output {
    for tool in ["rauc", "dbus-run-session"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "{tool} missing: run tools/install-deps (Debian's rauc, dbus-daemon)"
        );
    }
    let body = format!(
        "set -u\n\
         export DBUS_STARTER_BUS_TYPE=session\n\
         {service} >'{log}' 2>&1 &\n\
         svc=$!\n\
         up=0\n\
         for i in $(seq 100); do\n\
           if rauc status >/dev/null 2>&1; then up=1; break; fi\n\
           sleep 0.1\n\
         done\n\
         [ $up = 1 ] || {{ kill $svc; cat '{log}' >&2; exit 91; }}\n\
         ( {script} ); rc=$?\n\
         kill $svc; wait $svc\n\
         exit $rc\n",
        service = service_command(d, conf),
        log = d.path("rauc-service.log").display(),
    );
    Command::new("timeout")
        .args(["60", "dbus-run-session", "--", "sh", "-c", &body])
        .output()
        .unwrap()
}

fn rauc_conf(d: &Device) -> PathBuf {
    let path = d.path("system.conf");
    for s in ["rootfs0.img", "rootfs1.img"] {
        std::fs::write(d.path(s), b"").unwrap();
    }
    std::fs::write(
        &path,
        format!(
            "[system]\ncompatible=slotinit-test\nbootloader=custom\nstatusfile={}\n\n\
             [handlers]\nbootloader-custom-backend={}\n\n\
             [slot.rootfs.0]\ndevice={}\ntype=raw\nbootname=A\n\n\
             [slot.rootfs.1]\ndevice={}\ntype=raw\nbootname=B\n",
            d.path("central.raucs").display(),
            d.path("slotinit-rauc-backend").display(),
            d.path("rootfs0.img").display(),
            d.path("rootfs1.img").display(),
        ),
    )
    .unwrap();
    path
}

fn json_status(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap_or_else(|e| {
        panic!(
            "rauc status --output-format=json: {e}: {}",
            String::from_utf8_lossy(out)
        )
    })
}

/// The booted slot, primary and boot_status of each slot in rauc's JSON.
fn summary(status: &serde_json::Value) -> (String, String, Vec<(String, String)>) {
    let mut slots = Vec::new();
    for entry in status["slots"].as_array().unwrap() {
        for (name, slot) in entry.as_object().unwrap() {
            slots.push((
                format!("{name}:{}", slot["state"].as_str().unwrap_or("?")),
                slot["boot_status"].as_str().unwrap_or("?").to_string(),
            ));
        }
    }
    slots.sort();
    (
        status["booted"].as_str().unwrap_or("null").to_string(),
        status["boot_primary"]
            .as_str()
            .unwrap_or("null")
            .to_string(),
        slots,
    )
}

#[test]
fn real_rauc_reports_and_marks_the_slot_slotinit_booted() {
    let d = Device::uboot("");
    d.booted("b");
    // The env as after an update to B that U-Boot is trying (2 of 3 left).
    done(&d.backend(&["set-primary", "B"]));
    let status = Command::new("fw_setenv")
        .arg("-c")
        .arg(d.path("fw_env.config"))
        .args(["BOOT_B_LEFT", "2"])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(d.printenv("BOOT_ORDER"), "B A");
    let conf = rauc_conf(&d);
    let s1 = d.path("s1.json");
    let s2 = d.path("s2.json");
    let s3 = d.path("s3.json");
    let out = with_rauc_service(
        &d,
        &conf,
        &format!(
            "rauc status --output-format=json >'{s1}' && \
             rauc status mark-good && \
             rauc status mark-bad other && \
             rauc status --output-format=json >'{s2}' && \
             rauc status mark-active other && \
             rauc status --output-format=json >'{s3}'",
            s1 = s1.display(),
            s2 = s2.display(),
            s3 = s3.display()
        ),
    );
    assert!(
        out.status.success(),
        "rauc: {}{}\nservice log: {}",
        stdout(&out),
        stderr(&out),
        std::fs::read_to_string(d.path("rauc-service.log")).unwrap_or_default()
    );
    let read = |p: &Path| json_status(&std::fs::read(p).unwrap());
    let b = |s: &str| s.to_string();
    // RAUC's booted slot is the one slotinit booted (B), never A.
    assert_eq!(
        summary(&read(&s1)),
        (
            b("B"),
            b("rootfs.1"),
            vec![
                (b("rootfs.0:inactive"), b("good")),
                (b("rootfs.1:booted"), b("good"))
            ]
        )
    );
    // mark-good booted committed B, mark-bad other took A out.
    assert_eq!(
        summary(&read(&s2)),
        (
            b("B"),
            b("rootfs.1"),
            vec![
                (b("rootfs.0:inactive"), b("bad")),
                (b("rootfs.1:booted"), b("good"))
            ]
        )
    );
    // mark-active other: A primary with its attempts, B committed (3).
    assert_eq!(summary(&read(&s3)).1, "rootfs.0");
    assert_eq!(d.printenv("BOOT_ORDER"), "A B");
    assert_eq!(d.printenv("BOOT_A_LEFT"), "3");
    assert_eq!(d.printenv("BOOT_B_LEFT"), "3");
    // No handoff: the drop-in's command starts no service at all.
    std::fs::remove_file(d.path("handoff.json")).unwrap();
    let out = Command::new("sh")
        .args(["-c", &service_command(&d, &conf)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("handoff.json"), "{}", stderr(&out));
}

/// A system.conf as `section -> [(key, value)]` (GKeyFile's syntax, enough
/// for ours).
fn ini(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.to_string(), Vec::new()));
        } else {
            let (k, v) = line.split_once('=').expect("key=value");
            sections
                .last_mut()
                .expect("a key before any section")
                .1
                .push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    sections
}

fn key<'a>(conf: &'a [(String, Vec<(String, String)>)], section: &str, k: &str) -> Option<&'a str> {
    conf.iter()
        .find(|(s, _)| s == section)
        .and_then(|(_, keys)| keys.iter().find(|(name, _)| name == k))
        .map(|(_, v)| v.as_str())
}

/// The device RAUC should name for a profile's partition member, None when
/// the layout has none of its own (an empty name, a partition by number
/// for a boot member: MAPIO's shared p1).
fn member_device(profile: &toml::Table, role: &str) -> Option<String> {
    match profile.get("partitions").and_then(|p| p.get(role)) {
        None => Some(format!("/dev/disk/by-partlabel/{role}")),
        Some(toml::Value::String(s)) if s.is_empty() => None,
        Some(toml::Value::String(s)) => Some(format!("/dev/disk/by-partlabel/{s}")),
        Some(toml::Value::Table(t)) if role.starts_with("system") => t
            .get("number")
            .and_then(toml::Value::as_integer)
            .map(|n| format!("/dev/mmcblk0p{n}")),
        Some(_) => None,
    }
}

/// Each system.conf of debian-image/rauc against its profile (the
/// bootnames slotinit answers with, the partitions, the backend RAUC must
/// use), then loaded by Debian's rauc 1.8 (`rauc status` lists its slots
/// with slotinit's booted slot).
#[test]
fn debian_image_rauc_confs_load_in_rauc_and_match_their_profiles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pairs = [
        ("system-uboot.conf", "uboot-rauc.toml"),
        ("system-mapio.conf", "mapio.toml"),
        ("system-rpi.conf", "rpi-ab-userdata.toml"),
        ("system-fwu.conf", "stm32mp.toml"),
        ("system-generic.conf", "generic-ab.toml"),
        ("system-mender.conf", "mender.toml"),
    ];
    for (conf_name, profile_name) in pairs {
        let what = format!("{conf_name} ({profile_name})");
        let text = std::fs::read_to_string(root.join("debian-image/rauc").join(conf_name)).unwrap();
        let conf = ini(&text);
        let profile: toml::Table = toml::from_str(
            &std::fs::read_to_string(root.join("configs").join(profile_name)).unwrap(),
        )
        .unwrap();
        let bs = profile.get("bootstate");
        let backend = bs
            .and_then(|b| b.get("backend"))
            .and_then(toml::Value::as_str)
            .unwrap_or("rpi-tryboot");
        let uboot = bs.and_then(|b| b.get("uboot-env"));
        let get = |k: &str, default: &str| {
            uboot
                .and_then(|u| u.get(k))
                .and_then(toml::Value::as_str)
                .unwrap_or(default)
                .to_string()
        };
        let names = [get("bootname_a", "A"), get("bootname_b", "B")];
        // RAUC's U-Boot backend only where the env holds RAUC's variables.
        let raucs_own = backend == "uboot-env" && get("contract", "rauc") == "rauc";
        let bootloader = key(&conf, "system", "bootloader");
        if raucs_own {
            assert_eq!(bootloader, Some("uboot"), "{what}");
        } else {
            assert_eq!(bootloader, Some("custom"), "{what}");
            assert_eq!(
                key(&conf, "handlers", "bootloader-custom-backend"),
                Some("/usr/lib/slotinit/rauc-backend"),
                "{what}"
            );
        }
        for (i, slot) in ["a", "b"].iter().enumerate() {
            let rootfs = format!("slot.rootfs.{i}");
            assert_eq!(
                key(&conf, &rootfs, "bootname"),
                Some(names[i].as_str()),
                "{what}"
            );
            assert_eq!(
                key(&conf, &rootfs, "device").map(String::from),
                member_device(&profile, &format!("system_{slot}")),
                "{what} {rootfs}"
            );
            let boot = format!("slot.boot.{i}");
            let expected = member_device(&profile, &format!("boot_{slot}"));
            assert_eq!(
                key(&conf, &boot, "device").map(String::from),
                expected,
                "{what} {boot}"
            );
            if expected.is_some() {
                assert_eq!(
                    key(&conf, &boot, "parent"),
                    Some(&rootfs["slot.".len()..]),
                    "{what}"
                );
            }
        }
        // Debian's rauc 1.8 loads it: the data directory and the handler
        // moved to this test's directory, slotinit booted slot b.
        let d = Device::uboot(&format!(
            "bootname_a = \"{}\"\nbootname_b = \"{}\"\n",
            names[0], names[1]
        ));
        d.booted("b");
        let handler = d.handler();
        let data = d.path("rauc-data");
        let moved: String = text
            .lines()
            .map(|l| {
                if l.starts_with("data-directory=") {
                    format!("data-directory={}", data.display())
                } else if l.starts_with("bootloader-custom-backend=") {
                    format!("bootloader-custom-backend={}", handler.display())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let conf_path = d.path("system.conf");
        std::fs::write(&conf_path, moved).unwrap();
        let json = d.path("status.json");
        let out = with_rauc_service(
            &d,
            &conf_path,
            &format!("rauc status --output-format=json >'{}'", json.display()),
        );
        assert!(
            out.status.success(),
            "{what}: {}\nservice log: {}",
            stderr(&out),
            std::fs::read_to_string(d.path("rauc-service.log")).unwrap_or_default()
        );
        let status = json_status(&std::fs::read(&json).unwrap());
        assert_eq!(status["booted"], names[1].as_str(), "{what}");
        assert_eq!(status["compatible"], "slotinit-debian-arm64", "{what}");
        let slots = status["slots"].as_array().unwrap();
        let rootfs1 = slots
            .iter()
            .find_map(|s| s.get("rootfs.1"))
            .unwrap_or_else(|| panic!("{what}: no rootfs.1 in {status}"));
        assert_eq!(rootfs1["state"], "booted", "{what}");
        let boots = usize::from(key(&conf, "slot.boot.0", "device").is_some());
        assert_eq!(slots.len(), 2 + 2 * boots, "{what}");
    }
}

/// `openssl` as the test runs it; a failure is the test's.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl missing: run tools/install-deps");
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

/// A plain-format bundle of `payload` for slot class rootfs, signed by a
/// fresh self-signed CA `ca` (made with openssl here, never committed).
/// Plain, not verity: the host has no device mapper for RAUC's dm-verity.
fn bundle(dir: &Path, ca: &str, payload: &[u8]) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-subj",
            &format!("/CN=slotinit test {ca}"),
            "-days",
            "2",
        ],
    );
    let content = dir.join(format!("{ca}-content"));
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("rootfs.img"), payload).unwrap();
    std::fs::write(
        content.join("manifest.raucm"),
        "[update]\ncompatible=slotinit-test\nversion=1\n\n[bundle]\nformat=plain\n\n\
         [image.rootfs]\nfilename=rootfs.img\n",
    )
    .unwrap();
    let out_path = dir.join(format!("{ca}.raucb"));
    let out = Command::new("rauc")
        .current_dir(dir)
        .arg(format!("--cert={ca}.pem"))
        .arg(format!("--key={ca}.key"))
        .arg("bundle")
        .arg(&content)
        .arg(&out_path)
        .output()
        .expect("rauc missing: run tools/install-deps");
    assert!(out.status.success(), "rauc bundle: {}", stderr(&out));
    out_path
}

/// Debian's rauc 1.8 installs a signed bundle while slotinit booted A: it
/// marks B bad, writes B (never A), marks B primary, all through slotinit;
/// a bundle signed by another CA is refused before anything is written.
#[test]
fn real_rauc_installs_into_the_other_slot_through_slotinit() {
    let d = Device::uboot("");
    d.booted("a");
    done(&d.backend(&["set-primary", "A"]));
    let dir = d.path("bundles");
    std::fs::create_dir_all(&dir).unwrap();
    let payload: Vec<u8> = (0..(256 * 1024u32)).map(|i| (i * 7 % 251) as u8).collect();
    let good = bundle(&dir, "ca", &payload);
    let evil = bundle(&dir, "other-ca", &payload);
    let conf = rauc_conf(&d);
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace(
            "[handlers]",
            &format!(
                "[keyring]\npath={}\n\n[handlers]",
                dir.join("ca.pem").display()
            ),
        ),
    )
    .unwrap();
    let zeros = vec![0u8; payload.len()];
    for s in ["rootfs0.img", "rootfs1.img"] {
        std::fs::write(d.path(s), &zeros).unwrap();
    }
    let log = d.path("steps");
    let handler = d.path("slotinit-rauc-backend");
    let out = with_rauc_service(
        &d,
        &conf,
        &format!(
            "rauc install '{evil}' >/dev/null 2>&1; echo \"evil $?\" >>'{log}'; \
             echo \"primary $('{handler}' get-primary)\" >>'{log}'; \
             rauc install '{good}' >/dev/null 2>&1; echo \"good $?\" >>'{log}'; \
             echo \"primary $('{handler}' get-primary)\" >>'{log}'",
            evil = evil.display(),
            good = good.display(),
            log = log.display(),
            handler = handler.display(),
        ),
    );
    let service_log = std::fs::read_to_string(d.path("rauc-service.log")).unwrap_or_default();
    assert!(out.status.success(), "{}\n{service_log}", stderr(&out));
    let steps = std::fs::read_to_string(&log).unwrap();
    let steps: Vec<&str> = steps.lines().collect();
    // The foreign signature: refused, B untouched, A still primary.
    assert_ne!(steps[0], "evil 0", "{service_log}");
    assert!(
        service_log.contains("signature"),
        "refused for its signature: {service_log}"
    );
    assert_eq!(steps[1], "primary A");
    // The good bundle: B written, A never, B primary with its attempts.
    assert_eq!(steps[2], "good 0", "{service_log}");
    assert_eq!(steps[3], "primary B");
    assert!(
        std::fs::read(d.path("rootfs1.img")).unwrap() == payload,
        "B holds the bundle"
    );
    assert!(
        std::fs::read(d.path("rootfs0.img")).unwrap() == zeros,
        "A untouched"
    );
    assert_eq!(d.printenv("BOOT_ORDER"), "B A");
    assert_eq!(d.printenv("BOOT_B_LEFT"), "3");
    // In that order: the target bad before it was written, then primary.
    let bad = service_log
        .find("slot b (B) marked bad")
        .expect(&service_log);
    let active = service_log
        .find("slot b (B) marked active")
        .expect(&service_log);
    assert!(bad < active, "{service_log}");
}

/// `flock FILE sleep SECONDS` (util-linux) in the background, returned once
/// it holds the lock: another writer in the middle of its load and store.
fn hold_lock(file: &Path, seconds: &str) -> std::process::Child {
    let mut child = Command::new("flock")
        .arg(file)
        .args(["sleep", seconds])
        .spawn()
        .expect("flock (util-linux) missing");
    for _ in 0..200 {
        let free = Command::new("flock")
            .arg("-n")
            .arg(file)
            .arg("true")
            .status()
            .unwrap();
        if !free.success() {
            return child;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    panic!("{} never got locked", file.display());
}

/// RAUC's `uboot` backend (fw_setenv) and slotinit write one env. A mark
/// waits while libubootenv's lock (`fw_lock`) is held, then writes; held
/// past the wait, it writes nothing and says which lock (exit 4).
#[test]
fn marks_wait_for_libubootenvs_writers_lock() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("fw_printenv.lock");
    let d = Device::uboot(&format!("fw_lock = \"{}\"\n", lock.display()));
    d.booted("a");
    let mut holder = hold_lock(&lock, "1");
    let t0 = std::time::Instant::now();
    let out = d.backend(&["set-primary", "B"]);
    let waited = t0.elapsed();
    holder.wait().unwrap();
    done(&out);
    assert!(
        waited >= std::time::Duration::from_millis(700),
        "{waited:?}"
    );
    assert_eq!(d.printenv("BOOT_ORDER"), "B A");
    let mut holder = hold_lock(&lock, "9");
    let out = d.backend(&["set-state", "B", "bad"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&lock.display().to_string()),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.printenv("BOOT_ORDER"), "B A", "nothing written");
    // The same through `mark-bad`.
    let mut holder = hold_lock(&lock, "9");
    let out = d.slotinit().args(["mark-bad", "b"]).output().unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(d.printenv("BOOT_ORDER"), "B A", "nothing written");
}

/// What `fw_lock` stands for: Debian's fw_setenv (libubootenv 0.3.2) blocks
/// on `/var/lock/fw_printenv.lock` while another process holds it. In a
/// private mount namespace with its own /var (this host may have no
/// /var/lock: libubootenv then runs unlocked, and so does slotinit).
#[test]
#[ignore = "needs root: a private mount namespace (tests/run-all runs it)"]
fn debians_fw_setenv_takes_the_default_fw_lock() {
    let d = Device::uboot("");
    d.booted("a");
    done(&d.backend(&["set-primary", "B"])); // an env for fw_setenv to start from
    let script = format!(
        "set -e\n\
         mount -t tmpfs tmpfs /var\n\
         mkdir /var/lock\n\
         flock /var/lock/fw_printenv.lock sleep 1 &\n\
         until ! flock -n /var/lock/fw_printenv.lock true; do sleep 0.01; done\n\
         t0=$(date +%s%N)\n\
         fw_setenv -c '{cfg}' probe 1\n\
         echo $(( ($(date +%s%N) - t0) / 1000000 ))\n\
         wait\n",
        cfg = d.path("fw_env.config").display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let waited: u64 = stdout(&out).trim().parse().unwrap();
    assert!(waited >= 700, "fw_setenv waited {waited} ms");
    assert_eq!(d.printenv("probe"), "1");
}
