#!/usr/bin/python3
"""Power cuts during `rauc install` on the Raspberry Pi model (issue 15 item 3).

The device: the rpi profile (configs/rpi-ab-userdata.toml, backend rpi-tryboot)
on a gpt/ab_userdata disk booted through the firmware model (tests/qemu/rpifw.py),
both slots running Debian's RAUC 1.8 with debian-image/rauc/system-rpi.conf
(tests/qemu/rauclib.py builds them as test_rauc_rpi.py does), slotinit as RAUC's
custom backend. Persistent holds the bundle and a canary file.

Each cut: booted A (committed), the guest script tests/guest/rauc.d/cut-install
runs `rauc install good.raucb` and the host cuts the power (a SIGKILL of QEMU:
the guest's page cache and everything in flight is lost, what it wrote stays)
a seeded delay after a console line of the phase aimed at:

- check:  "cut-install: install start" (RAUC checks the bundle's signature,
          mounts it);
- mark-bad: "cut-backend: set-state B bad start" (RAUC marks the target bad
          before writing it: slotinit's mark-bad, which on a fresh device
          creates the trial record's two files on bootconfig);
- write:  the client's "NN% Copying image to rootfs.1" (B is written, the bulk);
- switch: "cut-backend: set-primary B start" (RAUC's mark-active through the
          custom backend: slotinit arms B's trial on bootconfig).

The delay is drawn from [0, 0.9 x the phase's length] as an uncut install boot measured
it (the campaign's first boot; the CI test uses fixed delays), so a cut can land
in a later phase than the one aimed at: the cut is classified afterwards by the
last phase line the console shows (`phase_of`). The device then powers on again
(no tryboot flag: a power-on) and boots with tests/guest/rauc.d/rauc-check until
a power-off, at most 6 boots. Checked every time (`check_cut`):

- a boot runs the health check and passes it; every boot that ran it: rauc status
  and slotinit status agree on the booted slot (rauclib.agree), slotinit status
  shows no store error (store_error null, the record's error null);
- a boot of B runs the complete good image (slot-name update-good) and commits
  it (boot committed after mark-good, RAUC: rootfs.1 booted and good); B never
  boots unless set-primary started (its image may be partial before);
- otherwise A runs and RAUC shows it booted;
- persistent: the canary's and the bundle's sha256 are what was planted, and
  `e2fsck -fn` of the partition is clean, or clean after the journal's replay
  (`e2fsck -E journal_only`) on a copy.

The switch, as power loss and not a killed process (`--crash-boots`, default 4):
the uncut install boot runs with the SD card behind QEMU's blklogwrites
(Pi.write_log); its writes to bootconfig (the mount's, set-state B bad's,
set-primary B's) give crash states as tests/crash/README.md describes (crashlib:
prefixes, reorderings within a flush epoch, torn writes, with --garbage a sector
read as 0xff), each on top of the disk as the install left it everywhere else
(B written, persistent). Each is checked as the firmware reads it (the pick
without the tryboot flag must be partition 2 or 3), and a seeded sample (the
final state first) boots through the model with rauc-check as above.

  tests/crash/raucinstall.py --cuts N [--seed S] [--jobs J] [--aim PHASES] [--crash-boots N]
                             [--max-torn N] [--max-subsets N] [--garbage] [--keep DIR]
                             [--json FILE]

Exit 0: no failure; 1: failures. Everything lives in one /tmp/slotinit-crash.*
directory, removed on exit.
"""
import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "qemu"))
sys.path.insert(0, str(HERE))
import crashlib  # noqa: E402
import qemudriver  # noqa: E402
import rauclib  # noqa: E402
import rpifw  # noqa: E402

REPO = rpifw.REPO
CONF = REPO / "debian-image/rauc/system-rpi.conf"
PROFILE = REPO / "configs/rpi-ab-userdata.toml"
# test_rauc_rpi.py's layout: persistent holds the bundle (~14 MB).
SIZES = "16 96 96 48 48 96"
BOOTCONFIG, PERSISTENT = 1, 6
CANARY = "canary.bin"
CHECK_BOOTS = 6
SLOT_NAMES = {"A": "system_a", "B": "update-good"}

