"""Power-cut campaign: kill QEMU at random moments (seeded) of boots,
`mark-good` and `mark-active`; after each cut boot again and check that a slot
boots, the boot state is valid for fw_printenv, and every file synced before
the cut is intact.

    /usr/bin/python3 tests/qemu/powercut.py --count 200 --seed 7 [--minutes 60]
"""
import argparse
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from guest import boot, mkdisk, read_env  # noqa: E402

OPS = ["boot", "mark-good", "mark-active-a", "mark-active-b"]


def cut(disk, append, delay):
    """Boots and kills QEMU after `delay` seconds; returns the console so far."""
    return boot(disk, append=append, timeout=60, cut=(None, delay)).console


def campaign(count, seed, tmp, minutes=None, log=print):
    """Runs the campaign; returns (cuts tried, failures as strings)."""
    rng = random.Random(seed)
    tmp = Path(tmp)
    disk = mkdisk(tmp / "campaign.img")
    deadline = time.monotonic() + minutes * 60 if minutes else None
    failures, synced, tried = [], 0, 0
    for i in range(count):
        if deadline and time.monotonic() > deadline:
            break
        op = rng.choice(OPS)
        delay = round(rng.uniform(0.5, 4.5), 2)
        console = cut(disk, f"test.run=campaign test.op={op}", delay)
        tried += 1
        marks = [int(n) for n in re.findall(r"SYNCED (\d+)", console)]
        synced = max([synced, *marks])
        b = boot(disk, append="test.run=campaign-check")
        problems = []
        if not b.reported:
            problems.append("no slot booted after the cut")
        env = read_env(disk, tmp)
        if env is None:
            problems.append("fw_printenv finds no valid boot state")
        elif not env.get("BOOT_ORDER", "").split():
            problems.append(f"empty BOOT_ORDER: {env}")
        files = dict(re.findall(r"FILE (\d+) (\d+)", b.test_run))
        lost = [n for n in range(1, synced + 1) if files.get(str(n)) != str(n)]
        if lost:
            problems.append(f"synced files lost or damaged: {lost[:10]}")
        state = "-" if env is None else f"{env.get('BOOT_ORDER')}/{env.get('BOOT_A_LEFT')}/{env.get('BOOT_B_LEFT')}"
        log(f"cut {i + 1}: {op} at {delay}s -> slot {b.fields.get('slot-name', '?')}, "
            f"state {state}, {len(files)} files (synced {synced})"
            + ("" if not problems else f"  FAIL: {problems}"))
        if problems:
            failures.append(f"cut {i + 1} ({op} at {delay}s): {problems}")
            if not b.reported:
                break  # the disk cannot tell more
    return tried, failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=None, help="stop after this long")
    args = ap.parse_args()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="slotinit-powercut.") as tmp:
        tried, failures = campaign(args.count, args.seed, tmp, args.minutes)
    print(f"power cuts: {tried} tried, {len(failures)} failed, seed {args.seed}, "
          f"{(time.monotonic() - t0) / 60:.1f} min")
    for f in failures:
        print("FAIL", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
