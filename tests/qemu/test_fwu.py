"""The TF-A model (tests/qemu/tfa.py) and the STM32MP profile on FWU metadata
(issue 14 items 1, 4, 5): host tests of the model's rules (the metadata as TF-A
loads it, the bank and the trial counter as plat_fwu_get_boot_idx picks them),
then QEMU boots of an STM32MP disk through the model: bank A on bookworm's 6.1,
bank B on 6.12, two updates committed in a row, a failed trial rolled back, a
corrupt primary copy repaired, v1 metadata, and a sample of the crash states of
slotinit's FWU commit (tests/crash/fwucommit.py runs them all)."""
import shutil
import os
import struct
import sys
from pathlib import Path

import pytest

import guest
import qemudriver
import rpifw
import tfa

REPO = qemudriver.REPO
sys.path.insert(0, str(REPO / "tests/crash"))
os.environ.setdefault("SLOTINIT", str(rpifw.slotinit_bin()))
KREL = rpifw.releases()
A, V, I = tfa.ACCEPTED, tfa.VALID, tfa.INVALID


@pytest.fixture(scope="session", autouse=True)
def artifacts():
    """Overrides conftest's: the host tests need nothing built, and the model builds
    its own initramfs per kernel (no out/initramfs.img): see `boots`."""


@pytest.fixture(scope="session")
def boots():
    """What a boot through the model needs: a missing slotinit or kernel fails, never
    skips."""
    if why := rpifw.missing_artifacts():
        pytest.fail(why)


# --- the metadata as TF-A loads it ---------------------------------------------------

def test_fixture_sizes_and_fields_follow_the_structures():
    one, two = tfa.v1(1, 0, ((0, 1),)), tfa.v2(1, 0, (A, V))
    assert (len(one), len(two)) == (96, 120)
    # v1: crc, version, active, previous; image 0: type, location, bank 0 {guid, accepted}
    assert struct.unpack_from("<IIII", one) == (struct.unpack_from("<I", one)[0], 1, 1, 0)
    assert one[16:32] == tfa.FIP_TYPE.bytes_le
    assert struct.unpack_from("<I", one, 16 + 32 + 16)[0] == 0          # bank 0 not accepted
    assert struct.unpack_from("<I", one, 16 + 32 + 24 + 16)[0] == 1     # bank 1 accepted
    # v2 header: metadata_size 120, descriptor at 0x20, bank_state[4]
    assert struct.unpack_from("<IHH", two, 16) == (120, 0x20, 0)
    assert two[24:28] == bytes([A, V, 0xFF, 0xFF])
    assert struct.unpack_from("<BBHHH", two, 32) == (2, 0, 1, 80, 24)
    for data in (one, two):
        import zlib
        assert struct.unpack_from("<I", data)[0] == zlib.crc32(data[4:])


@pytest.mark.parametrize("data,tfa_version,why", [
    (tfa.v2(0, 0, (A, A)), 2, None),
    (tfa.v1(0, 0), 1, None),
    # HEAD reads only v2; v2.10 never looks at the version field
    (tfa.v1(0, 0), 2, "read 96 bytes instead of 120"),
    (tfa.v1(0, 0) + bytes(24), 2, "incorrect FWU metadata version 1"),
    (tfa.v1(0, 0, version=7), 1, None),
    (tfa.v2(0, 0, version=3), 2, "incorrect FWU metadata version 3"),
    (tfa.v2(2, 0), 2, "index out of range: active 2"),
    (tfa.v2(0, 5), 2, "index out of range: active 0, previous 5"),
    (tfa.v1(2, 0), 1, "index out of range"),
    (tfa.v2(size=121), 2, "metadata size 121 out of range"),
    (tfa.v2(size=31), 2, "metadata size 31 out of range"),
    (tfa.v2(desc_offset=0x28), 2, "descriptor offset 0x28"),
    (tfa.v2(num_banks=3), 2, "number of banks 3"),
    # the CRC covers bytes 4..metadata_size: a byte past it does not count
    (tfa.v2(size=100), 2, None),
    (tfa.v2()[:60] + b"\x01" + tfa.v2()[61:], 2, "CRC check failed"),
    (tfa.v1()[:60] + b"\x01" + tfa.v1()[61:], 1, "CRC check failed"),
    (b"\xff" * 4096, 2, "incorrect FWU metadata version"),
    (bytes(4096), 1, "CRC check failed"),
], ids=lambda x: None if isinstance(x, (int, str)) or x is None else "copy")
def test_load_applies_tfas_checks(data, tfa_version, why):
    if why is None:
        assert tfa.load(data, tfa_version)
    else:
        with pytest.raises(ValueError, match=why):
            tfa.load(data, tfa_version)


