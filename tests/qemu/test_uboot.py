"""Issue 5: real U-Boot in the loop. U-Boot (uboot/boot.cmd) counts boots and
picks the slot with RAUC's contract in bootconfig:/uboot.env; slotinit
(configs/uboot-rauc.toml: counter = "bootloader") follows rauc.slot=.

The env is checked on the host with Debian's fw_printenv (libubootenv), the
same file U-Boot's `env export -c` + `fatwrite` wrote.
"""
import os
import re
import subprocess

import pytest
from guest import REPO, fat_get, fat_put, json_after, part_offset, read_env, record
from uboot import (UBOOT_OUT, boot, build_initramfs, build_roots, build_uboot, mkdisk,
                   seeded_delays, set_env)

DEFAULTS = {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """boot.scr/uboot.env/Image.gz, the chain's initramfs and both system trees, once."""
    if not os.path.exists("/usr/lib/u-boot/qemu_arm64/u-boot.bin"):
        pytest.fail("u-boot-qemu is not installed: run tools/install-deps")
    base = tmp_path_factory.mktemp("uboot-chain")
    build_uboot()
    return {"initramfs": build_initramfs(base / "initramfs.img"),
            "roots": build_roots(base / "roots")}


@pytest.fixture
def udisk(chain, tmp_path):
    return mkdisk(tmp_path / "uboot-disk.img", chain["initramfs"], chain["roots"])


def state(disk, tmp):
    """The three contract variables as fw_printenv reads them; None if it rejects the file."""
    env = read_env(disk, tmp)
    return None if env is None else {k: v for k, v in env.items() if k in DEFAULTS}


def fsck_bootconfig_report(disk, tmp):
    """`fsck.vfat -n` of the bootconfig partition: (exit code, what it said)."""
    info = subprocess.run(["sgdisk", "-i", "1", str(disk)], check=True, stdout=subprocess.PIPE,
                          text=True).stdout
    sectors = int(re.search(r"Partition size: (\d+) sectors", info).group(1))
    part = tmp / "bootconfig.img"
    with open(disk, "rb") as f:
        f.seek(part_offset(disk, 1))
        part.write_bytes(f.read(sectors * 512))
    r = subprocess.run(["fsck.vfat", "-n", str(part)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    return r.returncode, r.stdout


def fsck_bootconfig(disk, tmp):
    """fsck.vfat -n of the bootconfig partition: U-Boot's fatwrite left a consistent FAT."""
    code, report = fsck_bootconfig_report(disk, tmp)
    assert code == 0, report


def assert_booted(b, slot):
    """U-Boot picked `slot` ("A"/"B") and the system of that slot reported."""
    assert b.rc == 0, b.console[-3000:]
    assert b.reported, b.console[-3000:]
    assert b.picked()[-1] == slot, b.bootstate()
    assert b.fields["slot-name"] == f"system_{slot.lower()}"
    assert f"rauc.slot={slot}" in b.fields["cmdline"].split()
    assert b.fields["pid"] == "1"
    assert b.handoff()["slot"] == slot.lower()


def guest_envs(b):
    """Every env-begin/env-end block the test.d/uboot-* scripts printed, as dicts."""
    out, cur = [], None
    for line in b.test_run.splitlines():
        if line == "env-begin":
            cur = {}
        elif line == "env-end":
            out.append(cur)
            cur = None
        elif cur is not None and "=" in line:
            k, _, v = line.partition("=")
            cur[k] = v
    return out


def record_times(prefix, b):
    t = b.times
    if all(k in t for k in ("kernel", "run_init", "report")):
        record(f"{prefix}_qemu_to_kernel_s", t["kernel"])
        record(f"{prefix}_kernel_to_run_init_s", round(t["run_init"] - t["kernel"], 3))
        record(f"{prefix}_run_init_to_report_s", round(t["report"] - t["run_init"], 3))
        record(f"{prefix}_wall_s", b.wall)


# --- a. fresh disk -----------------------------------------------------------

def test_fresh_disk_boots_a_and_uboot_counts(udisk, tmp_path):
    b = boot(udisk, bootdelay="stock")  # Debian's u-boot.bin exactly as packaged
    assert_booted(b, "A")
    # One party counts: U-Boot took A from 3 to 2, slotinit did not touch it.
    assert state(udisk, tmp_path) == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "3"}
    assert "bootstate: BOOT_ORDER=A B BOOT_A_LEFT=3 BOOT_B_LEFT=3" in b.bootstate()
    assert "Uncompressing Kernel Image" in b.console
    assert "Hit any key to stop autoboot:  2" in b.console
    record_times("uboot_stock", b)
    print(f"U-Boot chain milestones (s since QEMU start): {b.times}, wall {b.wall}")


def test_env_written_by_uboot_is_what_fw_printenv_and_mkenvimage_make(udisk, tmp_path):
    """U-Boot's `env export -c -s 0x4000` pads with 0x00 where mkenvimage pads with
    0xff; both carry a CRC over the whole data area, so fw_printenv reads either."""
    boot(udisk)
    assert fat_get(udisk, "uboot.env", tmp_path / "u.env")
    data = (tmp_path / "u.env").read_bytes()
    assert len(data) == 0x4000
    end = data.index(b"\0\0", 4)
    assert data[4:end + 1] == b"BOOT_A_LEFT=2\0BOOT_B_LEFT=3\0BOOT_ORDER=A B\0"  # sorted
    assert set(data[end + 2:]) == {0}
    fresh = (UBOOT_OUT / "uboot.env").read_bytes()
    assert fresh[-1] == 0xff


def test_shipped_script_puts_nothing_from_the_env_on_the_cmdline(chain, tmp_path):
    """Issue 11 A8: the env is not authenticated. With the script integrators ship
    (uboot/boot.cmd as is), an `extra_bootargs=rauc.slot=B` planted in uboot.env
    reaches neither the cmdline nor the decision: U-Boot counts A, A boots."""
    shipped = build_uboot(tmp_path / "shipped", shipped=True)
    assert b"extra_bootargs" not in (shipped / "boot.scr").read_bytes()
    disk = mkdisk(tmp_path / "shipped.img", chain["initramfs"], chain["roots"], uboot=shipped)
    set_env(disk, "extra_bootargs=rauc.slot=B slotinit.slot=b")
    b = boot(disk)
    assert_booted(b, "A")
    words = b.fields["cmdline"].split()
    assert "rauc.slot=B" not in words and "slotinit.slot=b" not in words, words
    assert state(disk, tmp_path) == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "2",
                                     "BOOT_B_LEFT": "3"}


# --- b. good update ------------------------------------------------------------

def test_update_to_b_boots_b_as_a_counted_trial(udisk, tmp_path):
    """The host plays the update client (fw_setenv): B first with 3 attempts."""
    set_env(udisk, "BOOT_ORDER=B A", "BOOT_B_LEFT=3", "extra_bootargs=test.run=uboot-env")
    b = boot(udisk)
    assert_booted(b, "B")
    assert "test.run=uboot-env" in b.fields["cmdline"].split()
    # The system saw the state U-Boot wrote before the kernel: the trial is counted.
    [seen] = guest_envs(b)
    assert (seen["BOOT_ORDER"], seen["BOOT_B_LEFT"], seen["extra_bootargs"]) == \
        ("B A", "2", "test.run=uboot-env")
    assert state(udisk, tmp_path) == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2"}
    assert read_env(udisk, tmp_path)["extra_bootargs"] == "test.run=uboot-env"
    record_times("uboot_bootdelay0", b)


def test_good_update_is_committed_by_mark_good_and_stays(udisk, tmp_path):
    set_env(udisk, "BOOT_ORDER=B A", "BOOT_B_LEFT=3", "extra_bootargs=test.run=uboot-mark-good")
    for n in range(2):
        b = boot(udisk)
        assert_booted(b, "B")
        assert "mark-exit=0" in b.test_run, b.test_run
        before, after = guest_envs(b)
        assert before["BOOT_B_LEFT"] == "2", f"boot {n}: U-Boot counted, slotinit did not"
        s = json_after(b.test_run, "env-end")
        assert (s["booted_slot"], s["source"], s["boot"], s["attempts_left"]) == \
            ("b", "bootloader", "trial", 2), s
        assert after["BOOT_B_LEFT"] == "3", f"boot {n}: mark-good restored the attempts"
        assert state(udisk, tmp_path) == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3",
                                          "BOOT_B_LEFT": "3"}
        assert read_env(udisk, tmp_path)["extra_bootargs"] == "test.run=uboot-mark-good", \
            "slotinit keeps variables it does not own"


