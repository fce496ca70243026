"""Issue 15 item 3: Debian's RAUC installs signed bundles on an STM32MP layout with
Arm FWU metadata, TF-A picking the bank (the TF-A model, tests/qemu/tfa.py; configs/
stm32mp.toml, backend fwu-metadata). RAUC has no FWU backend: slotinit is its custom
backend (debian-image/rauc/system-fwu.conf). Bank 0 (slot A) boots 6.1 from
bootfs-a, bank 1 (slot B) 6.12 from bootfs-b; the bundle replaces rootfs-b only.
rauclib.py says how the systems and bundles are made.

One chain: an install whose image cannot start (no /sbin/init) arms B's trial;
the trial ends back on A within TF-A's 3 trial boots (in one: slotinit itself
rejects a bank whose system has no init); from A the next install (good) arms B
again, whose health check accepts it. After every boot the metadata
is read on the host (both copies, as TF-A loads them) and must say what rauc status
and slotinit status said at that boot's end.
"""
import shutil

import pytest

import guest
import rauclib
import rpifw
import tfa
from guest import REPO

CONF = REPO / "debian-image/rauc/system-fwu.conf"
# tfa.SIZES with a userfs for two bundles (~12 MB each) and RAUC's data directory.
SIZES = "1 64 64 48 48 64"
A, V, I = tfa.ACCEPTED, tfa.VALID, tfa.INVALID
BANK = {"rootfs.0": 0, "rootfs.1": 1}


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    if why := rpifw.missing_artifacts():
        pytest.fail(why)
    return rauclib.kit(tmp_path_factory.mktemp("rauc-fwu"), CONF, ("good", "no-init"))


@pytest.fixture(scope="module")
def disk(kit):
    """v2 metadata, bank 0 (A) active and both banks accepted, in both copies."""
    persistent = rauclib.persistent_dir(kit)
    md = tfa.v2(0, 0, (A, A))
    # The kit's systems in rootfs-a/b, the bundles on a bigger userfs.
    path = tfa.make_disk(kit.work / "disk.img", kit.work / "disk", (md, md),
                         systems=kit.systems,
                         mkdisk_args=("--sizes", SIZES, "--persistent-dir", persistent))
    shutil.rmtree(persistent)
    return path


def metadata(disk):
    """(active, previous, bank states) of each copy as TF-A loads it; both must load."""
    out = []
    for data in tfa.read_copies(disk):
        md = tfa.load(data, 2)
        out.append((md.active, md.previous, md.states))
    return out


def claims_match_metadata(view, tag, md):
    """What rauc status says at a boot's end is what the metadata on the disk says
    (slotinit rauc-backend: primary = the active bank; a bank is good unless
    invalid)."""
    _, primary, slots = rauclib.rauc_summary(view.rauc(tag))
    active, _, states = md
    assert BANK[primary] == active, (primary, md)
    for name, bank in BANK.items():
        want = "bad" if states[bank] == I else "good"
        assert slots[name][1] == want, (name, slots, md)


