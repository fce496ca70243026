"""Issue 11 A.3-7, 18, 22: what a hostile or merely unusual persistent partition
or system tree must not do to the boot. Each test plants the case on the disk,
boots, and checks the guest's report (and, where it matters, the persistent
partition afterwards)."""
import os
import re
import subprocess
from guest import INITRD, REPO, append_cpio, boot, mkdisk, part_offset, persistent_tree

ID = "0123456789abcdef0123456789abcdef"


def persistent_file(disk, tmp_path, path):
    """The contents of `path` on the persistent partition (6) after the boot."""
    out = subprocess.run(["sgdisk", "-i", "6", str(disk)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    sectors = int(re.search(r"Partition size: (\d+) sectors", out).group(1))
    part = tmp_path / "persistent-after.img"
    with open(disk, "rb") as f:
        f.seek(part_offset(disk, 6))
        part.write_bytes(f.read(sectors * 512))
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(part)], check=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout


def test_init_through_absolute_directory_symlinks(tmp_path):
    """usrmerge as Debian ships it, made harder: /sbin -> /usr/sbin (absolute),
    /usr/sbin/init -> /lib/systemd/systemd, /lib -> usr/lib. Resolved in the
    system, not in the initramfs: slot A boots, nothing is marked bad."""
    root_a = tmp_path / "root_a"
    subprocess.run([str(REPO / "tests/guest/mkroot"), str(root_a), "system_a"], check=True)
    (root_a / "usr/lib/systemd").mkdir(parents=True)
    (root_a / "sbin/init").rename(root_a / "usr/lib/systemd/systemd")
    (root_a / "sbin").rmdir()
    (root_a / "usr/sbin").mkdir()
    os.symlink("/usr/sbin", root_a / "sbin")
    os.symlink("/lib/systemd/systemd", root_a / "usr/sbin/init")
    os.symlink("usr/lib", root_a / "lib")
    disk = mkdisk(tmp_path / "disk.img", "--system-a", root_a)
    b = boot(disk)
    h = b.handoff()
    assert b.fields["slot-name"] == "system_a", b.console[-3000:]
    assert h["decision"]["source"] != "fallback", h
    assert not h.get("fallback"), h


def test_journal_symlink_does_not_bind_over_etc(tmp_path):
    """slots/system_a/var/log/journal -> ../../etc: the /var bind brings the link
    into the tree; the journal bind must not follow it onto the system's /etc."""
    def build(d):
        (d / "slots/system_a/var/log").mkdir(parents=True)
        os.symlink("../../etc", d / "slots/system_a/var/log/journal")
    tree = persistent_tree(tmp_path, "journal", build)
    disk = mkdisk(tmp_path / "journal.img", "--persistent-dir", tree)
    b = boot(disk)
    h = b.handoff()
    assert b.reported, b.console[-3000:]
    assert not [m for m in b.mounts() if m.mount_point == "/etc"], b.sections["mountinfo"]
    assert "/ read-only" in b.sections["write-test"], b.sections["write-test"]
    assert any(e["kind"] == "persistent-step" and "symlink" in e["message"]
               for e in h["errors"]), h["errors"]
    assert b.fields["slot-name"] == "system_a"


def test_fifo_at_the_machine_id_temp_name_does_not_hang(tmp_path):
    def build(d):
        (d / "common/etc").mkdir(parents=True)
        (d / "common/etc/machine-id").write_text("not an id\n")
        os.mkfifo(d / "common/etc/.machine-id.slotinit-tmp")
    tree = persistent_tree(tmp_path, "fifo", build)
    disk = mkdisk(tmp_path / "fifo.img", "--persistent-dir", tree)
    b = boot(disk, timeout=90)
    h = b.handoff()
    assert b.reported, b.console[-3000:]
    assert h["machine_id_source"] == "generated-persistent", h
    assert persistent_file(disk, tmp_path, "/common/etc/machine-id") == \
        (b.machine_id() + "\n").encode()


def test_hard_link_at_the_machine_id_temp_name_leaves_its_file(tmp_path):
    def build(d):
        (d / "common/etc").mkdir(parents=True)
        (d / "home").mkdir()
        (d / "home/notes").write_text("precious\n")
        os.chmod(d / "home/notes", 0o600)
        os.link(d / "home/notes", d / "common/etc/.machine-id.slotinit-tmp")
    tree = persistent_tree(tmp_path, "link", build)
    disk = mkdisk(tmp_path / "link.img", "--persistent-dir", tree)
    b = boot(disk)
    h = b.handoff()
    assert b.reported, b.console[-3000:]
    assert h["machine_id_source"] == "generated-persistent", h
    assert persistent_file(disk, tmp_path, "/home/notes") == b"precious\n"


def test_uppercase_crlf_machine_id_is_kept(tmp_path):
    def build(d):
        (d / "common/etc").mkdir(parents=True)
        (d / "common/etc/machine-id").write_bytes(ID.upper().encode() + b"\r\n")
    tree = persistent_tree(tmp_path, "upper", build)
    disk = mkdisk(tmp_path / "upper.img", "--persistent-dir", tree)
    b = boot(disk)
    h = b.handoff()
    assert b.machine_id() == ID, b.machine_id()
    assert h["machine_id_source"] == "persistent", h
    assert persistent_file(disk, tmp_path, "/common/etc/machine-id") == (ID + "\n").encode()


def test_persistent_is_nosuid_nodev(disk):
    b = boot(disk)
    for point in ("/persistent", "/var", "/home"):
        options = b.mount(point).options.split(",")
        assert "nosuid" in options and "nodev" in options, (point, options)


def test_system_options_rw_never_mounts_the_system_writable(tmp_path):
    """A.22: `system.options = "rw"` is rejected by check-config (so
    initramfs/build refuses it); an initramfs that carries it anyway fails
    closed: nothing boots, the system is never mounted writable. (The plan
    and the executor keep the system read-only whatever its options: unit
    tests.)"""
    text = (REPO / "configs/rpi-uboot-rauc.toml").read_text()
    text = re.sub(r'(\[system\][^\[]*?)options = ""', r'\1options = "rw"', text, count=1)
    assert 'options = "rw"' in text
    initrd = append_cpio(INITRD, tmp_path / "system-rw.img", {"etc/slotinit.toml": text})
    disk = mkdisk(tmp_path / "disk.img")
    b = boot(disk, initrd=initrd, timeout=90)
    assert not b.reported
    log = "\n".join(b.slotinit_log())
    assert "fatal: config:" in log and "system.options" in log, log
    assert "EXT4-fs (vda4)" not in b.console, "the system was mounted"