def test_update_from_the_guest_with_mark_active(udisk, tmp_path):
    set_env(udisk, "extra_bootargs=test.run=uboot-mark-active-b")
    b = boot(udisk)
    assert_booted(b, "A")
    assert "mark-exit=0" in b.test_run, b.test_run
    assert state(udisk, tmp_path) == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "3"}
    set_env(udisk, "extra_bootargs=test.run=uboot-env")
    b = boot(udisk)
    assert_booted(b, "B")
    assert guest_envs(b)[0]["BOOT_B_LEFT"] == "2"


# --- c. bad update ---------------------------------------------------------------

def test_bad_update_falls_back_to_a_after_three_attempts(udisk, tmp_path):
    set_env(udisk, "BOOT_ORDER=B A", "BOOT_B_LEFT=3")
    seen = []
    for _ in range(4):
        b = boot(udisk)
        assert b.reported, b.console[-3000:]
        s = state(udisk, tmp_path)
        seen.append((b.picked()[-1], b.fields["slot-name"], s["BOOT_B_LEFT"], s["BOOT_A_LEFT"]))
    assert seen == [("B", "system_b", "2", "3"), ("B", "system_b", "1", "3"),
                    ("B", "system_b", "0", "3"), ("A", "system_a", "0", "2")], seen
    assert_booted(b, "A")
    assert state(udisk, tmp_path)["BOOT_ORDER"] == "B A", "U-Boot never edits the order"


