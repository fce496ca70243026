"""Issue 16 items 6, 7 and 9: dm-verity system slots with slotinit.

Each system partition holds an ext4 with its hash tree appended, made by the host's
veritysetup (`veritysetup format --hash-offset=<the filesystem's size>`: the tree's
superblock at the first 4096-byte boundary after the filesystem); the root hash
comes from the initramfs (roothash_file, single-kernel boots) or from each boot
partition's cmdline.txt (`roothash=`, the firmware model). The host's
`veritysetup verify` is the oracle of what is intact and what is tampered with.

Scenarios:
- both slots boot verified (mode "required"): / is the verity device over the
  system partition, its size veritysetup's data blocks; the handoff says so;
- verity "required" and slot B has no verity data: B is refused, A boots;
  "optional": B boots unverified;
- through the firmware model (each slot its own kernel): B's tree superblock is
  tampered with: B's trial is found bad at activation (reason verity_corrupted) and
  A boots again; a block of a file in B is tampered with: B boots, reading the file
  restarts the machine (restart_on_corruption), and that restart counts against B's
  trial (attempts = 1: given up, A committed).
"""
import json
import re

import pytest

import cryptlib
import guest
import rpifw

KREL = rpifw.releases()
TIMEOUT = 150
VERITY_CONFIG = "rpi-verity"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Both slots' verity images for single-kernel boots (cached by content)."""
    return cryptlib.verity_systems(tmp_path_factory.mktemp("verity"))


def initrd_for(initramfs_with_config, tmp_path, images, mode="required"):
    text = cryptlib.config(VERITY_CONFIG, cryptlib.SINGLE_KERNEL)
    text = rpifw.set_key(text, "verity", "mode", f'"{mode}"')
    return initramfs_with_config(f"verity-{mode}", text, modules=cryptlib.VIRTIO_MODULES,
                                 files=cryptlib.roothash_files(tmp_path, images))


def root_dm(b):
    """The device-mapper device / is mounted from: (name, facts) or (None, None)."""
    dms = cryptlib.dm_devices(b)
    src = b.mount("/").source
    for name, d in dms.items():
        if src in (f"/dev/{d['dev']}", f"/dev/mapper/{name}"):
            return name, d
    return None, None


def test_host_oracle_sees_intact_and_tampered_images(images, tmp_path):
    """veritysetup verify passes the images as made and fails each tampered copy
    (what the QEMU scenarios below rely on)."""
    v = images["a"]
    assert re.search(r"Hash algorithm:\s+sha256", v.dump) and re.search(r"Data block size:\s+4096", v.dump)
    assert re.search(rf"Data blocks:\s+{v.fs_bytes // 4096}\b", v.dump), v.dump
    assert cryptlib.verify_on_host(v)
    for tamper in (cryptlib.tamper_superblock, lambda v, image: cryptlib.tamper_file(v, "/verity-probe", image)):
        copy = cryptlib.copy(v.image, tmp_path / "t.img")
        tamper(v, image=copy)
        assert not cryptlib.verify_on_host(cryptlib.Verity(copy, v.root_hash, v.fs_bytes, v.dump))


def test_both_slots_boot_verified(images, initramfs_with_config, tmp_path):
    disk = cryptlib.verity_virtio_disk(tmp_path / "disk.img", images)
    initrd = initrd_for(initramfs_with_config, tmp_path, images)
    for slot, append in (("a", ""), ("b", "slotinit.slot=b")):
        b = guest.boot(disk, initrd=initrd, append=f"{append} test.run=cryptfacts".strip(),
                       timeout=TIMEOUT, log=tmp_path / f"{slot}.log")
        assert b.rc == 0 and b.reported, b.console[-4000:]
        assert b.fields["slot-name"] == f"system_{slot}"
        h = b.handoff()
        assert h["slot"] == slot and h["errors"] == [], h["errors"]
        name, d = root_dm(b)
        assert name, (b.mount("/"), cryptlib.dm_devices(b))
        # The verity device covers the filesystem only, veritysetup's data blocks.
        assert int(d["sectors"]) * 512 == images[slot].fs_bytes, d
        assert d["ro"] == "1" and b.mount("/").readonly
        # The handoff shows that (and with which root hash) the slot was verified.
        text = json.dumps(h)
        assert "verity" in text and images[slot].root_hash in text, text
        guest.record(f"verity-{slot}-timings-us", h["timings_us"])