def test_failed_trial_falls_back_then_install_commits(disk, tmp_path):
    """Booted A (accepted; its health check commits, tests/guest/rauc.d/chains-install):
    rauc install of a bundle without /sbin/init: RAUC writes
    rootfs-b and arms bank 1's trial through slotinit (both metadata copies: active 1,
    bank 1 valid). TF-A boots B's kernel as a trial; its system cannot start; within
    TF-A's 3 trial boots the board is back on A, where rauc status shows rootfs.1 bad,
    as the metadata does. From there the good bundle: B's trial, its health check
    accepts the bank (mark-good: both copies, bank 1 accepted). rauc status and
    slotinit status agree at every boot that reaches a system."""
    path = tmp_path / "disk.img"
    shutil.copyfile(disk, path)
    chain = rauclib.TfaChain(path, tmp_path / "model")
    m = chain.t
    n = 0

    def step(script, extra=""):
        nonlocal n
        n += 1
        v = rauclib.step(chain, script, extra, log=tmp_path / f"boot-{n}-{script}.log")
        ev = m.history[-1]
        if v.boot.reported:
            # the bank's own kernel, rauc.slot= of the bank
            assert ev.kernel == rpifw.releases()["ab"[ev.bank]], m.chain()
            assert f"rauc.slot={ev.slot}" in v.boot.fields["cmdline"], m.chain()
        return v, ev

    def install(bundle):
        v, ev = step("chains-install", f"test.bundle={bundle}")
        assert (ev.slot, ev.kind) == ("A", "reboot"), m.chain()
        assert rauclib.agree(v, "before") == "A"
        # the boot's health check first: A accepted (already so in the metadata)
        assert v.value("mark-good-exit") == "0", v.tail()
        assert rauclib.agree(v, "committed") == "A"
        assert v.slotinit("committed")["boot"] == "committed", v.slotinit("committed")
        assert v.value("install-exit") == "0", v.tail()
        assert rauclib.agree(v, "after") == "A"
        _, primary, slots = rauclib.rauc_summary(v.rauc("after"))
        assert (primary, slots["rootfs.1"][1]) == ("rootfs.1", "good"), slots
        md = metadata(path)
        # set-primary = mark-active b: bank 1 active and a trial, bank 0 previous.
        assert md == [(1, 0, [A, V])] * 2, (md, m.chain())
        claims_match_metadata(v, "after", md[0])
        return v, ev

    # 1: A (accepted: the register's counter re-armed to 3) installs the no-init bundle.
    v, ev = install("no-init")
    assert ev.counter_after == tfa.MAX_TRIALS, m.chain()
    # 2: B's trials: the system has no init.
    trials = 0
    while m.pick().slot == "B":
        assert trials < tfa.MAX_TRIALS, ("B booted more often than TF-A's trials", m.chain())
        v, ev = step("rauc-check")
        trials += 1
        assert ev.trial and ev.kind in ("reboot", "panic"), m.chain()
        assert v.slot_name is None, v.tail()     # its system never ran
        assert (ev.counter_before, ev.counter_after) == (
            tfa.MAX_TRIALS - trials + 1, tfa.MAX_TRIALS - trials), m.chain()
    # slotinit ends the trial itself on its first boot: B's system has no init, so
    # it marks bank 1 invalid and bank 0 active (both copies) and restarts through
    # the firmware, which boots A at once, without waiting for TF-A's count.
    assert trials == 1, m.chain()
    assert "trial of slot b rejected" in v.console, v.tail()
    md_fallback = metadata(path)
    assert md_fallback == [(0, 1, [A, I])] * 2, (md_fallback, m.chain())
    # 3: back on A: RAUC sees the failed trial (rootfs.1 bad), as the metadata; the
    # next install (good) arms B again.
    t0 = rauclib.time.monotonic()
    md_before = md_fallback
    v, ev = install("good")
    booted, primary, slots = rauclib.rauc_summary(v.rauc("before"))
    assert (booted, primary, slots["rootfs.1"][1]) == ("A", "rootfs.0", "bad"), (
        slots, md_before, m.chain())
    assert (ev.trial, ev.counter_after) == (False, tfa.MAX_TRIALS), m.chain()
    assert v.slotinit("before")["boot"] == "committed", v.slotinit("before")
    claims_match_metadata(v, "before", md_before[0])
    # 4: B's trial; the health check accepts it: both copies, bank 1 accepted.
    v, ev = step("rauc-check")
    assert (ev.slot, ev.trial, ev.kind) == ("B", True, "poweroff"), m.chain()
    assert (ev.counter_before, ev.counter_after) == (tfa.MAX_TRIALS, tfa.MAX_TRIALS - 1)
    rauclib.trial_committed(v, m.chain())
    md = metadata(path)
    assert md == [(1, 0, [A, A])] * 2, (md, m.chain())
    claims_match_metadata(v, "after", md[0])
    guest.record("rauc-fwu-install-to-committed-s", round(rauclib.time.monotonic() - t0, 1))
    # TF-A's next pick: bank 1, accepted, no trial.
    p = m.pick()
    assert (p.slot, p.trial) == ("B", False), m.chain()
    print(m.chain())
