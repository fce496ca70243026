"""Issue 2: boot slot A (or B) of an rpi-image-gen gpt/ab_userdata disk end to end."""
import re
import subprocess
from pathlib import Path

from guest import INITRD, REPO, append_cpio, boot, mkdisk, record

SLOTINIT = REPO / "target/aarch64-unknown-linux-gnu/release/slotinit"

# qemu/mkdisk's partition order: bootconfig boot_a boot_b system_a system_b persistent.
DEV = {"bootconfig": "/dev/vda1", "boot_a": "/dev/vda2", "boot_b": "/dev/vda3",
       "system_a": "/dev/vda4", "system_b": "/dev/vda5", "persistent": "/dev/vda6"}


def assert_booted(b, slot):
    assert b.rc == 0, b.console[-3000:]
    assert b.reported, b.console[-3000:]
    assert b.fields["pid"] == "1"
    assert b.fields["slot-name"] == f"system_{slot}"
    root = b.mount("/")
    assert root.source == DEV[f"system_{slot}"]
    assert root.readonly
    assert root.fstype == "ext4"
    h = b.handoff()
    assert h["slot"] == slot
    return h


def test_boots_slot_a_with_binds_links_and_handoff(disk):
    b = boot(disk)
    h = assert_booted(b, "a")
    p = DEV["persistent"]
    persistent = b.mount("/persistent")
    assert (persistent.source, persistent.root, persistent.readonly) == (p, "/", False)
    options = persistent.options.split(",") + persistent.super_options.split(",")
    for opt in ("noatime", "lazytime", "commit=60", "errors=remount-ro"):
        assert opt in options, persistent
    assert (b.mount("/var").source, b.mount("/var").root) == (p, "/slots/system_a/var")
    assert (b.mount("/home").source, b.mount("/home").root) == (p, "/home")
    journal = b.mount("/var/log/journal")
    assert (journal.source, journal.root) == (p, "/log/journal")
    machine_id = b.mount("/etc/machine-id")
    assert (machine_id.source, machine_id.root) == (p, "/common/etc/machine-id")
    assert b.stat("/var/tmp")[0] == "1777"
    assert b.stat("/var/log/journal")[0] == "2755"
    assert "/var writable" in b.sections["write-test"]
    assert "/home writable" in b.sections["write-test"]
    assert "/ read-only" in b.sections["write-test"]
    links = b.links()
    expect = {"active/boot": "boot_a", "active/system": "system_a", "other/boot": "boot_b",
              "other/system": "system_b", "bootconfig": "bootconfig", "persistent": "persistent"}
    for link, part in expect.items():
        assert links[link] is not None, f"{link} missing"
        assert links[link][1] == DEV[part], (link, links[link])
        assert not links[link][0].startswith("/"), "links are relative, like udev's"
    assert h["persistent_degraded"] is False
    assert h["errors"] == []
    assert h["machine_id"] == b.machine_id()
    stages = [name for name, _ in h["timings_us"]]
    assert stages == ["setup", "modules", "devices", "modules-late", "state", "decision", "links",
                      "mounts", "total"]
    # Every stage is logged with its duration in microseconds.
    log = b.slotinit_log()
    for stage in stages[:-1]:
        assert any(re.search(rf"slotinit: {stage}: \d+ us", l) for l in log), stage
    # The initramfs was freed: nothing of it is visible, and no init stayed behind.
    assert "sysroot" not in b.sections["initramfs"].split()
    start = b.kernel_time(r"Run /init as init process")
    end = b.kernel_time(r"slotinit: switching to ")
    assert start is not None and end is not None
    record("run_init_to_exec_s", round(end - start, 3))


def test_machine_id_is_stable_over_boots_and_slots(disk):
    ids = []
    for append in ("", "", "slotinit.slot=b", ""):
        b = boot(disk, append=append)
        assert_booted(b, "b" if append else "a")
        ids.append(b.machine_id())
    assert re.fullmatch(r"[0-9a-f]{32}", ids[0]), ids
    assert len(set(ids)) == 1, ids
    # The first boot generated it, the others kept it.
    assert b.handoff()["machine_id_source"] == "persistent"


def test_override_boots_slot_b(disk):
    b = boot(disk, append="slotinit.slot=b")
    h = assert_booted(b, "b")
    assert h["decision"]["source"] == "override"
    assert b.mount("/var").root == "/slots/system_b/var"
    links = b.links()
    assert links["active/system"][1] == DEV["system_b"]
    assert links["other/system"][1] == DEV["system_a"]
    assert links["active/boot"][1] == DEV["boot_b"]