# The phases in install order, each with the console line that starts it.
PHASES = ("boot", "check", "mark-bad", "write", "switch", "after")
MARKS = {
    "check": r"cut-install: install start",
    "mark-bad": r"cut-backend: set-state B bad start",
    "write": r"^\s*\d+% Copying image to rootfs\.1\s*$",
    "switch": r"cut-backend: set-primary B start",
    "after": r"cut-backend: set-primary B exit",
}
AIMED = ("check", "mark-bad", "write", "switch")
# A cut aimed too late (the install and its reboot done before it): checked like
# the others, counted apart, not a failure of the device.
MISSED = "missed"


def phase_of(console):
    """How far the install got before the cut: the last phase whose line the console shows."""
    got = "boot"
    for ph in PHASES[1:]:
        if re.search(MARKS[ph], console, re.M):
            got = ph
    return got


# --- host timestamps of the console lines -------------------------------------------------
# rpifw.Pi.boot returns the report, not qemudriver's Run; the line times (host
# seconds since QEMU started) are taken from the Run on the way through.

_last_run = threading.local()
_hook_lock = threading.Lock()


def _hooked_run(*a, **kw):
    r = _orig_run(*a, **kw)
    _last_run.run = r
    return r


_orig_run = qemudriver.run


class timed_runs:
    """While active, `last_run()` is the calling thread's last qemudriver.Run."""

    def __enter__(self):
        with _hook_lock:
            qemudriver.run = _hooked_run
        return self

    def __exit__(self, *exc):
        with _hook_lock:
            qemudriver.run = _orig_run


def last_run():
    return getattr(_last_run, "run", None)


def mark_times(run):
    """{phase: host seconds of its line's first appearance} of one Run."""
    out = {}
    for t, line in run.lines if run else ():
        for ph, rx in MARKS.items():
            if ph not in out and re.search(rx, line):
                out[ph] = t
    return out


# --- the device ---------------------------------------------------------------------------

@dataclass
class Setup:
    work: Path
    disk: Path            # A committed, nothing installed yet: every cut starts here
    kit: rauclib.Kit
    digests: dict         # path on persistent -> sha256 planted


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def build(work, seed=1):
    """The kit (both systems, the good bundle), the canary, the disk."""
    work = Path(work)
    kit = rauclib.kit(work / "kit", CONF, ("good",))
    pdir = rauclib.persistent_dir(kit)
    canary = random.Random(f"{seed}:canary").randbytes(256 * 1024)
    (pdir / CANARY).write_bytes(canary)
    digests = {f"/{CANARY}": sha256(canary)}
    for b in sorted((pdir / "bundles").glob("*.raucb")):
        digests[f"/bundles/{b.name}"] = sha256(b.read_bytes())
    disk = rpifw.make_disk(work / "base.img", work / "disk", config=PROFILE.read_text(),
                           systems=(kit.systems["a"], kit.systems["b"]),
                           mkdisk_args=("--sizes", SIZES, "--persistent-dir", pdir))
    shutil.rmtree(pdir)
    for s in kit.systems.values():
        shutil.rmtree(s, ignore_errors=True)
    return Setup(work, disk, kit, digests)


def partition(disk, number):
    return next(p for p in rpifw.read_gpt(disk) if p.number == number)


def extract(disk, number, out):
    p = partition(disk, number)
    with open(disk, "rb") as src, open(out, "wb") as dst:
        src.seek(p.first)
        left = p.size
        while left:
            chunk = src.read(min(left, 1 << 22))
            if not chunk:
                break
            dst.write(chunk)
            left -= len(chunk)
    return Path(out)


