"""Issue 15: Debian's RAUC installs signed bundles on a Raspberry Pi (the firmware
model, rpi-tryboot, slot A on 6.1 and B on 6.12) with slotinit as RAUC's custom
backend: install, trial, health check, commit or rollback, and refused bundles.
rauclib.py says how the systems and bundles are made."""
import hashlib
import re
import shutil

import pytest

import guest
import rauclib
import rpifw
from guest import REPO

CONF = REPO / "debian-image/rauc/system-rpi.conf"
PROFILE = REPO / "configs/rpi-ab-userdata.toml"
# The persistent partition holds the bundles (~12 MB each).
SIZES = "16 96 96 48 48 96"


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    if why := rpifw.missing_artifacts():
        pytest.fail(why)
    return rauclib.kit(tmp_path_factory.mktemp("rauc-rpi"), CONF,
                       ("good", "health-fail", "no-init", "other-ca", "unsigned", "tampered"))


@pytest.fixture(scope="module")
def disk(kit):
    """The shipped rpi profile (backend rpi-tryboot), both systems with RAUC, the
    bundles on persistent."""
    path = kit.work / "disk.img"
    persistent = rauclib.persistent_dir(kit)
    rpifw.make_disk(path, kit.work / "disk", config=PROFILE.read_text(),
                    systems=(kit.systems["a"], kit.systems["b"]),
                    mkdisk_args=("--sizes", SIZES, "--persistent-dir", persistent))
    shutil.rmtree(persistent)
    return path


def fresh(disk, tmp_path):
    d = tmp_path / "disk.img"
    shutil.copyfile(disk, d)
    return rauclib.PiChain(d, tmp_path / "work")


def partition_digest(disk, name):
    part = {p.name: p for p in rpifw.read_gpt(disk)}[name]
    h = hashlib.sha256()
    with open(disk, "rb") as f:
        f.seek(part.first)
        h.update(f.read(part.size))
    return h.hexdigest()


def install(chain, bundle, tmp_path):
    """Boot A and `rauc install` `bundle`: RAUC took A as booted, wrote B, made it primary."""
    v = rauclib.step(chain, "rauc-install", f"test.bundle={bundle}",
                     log=tmp_path / f"install-{bundle}.log")
    assert v.value("install-exit") == "0", v.tail()
    assert rauclib.agree(v, "before") == "A"
    assert rauclib.agree(v, "after") == "A"
    booted, primary, slots = rauclib.rauc_summary(v.rauc("after"))
    assert primary == "rootfs.1", (slots, v.tail())
    assert v.slotinit("after")["booted_slot"] == "a"
    return v


def committed_b(views, chain):
    """The last boot is the bundle's system in B, committed by its health check."""
    last = views[-1]
    assert last.kind == "poweroff", chain.record()
    rauclib.trial_committed(last, chain.record())


def test_install_trial_commit(disk, tmp_path):
    """Booted A: rauc install writes B and arms its trial (set-primary = slotinit
    mark-active); the client's plain reboot; slotinit re-arms the trial (tryboot); B
    boots its own kernel as a trial; the health check passes and commits; the next
    power-on boots B by default. rauc status and slotinit status agree at each step."""
    chain = fresh(disk, tmp_path)
    t0 = rauclib.time.monotonic()
    install(chain, "good", tmp_path)
    views = rauclib.until_poweroff(chain, 4, tmp_path)
    committed_b(views, chain)
    guest.record("rauc-rpi-install-to-committed-s", round(rauclib.time.monotonic() - t0, 1))
    # The firmware's own word: autoboot.txt now boots B, no tryboot.
    assert chain.pi.pick().partition == 3, chain.record()
    v = rauclib.step(chain, "rauc-check", log=tmp_path / "after.log")
    assert v.kind == "poweroff" and v.slot_name == "update-good", chain.record()
    assert rauclib.agree(v, "before") == "B"
    assert v.slotinit("before")["boot"] == "committed"
    print(chain.record())


