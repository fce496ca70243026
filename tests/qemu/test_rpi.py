"""Issue 13: the default device boots the way a Raspberry Pi boots. Every boot
goes through the firmware model (tests/qemu/rpifw.py): it picks the partition
from autoboot.txt and the one-shot tryboot flag and boots that partition's own
kernel (slot A: bookworm's 6.1, slot B: 6.12) with that slot's initramfs, whose
slotinit runs the rpi profile (bootstate backend "rpi-tryboot").

Scenarios: A committed; an update arms B's trial (`slotinit mark-active other
--reboot` = reboot "0 tryboot"); B boots as the trial on its own kernel; the
health check commits it (autoboot.txt swapped in place); B is the default from
then on. A trial whose init exits is tried `attempts` times, each try re-armed
by A's initramfs, then given up with its reason in `status`. A missing or
corrupt autoboot.txt boots what the firmware boots and slotinit says so."""
import json
import subprocess
from pathlib import Path

import pytest

import guest
import qemudriver
import rpifw

REPO = qemudriver.REPO
KREL = rpifw.releases()
COMMITTED_A = rpifw.AUTOBOOT_TEXT
COMMITTED_B = rpifw.AUTOBOOT_SWAPPED


@pytest.fixture(scope="session", autouse=True)
def artifacts():
    """Overrides conftest's: the model builds an initramfs per kernel from the
    aarch64 slotinit; both kernels must be there (a missing one fails, never skips)."""
    if why := rpifw.missing_artifacts():
        pytest.fail(why)


def config(**tryboot_keys):
    """The rpi profile (backend rpi-tryboot), with keys of [bootstate.rpi-tryboot] changed."""
    text = (REPO / "configs/rpi-ab-userdata.toml").read_text()
    for key, value in tryboot_keys.items():
        text = rpifw.set_key(text, "bootstate.rpi-tryboot", key, value)
    return text


@pytest.fixture(scope="module")
def rpi_disk(tmp_path_factory):
    """The rpi profile's disk: boot_a 6.1 (loose files), boot_b 6.12 (in boot.img)."""
    d = tmp_path_factory.mktemp("rpi")
    return rpifw.make_disk(d / "disk.img", d / "work", boot_img=(False, True),
                           config=config())


def copy(src, dst):
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    return Path(dst)


def after(console, marker):
    """The JSON object printed after `marker` on the console."""
    assert marker in console, console[-3000:]
    return guest.json_after(console, marker)


def autoboot(disk, tmp):
    assert guest.fat_get(disk, "autoboot.txt", Path(tmp) / "autoboot.read")
    return (Path(tmp) / "autoboot.read").read_text()


def slot_of(b):
    return b.fields.get("slot-name")


def test_update_trial_commit_then_b_by_default(rpi_disk, tmp_path):
    """A committed (6.1); the update arms B's trial and restarts with "0 tryboot";
    B's trial runs 6.12 with B's system; mark-good swaps autoboot.txt in place;
    every boot after is B's, committed."""
    disk = copy(rpi_disk, tmp_path / "disk.img")
    pi = rpifw.Pi(disk, tmp_path / "work")
    b, ev = pi.boot(append="test.run=update", log=tmp_path / "1.log")
    assert (slot_of(b), ev.kernel, ev.partition) == ("system_a", KREL["a"], 2), pi.chain()
    s = after(b.console, "=== STATUS ===")
    assert (s["booted_slot"], s["boot"]) == ("a", "committed"), s
    assert "restarting with \"0 tryboot\"" in b.console, b.console[-2000:]
    assert ev.kind == "tryboot" and pi.tryboot, pi.chain()

    b, ev = pi.boot(append="test.run=commit", log=tmp_path / "2.log")
    assert (slot_of(b), ev.kernel, ev.partition, ev.tryboot) == (
        "system_b", KREL["b"], 3, True), pi.chain()
    assert f"uname-r={KREL['b']}" in b.console
    s = after(b.console, "=== STATUS ===")
    assert (s["booted_slot"], s["boot"]) == ("b", "trial"), s
    assert s["attempts_left"] == 2, s   # the try the update armed is used
    assert "mark-good-exit=0" in b.console, b.console[-3000:]
    s = after(b.console, "=== COMMITTED ===")
    assert s["boot"] == "committed", s
    text = autoboot(disk, tmp_path)
    assert text == COMMITTED_B and len(text) == len(COMMITTED_A), text
    assert ev.kind == "reboot" and not pi.tryboot

    for n in (3, 4):
        b, ev = pi.boot(append="test.run=status", log=tmp_path / f"{n}.log")
        assert (slot_of(b), ev.kernel, ev.partition, ev.tryboot) == (
            "system_b", KREL["b"], 3, False), pi.chain()
        s = after(b.console, "=== STATUS ===")
        assert (s["booted_slot"], s["boot"]) == ("b", "committed"), s
        assert b.handoff()["errors"] == [], b.handoff()["errors"]
        # The running kernel's modules are in the slot's own system.
        facts = dict(l.split("=", 1) for l in b.test_run.splitlines() if "=" in l)
        assert (facts.get("uname-r"), facts.get("modules-dir"), facts.get("modprobe")) == (
            KREL["b"], "yes", "ok"), b.test_run
    guest.record("rpi-update-walls-s", [round(e.wall, 2) for e in pi.history])
    print(pi.chain())


