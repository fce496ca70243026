"""Issue 15: Debian's RAUC installs signed bundles on a Raspberry Pi (the firmware
model, rpi-tryboot, slot A on 6.1 and B on 6.12) with slotinit as RAUC's custom
backend: install, trial, health check, commit or rollback, and refused bundles.
rauclib.py says how the systems and bundles are made."""
import hashlib
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
                       ("good", "health-fail", "no-init", "other-ca", "unsigned"))


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
    assert last.slot_name == "update-good", (last.slot_name, chain.record())
    assert rauclib.agree(last, "before") == "B"
    assert last.slotinit("before")["boot"] == "trial", last.slotinit("before")
    assert last.value("mark-good-exit") == "0", last.tail()
    assert rauclib.agree(last, "after") == "B"
    assert last.slotinit("after")["boot"] == "committed", last.slotinit("after")
    _, primary, slots = rauclib.rauc_summary(last.rauc("after"))
    assert primary == "rootfs.1" and slots["rootfs.1"] == ("booted", "good"), slots


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
