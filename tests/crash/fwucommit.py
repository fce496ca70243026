#!/usr/bin/python3
"""Power loss during slotinit's FWU metadata writes on an STM32MP disk, enumerated
(issue 14 item 4).

The stm32mp profile (bootstate backend "fwu-metadata") keeps the boot state in
two copies of Arm's FWU metadata, GPT partitions metadata1 and metadata2, which
TF-A's BL2 reads before anything else (tests/qemu/tfa.py, the model). This boots
an STM32MP disk through the model: A committed runs the update client's
`slotinit mark-active other --reboot` (B's trial armed), then B's trial runs
`slotinit mark-good`; both boots go through QEMU's blklogwrites (qemu/run
--write-log). For each operation the writes to metadata1/metadata2 (and every
flush) give the crash states crashlib enumerates: each prefix, the reorderings
within a flush epoch, torn multi-sector writes (and with --garbage, the sector
in flight read back as 0xff).

Every state is checked on the host as TF-A reads it (tfa.pick): with the
backup register lost (a power cut without VBAT: counter 0) and kept (a board
with VBAT: the counter as the crashed boot left it), TF-A must load a copy,
pick a bank and find that bank's kernel; the copy it loads must be the
metadata before or after the operation (no invented state). Then states are
booted through the model (the register lost, as after a power cut): some
bank's system must come up within four boots, and after that boot both copies
must be valid (slotinit repairs the one a crash left behind).

  tests/crash/fwucommit.py [--boots N] [--max-torn N] [--max-subsets N] [--garbage] [--seed S]

--boots -1 (the default) boots every distinct state.
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
import tfa  # noqa: E402

REPO = tfa.REPO
OPS = ("mark-active", "mark-good")


@dataclass
class Result:
    op: str
    writes: int = 0
    flushes: int = 0
    counts: dict = field(default_factory=dict)
    distinct: int = 0
    picks: dict = field(default_factory=dict)     # (copy, bank, which) -> states
    booted: int = 0
    boots: dict = field(default_factory=dict)     # outcome -> states
    failures: list = field(default_factory=list)

    def summary(self):
        return (f"{self.op}: {self.writes} writes and {self.flushes} flushes to metadata1/2; "
                f"candidates {self.counts}; {self.distinct} distinct states checked on the "
                f"host, TF-A picks {self.picks}; {self.booted} booted: {self.boots}; "
                f"{len(self.failures)} failures")


def copies(img):
    """The two copies' bytes as TF-A reads them (the struct size of the metadata's
    version, from the partition start)."""
    return tfa.read_copies(img)


def logged_chain(work, log=print):
    """Boots an STM32MP disk (v2 metadata, A accepted): A arms B's trial, B commits.
    Returns {op: (disk before the boot, write log, counter during the boot,
    (metadata before, after))}."""
    work = Path(work)
    md = tfa.v2(0, 0, (tfa.ACCEPTED, tfa.ACCEPTED))
    disk = tfa.make_disk(work / "disk.img", work / "build", (md, md))
    m = tfa.Tfa(disk, work / "model")
    out = {}
    for op, script, want in (("mark-active", "update", "reboot"),
                             ("mark-good", "commit", "reboot")):
        base = work / f"{op}.base.img"
        crashlib.copy_image(disk, base)
        before = tfa.load(copies(disk)[0], 2)
        m.write_log = work / f"{op}.log"
        b, ev = m.boot(append=f"test.run={script}")
        m.write_log = None
        after = tfa.load(copies(disk)[0], 2)
        if ev.kind != want or not b.reported:
            raise RuntimeError(f"{op}: the logged boot ended {ev.kind}:\n{m.chain()}\n"
                               f"{b.console[-3000:]}")
        log(f"logged {op}: {m.chain().splitlines()[-1]}")
        out[op] = (base, work / f"{op}.log", ev.counter_after, (before, after))
    return out


def host_check(img, counter, expect, work):
    """(key, failure or None): TF-A's pick with the register lost and kept."""
    picks, bad = [], None
    for which, c in (("lost", 0), ("kept", counter)):
        try:
            p = tfa.pick(img, c, 2)
        except tfa.NoBoot as e:
            bad = f"register {which}: no boot: {e}"
            picks.append((which, "no-boot"))
            continue
        md = tfa.load(copies(img)[p.copy - 1], 2)
        if (md.active, md.previous, tuple(md.states)) not in expect:
            bad = f"register {which}: metadata{p.copy} holds an invented state {md}"
        picks.append((which, f"metadata{p.copy}", p.slot))
    return tuple(picks), bad