def rolled_back(views, chain, bundle, attempts=3):
    """A trial that never passed its health check: the firmware and slotinit give
    it up within `attempts` trial boots; A runs again, committed, and RAUC shows
    B bad, as slotinit does."""
    last = views[-1]
    assert last.kind == "poweroff" and last.slot_name == "system_a", chain.record()
    trials = [v for v in views if v.slot_name == f"update-{bundle}"]
    assert len(trials) <= attempts, chain.record()
    assert rauclib.agree(last, "before") == "A"
    assert last.slotinit("before")["boot"] == "committed", last.slotinit("before")
    _, primary, slots = rauclib.rauc_summary(last.rauc("before"))
    assert primary == "rootfs.0", (slots, chain.record())
    assert slots["rootfs.1"][1] == "bad", (slots, chain.record())
    assert slots["rootfs.0"] == ("booted", "good"), slots
    return trials


def test_failed_trials_roll_back_and_the_next_install_works(disk, tmp_path):
    """A bundle whose system fails its health check: B is tried (each time through
    the firmware's tryboot) at most `attempts` (3) times, then A, B bad in rauc
    status. Then a bundle whose init never starts: slotinit in B's initramfs finds
    no init, the trial ends at once, A again, B bad. Then the good bundle installs,
    and its trial commits."""
    chain = fresh(disk, tmp_path)
    install(chain, "health-fail", tmp_path)
    views = rauclib.until_poweroff(chain, 10, tmp_path, tag="health-fail")
    trials = rolled_back(views, chain, "health-fail")
    assert trials and all(v.value("health") == "fail" for v in trials), chain.record()
    assert all(v.slotinit("before")["boot"] == "trial" for v in trials)
    assert all(rauclib.agree(v, "before") == "B" for v in trials)
    guest.record("rauc-rpi-health-fail-boots", {"trials": len(trials), "boots": len(views) + 1})
    install(chain, "no-init", tmp_path)
    views = rauclib.until_poweroff(chain, 10, tmp_path, tag="no-init")
    rolled_back(views, chain, "no-init")
    # No boot ever reached B's (missing) init: the report is A's only.
    assert not any(v.slot_name not in (None, "system_a") for v in views), chain.record()
    guest.record("rauc-rpi-no-init-boots", len(views) + 1)
    install(chain, "good", tmp_path)
    committed_b(rauclib.until_poweroff(chain, 4, tmp_path, tag="good"), chain)
    print(chain.record())


def test_bundles_not_signed_by_the_keyring_are_refused(disk, tmp_path):
    """Signed by another CA, unsigned, tampered after signing: rauc install refuses
    each before writing anything; B's partition is unchanged bit for bit and the
    boot state is as before (A committed and primary)."""
    chain = fresh(disk, tmp_path)
    before = partition_digest(chain.pi.disk, "system_b")
    v = rauclib.step(chain, "rauc-install", "test.bundle=other-ca,unsigned,tampered "
                     "test.after=poweroff", log=tmp_path / "refused.log")
    assert v.kind == "poweroff", chain.record()
    for name in ("other-ca", "unsigned", "tampered"):
        assert v.value(f"install-exit[{name}]") not in (None, "0"), (name, v.tail())
    # Each for its own reason (rauc's LastError, in the order installed).
    errors = re.findall(r"LastError: (.*)", v.console)
    assert len(errors) == 3, v.tail()
    assert "signature verification failed" in errors[0], errors   # not our CA
    assert "Signature size is 0" in errors[1], errors               # no signature
    assert "signature verification failed" in errors[2], errors   # payload changed
    assert rauclib.agree(v, "after") == "A"
    # RAUC's view and slotinit's are those of before the attempts: A primary, and B
    # as a fresh Pi has it (not bootable until a trial is armed: RAUC's "bad").
    assert rauclib.rauc_summary(v.rauc("after")) == rauclib.rauc_summary(v.rauc("before"))
    assert rauclib.rauc_summary(v.rauc("after"))[1] == "rootfs.0"
    assert v.slotinit("after")["boot"] == "committed"
    assert v.slotinit("after")["store"] == v.slotinit("before")["store"]
    assert partition_digest(chain.pi.disk, "system_b") == before
    assert chain.pi.pick().partition == 2 and not chain.pi.tryboot