def test_load_v1_derives_trial_from_the_accepted_words():
    md = tfa.load(tfa.v1(1, 0, ((1, 0),)), 1)
    assert (md.active, md.previous, md.trial()) == (1, 0, True)
    assert md.accepted == [[1, 0]]
    assert not tfa.load(tfa.v1(0, 1, ((1, 0),)), 1).trial()


# U-Boot's own tool's output (tools/fwumdata_src/mkfwumdata.c, as the fwu backend's
# tests record it in src/state/fwu/tests.rs): `-v 1 -i 1 -b 2 -a 0 -p 1` and
# `-v 2 -i 1 -b 2 -a 1 -p 0`, UUIDs 0000000N-0000-4000-8000-00000000000N.
MKFWUMDATA_V1 = bytes.fromhex(
    "506ba324010000000000000001000000000000020000400080000000000000020000000100004000"
    "80000000000000010000000300004000800000000000000301000000000000000000000400004000"
    "80000000000000040100000000000000")
MKFWUMDATA_V2 = bytes.fromhex(
    "03c095930200000001000000000000007800000020000000fcfcffff000000000200010050001800"
    "00000002000040008000000000000002000000010000400080000000000000010000000300004000"
    "80000000000000030100000000000000000000040000400080000000000000040100000000000000")


def test_mkfwumdata_output_loads_and_matches_the_fixtures_but_for_guids():
    one, two = tfa.load(MKFWUMDATA_V1, 1), tfa.load(MKFWUMDATA_V2, 2)
    assert (one.active, one.previous, one.accepted) == (0, 1, [[1, 1]])
    assert (two.active, two.previous, two.states, two.size) == (1, 0, [A, A], 120)
    assert not two.fip      # its image type is 00000002-...: HEAD's BL2 would panic
    # the GUIDs: image type, location, bank 0's image, bank 1's image
    v1_guids = (range(16, 32), range(32, 48), range(48, 64), range(72, 88))
    v2_guids = tuple(range(r.start + 24, r.stop + 24) for r in v1_guids)
    for ours, theirs, guids in ((tfa.v1(0, 1), MKFWUMDATA_V1, v1_guids),
                                (tfa.v2(1, 0), MKFWUMDATA_V2, v2_guids)):
        assert len(ours) == len(theirs)
        diff = [i for i in range(4, len(ours))
                if ours[i] != theirs[i] and not any(i in r for r in guids)]
        assert diff == [], diff


# --- the bank and the counter: plat_fwu_get_boot_idx -----------------------------------

def md2(active, previous, states):
    return tfa.load(tfa.v2(active, previous, states), 2)


@pytest.mark.parametrize("active,previous,states,counter,want", [
    # accepted: counter re-armed to FWU_MAX_TRIAL_REBOOT, whatever it was
    (0, 0, (A, A), 0, (0, 3)),
    (0, 1, (A, V), 1, (0, 3)),
    (1, 0, (A, A), 2, (1, 3)),
    # a trial: decrement while not 0, boot the active bank
    (1, 0, (A, V), 3, (1, 2)),
    (1, 0, (A, V), 2, (1, 1)),
    (1, 0, (A, V), 1, (1, 0)),
    # 0: the alternate bank (the previous one, accepted), counter stays 0
    (1, 0, (A, V), 0, (0, 0)),
    # the previous bank not accepted: the alternate walk finds the other accepted one
    # (two banks: none), then the previous one if valid
    (1, 0, (V, V), 0, (0, 0)),
    (1, 0, (I, V), 0, (None, 0)),
    # invalid active bank: the alternate one, counter cleared
    (1, 0, (A, I), 3, (0, 0)),
    (0, 0, (I, I), 3, (None, 0)),
    # an unknown state byte is "invalid" too
    (0, 1, (0x00, A), 2, (1, 0)),
])
def test_select_v2(active, previous, states, counter, want):
    bank, after, log = tfa.select(md2(active, previous, states), counter, 2)
    assert (bank, after) == want
    assert bool(log) == (states[active] != A and (counter == 0 or states[active] != V))