def test_no_attempts_left_resets_counters_and_board(udisk, tmp_path):
    set_env(udisk, "BOOT_ORDER=B A", "BOOT_A_LEFT=0", "BOOT_B_LEFT=0")
    b = boot(udisk)  # -no-reboot: U-Boot's reset ends QEMU
    assert b.rc == 0 and b.reset and not b.reported, b.console[-3000:]
    assert "bootstate: no slot has attempts left: resetting the counters and the board" \
        in b.bootstate()
    assert "Starting kernel" not in b.console
    assert state(udisk, tmp_path) == DEFAULTS
    # qemu/uboot-run --resets: the board comes back up by itself.
    set_env(udisk, "BOOT_ORDER=B A", "BOOT_A_LEFT=0", "BOOT_B_LEFT=0")
    b = boot(udisk, resets=1)
    assert b.reset
    assert_booted(b, "A")
    assert state(udisk, tmp_path) == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "3"}


def test_slot_that_cannot_load_its_kernel_runs_out_and_a_boots(udisk, tmp_path):
    """boot_b lacks initramfs.img: each attempt is counted, U-Boot resets, then A."""
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    subprocess.run(["mdel", "-i", f"{udisk}@@{part_offset(udisk, 3)}", "::initramfs.img"],
                   env=env, check=True)
    set_env(udisk, "BOOT_ORDER=B A", "BOOT_B_LEFT=3")
    b = boot(udisk, resets=3, timeout=240)
    assert b.picked() == ["B", "B", "B", "A"], b.bootstate()
    assert b.bootstate().count("bootstate: slot B did not boot: reset") == 3
    assert_booted(b, "A")
    assert state(udisk, tmp_path) == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0"}


# --- d. missing or corrupt env -------------------------------------------------------

@pytest.mark.parametrize("damage", ["missing", "bad-crc", "truncated", "empty"])
def test_missing_or_corrupt_env_boots_a_with_the_defaults(udisk, tmp_path, damage):
    set_env(udisk, "BOOT_ORDER=B A")  # what a damaged file can no longer tell
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    img = f"{udisk}@@{part_offset(udisk, 1)}"
    if damage == "missing":
        subprocess.run(["mdel", "-i", img, "::uboot.env"], env=env, check=True)
    else:
        assert fat_get(udisk, "uboot.env", tmp_path / "good.env")
        data = bytearray((tmp_path / "good.env").read_bytes())
        if damage == "bad-crc":
            data[9] ^= 0xff
        elif damage == "truncated":
            data = data[:0x2000]
        else:
            data = bytearray()
        (tmp_path / "bad.env").write_bytes(bytes(data))
        fat_put(udisk, tmp_path / "bad.env", "uboot.env")
    assert read_env(udisk, tmp_path) is None or damage == "missing"
    b = boot(udisk)
    assert "bootstate: uboot.env missing or corrupt: using the defaults" in b.bootstate()
    assert_booted(b, "A")
    # Written back as the defaults with A's attempt counted.
    assert state(udisk, tmp_path) == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "3"}
    fsck_bootconfig(udisk, tmp_path)


def test_failed_env_write_still_boots_uncounted(udisk, tmp_path):
    """No uboot.env and a full bootconfig FAT: fatwrite fails, boot.cmd warns and
    boots slot A anyway (that attempt is not counted)."""
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    img = f"{udisk}@@{part_offset(udisk, 1)}"
    subprocess.run(["mdel", "-i", img, "::uboot.env"], env=env, check=True)
    listing = subprocess.run(["mdir", "-i", img, "::/"], env=env, check=True,
                             stdout=subprocess.PIPE, text=True).stdout
    [line] = [l for l in listing.splitlines() if l.endswith("bytes free")]
    free = int("".join(c for c in line if c.isdigit()))
    (tmp_path / "filler").write_bytes(b"\0" * free)
    fat_put(udisk, tmp_path / "filler", "filler")
    b = boot(udisk)
    assert "bootstate: WARNING: could not write uboot.env" in b.bootstate(), b.bootstate()
    assert_booted(b, "A")
    assert not fat_get(udisk, "uboot.env", tmp_path / "none.env")
    print("slotinit's view of the store:", b.handoff().get("bootstate"))