def test_bad_override_is_reported_and_ignored(disk):
    b = boot(disk, append="slotinit.slot=c")
    h = assert_booted(b, "a")
    assert any(w["kind"] == "cmdline" and 'slotinit.slot="c"' in w["message"]
               for w in h["warnings"]), h["warnings"]
    assert any('ignoring slotinit.slot="c"' in l for l in b.slotinit_log())


def test_no_persistent_partition_still_boots(tmp_path):
    disk = mkdisk(tmp_path / "nopersist.img", "--no-persistent")
    b = boot(disk)
    h = assert_booted(b, "a")
    assert h["persistent_degraded"] is True
    assert any(e["kind"] == "persistent-missing" and "no persistent partition" in e["message"]
               for e in h["errors"]), h["errors"]
    assert any("tmpfs" in l for l in b.slotinit_log() if "persistent" in l)
    assert b.mount("/var").fstype == "tmpfs"
    assert b.mount("/home").fstype == "tmpfs"
    assert b.stat("/var/tmp")[0] == "1777"
    assert b.stat("/var/log/journal")[0] == "2755"
    assert "/var writable" in b.sections["write-test"]
    assert re.fullmatch(r"[0-9a-f]{32}", b.machine_id())
    assert h["machine_id_source"] == "generated-transient"
    assert b.links()["persistent"] is None


def test_invalid_config_fails_closed(disk, tmp_path):
    """Issue 11 A9: the defaults would unlock what the config locked
    (allow_override, who counts): an invalid config boots nothing, says why and
    reboots; slotinit.slot= does not get a slot booted either."""
    initrd = append_cpio(INITRD, tmp_path / "badconfig.img", {
        "etc/slotinit.toml": "[boot]\nallow_override = false\ntimeout = 5\n"})
    b = boot(disk, initrd=initrd, append="slotinit.slot=b", timeout=90)
    assert not b.reported, "a slot booted with an invalid config"
    log = "\n".join(b.slotinit_log())
    assert re.search(r"fatal: config: /etc/slotinit.toml:3:1: .*timeout.*refusing to boot", log), log
    assert "rebooting in 10 s" in log, log
    assert "Kernel panic" not in b.console
    assert b.rc == 0  # the guest rebooted; -no-reboot turns that into QEMU's exit


def test_build_refuses_a_config_check_config_rejects(tmp_path):
    """Issue 11 A9: initramfs/build runs the init's own check-config first."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[boot]\ntimeout = 5\n")
    r = subprocess.run([str(REPO / "initramfs/build"), "--init", str(SLOTINIT),
                        "--config", str(bad), "--out", str(tmp_path / "x.img")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert r.returncode != 0
    assert "rejected by check-config" in r.stdout and "timeout" in r.stdout, r.stdout
    assert not (tmp_path / "x.img").exists()


def test_missing_system_is_fatal_and_reboots(tmp_path, initramfs_with_config):
    disk = mkdisk(tmp_path / "nosystem.img",
                  "--names", "bootconfig boot_a boot_b - - persistent")
    initrd = initramfs_with_config(
        "fastfail", "[boot]\nreboot_delay_s = 0\ndevice_timeout_ms = 3000\n")
    b = boot(disk, initrd=initrd, timeout=90)
    assert not b.reported
    log = "\n".join(b.slotinit_log())
    # Slot a is tried, then slot b in the same boot; both missing is fatal.
    assert 'slot a: its system partition PARTNAME="system_a" was not found' in log, log
    assert 'slot b: its system partition PARTNAME="system_b" was not found' in log, log
    assert "fatal: both slots failed in this boot" in log, log
    assert "rebooting in 0 s" in log
    assert "Kernel panic" not in b.console
    assert b.rc == 0  # the guest rebooted; -no-reboot turns that into QEMU's exit


def test_emergency_shell_on_request(tmp_path, initramfs_with_config):
    """busybox is opt-in (initramfs/build --emergency-shell); with it,
    slotinit.emergency=shell starts it on a fatal error."""
    disk = mkdisk(tmp_path / "nosystem.img",
                  "--names", "bootconfig boot_a boot_b - - persistent")
    initrd = initramfs_with_config("shell", "[boot]\ndevice_timeout_ms = 3000\n", shell=True)
    b = boot(disk, initrd=initrd, append="slotinit.emergency=shell",
             interact=[("built-in shell", "echo EMERGENCY-$((40+2)); poweroff -f\n")],
             timeout=90)
    assert "starting emergency shell" in "\n".join(b.slotinit_log())
    assert "EMERGENCY-42" in b.console