@pytest.mark.parametrize("active,previous,accepted,counter,want", [
    (0, 0, ((1, 1),), 0, (0, 3)),
    (1, 0, ((1, 0),), 3, (1, 2)),
    (1, 0, ((1, 0),), 1, (1, 0)),
    (1, 0, ((1, 0),), 0, (0, 0)),
    # v2.10 takes previous_active_index with no look at its state
    (1, 1, ((0, 0),), 0, (1, 0)),
    (0, 1, ((0, 1),), 0, (1, 0)),
])
def test_select_v1(active, previous, accepted, counter, want):
    md = tfa.load(tfa.v1(active, previous, accepted), 1)
    assert tfa.select(md, counter, 1)[:2] == want


def test_a_trial_boots_three_times_then_the_previous_bank():
    md = md2(1, 0, (A, V))
    counter, banks = 3, []
    for _ in range(5):
        bank, counter, _ = tfa.select(md, counter, 2)
        banks.append(bank)
    assert banks == [1, 1, 1, 0, 0]


def test_accepted_rearms_the_counter_across_updates():
    """The ST user's report (counts 4, 3, 2 across successful updates) is a counter
    never re-armed: each accepted boot sets it to 3 again, so every update's trial
    starts at 3."""
    counter, seen = 0, []
    mds = [md2(0, 0, (A, A)), md2(1, 0, (A, V)), md2(1, 0, (A, A)), md2(0, 1, (V, A)),
           md2(0, 1, (A, A)), md2(1, 0, (A, V))]
    for md in mds:
        before = counter
        _, counter, _ = tfa.select(md, counter, 2)
        if md.trial():
            seen.append(before)
    assert seen == [3, 3, 3]


@pytest.mark.parametrize("text,want", [
    ("DEFAULT x\nLABEL y\n LINUX /a\nLABEL x\n KERNEL /b\n INITRD /i\n APPEND q=1\n",
     ("/b", "/i", "q=1")),
    ("# c\nlabel one\n  linux /k\n", ("/k", None, "")),
    ("", None),
])
def test_parse_extlinux(text, want):
    assert tfa.parse_extlinux(text) == want


# --- the register across a chain (a fake QEMU) --------------------------------------------

def fake_disk(tmp_path, copies):
    """A disk with metadata1/2 and a bootfs per bank holding extlinux.conf and a
    (fake) kernel, through qemu/mkdisk --extra."""
    files = []
    args = ["--names", "- bootfs-a bootfs-b - - -", "--sizes", "1 2 2 1 1 1"]
    for slot in "ab":
        d = tmp_path / f"bootfs_{slot}"
        (d / "extlinux").mkdir(parents=True)
        (d / "Image").write_bytes(f"kernel-{slot}".encode())
        (d / "initrd").write_bytes(f"initrd-{slot}".encode())
        (d / tfa.EXTLINUX).write_text("LABEL l\n LINUX /Image\n INITRD /initrd\n APPEND x=1\n")
        args += [f"--boot-{slot}", d]
    for name, data in zip(tfa.METADATA, copies):
        f = tmp_path / f"{name}.bin"
        f.write_bytes(data)
        files.append(f)
        args += ["--extra", f"{name}:1:{f}:{tfa.MDATA_PART_TYPE}"]
    return guest.mkdisk(tmp_path / "fake.img", *args)