def test_a_trial_whose_init_exits_is_tried_attempts_times_then_given_up(rpi_disk, tmp_path):
    """B's trial never reaches its init (init=/bin/false exits: the kernel panics and
    the board resets without the flag). A's initramfs re-arms the trial while tries
    are left (a restart with "0 tryboot", A's system is never mounted meanwhile),
    then gives B up: A boots with the reason in status, autoboot.txt untouched."""
    disk = copy(rpi_disk, tmp_path / "disk.img")
    pi = rpifw.Pi(disk, tmp_path / "work")
    b, ev = pi.boot(append="test.run=update", log=tmp_path / "update.log")
    assert ev.kind == "tryboot", pi.chain()
    trials = 0
    for n in range(12):
        trial = pi.tryboot
        b, ev = pi.boot(append="init=/bin/false" if trial else "test.run=status",
                        log=tmp_path / f"boot{n}.log")
        if trial:
            trials += 1
            assert (ev.partition, ev.kernel, ev.kind) == (3, KREL["b"], "panic"), pi.chain()
            continue
        assert (ev.partition, ev.kernel) == (2, KREL["a"]), pi.chain()
        if ev.kind == "tryboot":
            # A's initramfs re-armed B: A's system was never mounted.
            assert not b.reported, b.console[-2000:]
            assert "boots through the firmware" in b.console, b.console[-2000:]
            continue
        break
    assert trials == 3, pi.chain()   # attempts = 3
    assert slot_of(b) == "system_a", pi.chain()
    s = after(b.console, "=== STATUS ===")
    assert (s["booted_slot"], s["boot"]) == ("a", "committed"), s
    reason = s["last_fallback"] or (s["store"] or {}).get("last_fallback") or ""
    assert "b" in reason.lower() and "mark-good" in reason, s
    assert autoboot(disk, tmp_path) == COMMITTED_A
    print(pi.chain())


@pytest.mark.parametrize("text,why", [
    (None, "missing"),
    ("\x00\xff garbage\n" * 20, "corrupt"),
])
def test_missing_or_corrupt_autoboot_boots_what_the_firmware_boots_and_is_reported(
        rpi_disk, tmp_path, text, why):
    """raspberrypi/documentation: without a usable boot_partition the firmware boots the
    default partition (the first FAT partition holding config.txt: boot_a here). slotinit
    boots that slot, says autoboot.txt is unusable, and writes nothing to it."""
    disk = copy(rpi_disk, tmp_path / "disk.img")
    part = guest.part_offset(disk, 1)
    env = {"MTOOLS_SKIP_CHECK": "1"}
    if text is None:
        subprocess.run(["mdel", "-i", f"{disk}@@{part}", "::autoboot.txt"], check=True,
                       env={**__import__("os").environ, **env})
    else:
        (tmp_path / "bad.txt").write_bytes(text.encode("latin-1"))
        guest.fat_put(disk, tmp_path / "bad.txt", "autoboot.txt")
    pi = rpifw.Pi(disk, tmp_path / "work")
    b, ev = pi.boot(append="test.run=status", log=tmp_path / "boot.log")
    assert (slot_of(b), ev.partition, ev.kernel) == ("system_a", 2, KREL["a"]), pi.chain()
    h = b.handoff()
    kinds = [e["kind"] for e in h["errors"]]
    assert "bootstate-unusable" in kinds, h["errors"]
    assert any("autoboot.txt" in e["message"] for e in h["errors"]), h["errors"]
    s = after(b.console, "=== STATUS ===")
    assert s["booted_slot"] == "a", s
    after_text = guest.fat_get(disk, "autoboot.txt", tmp_path / "after.txt")
    if text is None:
        assert not after_text, "slotinit must not create autoboot.txt"
    else:
        assert (tmp_path / "after.txt").read_bytes() == text.encode("latin-1")