def check_persistent(disk, setup, work):
    """(fsck verdict, failures) of persistent on `disk`: e2fsck -fn clean, or clean
    after the journal's replay on a copy; the planted files' sha256 unchanged."""
    work = Path(work)
    img = extract(disk, PERSISTENT, work / "persistent.img")
    fails = []
    try:
        r = subprocess.run(["e2fsck", "-fn", str(img)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        verdict = "clean"
        if r.returncode != 0:
            j = subprocess.run(["e2fsck", "-E", "journal_only", "-y", str(img)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            r2 = subprocess.run(["e2fsck", "-fn", str(img)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
            if r2.returncode == 0:
                verdict = "journal replay"
            else:
                verdict = "errors"
                fails.append(f"persistent: e2fsck -fn exit {r.returncode}:\n{r.stdout[-1500:]}\n"
                             f"after the journal's replay ({j.returncode}), still "
                             f"{r2.returncode}:\n{r2.stdout[-1500:]}")
        for path, want in setup.digests.items():
            out = work / "dumped"
            out.unlink(missing_ok=True)
            d = subprocess.run(["debugfs", "-R", f"dump {path} {out}", str(img)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            got = sha256(out.read_bytes()) if out.exists() else None
            if got != want:
                fails.append(f"persistent: {path} sha256 {got} != planted {want} ({d.stdout[-300:]})")
            out.unlink(missing_ok=True)
    finally:
        img.unlink(missing_ok=True)
    return verdict, fails


# --- one power-on after another until a power-off, checked ---------------------------------

def store_problem(si):
    """Why slotinit status JSON `si` shows a boot state check failure, or None."""
    if si.get("store_error") is not None:
        return f"store_error {si['store_error']!r}"
    if (si.get("store") or {}).get("error") is not None:
        return f"store record error {si['store']['error']!r}"
    return None


def check_views(views, chain, may_boot_b):
    """Failures of the boots after a power cut (rauc-check until a power-off); and
    the slot that ran last ("A", "B" or None)."""
    fails, last = [], None
    record = chain.record()
    ran = [v for v in views if v.ran("before")]
    if not ran:
        fails.append(f"no boot ran the health check:\n{record}")
    if not views or views[-1].kind != "poweroff":
        fails.append(f"no power-off (a passed health check) within {CHECK_BOOTS} boots:\n{record}")
    for v in ran:
        try:
            for tag in ("before", "after"):
                if tag == "after" and not v.ran("after"):
                    continue
                why = store_problem(v.slotinit(tag))
                if why:
                    fails.append(f"slotinit status {tag}: {why}")
            booted = rauclib.agree(v, "before")
            last = booted
            if v.slot_name != SLOT_NAMES.get(booted):
                fails.append(f"slot {booted} runs {v.slot_name!r}, not {SLOT_NAMES.get(booted)!r}")
            if booted == "B" and not may_boot_b:
                fails.append("B booted though set-primary never started (its image may be partial)")
            if v.kind == "poweroff":
                if v.value("mark-good-exit") != "0":
                    fails.append(f"slot {booted}: mark-good exit {v.value('mark-good-exit')}")
                assert rauclib.agree(v, "after") == booted
                after = v.slotinit("after")
                if after.get("boot") != "committed":
                    fails.append(f"slot {booted} not committed after mark-good: {after.get('boot')}")
                _, primary, slots = rauclib.rauc_summary(v.rauc("after"))
                if booted == "B" and (primary != "rootfs.1"
                                      or slots.get("rootfs.1") != ("booted", "good")):
                    fails.append(f"B committed but RAUC says primary {primary}, {slots}")
                if booted == "A" and slots.get("rootfs.0", (None,))[0] != "booted":
                    fails.append(f"A runs but RAUC says {slots}")
        except (AssertionError, ValueError, KeyError, TypeError) as e:
            fails.append(f"the views of a boot do not hold: {e!r}\n{v.tail(2500)}")
    return fails, last


# --- cuts ---------------------------------------------------------------------------------

@dataclass
class Cut:
    aimed: str
    delay: float


@dataclass
class CutResult:
    n: int
    cut: Cut
    phase: str = "?"
    cut_at: float = None        # host seconds into the install boot
    boots: int = 0              # after the cut
    slot: str = None            # the slot that passed its health check last
    fsck: str = "?"
    wall: float = 0.0
    failures: list = field(default_factory=list)

    def line(self):
        return (f"cut {self.n}: aimed at {self.cut.aimed} +{self.cut.delay:.3f}s, cut at "
                f"{self.cut_at if self.cut_at is None else round(self.cut_at, 2)}s in phase "
                f"{self.phase}; {self.boots} boots -> {self.slot or 'nothing'}; persistent "
                f"{self.fsck}; {self.wall:.0f}s; {len(self.failures)} failures")


def one_cut(setup, cut, n, work, keep=None):
    """One cut of an install on a copy of the setup's disk, then the power-ons."""
    t0 = time.monotonic()
    work = Path(work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    r = CutResult(n, cut)
    views = []
    disk = work / "disk.img"
    crashlib.copy_image(setup.disk, disk)
    chain = rauclib.PiChain(disk, work / "pi")
    try:
        b, ev = chain.pi.boot(append="test.run=cut-install test.bundle=good",
                              cut=(MARKS[cut.aimed], cut.delay), log=work / "install.log")
        run = last_run()
        r.cut_at = run.killed_at if run else None
        r.phase = phase_of(b.console)
        if ev.kind != "power-cut":
            if "install-exit=0" in b.console and ev.kind == "reboot":
                r.phase = MISSED
            else:
                r.failures.append(f"the install boot ended by {ev.kind}, not the cut "
                                  f"({ev.detail}):\n{b.console[-2500:]}")
        if "cut-install: install start" in b.console and "=== SLOTINIT-STATUS before ===" in b.console:
            try:
                why = store_problem(rauclib.guest.json_after(b.console,
                                                            "=== SLOTINIT-STATUS before ==="))
                if why:
                    r.failures.append(f"install boot, slotinit status before: {why}")
            except ValueError as e:
                r.failures.append(f"install boot: no slotinit status: {e!r}")
        views = rauclib.until_poweroff(chain, CHECK_BOOTS, log_dir=work)
        r.boots = len(views)
        fails, r.slot = check_views(views, chain, r.phase in ("switch", "after", MISSED))
        r.failures += fails
        r.fsck, fails = check_persistent(disk, setup, work)
        r.failures += fails
        if r.failures:
            r.failures.append(f"chain:\n{chain.record()}")
            if keep:
                dest = Path(keep) / f"cut-{n}"
                dest.mkdir(parents=True, exist_ok=True)
                for f in work.glob("*.log"):
                    shutil.copy(f, dest / f.name)
                r.failures.append(f"consoles kept in {dest}")
            elif views:
                r.failures.append(f"the last boot's console:\n{views[-1].tail(3000)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    r.wall = time.monotonic() - t0
    return r


def plan(n, spans, seed, aimed=AIMED):
    """`n` cuts, the aimed phases in turn (`aimed`), each delay seeded uniform in
    [0, 0.9 x the phase's measured length] (a boot under less load runs faster than
    the measured one)."""
    rng = random.Random(f"{seed}:cuts")
    return [Cut(aimed[i % len(aimed)], round(rng.uniform(0, 0.9 * spans[aimed[i % len(aimed)]]), 3))
            for i in range(n)]


# --- the logged install: the phases' lengths, the writes to bootconfig ---------------------

@dataclass
class Session:
    spans: dict
    times: dict
    wall: float
    rest: Path          # the disk after the install, bootconfig as before it
    entries: list       # the install boot's writes to bootconfig and its flushes
    first: int = 0      # bootconfig's first sector


def logged_install(setup, work):
    """The uncut install boot, the SD card behind blklogwrites."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    disk = work / "after.img"
    crashlib.copy_image(setup.disk, disk)
    pi = rpifw.Pi(disk, work / "pi", timeout=240)
    pi.write_log = work / "install.wlog"
    t0 = time.monotonic()
    b, ev = pi.boot(append="test.run=cut-install test.bundle=good", log=work / "install.log")
    wall = time.monotonic() - t0
    run = last_run()
    if "install-exit=0" not in b.console:
        raise RuntimeError(f"the logged install failed ({ev.kind}):\n{b.console[-4000:]}")
    times = mark_times(run)
    end = run.lines[-1][0] if run and run.lines else wall
    missing = [ph for ph in MARKS if ph not in times]
    if missing:
        raise RuntimeError(f"the install boot did not show {missing}:\n{b.console[-4000:]}")
    spans = {"check": times["mark-bad"] - times["check"],
             "mark-bad": times["write"] - times["mark-bad"],
             "write": times["switch"] - times["write"],
             "switch": max(times["after"] - times["switch"], 0.05),
             "after": end - times["after"]}
    part = partition(setup.disk, BOOTCONFIG)
    lo, hi = part.first // 512, (part.first + part.size) // 512 - 1
    entries = [e for e in crashlib.parse_log(pi.write_log)
               if e.flush or (e.write and lo <= e.sector <= hi)]
    entries = [crashlib.Entry(i, e.sector, e.nr, e.flags, e.data) for i, e in enumerate(entries)]
    Path(pi.write_log).unlink()
    first = lo
    # Everything but bootconfig as the install left it; bootconfig as before it.
    rest = work / "rest.img"
    crashlib.copy_image(disk, rest)
    with open(setup.disk, "rb") as src, open(rest, "r+b") as dst:
        src.seek(part.first)
        dst.seek(part.first)
        dst.write(src.read(part.size))
    disk.unlink()
    return Session(spans, times, wall, rest, entries, first)


TRIAL_FILES = ("autoboot.txt", "slotinit-trial.env", "slotinit-trial-redund.env")


def fat_verdict(img, part, work):
    """bootconfig of a state as the host reads it: fsck.vfat -n's verdict and which of
    autoboot.txt and the trial record pair (src/state/rpi/mod.rs) mcopy reads whole."""
    fat = Path(work) / "bootconfig.img"
    with open(img, "rb") as src, open(fat, "wb") as dst:
        src.seek(part.first)
        dst.write(src.read(part.size))
    rc, _ = crashlib.fsck_vfat(fat)
    bad = []
    for name in TRIAL_FILES:
        data = rpifw.Fat(fat).read(name)
        if data is None:
            bad.append(f"{name} unreadable")
    fat.unlink()
    return f"fsck.vfat {rc}" + "".join(f", {b}" for b in bad)


@dataclass
class CrashResult:
    writes: int = 0
    flushes: int = 0
    counts: dict = field(default_factory=dict)
    distinct: int = 0
    picks: dict = field(default_factory=dict)
    fat: dict = field(default_factory=dict)     # host verdict on bootconfig -> states
    booted: int = 0
    outcomes: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)

    def summary(self):
        return (f"install boot: {self.writes} writes and {self.flushes} flushes to bootconfig; "
                f"candidates {self.counts}; {self.distinct} distinct states, firmware picks "
                f"(power-on, tryboot) {self.picks}; bootconfig on the host {self.fat}; {self.booted} booted: {self.outcomes}; "
                f"{len(self.failures)} failures")


def crash_states(setup, session, work, rng, boots, max_torn=None, max_subsets=256,
                 garbage=False, log=print):
    """The crash states of the install boot's writes to bootconfig, host-checked;
    `boots` of them (the final one first) booted with rauc-check until a power-off."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    entries = session.entries
    r = CrashResult(writes=sum(e.write for e in entries), flushes=sum(e.flush for e in entries))
    if r.writes == 0:
        r.failures.append("no write to bootconfig was logged during the install")
        return r
    states, r.counts = crashlib.enumerate_states(entries, 0, len(entries), rng,
                                                 max_subsets=max_subsets, max_torn=max_torn,
                                                 garbage=garbage)
    seen = crashlib.distinct_states(session.rest, states)
    r.distinct = len(seen)
    part = partition(session.rest, BOOTCONFIG)
    img = work / "state.img"
    classes = {}        # host verdict -> states
    # The state after every write (the install as it ended): booted first.
    final = [st for st in states if st.kind == "prefix"][-1]
    for st in seen.values():
        crashlib.copy_image(session.rest, img)
        crashlib.apply(img, st.overlay)
        picks = []
        for flag in (False, True):
            try:
                picks.append(rpifw.pick(img, tryboot=flag, workdir=work / "pick").partition)
            except rpifw.NoBoot as e:
                picks.append(f"no-boot: {e}")
        key = f"{picks[0]},{picks[1]}"
        r.picks[key] = r.picks.get(key, 0) + 1
        if picks[0] not in (2, 3):
            r.failures.append(f"{st.kind} {st.desc}: after a power-on the firmware picks {picks[0]}")
        verdict = fat_verdict(img, part, work)
        r.fat[verdict] = r.fat.get(verdict, 0) + 1
        classes.setdefault(verdict, []).append(st)
        st.key = verdict
    img.unlink(missing_ok=True)
    # Booted: the final state, then one of each host verdict, then the rest in seeded order.
    order = [final]
    for v in sorted(classes):
        order.append(rng.choice(classes[v]))
    rest = [st for st in seen.values() if all(st is not o for o in order)]
    order += rng.sample(rest, len(rest))
    for st in order[:max(boots, 0)]:
        d = work / "boot"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        disk = d / "disk.img"
        crashlib.copy_image(session.rest, disk)
        crashlib.apply(disk, st.overlay)
        chain = rauclib.PiChain(disk, d / "pi")
        views = rauclib.until_poweroff(chain, CHECK_BOOTS)
        fails, slot = check_views(views, chain, True)
        r.booted += 1
        r.outcomes[slot or "nothing"] = r.outcomes.get(slot or "nothing", 0) + 1
        if fails:
            r.failures.append(f"{st.kind} {st.desc}: " + "\n".join(fails) + f"\n{chain.record()}")
        log(f"crash state {st.kind} {st.desc} ({st.key or 'final'}): {len(views)} boots -> {slot}, "
            f"{len(fails)} failures")
        shutil.rmtree(d, ignore_errors=True)
    return r


# --- the campaign -------------------------------------------------------------------------

def campaign(work, cuts, seed=1, jobs=1, crash_boots=4, max_torn=None, max_subsets=256,
             garbage=False, log=print, aimed=AIMED, keep=None):
    t0 = time.monotonic()
    work = Path(work)
    out = {"seed": seed, "cuts": cuts}
    with timed_runs():
        setup = build(work, seed)
        log(f"built in {time.monotonic() - t0:.0f}s")
        s = logged_install(setup, work / "session")
        log(f"uncut install boot (logged): {s.wall:.1f}s; phase lines at "
            + ", ".join(f"{k} {v:.2f}s" for k, v in s.times.items())
            + "; lengths " + ", ".join(f"{k} {v:.2f}s" for k, v in s.spans.items()))
        out["spans"] = s.spans
        log("writes to bootconfig (sector in bootconfig, sectors), F = flush: " + " ".join(
            "F" if e.flush and not e.write else f"{e.sector - s.first}+{e.nr}" for e in s.entries))
        cr = crash_states(setup, s, work / "crash", random.Random(f"{seed}:crash"),
                          crash_boots, max_torn, max_subsets, garbage, log)
        log(cr.summary())
        for f in cr.failures:
            log("  FAIL (crash state): " + f.replace("\n", "\n    "))
        results = []

        def go(i, c):
            try:
                res = one_cut(setup, c, i, work / f"cut-{i}", keep)
            except Exception as e:   # a broken cut is a failure of the campaign, not its end
                import traceback
                res = CutResult(i, c, failures=[f"{e!r}\n{traceback.format_exc()}"])
            log(res.line())
            for f in res.failures:
                log("  FAIL: " + f.replace("\n", "\n    "))
            return res

        plans = plan(cuts, s.spans, seed, aimed)
        with ThreadPoolExecutor(max_workers=max(jobs, 1)) as ex:
            results = list(ex.map(go, range(1, cuts + 1), plans))
    per = {}
    for res in results:
        d = per.setdefault(res.phase, {"cuts": 0, "A": 0, "B": 0, "nothing": 0, "failures": 0,
                                       "boots": 0, "journal replay": 0})
        d["cuts"] += 1
        d[res.slot or "nothing"] += 1
        d["boots"] += res.boots
        d["failures"] += bool(res.failures)
        d["journal replay"] += res.fsck == "journal replay"
    out.update(per_phase=per, aimed={a: sum(c.aimed == a for c in plans) for a in aimed},
               boots=sum(r.boots for r in results) + 1, cuts_failed=sum(bool(r.failures)
                                                                        for r in results),
               crash=cr.__dict__ | {"failures": len(cr.failures)},
               wall_s=round(time.monotonic() - t0, 1))
    return out, results, cr


def main(argv):
    ap = argparse.ArgumentParser(prog="tests/crash/raucinstall.py",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--cuts", type=int, default=9)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SLOTINIT_SEED", "1")))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--crash-boots", type=int, default=4,
                    help="crash states of the switch booted (default 4; -1: all)")
    ap.add_argument("--max-torn", type=int, default=None)
    ap.add_argument("--max-subsets", type=int, default=256)
    ap.add_argument("--garbage", action="store_true")
    ap.add_argument("--aim", default=",".join(AIMED),
                    help=f"the phases aimed at, in turn (default {','.join(AIMED)})")
    ap.add_argument("--keep", help="copy the consoles of failing cuts into this directory")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)
    if bad := [x for x in a.aim.split(",") if x not in AIMED]:
        ap.error(f"--aim: unknown phases {bad} (known: {', '.join(AIMED)})")
    if why := rpifw.missing_artifacts():
        print(why)
        return 2
    work = Path(tempfile.mkdtemp(prefix="slotinit-crash."))
    try:
        out, results, cr = campaign(work, a.cuts, a.seed, a.jobs,
                                    a.crash_boots if a.crash_boots >= 0 else 1 << 30,
                                    a.max_torn, a.max_subsets, a.garbage,
                                    log=lambda m: print(m, flush=True),
                                    aimed=tuple(a.aim.split(",")), keep=a.keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 1 if out["cuts_failed"] or cr.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