def boot_state(img, work, log):
    """Boots a crash state as after a power cut; (outcome or None, chain, copies valid)."""
    shutil.rmtree(work, ignore_errors=True)
    m = tfa.Tfa(img, work)      # a fresh register: 0
    outcome = None
    for _ in range(4):
        b, ev = m.boot(append="test.run=status")
        if b.reported:
            outcome = f"{b.fields.get('slot-name')} (bank {ev.slot})"
            break
        if ev.kind not in ("reboot", "panic"):
            break
    valid = []
    for data in copies(img):
        try:
            tfa.load(data, 2)
            valid.append(True)
        except ValueError:
            valid.append(False)
    return outcome, m.chain(), valid


def run_op(op, base, wlog, counter, mds, work, boots=-1, max_torn=None, max_subsets=256,
           garbage=False, rng=None, log=print):
    """One operation's campaign from its logged boot; returns a Result."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    rng = rng or random.Random(1)
    parts = [p for p in crashlib.partitions(base) if p.name in tfa.METADATA]
    if len(parts) != 2:
        raise RuntimeError(f"{base}: metadata1/metadata2 not found: {parts}")
    entries = [e for e in crashlib.parse_log(wlog)
               if e.flush or (e.write and any(p.start <= e.sector <= p.end for p in parts))]
    entries = [crashlib.Entry(i, e.sector, e.nr, e.flags, e.data) for i, e in enumerate(entries)]
    r = Result(op, writes=sum(e.write for e in entries), flushes=sum(e.flush for e in entries))
    if r.writes == 0:
        raise RuntimeError(f"{op}: no write to metadata1/2 was logged")
    states, r.counts = crashlib.enumerate_states(entries, 0, len(entries), rng,
                                                 max_subsets=max_subsets, max_torn=max_torn,
                                                 garbage=garbage)
    expect = {(m.active, m.previous, tuple(m.states)) for m in mds}
    seen = crashlib.distinct_states(base, states)
    r.distinct = len(seen)
    img = work / "state.img"
    checked = []
    for st in seen.values():
        crashlib.copy_image(base, img)
        crashlib.apply(img, st.overlay)
        key, bad = host_check(img, counter, expect, work)
        r.picks[key] = r.picks.get(key, 0) + 1
        if bad:
            r.failures.append(f"{st.kind} {st.desc}: {bad}")
        checked.append(st)
    order = [checked[-1], checked[0]] + rng.sample(checked, len(checked))
    order = list({id(s): s for s in order}.values())
    for st in order[:len(order) if boots < 0 else boots]:
        crashlib.copy_image(base, img)
        crashlib.apply(img, st.overlay)
        outcome, chain, valid = boot_state(img, work / "boot", log)
        r.booted += 1
        r.boots[outcome or "nothing"] = r.boots.get(outcome or "nothing", 0) + 1
        if outcome is None:
            r.failures.append(f"{st.kind} {st.desc}: no system came up:\n{chain}")
        elif valid != [True, True]:
            r.failures.append(f"{st.kind} {st.desc}: after the boot the copies' validity "
                              f"is {valid}:\n{chain}")
        log(f"{op}: booted {st.kind} {st.desc}: {outcome}, copies valid {valid}")
    img.unlink(missing_ok=True)
    return r


def run(work, boots=-1, max_torn=None, max_subsets=256, garbage=False, seed=1, log=print):
    """Both operations in `work` (removed by the caller); returns [Result]."""
    rng = random.Random(seed)
    chain = logged_chain(work, log)
    return [run_op(op, *chain[op], Path(work) / op, boots, max_torn, max_subsets, garbage,
                   rng, log) for op in OPS]


def main(argv):
    ap = argparse.ArgumentParser(prog="tests/crash/fwucommit.py",
                                 description=__doc__.split("\n")[0])
    crashlib.model_campaign_args(ap, -1, "crash states booted per operation (default -1: all)")
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="slotinit-crash."))
    try:
        results = run(work, a.boots, a.max_torn, a.max_subsets, a.garbage, a.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in results:
        print(r.summary())
        for f in r.failures:
            print("FAIL:", f)
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