def test_pick_reads_the_disk_and_copies(tmp_path):
    disk = fake_disk(tmp_path, (tfa.v2(1, 0, (A, V)), tfa.v2(0, 0, (A, A))))
    names = [p.name for p in rpifw.read_gpt(disk)]
    assert names[-2:] == ["metadata1", "metadata2"], names
    p = tfa.pick(disk, 3)
    assert (p.bank, p.copy, p.counter_after, p.trial) == (1, 1, 2, True)
    assert p.blobs["kernel"] == b"kernel-b" and p.blobs["initramfs"] == b"initrd-b"
    assert p.cmdline == "x=1 rauc.slot=B"
    # a corrupt primary: the backup copy (accepted A here), with TF-A's warning
    tfa.write_copy(disk, 1, b"\0" * 120)
    p = tfa.pick(disk, 3)
    assert (p.bank, p.copy, p.counter_after) == (0, 2, 3)
    assert "metadata1: incorrect FWU metadata version 0" in p.log
    # both corrupt: TF-A panics
    tfa.write_copy(disk, 2, tfa.v2()[:50] + b"\x55" + tfa.v2()[51:])
    with pytest.raises(tfa.NoBoot, match="Bkup-FWU-Metadata failed"):
        tfa.pick(disk, 3)
    # no FIP entry in a valid v2 copy: plat_fwu_set_images_source panics
    tfa.write_copy(disk, 1, tfa.v2(fip=False))
    with pytest.raises(tfa.NoBoot, match="No FIP image type"):
        tfa.pick(disk, 3)


def test_the_register_survives_resets_not_power_loss(tmp_path, monkeypatch):
    disk = fake_disk(tmp_path, (tfa.v2(1, 0, (A, V)), tfa.v2(1, 0, (A, V))))
    ends = iter(["reboot: Restarting system\n", "Kernel panic - not syncing\n",
                 None, "reboot: Restarting system\n", "reboot: Restarting system\n"])

    appends = []

    def fake_run(script, args, timeout, cut=None, log=None, **kw):
        assert script == "run"
        a = list(map(str, args))
        appends.append(a[a.index("--append") + 1])
        end = next(ends)
        if end is None:
            return qemudriver.Run("", -9, killed_at=1.0)
        return qemudriver.Run(end, 0)

    monkeypatch.setattr(qemudriver, "run", fake_run)
    m = tfa.Tfa(disk, tmp_path / "m")
    m.register = 3 << 4 | 0
    out = m.run(2)          # two resets of B's trial: 3->2, 2->1
    assert [(e.slot, e.counter_before, e.counter_after, e.kind) for _, e in out] == [
        ("B", 3, 2, "reboot"), ("B", 2, 1, "panic")]
    assert m.register == 1 << 4 | 1
    b, ev = m.boot()        # a power cut: the backup domain is lost
    assert m.register == 0
    assert (ev.slot, ev.kind) == ("B", "power-cut")
    b, ev = m.boot()        # counter 0: TF-A's warning and bank A
    assert (ev.slot, ev.counter_before, ev.counter_after) == ("A", 0, 0)
    assert any("Trial FWU fails 3 times" in l for l in ev.log)
    assert [a.split()[-1] for a in appends] == ["rauc.slot=B"] * 3 + ["rauc.slot=A"]
    m2 = tfa.Tfa(disk, tmp_path / "m2", vbat=True)
    m2.register = 2 << 4
    ends = iter([None])
    b, ev = m2.boot()       # with VBAT the cut keeps it
    assert m2.counter == 1 and ev.kind == "power-cut"
    assert "counter 2->1" in m2.chain()
    assert not list(Path(tmp_path / "m").glob("boot-*"))


# --- QEMU: the STM32MP profile booted through the model -----------------------------------

def status_json(text, marker="=== STATUS ==="):
    """The `slotinit status --json` object printed after `marker`."""
    return guest.json_after(text, marker)


def states(disk, tfa_version=2):
    """(active, previous, bank states) of each copy, as TF-A loads them (None: invalid)."""
    out = []
    for data in tfa.read_copies(disk):
        try:
            md = tfa.load(data, tfa_version)
            out.append((md.active, md.previous, md.states if tfa_version == 2 else md.accepted))
        except ValueError:
            out.append(None)
    return out


