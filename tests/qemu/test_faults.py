"""Issue 8's fault matrix: each fault has a defined outcome (README, "When
things go wrong"); never a kernel panic, never a slot left unbootable by
slotinit, never persistent data lost."""
import os
import re
import subprocess
from guest import REPO, boot, mkdisk, part_offset, persistent_tree, read_env

NO_PANIC = "Kernel panic"


def test_no_init_in_the_root_falls_back_to_the_other_slot(tmp_path):
    root_a = tmp_path / "root_a"
    subprocess.run([str(REPO / "tests/guest/mkroot"), str(root_a), "system_a"], check=True)
    (root_a / "sbin/init").unlink()
    disk = mkdisk(tmp_path / "disk.img", "--system-a", root_a)
    b = boot(disk)
    assert b.fields["slot-name"] == "system_b", b.console[-3000:]
    h = b.handoff()
    assert h["decision"]["source"] == "fallback"
    assert "no executable /sbin/init" in h["fallback"]
    env = read_env(disk, tmp_path)
    assert (env["BOOT_ORDER"], env["BOOT_A_LEFT"]) == ("B", "0")
    # The failed root was unmounted: the system sees only its own.
    assert b.mount("/").source == "/dev/vda5"
    assert NO_PANIC not in b.console


def test_corrupt_persistent_degrades_to_tmpfs(tmp_path, initramfs_with_config):
    """Without a checker in the initramfs, a persistent partition that does
    not mount gets the tmpfs fallback."""
    initrd = initramfs_with_config(
        "nochecker", (REPO / "configs/rpi-uboot-rauc.toml").read_text())
    disk = mkdisk(tmp_path / "disk.img")
    with open(disk, "r+b") as f:
        f.seek(part_offset(disk, 6))
        f.write(b"\xa5" * (2 << 20))
    b = boot(disk, initrd=initrd)
    h = b.handoff()
    assert b.reported and h["persistent_degraded"] is True
    assert b.mount("/var").fstype == "tmpfs"
    assert h["machine_id_source"] == "generated-transient"
    assert any(e["kind"] == "persistent-mount" and "/dev/vda6" in e["message"]
               for e in h["errors"]), h["errors"]


def test_torn_superblock_is_repaired_and_mounted(tmp_path):
    """Issue 11 B (found by tests/crash): a power cut tears the 1 KiB ext4
    superblock across its two sectors; its checksum fails and the kernel
    refuses the mount. With the checker in the initramfs (the default build),
    slotinit runs e2fsck -p, then -y (the backup superblock), mounts it again:
    same machine-id, nothing lost. Before: tmpfs on every later boot."""
    disk = mkdisk(tmp_path / "disk.img")
    first = boot(disk)
    assert first.reported and first.handoff()["persistent_degraded"] is False
    with open(disk, "r+b") as f:
        f.seek(part_offset(disk, 6) + 1024 + 512 + 100)  # the superblock's second sector
        f.write(b"\x55" * 50)
    b = boot(disk)
    h = b.handoff()
    assert b.reported
    assert any(w["kind"] == "persistent-repair" for w in h["warnings"]), h["warnings"]
    assert re.match(r"/sbin/e2fsck -y /dev/vda6: exit [123] ", h["fsck"]), h["fsck"]
    assert h["persistent_degraded"] is False, h["errors"]
    assert b.mount("/var").root == "/slots/system_a/var"
    assert b.machine_id() == first.machine_id()
    assert NO_PANIC not in b.console


def test_read_only_persistent_keeps_its_machine_id(tmp_path):
    disk = mkdisk(tmp_path / "disk.img")
    first = boot(disk).machine_id()
    # The filesystem turns read-only (as errors=remount-ro leaves it): the
    # read-only feature makes the kernel mount it read-only.
    part = tmp_path / "persistent.img"
    off, size = part_offset(disk, 6), 64 << 20
    with open(disk, "rb") as f:
        f.seek(off)
        part.write_bytes(f.read(size))
    subprocess.run(["tune2fs", "-O", "read-only", str(part)], check=True,
                   stdout=subprocess.DEVNULL)
    with open(disk, "r+b") as f:
        f.seek(off)
        f.write(part.read_bytes())
    b = boot(disk)
    h = b.handoff()
    assert h["persistent_degraded"] is True
    assert any(e["kind"] == "persistent-read-only" for e in h["errors"]), h["errors"]
    persistent = b.mount("/persistent")
    assert "ro" in persistent.super_options.split(","), "kept mounted, read-only, for rescue"
    assert b.mount("/var").fstype == "tmpfs"
    assert b.machine_id() == first, "the same identity, read from the read-only partition"
    assert h["machine_id_source"] == "persistent-copy"


def test_full_persistent_still_boots(disk):
    """Data blocks exhausted (as root, reserved blocks too). ext4 keeps a
    metadata reserve, so the directories and the 33-byte machine-id that must
    be recreated still fit: the boot is normal and nothing is lost. (A write
    that does fail puts a tmpfs or a transient id in its place: unit tests.)"""
    b = boot(disk, append="test.run=fill-persistent")
    assert "filled" in b.test_run, b.test_run
    assert " 100% /persistent" in b.test_run, b.test_run
    b = boot(disk)
    h = b.handoff()
    assert b.reported, b.console[-3000:]
    assert (b.mount("/home").root, b.mount("/var").root) == ("/home", "/slots/system_a/var")
    assert h["persistent_degraded"] is False and h["errors"] == [], h["errors"]
    assert len(b.machine_id()) == 32


