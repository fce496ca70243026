"""Issue 15: power cuts during `rauc install` on the Raspberry Pi model, a few in CI
(the campaign of many is tests/crash/raucinstall.py; its docstring says what is
checked after each cut). One cut per phase, each from the same disk (A committed,
the good bundle and a canary on persistent): while RAUC checks and mounts the
bundle, while it writes B, and during the switch (set-primary B = slotinit's
mark-active: the trial record on bootconfig). After each the device powers on
until a health check passes and powers off."""
import shutil
import sys
from pathlib import Path

import pytest

import guest
import rpifw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "crash"))
import raucinstall  # noqa: E402

# Fixed delays after each phase's console line (tests/guest/rauc.d/cut-install):
# well inside the check (~2 s long here) and the write of B (~10 s); the switch's
# set-primary (a fraction of a second) is cut as soon as its line is seen.
CUTS = [raucinstall.Cut("check", 0.8), raucinstall.Cut("write", 3.0),
        raucinstall.Cut("switch", 0.0)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if why := rpifw.missing_artifacts():
        pytest.fail(why)
    work = tmp_path_factory.mktemp("rauc-powercut")
    yield raucinstall.build(work)
    shutil.rmtree(work, ignore_errors=True)   # the kit and a 512 MiB disk: nothing stays


@pytest.mark.parametrize("cut", CUTS, ids=[c.aimed for c in CUTS])
def test_power_cut_during_install(setup, cut, tmp_path):
    """A power cut in the phase aimed at: a slot boots and passes its health check
    (A before the switch; B only as the complete good image, committed), rauc status
    and slotinit status agree, no store error, persistent's canary and bundle intact
    and its fsck clean (or only the journal replayed)."""
    with raucinstall.timed_runs():
        r = raucinstall.one_cut(setup, cut, 1, tmp_path / "cut")
    print(r.line())
    assert r.phase == cut.aimed, r.line()
    assert r.failures == [], "\n".join(r.failures)
    assert r.fsck in ("clean", "journal replay"), r.fsck
    if cut.aimed in ("check", "write"):
        assert r.slot == "A", r.line()
    else:
        assert r.slot in ("A", "B"), r.line()
    guest.record(f"rauc-powercut-{cut.aimed}-s", round(r.wall, 1))