@pytest.fixture(scope="module")
def stm_disk(tmp_path_factory, boots):
    """An STM32MP disk, built once: v2 metadata with A accepted in both copies;
    bootfs-a with 6.1 and bootfs-b with 6.12, each rootfs with its kernel's modules."""
    work = tmp_path_factory.mktemp("stm32mp")
    md = tfa.v2(0, 0, (A, A))
    disk = tfa.make_disk(work / "base.img", work / "build", (md, md))
    yield disk
    shutil.rmtree(work, ignore_errors=True)


def fresh(stm_disk, tmp_path, name="disk.img"):
    import crashlib
    out = tmp_path / name
    crashlib.copy_image(stm_disk, out)
    return out


def test_updates_commit_rearm_and_a_failed_trial_rolls_back(stm_disk, tmp_path):
    """Bank A (6.1) commits an update to B (6.12), B commits one back to A: each
    trial starts from a full counter (the ST report, counts 4, 3, 2 across updates,
    does not happen); then B's trial never reaches init: after three trial boots
    TF-A boots A, slotinit on A says so and marks B invalid, B never accepted;
    meanwhile a corrupt primary copy is read past and repaired. The
    mark-active and mark-good writes are logged: a sample of their crash states is
    checked on the host (tests/crash/fwucommit.py boots them all)."""
    import crashlib
    import fwucommit
    disk = fresh(stm_disk, tmp_path)
    m = tfa.Tfa(disk, tmp_path / "model")
    rel = {0: KREL["a"], 1: KREL["b"]}
    bases, logs = {}, {}

    def boot(append, expect_kind, log_as=None):
        if log_as:
            bases[log_as] = tmp_path / f"{log_as}.base.img"
            crashlib.copy_image(disk, bases[log_as])
            m.write_log = logs[log_as] = tmp_path / f"{log_as}.log"
        b, ev = m.boot(append=append, log=tmp_path / f"boot-{len(m.history) + 1}.log")
        m.write_log = None
        assert ev.kind == expect_kind, f"{m.chain()}\n{b.console[-3000:]}"
        if b.reported:
            # the bank's own kernel, rauc.slot= from the bank, the profile's mounts
            assert ev.kernel == rel[ev.bank], m.chain()
            assert f"rauc.slot={ev.slot}" in b.fields["cmdline"]
            assert b.fields["slot-name"] == f"rootfs-{ev.slot.lower()}"
            assert b.mount("/").readonly
            assert b.mount("/usr/local").source == b.links()["persistent"][1]
        return b, ev

    # 1: A accepted (the register re-armed to 3); the update client arms B's trial.
    b, ev = boot("test.run=update", "reboot", log_as="mark-active")
    assert (ev.slot, ev.counter_after) == ("A", 3)
    s = status_json(b.console)
    assert (s["booted_slot"], s["boot"]) == ("a", "committed"), s
    assert states(disk) == [(1, 0, [A, V])] * 2
    # 2: B's trial, 3 -> 2; its health check commits it in both copies.
    b, ev = boot("test.run=commit", "reboot", log_as="mark-good")
    assert (ev.slot, ev.trial, ev.counter_before, ev.counter_after) == ("B", True, 3, 2)
    assert status_json(b.console)["boot"] == "trial"
    assert "mark-good-exit=0" in b.console
    assert status_json(b.console, "=== COMMITTED ===")["boot"] == "committed"
    assert states(disk) == [(1, 0, [A, A])] * 2
    # 3: B accepted: the counter is full again (2 -> 3); the next update arms A's trial.
    b, ev = boot("test.run=update", "reboot")
    assert (ev.slot, ev.trial, ev.counter_before, ev.counter_after) == ("B", False, 2, 3)
    assert states(disk) == [(0, 1, [V, A])] * 2
    # 4: A's trial starts at 3 like the first one did, not at 2; committed.
    b, ev = boot("test.run=commit", "reboot")
    assert (ev.slot, ev.trial, ev.counter_before, ev.counter_after) == ("A", True, 3, 2)
    assert "mark-good-exit=0" in b.console
    assert states(disk) == [(0, 1, [A, A])] * 2
    # 5: A accepted (3 again); a third update arms B's trial.
    b, ev = boot("test.run=update", "reboot")
    assert (ev.slot, ev.counter_before, ev.counter_after) == ("A", 2, 3)
    # 6, 7, 8: B's trial never reaches an init (the kernel panics, a reset): 2, 1, 0 left.
    for left in (2, 1, 0):
        b, ev = boot("rdinit=/nonexistent", "panic")
        assert (ev.slot, ev.counter_after, b.reported) == ("B", left, False), m.chain()
    # The primary copy gets corrupt (on the host) before the next reset.
    good = tfa.read_copies(disk)[1][:120]
    tfa.write_copy(disk, 1, good[:40] + bytes([good[40] ^ 0xFF]) + good[41:])
    assert states(disk)[0] is None
    # 9: counter 0: TF-A warns and boots A, from the secondary copy.
    b, ev = boot("test.run=status", "poweroff")
    assert (ev.slot, ev.copy, ev.counter_before) == ("A", 2, 0), m.chain()
    assert any("Trial FWU fails 3 times" in line for line in ev.log)
    s = status_json(b.console)
    assert (s["booted_slot"], s["boot"]) == ("a", "committed"), s
    assert "not the active bank 1" in (s["last_fallback"] or ""), s
    # B was never accepted: slotinit followed TF-A (B invalid, A active) in both
    # copies, the primary repaired from the secondary first.
    assert states(disk) == [(0, 1, [A, I])] * 2
    assert tfa.read_copies(disk)[0][:120] == tfa.read_copies(disk)[1][:120]
    assert (tfa.pick(disk, 0).bank, tfa.pick(disk, 0).counter_after) == (0, 3)
    guest.record("fwu_chain", m.chain())

    # A sample of the crash states of both logged operations: every state checked on
    # the host (TF-A finds a copy, a bank and its kernel, with the register lost or
    # kept); fwucommit.py boots them all.
    counters = {"mark-active": 3, "mark-good": 2}
    pairs = {"mark-active": ((0, 0, [A, A]), (1, 0, [A, V])),
             "mark-good": ((1, 0, [A, V]), (1, 0, [A, A]))}
    for op in fwucommit.OPS:
        mds = [tfa.Mdata(2, a, p, s, [], 120) for a, p, s in pairs[op]]
        r = fwucommit.run_op(op, bases[op], logs[op], counters[op], mds, tmp_path / f"c-{op}",
                             boots=0, max_torn=10, log=lambda *_: None)
        assert r.writes and r.flushes, r.summary()
        assert r.distinct >= 2 and not r.failures, r.summary() + "\n".join(r.failures)
        guest.record(f"fwu_crash_{op}", r.summary())