def test_machine_id_garbage_symlink_directory(tmp_path):
    outside = "/etc/slot-name"
    cases = {
        "garbage": lambda d: (d / "common/etc/machine-id").write_text("not an id\n"),
        "symlink": lambda d: os.symlink(outside, d / "common/etc/machine-id"),
        "directory": lambda d: (d / "common/etc/machine-id").mkdir(),
    }
    for name, plant in cases.items():
        def build(d, plant=plant):
            (d / "common/etc").mkdir(parents=True)
            plant(d)
        tree = persistent_tree(tmp_path, name, build)
        disk = mkdisk(tmp_path / f"{name}.img", "--persistent-dir", tree)
        b = boot(disk)
        h = b.handoff()
        assert b.reported, b.console[-3000:]
        assert len(b.machine_id()) == 32, (name, b.machine_id())
        if name == "directory":
            # Nothing is deleted on the persistent partition: a transient id.
            assert h["machine_id_source"] == "generated-transient", h
        else:
            assert h["machine_id_source"] == "generated-persistent", (name, h)
            assert b.mount("/etc/machine-id").root == "/common/etc/machine-id"
        # The system's own file behind the symlink target was not touched.
        assert "slot-name=system_a" in b.console


def test_planted_symlinks_are_not_followed(tmp_path):
    def build(d):
        os.symlink("/", d / "home")
        (d / "slots").mkdir()
        os.symlink("/etc", d / "slots/system_a")
    tree = persistent_tree(tmp_path, "hostile", build)
    disk = mkdisk(tmp_path / "hostile.img", "--persistent-dir", tree)
    b = boot(disk)
    h = b.handoff()
    assert b.reported, b.console[-3000:]
    for target in ("/home", "/var"):
        assert b.mount(target).fstype == "tmpfs", target
    assert any(e["kind"] == "persistent-step" and "symlink" in e["message"]
               for e in h["errors"]), h["errors"]
    # The journal bind does not depend on the planted paths.
    assert b.mount("/var/log/journal").root == "/log/journal"
    assert b.stat("/var/tmp") is None or b.stat("/var/tmp")[0] in ("1777", "755")


def test_duplicate_names_on_two_disks_are_refused(tmp_path):
    d1 = mkdisk(tmp_path / "one.img")
    d2 = mkdisk(tmp_path / "two.img")
    b = boot(d1, d2, timeout=90)
    log = "\n".join(b.slotinit_log())
    assert not b.reported
    assert "/dev/vda4 and /dev/vdb4" in log, log
    assert "refusing to guess" in log
    assert "fatal: both slots failed" in log
    assert NO_PANIC not in b.console


def test_disk_never_appears(tmp_path, initramfs_with_config):
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\0" * (4 << 20))
    initrd = initramfs_with_config("shortwait", "[boot]\ndevice_timeout_ms = 2000\nreboot_delay_s = 0\n")
    b = boot(blank, initrd=initrd, timeout=90)
    log = "\n".join(b.slotinit_log())
    assert "timed out after 2000 ms waiting for the disk" in log, log
    assert "fatal:" in log and "rebooting in 0 s" in log
    assert b.rc == 0 and NO_PANIC not in b.console


def test_hostile_cmdline(disk):
    # Dotted keys: the kernel hands undotted ones to init as environment
    # variables and panics past 32 of them, before init runs (not slotinit's).
    long = " ".join(f"pad.x{i}=" + "y" * 20 for i in range(50))
    append = f"{long} slotinit.slot=b slotinit.slot=a quiet=é\"unterminated slotinit.slot"
    b = boot(disk, append=append)
    assert b.reported, b.console[-3000:]
    # The last complete slotinit.slot= wins; a bare key is not a value.
    assert b.fields["slot-name"] == "system_a"
    assert NO_PANIC not in b.console


def test_fsck_before_mount(tmp_path, initramfs_with_config):
    """persistent.fsck: e2fsck -p from e2fsck-static:arm64 in the initramfs."""
    config = (REPO / "configs/rpi-uboot-rauc.toml").read_text().replace(
        "fsck = false", "fsck = true")
    initrd = initramfs_with_config("fsck", config,
                                   files=[f"{REPO}/.cache/e2fsck/e2fsck:/sbin/e2fsck"])
    disk = mkdisk(tmp_path / "disk.img")
    # Marked not clean: the check runs fully, finds nothing to fix, mounts.
    part = tmp_path / "persistent.img"
    off, size = part_offset(disk, 6), 64 << 20
    with open(disk, "rb") as f:
        f.seek(off)
        part.write_bytes(f.read(size))
    subprocess.run(["debugfs", "-w", "-R", "ssv state 0", str(part)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(disk, "r+b") as f:
        f.seek(off)
        f.write(part.read_bytes())
    b = boot(disk, initrd=initrd)
    h = b.handoff()
    assert h["fsck"].startswith("/sbin/e2fsck -p /dev/vda6: exit "), h["fsck"]
    assert "exit 0 " in h["fsck"] or "exit 1 " in h["fsck"], h["fsck"]
    assert h["persistent_degraded"] is False
    assert b.mount("/var").root == "/slots/system_a/var"
    # Beyond repair (no superblock): not mounted, tmpfs in its place.
    with open(disk, "r+b") as f:
        f.seek(off)
        f.write(b"\0" * (4 << 20))
    b = boot(disk, initrd=initrd)
    h = b.handoff()
    assert "exit 8 (operational error)" in h["fsck"], h["fsck"]
    assert h["persistent_degraded"] is True
    assert b.mount("/var").fstype == "tmpfs"
    assert NO_PANIC not in b.console