def test_required_refuses_a_slot_without_verity_data_optional_boots_it(
        images, initramfs_with_config, tmp_path):
    """Slot B's partition holds a plain ext4 (no tree) and the initramfs no root hash
    for it. "required": B is refused and A boots (one kernel for both), the error
    names B and verity. "optional": B boots without verity."""
    only_a = {"a": images["a"]}
    disk = cryptlib.verity_virtio_disk(tmp_path / "disk.img", only_a)
    b = guest.boot(disk, initrd=initrd_for(initramfs_with_config, tmp_path, only_a),
                   append="slotinit.slot=b test.run=cryptfacts", timeout=TIMEOUT,
                   log=tmp_path / "required.log")
    assert b.rc == 0 and b.reported, b.console[-4000:]
    assert b.fields["slot-name"] == "system_a", "a slot without verity data booted"
    errors = [p["message"] for p in b.handoff()["errors"]]
    assert any("verity" in e and re.search(r"\bb\b|system_b", e) for e in errors), errors
    assert root_dm(b)[0], "A booted without verity"

    b = guest.boot(disk, initrd=initrd_for(initramfs_with_config, tmp_path, only_a, "optional"),
                   append="slotinit.slot=b test.run=cryptfacts", timeout=TIMEOUT,
                   log=tmp_path / "optional.log")
    assert b.rc == 0 and b.reported, b.console[-4000:]
    assert b.fields["slot-name"] == "system_b"
    assert b.mount("/").source == "/dev/vda5" and root_dm(b) == (None, None), b.mount("/")


# --- through the firmware model --------------------------------------------------------

def pi_verity_disk(tmp_path, tamper=None, extra_config=""):
    """The two-kernel disk with verity systems (40 MiB ext4 + tree in 48 MiB partitions),
    each boot partition's cmdline.txt with its slot's roothash=; `tamper(verity)` is
    applied to B's image before it is written."""
    if why := rpifw.missing_artifacts():
        pytest.fail(why)
    work = tmp_path / "work"
    images = cryptlib.verity_systems(work, kernel_trees=True, fs_mib=40)
    if tamper:
        tamper(images["b"])
        assert not cryptlib.verify_on_host(images["b"])
    disk = cryptlib.pi_disk(tmp_path / "disk.img", work,
                            cryptlib.config(VERITY_CONFIG, extra_config),
                            cmdlines=tuple(f"roothash={images[s].root_hash}" for s in "ab"))
    for slot, v in images.items():
        cryptlib.put_partition(disk, 4 if slot == "a" else 5, v.image)
    return disk, work


def status(b):
    return guest.json_after(b.console, "=== STATUS ===")


def test_tampered_superblock_marks_the_trial_bad_and_a_boots(tmp_path):
    disk, work = pi_verity_disk(tmp_path, tamper=cryptlib.tamper_superblock)
    pi = rpifw.Pi(disk, work, timeout=TIMEOUT)
    b, ev = pi.boot(append="test.run=update", log=tmp_path / "1.log")
    assert (b.fields.get("slot-name"), ev.kind) == ("system_a", "tryboot"), pi.chain() + b.console[-3000:]

    b, ev = pi.boot(append="test.run=status", log=tmp_path / "2.log")
    assert (ev.partition, ev.kernel, ev.tryboot) == (3, KREL["b"], True), pi.chain()
    assert not b.reported, "B's system ran with a damaged hash tree"
    assert ev.kind == "reboot", pi.chain()   # through the firmware, back to A
    assert re.search(r"verity", "\n".join(b.slotinit_log())), b.console[-3000:]

    b, ev = pi.boot(append="test.run=status", log=tmp_path / "3.log")
    assert (b.fields.get("slot-name"), ev.partition, ev.kernel) == ("system_a", 2, KREL["a"]), pi.chain()
    s = status(b)
    assert (s["booted_slot"], s["boot"]) == ("a", "committed"), s
    assert "verity_corrupted" in json.dumps(s), s
    assert rpifw.Fat(disk, next(p.first for p in rpifw.read_gpt(disk) if p.number == 1)).read(
        "autoboot.txt").decode() == rpifw.AUTOBOOT_TEXT
    print(pi.chain())


def test_tampered_file_restarts_and_counts_against_the_trial(tmp_path):
    disk, work = pi_verity_disk(
        tmp_path, tamper=lambda v: cryptlib.tamper_file(v, "/verity-probe"),
        extra_config="[bootstate.rpi-tryboot]\nattempts = 1\n")
    pi = rpifw.Pi(disk, work, timeout=TIMEOUT)
    b, ev = pi.boot(append="test.run=update", log=tmp_path / "1.log")
    assert (b.fields.get("slot-name"), ev.kind) == ("system_a", "tryboot"), pi.chain() + b.console[-3000:]

    b, ev = pi.boot(append="test.run=readprobe", log=tmp_path / "2.log")
    assert (b.fields.get("slot-name"), ev.kernel, ev.tryboot) == ("system_b", KREL["b"], True), \
        pi.chain() + b.console[-3000:]
    assert root_dm(b) != (None, None) or b.mount("/").source.startswith("/dev/mapper/"), b.mount("/")
    assert "read-exit=" not in b.console, "the tampered block was read back"
    assert (ev.kind, ev.reboot_arg) == ("reboot", "dm-verity device corrupted"), pi.chain()

    b, ev = pi.boot(append="test.run=status", log=tmp_path / "3.log")
    assert (b.fields.get("slot-name"), ev.partition, ev.tryboot) == ("system_a", 2, False), pi.chain()
    s = status(b)
    assert (s["booted_slot"], s["boot"]) == ("a", "committed"), s
    reason = s.get("last_fallback") or (s.get("store") or {}).get("last_fallback") or ""
    assert re.search(r"\bb\b", reason.lower()), s
    print(pi.chain())