def test_crash_states_of_the_commit_never_leave_an_unbootable_autoboot(tmp_path):
    """tests/crash/rpicommit.py, small: every crash state of B's commit (the logged
    writes to bootconfig: autoboot.txt in place, the trial record) is checked as the
    firmware reads it, three are booted through the model. The campaign's figures
    (every state, more boots, --garbage) are in tests/crash/README.md."""
    import sys
    sys.path.insert(0, str(REPO / "tests/crash"))
    import rpicommit
    r = rpicommit.run(tmp_path / "campaign", boots=3, max_torn=20, seed=13)
    print(r.summary())
    assert r.failures == [], r.summary()
    # Not vacuous: the commit was logged and both autoboot.txt contents were seen.
    assert r.writes >= 2 and r.distinct >= 2, r.summary()
    assert {("2", "3"), ("3", "2")} <= set(r.picks), r.summary()
    assert r.booted == 3 and "nothing" not in r.boots, r.summary()
    guest.record("rpi-commit-crash-states", {"distinct": r.distinct, "booted": r.booted,
                                             "writes": r.writes, "flushes": r.flushes})


def test_a_trial_that_hangs_is_reset_by_the_watchdog_and_given_up(tmp_path):
    """slotinit arms the watchdog (slotinit.watchdog=10, i6300esb) and leaves it
    running into B's trial system, which hangs without feeding it: the watchdog
    resets the board (no flag), and that counts against the trial (attempts = 1
    here): A's initramfs gives B up, A boots, status says why."""
    disk = rpifw.make_disk(tmp_path / "disk.img", tmp_path / "work", boot_img=(False, True),
                           config=config(attempts="1"),
                           cmdline="slotinit.watchdog=10")
    pi = rpifw.Pi(disk, tmp_path / "work")
    b, ev = pi.boot(append="test.run=update", log=tmp_path / "update.log")
    assert ev.kind == "tryboot", pi.chain()
    assert b.handoff()["watchdog"]["running"] is True, b.handoff().get("watchdog")
    b, ev = pi.boot(append="test.run=stall", timeout=90, log=tmp_path / "trial.log")
    assert (ev.partition, ev.kernel, ev.tryboot, ev.kind) == (
        3, KREL["b"], True, "watchdog"), pi.chain()
    assert "stalling" in b.console and b.handoff()["watchdog"]["timeout_s"] == 10
    b, ev = pi.boot(append="test.run=status", log=tmp_path / "after.log")
    assert (slot_of(b), ev.partition, ev.tryboot) == ("system_a", 2, False), pi.chain()
    s = after(b.console, "=== STATUS ===")
    assert (s["booted_slot"], s["boot"]) == ("a", "committed"), s
    reason = s["last_fallback"] or (s["store"] or {}).get("last_fallback") or ""
    assert "mark-good" in reason, s
    print(pi.chain())


def test_slot_b_loads_its_kernels_modules_as_debian_ships_them(tmp_path):
    """6.12's modules are .ko.xz: slotinit's finit_module asks the kernel to
    decompress them (MODULE_INIT_COMPRESSED_FILE). B's initramfs carries them as
    shipped; its SD card driver (sdhci_pci.ko.xz) loads and B's system mounts."""
    disk = rpifw.make_disk(tmp_path / "disk.img", tmp_path / "work", config=config(),
                           as_shipped=True)
    pi = rpifw.Pi(disk, tmp_path / "work")
    pi.tryboot = True   # a trial of B, as after mark-active --reboot
    b, ev = pi.boot(append="test.run=status", log=tmp_path / "b.log")
    assert (slot_of(b), ev.kernel) == ("system_b", KREL["b"]), b.console[-3000:]
    assert b.handoff()["errors"] == [], b.handoff()["errors"]
    assert b.mount("/").source == "/dev/mmcblk0p5"


def test_the_slot_map_names_the_partitions_on_the_boot_disk(tmp_path):
    """partitions.slot_map: rpi-image-gen's /boot/slot.map (in the initramfs) names
    the slots' partitions by number on the disk the device tree's boot-mode names
    (1: mmcblk0); the config's GPT names for them match nothing here."""
    (tmp_path / "slot.map").write_text(
        "# rpi-image-gen rpi-slot-static\na.boot=::2\na.system=::4\nb.boot=::3\nb.system=::5\n")
    text = config()
    for role in ("boot_a", "boot_b", "system_a", "system_b"):
        text = rpifw.set_key(text, "partitions", role, f'"no-{role}"')
    text = rpifw.set_key(text, "partitions", "slot_map", '"/boot/slot.map"')
    disk = rpifw.make_disk(tmp_path / "disk.img", tmp_path / "work", config=text,
                           initramfs_files=[f"{tmp_path / 'slot.map'}:/boot/slot.map"])
    pi = rpifw.Pi(disk, tmp_path / "work")
    for tryboot, slot, dev in ((False, "system_a", "/dev/mmcblk0p4"),
                               (True, "system_b", "/dev/mmcblk0p5")):
        pi.tryboot = tryboot
        b, ev = pi.boot(append="test.run=status", log=tmp_path / f"{slot}.log")
        assert slot_of(b) == slot, b.console[-3000:]
        assert b.mount("/").source == dev
        assert b.handoff()["errors"] == [], b.handoff()["errors"]
        assert b.links()["active/boot"][1] == f"/dev/mmcblk0p{ev.partition}"