# --- e. power cuts while U-Boot writes ------------------------------------------------------

def test_power_cuts_during_uboot_keep_the_next_boot_working(udisk, tmp_path):
    """QEMU is SIGKILLed at seeded random moments: even cuts 0-80 ms after boot.cmd
    announces its fatwrite, odd cuts anywhere in the early U-Boot phase (banner to
    "Starting kernel", timed by a first uncut boot). The next boot must reach the
    report: the state U-Boot was writing if the file is intact, else the defaults
    (slot A). SLOTINIT_UBOOT_POWERCUTS (default 5) cuts, SLOTINIT_SEED (default 1).

    A SIGKILL cannot tear a write QEMU already issued (the bytes are in the host's
    page cache), so this checks the orderings "before" and "after" U-Boot's write;
    torn files are test_missing_or_corrupt_env_boots_a_with_the_defaults."""
    count = int(os.environ.get("SLOTINIT_UBOOT_POWERCUTS", "5"))
    calib = boot(udisk)
    assert calib.reported, calib.console[-3000:]
    early = round(calib.times["kernel"] - calib.times["uboot"], 3)
    write_delays = seeded_delays(count, 0.0, 0.08, "write")
    early_delays = seeded_delays(count, 0.0, early, "early")
    outcomes = []
    for i in range(count):
        set_env(udisk, "BOOT_ORDER=B A", "BOOT_A_LEFT=3", "BOOT_B_LEFT=3")
        kill = (r"^bootstate: writing", write_delays[i]) if i % 2 == 0 \
            else (r"^U-Boot 20\d\d", early_delays[i])
        cut = boot(udisk, kill=kill, timeout=60)
        assert cut.killed_at is not None and not cut.reported, f"cut {i} came too late"
        after_cut = state(udisk, tmp_path)
        fsck_bootconfig(udisk, tmp_path)
        b = boot(udisk)
        assert b.reported, f"cut {i} ({kill}): no boot after it\n{b.console[-3000:]}"
        if after_cut is None:
            env, expect = "corrupt", "A"
        else:
            env = {"3": "before write", "2": "after write"}[after_cut["BOOT_B_LEFT"]]
            expect = "B"
        assert_booted(b, expect)
        outcomes.append((kill[0].strip("^"), kill[1], env, expect))
    print(f"U-Boot power cuts tried: {count} (early phase {early} s after the banner)")
    for o in outcomes:
        print("  cut {:>3} s after /{}/: env {}, next boot {}".format(o[1], o[0], o[2], o[3]))
    record("uboot_power_cuts_tried", count)


def test_power_cuts_during_mark_good_keep_the_next_boot_working(udisk, tmp_path):
    """QEMU SIGKILLed at seeded moments around the trial's `slotinit mark-good`
    (0-60 ms after the line the health check prints just before it): the next
    boot U-Boot makes reads a valid env, committed or not, and boots B."""
    count = int(os.environ.get("SLOTINIT_UBOOT_POWERCUTS", "5"))
    delays = seeded_delays(count, 0.0, 0.06, "mark-good")
    outcomes = []
    for i in range(count):
        set_env(udisk, "BOOT_ORDER=B A", "BOOT_A_LEFT=3", "BOOT_B_LEFT=3",
                "extra_bootargs=test.run=uboot-mark-good")
        cut = boot(udisk, kill=(r"^status-exit=", delays[i]), timeout=60)
        assert cut.killed_at is not None or "mark-exit=0" in cut.test_run, \
            f"cut {i}: neither cut nor committed\n{cut.console[-3000:]}"
        after_cut = state(udisk, tmp_path)
        assert after_cut is not None, f"cut {i} at {delays[i]} s: no valid env"
        # Cut while Linux had the FAT mounted: its dirty bit may be set (the
        # kernel clears it at the next mount); anything else is damage.
        _, report = fsck_bootconfig_report(udisk, tmp_path)
        findings = [l for l in report.splitlines()[1:] if l.strip() and not l.lstrip().startswith(
            ("Dirty bit", "Automatically removing", "Leaving filesystem", str(tmp_path)))]
        assert not findings, report
        assert after_cut["BOOT_B_LEFT"] in ("2", "3"), after_cut
        b = boot(udisk)
        assert_booted(b, "B")
        outcomes.append((round(delays[i], 3), "cut" if cut.killed_at is not None else "no cut",
                         "committed" if after_cut["BOOT_B_LEFT"] == "3" else "not committed"))
    print(f"mark-good power cuts tried: {count}: {outcomes}")
    record("uboot_mark_good_power_cuts_tried", count)
