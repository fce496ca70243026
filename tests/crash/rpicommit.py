#!/usr/bin/python3
"""Power loss during the Raspberry Pi commit, enumerated (issue 13 item 6).

The rpi profile's mark-good of B's trial rewrites autoboot.txt in place (the
[all] and [tryboot] partitions swapped) and clears the trial record (a
redundant env pair) on the FAT bootconfig partition. This logs every write the
guest issues to the SD card during that trial boot (QEMU's blklogwrites under
the firmware model's sd-card), keeps the writes to bootconfig (the persistent
partition's own writes are crashlib's other campaigns' business), and builds
every crash state crashlib enumerates from them: each prefix, the reorderings
within a flush epoch, torn multi-sector writes (and, with --garbage, a sector
read back as 0xff).

Every state is checked on the host as the firmware reads it (rpifw.pick: the
boot partition with and without the tryboot flag must be 2 or 3 and hold a
kernel: an autoboot.txt that names nothing bootable bricks a Pi), and a
sample is booted through the firmware model: some slot's system must come up
within four boots (A, or B committed, or B's trial re-armed by A).

  tests/crash/rpicommit.py [--boots N] [--max-torn N] [--max-subsets N] [--garbage] [--seed S]
"""
import argparse
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "qemu"))
sys.path.insert(0, str(HERE))
import crashlib  # noqa: E402
import guest  # noqa: E402
import rpifw  # noqa: E402

REPO = rpifw.REPO


@dataclass
class Result:
    writes: int = 0
    flushes: int = 0
    counts: dict = field(default_factory=dict)
    distinct: int = 0
    picks: dict = field(default_factory=dict)    # (default, tryboot) partitions -> states
    booted: int = 0
    boots: dict = field(default_factory=dict)    # outcome -> states
    lost: list = field(default_factory=list)     # states whose autoboot.txt cannot be read
    failures: list = field(default_factory=list)

    def summary(self):
        return (f"{self.writes} writes and {self.flushes} flushes to bootconfig; candidates "
                f"{self.counts}; {self.distinct} distinct states checked on the host, firmware "
                f"picks {self.picks}; {len(self.lost)} states lost autoboot.txt (the firmware "
                f"then boots its default partition, boot_a, and the commit is lost); "
                f"{self.booted} booted: {self.boots}; {len(self.failures)} failures")


def autoboot_readable(img, work):
    """Whether slotinit can read autoboot.txt in this state: the FAT gives the file
    and its [all] and [tryboot] sections name slots' boot partitions."""
    out = Path(work) / "autoboot.read"
    out.unlink(missing_ok=True)
    if not guest.fat_get(img, "autoboot.txt", out):
        return False
    data = out.read_bytes()
    return (rpifw.parse_autoboot(data, False)["boot_partition"] in (2, 3)
            and rpifw.parse_autoboot(data, True)["boot_partition"] in (2, 3))


def config_text():
    return (REPO / "configs/rpi-ab-userdata.toml").read_text()


def run(work, boots=3, max_torn=None, max_subsets=256, garbage=False, seed=1, log=print):
    """The campaign in `work` (removed by the caller); returns a Result."""
    work = Path(work)
    rng = random.Random(seed)
    disk = rpifw.make_disk(work / "disk.img", work / "build", boot_img=(False, True),
                           config=config_text())
    pi = rpifw.Pi(disk, work / "pi")
    b, ev = pi.boot(append="test.run=update")
    if ev.kind != "tryboot":
        raise RuntimeError(f"the update did not arm a trial:\n{pi.chain()}")
    base = work / "base.img"
    crashlib.copy_image(disk, base)
    pi.write_log = work / "commit.log"
    b, ev = pi.boot(append="test.run=commit")
    pi.write_log = None
    if "mark-good-exit=0" not in b.console:
        raise RuntimeError(f"the logged commit failed:\n{b.console[-3000:]}")
    part = next(p for p in crashlib.partitions(base) if p.number == 1)
    entries = [e for e in crashlib.parse_log(work / "commit.log")
               if e.flush or (e.write and part.start <= e.sector <= part.end)]
    entries = [crashlib.Entry(i, e.sector, e.nr, e.flags, e.data) for i, e in enumerate(entries)]
    r = Result(writes=sum(e.write for e in entries), flushes=sum(e.flush for e in entries))
    if r.writes == 0:
        raise RuntimeError("no write to bootconfig was logged: the commit wrote nothing?")
    states, r.counts = crashlib.enumerate_states(entries, 0, len(entries), rng,
                                                 max_subsets=max_subsets, max_torn=max_torn,
                                                 garbage=garbage)
    seen = crashlib.distinct_states(base, states)
    r.distinct = len(seen)
    img = work / "state.img"
    checked = []
    for key, st in seen.items():
        crashlib.copy_image(base, img)
        crashlib.apply(img, st.overlay)
        picks = []
        for flag in (False, True):
            try:
                p = rpifw.pick(img, tryboot=flag, workdir=work / "pick")
                picks.append(p.partition)
            except rpifw.NoBoot as e:
                picks.append(f"no-boot: {e}")
        readable = autoboot_readable(img, work)
        key = tuple(map(str, picks)) + (() if readable else ("autoboot.txt unreadable",))
        r.picks[key] = r.picks.get(key, 0) + 1
        # After a power cut the one-shot flag is clear: the firmware's pick without
        # it must boot. With it: only where slotinit can set it, i.e. where it can
        # read autoboot.txt (boot_next refuses otherwise, so it never restarts
        # with "0 tryboot" into a firmware that would find nothing).
        if picks[0] not in (2, 3) or (readable and picks[1] not in (2, 3)):
            r.failures.append(f"{st.kind} {st.desc}: the firmware picks {picks}")
        if not readable:
            r.lost.append(f"{st.kind} {st.desc}")
        checked.append(st)
    # Boot a sample: the final state, the first, and random others.
    sample = [checked[-1], checked[0]] + rng.sample(checked, min(len(checked), boots))
    for st in list({id(s): s for s in sample}.values())[:max(boots, 1)]:
        crashlib.copy_image(base, img)
        crashlib.apply(img, st.overlay)
        shutil.rmtree(work / "boot", ignore_errors=True)
        model = rpifw.Pi(img, work / "boot")
        model.tryboot = False   # the power came back: a reset without the flag
        outcome = None
        for _ in range(4):
            b, ev = model.boot(append="test.run=status")
            if b.reported:
                outcome = f"{b.fields.get('slot-name')} on partition {ev.partition}"
                break
            if ev.kind not in ("tryboot", "reboot"):
                break
        r.booted += 1
        r.boots[outcome or "nothing"] = r.boots.get(outcome or "nothing", 0) + 1
        if outcome is None:
            r.failures.append(f"{st.kind} {st.desc}: no system came up:\n{model.chain()}")
        log(f"booted {st.kind} {st.desc}: {outcome}")
    return r


def main(argv):
    ap = argparse.ArgumentParser(prog="tests/crash/rpicommit.py", description=__doc__.split("\n")[0])
    crashlib.model_campaign_args(ap, 10, "crash states booted (default 10)")
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="slotinit-crash."))
    try:
        r = run(work, a.boots, a.max_torn, a.max_subsets, a.garbage, a.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(r.summary())
    for f in r.failures:
        print("FAIL:", f)
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