def test_v1_metadata_commits_in_place(stm_disk, tmp_path):
    """Devices in the field keep v1 metadata (TF-A v2.10 reads it): B's trial
    boots through the v1 rules and slotinit accepts it in both copies, v1 kept."""
    disk = fresh(stm_disk, tmp_path)
    for n in (1, 2):
        tfa.write_copy(disk, n, tfa.v1(1, 0, ((1, 0),)) + bytes(24))
    m = tfa.Tfa(disk, tmp_path / "model", tfa=1)
    m.register = 3 << tfa.CNT_SHIFT
    b, ev = m.boot(append="test.run=accept", log=tmp_path / "v1.log")
    assert (ev.kind, ev.slot, ev.trial, ev.counter_after) == ("poweroff", "B", True, 2), \
        f"{m.chain()}\n{b.console[-3000:]}"
    assert ev.kernel == KREL["b"]
    assert status_json(b.console)["boot"] == "trial"
    assert "mark-good-exit=0" in b.console, b.test_run
    assert status_json(b.console, "=== COMMITTED ===")["boot"] == "committed"
    for data in tfa.read_copies(disk):
        assert struct.unpack_from("<I", data, 4)[0] == 1          # still version 1
        md = tfa.load(data, 1)
        assert (md.active, md.previous, md.accepted) == (1, 0, [[1, 1]])
    # and TF-A v2.10 now re-arms the counter on B
    assert tfa.pick(disk, 2, 1).counter_after == 3
