"""Power loss, enumerated: crash states from a log of the writes a guest issued.

A session boots a test disk under QEMU with the disk attached through QEMU's
blklogwrites driver (qemu/run --write-log): every write and flush the guest
issues becomes one entry of a dm-log-writes log. From the log this module
builds the disk as it may be after a power cut at any moment:

- prefixes: every write boundary (the writes up to there, whole and in order);
- reordered: a device may make the writes since the last completed flush
  durable in any order, so any subset of them (all subsets when few, else a
  seeded sample), on top of everything before that flush;
- torn: a write of several sectors interrupted part-way: the first k sectors
  new and the rest old, or the first k old and the rest new, for every k.
  A single 512-byte sector is taken as atomic (see README.md).

Each state is checked on the host (fw_printenv on the env files, fsck.vfat -n
on bootconfig) and, as many as asked, booted under QEMU: a slot must boot,
the boot state must be valid with a bootable slot, and every file synced
before the cut must be intact.
"""
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "qemu"))
from guest import INITRD, REPO, boot, mkdisk  # noqa: E402

SECTOR = 512

# The log format: QEMU block/blklogwrites.c, "Disk format stuff - taken from
# Linux drivers/md/dm-log-writes.c"; also the kernel's
# Documentation/admin-guide/device-mapper/log-writes.rst. Log sector 0 holds
# the super block (magic, version, nr_entries, sectorsize; little-endian);
# entries follow from log sector 1, each one log sector holding
# struct log_write_entry {sector, nr_sectors, flags, data_len} and then, except
# for discards, nr_sectors sectors of data. QEMU rewrites the super block only
# on a flush (blk_log_writes_co_do_log), so its nr_entries may be behind: the
# entries are walked to the end of the file.
LOG_FLUSH_FLAG = 1 << 0
LOG_FUA_FLAG = 1 << 1
LOG_DISCARD_FLAG = 1 << 2
LOG_MARK_FLAG = 1 << 3
LOG_FLAG_MASK = 0xF
WRITE_LOG_MAGIC = 0x6A736677736872
WRITE_LOG_VERSION = 1

MARK = b"SLOTINIT-CRASH-MARK"

# "all" runs them in this order; boot last, it has the most states and gets the time left.
OPS = ["mark-good", "mark-active-a", "mark-active-b", "mark-bad", "boot"]


class LogError(Exception):
    pass


@dataclass
class Entry:
    index: int
    sector: int      # in 512-byte sectors
    nr: int          # 512-byte sectors
    flags: int
    data: bytes = b""

    @property
    def flush(self):
        return bool(self.flags & LOG_FLUSH_FLAG)

    @property
    def discard(self):
        return bool(self.flags & LOG_DISCARD_FLAG)

    @property
    def write(self):
        return self.nr > 0 and not self.discard

    def sectors(self):
        """(disk sector, 512 bytes) of each sector this write sets."""
        return [(self.sector + i, self.data[i * SECTOR:(i + 1) * SECTOR]) for i in range(self.nr)]


def parse_log(path):
    """The entries of a dm-log-writes log; raises LogError on a malformed one."""
    raw = Path(path).read_bytes()
    if len(raw) < 28:
        raise LogError(f"{path}: {len(raw)} bytes, no super block (did QEMU start?)")
    magic, version, nr_entries, ss = struct.unpack_from("<QQQI", raw, 0)
    if magic != WRITE_LOG_MAGIC or version != WRITE_LOG_VERSION:
        raise LogError(f"{path}: bad magic {magic:#x} or version {version}")
    if ss < SECTOR or ss & (ss - 1):
        raise LogError(f"{path}: log sector size {ss} unsupported")
    scale = ss // SECTOR
    entries, off = [], ss
    while off + ss <= len(raw):
        sector, nr, flags, _data_len = struct.unpack_from("<QQQQ", raw, off)
        if sector == 0 and nr == 0 and flags == 0:
            break  # past the last entry
        if flags & ~LOG_FLAG_MASK:
            raise LogError(f"{path}: entry {len(entries)} has unknown flags {flags:#x}")
        off += ss
        data = b""
        if not flags & LOG_DISCARD_FLAG:
            data = raw[off:off + nr * ss]
            if len(data) < nr * ss:
                break  # QEMU stopped while logging this entry
            off += nr * ss
        entries.append(Entry(len(entries), sector * scale, nr * scale, flags, data))
    if len(entries) < nr_entries:
        raise LogError(f"{path}: super block says {nr_entries} entries, found {len(entries)}")
    return entries


# ---------------------------------------------------------------- the disk

@dataclass
class Part:
    number: int
    start: int   # sector
    end: int     # last sector
    name: str


def partitions(disk):
    out = subprocess.run(["sgdisk", "-p", str(disk)], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    parts = []
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+(\d+)\s+(\d+)\s+\S+\s+\S+\s+\S+\s+(\S+)", line)
        if m:
            parts.append(Part(int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)))
    return parts


def where(parts, sector):
    for p in parts:
        if p.start <= sector <= p.end:
            return f"{p.name}+{sector - p.start}"
    return f"disk+{sector}"


def apply(path, overlay):
    """Writes {sector: bytes} into the image at `path`."""
    with open(path, "r+b") as f:
        for s in sorted(overlay):
            f.seek(s * SECTOR)
            f.write(overlay[s])


def copy_image(src, dst):
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(src), str(dst)], check=True)


# ------------------------------------------------------------ crash states

@dataclass
class State:
    kind: str            # prefix, torn, reordered
    desc: str
    flush: int           # index of the last flush whose writes are all durable (-1: none)
    overlay: dict        # sector -> bytes, on top of the window base
    key: str = ""


def overlay_key(overlay, base_sector):
    """Identity of a state: the sectors where it differs from the window base."""
    h = hashlib.sha256()
    for s in sorted(overlay):
        d = overlay[s]
        if d != base_sector(s):
            h.update(s.to_bytes(8, "little"))
            h.update(d)
    return h.hexdigest()


def model_campaign_args(ap, boots_default, boots_help):
    """The options rpicommit.py and fwucommit.py share (a commit under a firmware model)."""
    ap.add_argument("--boots", type=int, default=boots_default, help=boots_help)
    ap.add_argument("--max-torn", type=int, default=None, help="sample of torn states")
    ap.add_argument("--max-subsets", type=int, default=256)
    ap.add_argument("--garbage", action="store_true")
    ap.add_argument("--seed", type=int, default=1)


def distinct_states(base, states):
    """The states that differ as disks: {overlay_key against the image `base`: first state}."""
    with open(base, "rb") as f:
        def base_sector(s):
            f.seek(s * SECTOR)
            return f.read(SECTOR)
        seen = {}
        for st in states:
            seen.setdefault(overlay_key(st.overlay, base_sector), st)
    return seen


def enumerate_states(entries, lo, hi, rng, max_subsets=256, max_torn=None, flush0=-1,
                     garbage=False):
    """Crash states of the writes entries[lo:hi] on top of the state before lo.

    `flush0`: the last flush before lo. `garbage`: also the states where the
    sector being written when the power failed holds neither its old nor its
    new data (all 0xff, as erased flash reads; SD cards without power-loss
    protection), the sectors before it new. Returns (states, counts) with
    counts of candidates per kind before deduplication.
    """
    states = []
    prefix = {}
    durable = {}
    last_flush = flush0
    epoch = []      # (entry, prefix overlay before it)
    torn = []
    states.append(State("prefix", f"before entry {lo}", last_flush, {}))

    def end_epoch():
        writes = [e for e, _ in epoch]
        m = len(writes)
        if m < 2:
            return
        # Subsets that are not prefixes (the prefixes are states already).
        total = (1 << m) - (m + 1)
        if total <= max_subsets:
            masks = [x for x in range(1, 1 << m) if x & (x + 1)]
        else:
            masks = set()
            while len(masks) < max_subsets:
                x = rng.getrandbits(m)
                if x & (x + 1):
                    masks.add(x)
            masks = sorted(masks)
        for x in masks:
            ov = dict(durable)
            chosen = [w for j, w in enumerate(writes) if x >> j & 1]
            for w in chosen:
                ov.update(w.sectors())
            states.append(State("reordered",
                                "entries " + ",".join(str(w.index) for w in chosen)
                                + f" of {writes[0].index}..{writes[-1].index} after flush {last_flush}",
                                last_flush, ov))

    for e in entries[lo:hi]:
        if e.flush:
            # QEMU logs a flush as its own entry of no data (blk_log_writes_co_flush_to_disk);
            # a kernel dm-log-writes PREFLUSH write flushes before its data.
            end_epoch()
            durable = dict(prefix)
            last_flush = e.index
            epoch = []
            if not e.write:
                continue
        if not e.write:
            continue  # a discard: the old data may stay, take it as unchanged
        before = dict(prefix)
        secs = e.sectors()
        for k in range(1, e.nr):
            head_new = dict(before)
            head_new.update(secs[:k])
            torn.append(State("torn", f"entry {e.index} ({e.nr} sectors): first {k} new, rest old",
                              last_flush, head_new))
            head_old = dict(before)
            head_old.update(secs[k:])
            torn.append(State("torn", f"entry {e.index} ({e.nr} sectors): first {k} old, rest new",
                              last_flush, head_old))
        if garbage:
            for k in range(e.nr):
                g = dict(before)
                g.update(secs[:k])
                g[e.sector + k] = b"\xff" * SECTOR
                torn.append(State("garbage", f"entry {e.index} ({e.nr} sectors): first {k} new, "
                                  f"sector {e.sector + k} garbage, rest old", last_flush, g))
        epoch.append((e, before))
        prefix.update(secs)
        if e.flags & LOG_FUA_FLAG:
            # Not emitted by QEMU (it logs writes with flags 0); the kernel's is durable
            # on completion: count the writes up to it as durable (fewer states).
            durable = dict(prefix)
            last_flush = e.index
            epoch = []
        states.append(State("prefix", f"after entry {e.index}", last_flush, dict(prefix)))
    end_epoch()
    counts = {"prefix": sum(s.kind == "prefix" for s in states),
              "reordered": sum(s.kind == "reordered" for s in states),
              "torn": sum(s.kind == "torn" for s in torn)}
    if garbage:
        counts["garbage"] = sum(s.kind == "garbage" for s in torn)
    if max_torn is not None and len(torn) > max_torn:
        torn = rng.sample(torn, max_torn)
    return states + torn, counts


# --------------------------------------------------------------- booting

@dataclass
class Store:
    """Where the boot-state env lives, from a slotinit config's [bootstate]."""
    partition: str = "bootconfig"
    files: tuple = ("uboot.env", "uboot-redund.env")
    raw_offsets: tuple = ()
    size: int = 0x4000
    attempts: int = 3
    bootnames: tuple = ("A", "B")
    names: str = ""   # qemu/mkdisk --names: the config's GPT names in layout order
    # bootstate.uboot-env.contract: whose variables hold the state (rauc, article, mender)
    contract: str = "rauc"

    @classmethod
    def from_config(cls, path):
        import tomllib
        cfg = tomllib.loads(Path(path).read_text())
        top = cfg.get("bootstate", {})
        if top.get("backend", "rpi-tryboot") != "uboot-env":  # the built-in default is rpi-tryboot
            raise RuntimeError(f"{path}: backend {top.get('backend')!r}: only uboot-env is enumerated")
        # The backend's table [bootstate.uboot-env], over the keys directly in
        # [bootstate] that older configs have (slotinit reads both).
        new = top.get("uboot-env", {})
        bs = {**{k: v for k, v in top.items() if k != "uboot-env"}, **new}
        raw = tuple(bs.get("raw_offsets", []))
        files = () if raw else tuple(bs.get("files", ["uboot.env", "uboot-redund.env"]))
        part = bs.get("partition", "bootconfig")
        part = cfg.get("partitions", {}).get(part, part) if part in (
            "bootconfig", "persistent") else part
        roles = ["bootconfig", "boot_a", "boot_b", "system_a", "system_b", "persistent"]
        pn = cfg.get("partitions", {})
        names = " ".join(str(pn.get(r, r)) or "-" for r in roles)
        if any(str(pn.get(r, r)).isdigit() for r in roles):
            raise RuntimeError(f"{path}: members by number: use a config that names GPT partitions")
        return cls(part, files, raw, int(bs.get("size", 0x4000)), int(bs.get("attempts", 3)),
                   (bs.get("bootname_a", "A"), bs.get("bootname_b", "B")), names,
                   contract=bs.get("contract", "rauc"))

    @property
    def fat(self):
        return not self.raw_offsets


def read_env_image(store, img, offset, tmp):
    """(env dict or None, note): the env as fw_printenv (libubootenv) reads it
    from the partition at byte `offset` of `img`. Env files on a FAT are copied
    out with mcopy first, as tests/qemu/guest.py's read_env does; raw copies
    are read in place."""
    menv = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    lines, missing = [], []
    for f in store.files:
        local = Path(tmp) / f"env-{f}"
        local.unlink(missing_ok=True)
        r = subprocess.run(["mcopy", "-n", "-o", "-i", f"{img}@@{offset}", f"::{f}", str(local)],
                           env=menv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0:
            missing.append(f)
            local.write_bytes(b"")
        lines.append(f"{local} 0x0 {store.size:#x}")
    for off in store.raw_offsets:
        lines.append(f"{img} {offset + off:#x} {store.size:#x}")
    cfg = Path(tmp) / "fw_env.config"
    cfg.write_text("\n".join(lines) + "\n")
    r = subprocess.run(["fw_printenv", "-c", str(cfg)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    note = ("missing " + ",".join(missing)) if missing else ""
    if r.returncode != 0 or "Bad CRC" in r.stderr:
        err = " / ".join(l.strip() for l in r.stderr.splitlines() if l.strip())
        return None, (note + " " + err[:200]).strip()
    return dict(l.split("=", 1) for l in r.stdout.splitlines() if "=" in l), note


def boot_state(env):
    return (env.get("BOOT_ORDER"), env.get("BOOT_A_LEFT"), env.get("BOOT_B_LEFT"))


def bootable(env, attempts=3, names=("A", "B")):
    """A slot the RAUC U-Boot script (and slotinit) would try: the first of
    BOOT_ORDER (empty or unset: "A B") with attempts left; a missing counter
    is `attempts` (RAUC's default)."""
    order = (env.get("BOOT_ORDER") or " ".join(names)).split()
    for name in order:
        if name not in names:
            continue
        try:
            left = int(env.get(f"BOOT_{name}_LEFT", attempts))
        except ValueError:
            continue
        if left > 0:
            return name
    return None


# --- the variable contracts (bootstate.uboot-env.contract) --------------------------------
# RAUC's is boot_state()/bootable() above; the article's and Mender's are read here as their
# scripts read them (uboot/article.cmd, uboot/mender.cmd; slotinit's side:
# src/state/uboot/article.rs, src/state/uboot/mender.rs).

def strtoul(value, base):
    """U-Boot's simple_strtoul (lib/strto.c): a 0x prefix is hex, then the leading digits."""
    v = value or ""
    if v[:2].lower() == "0x":
        v, base = v[2:], 16
    n = 0
    for c in v:
        try:
            d = int(c, 36)
        except ValueError:
            break
        if d >= base:
            break
        n = n * base + d
    return n


ARTICLE_VARS = ("boot_slot", "boot_{}_left")
MENDER_VARS = ("mender_boot_part", "mender_boot_part_hex", "upgrade_available", "bootcount")


def store_state(store, env):
    """The contract's variables of `env`, as a tuple (the "env state" of the figures)."""
    if store.contract == "article":
        return (env.get("boot_slot"), *(env.get(f"boot_{n}_left") for n in store.bootnames))
    if store.contract == "mender":
        return tuple(env.get(v) for v in MENDER_VARS)
    return boot_state(env)


def store_initial(store):
    """fw_setenv assignments of a fresh device's state under the store's contract."""
    a, b = store.bootnames
    if store.contract == "article":
        return [f"boot_slot={a}", f"boot_{a}_left={store.attempts}",
                f"boot_{b}_left={store.attempts}"]
    if store.contract == "mender":
        return [f"mender_boot_part={a}", f"mender_boot_part_hex={int(a):x}",
                "upgrade_available=0", "bootcount=0", f"bootlimit={store.attempts}"]
    return [f"BOOT_ORDER={a} {b}", f"BOOT_{a}_LEFT={store.attempts}",
            f"BOOT_{b}_LEFT={store.attempts}"]


def store_bootable(store, env):
    """The slot the contract's boot script boots next, None if it would find none."""
    a, b = store.bootnames
    if store.contract == "article":
        cur = b if env.get("boot_slot") == b else a
        other = a if cur == b else b

        def left(n):
            v = env.get(f"boot_{n}_left")
            return store.attempts if not v else strtoul(v, 16)
        return next((n for n in (cur, other) if left(n) > 0), None)
    if store.contract == "mender":
        part = env.get("mender_boot_part")
        cur = b if part == b else a
        trial = strtoul(env.get("upgrade_available"), 10) != 0
        count = strtoul(env.get("bootcount"), 10) if trial else 0
        limit = strtoul(env.get("bootlimit"), 10)
        # this boot counts, then bootcount > bootlimit runs altbootcmd: the other slot
        if trial and limit and count + 1 > limit:
            return a if cur == b else b
        return cur if part in (a, b) else None
    return bootable(env, store.attempts, store.bootnames)


def fsck_vfat(fat_img):
    r = subprocess.run(["fsck.vfat", "-n", str(fat_img)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    lines = [l for l in r.stdout.splitlines()
             if l.strip() and not l.startswith(("fsck.fat ", "Leaving", "/", "  Automatically"))]
    uniq = []
    for l in lines:
        l = re.sub(r"\d+ files, \d+/\d+ clusters", "", l.strip())
        if l and l not in uniq:
            uniq.append(l)
    msg = "; ".join(uniq)
    return r.returncode, (msg[:200] + "...") if len(msg) > 200 else (msg or "clean")


# ------------------------------------------------------------ a campaign

UBOOT_BIN = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")


def bootloader_env():
    """U-Boot's default env (about 4 KiB) as VAR=VALUE strings: read from
    Debian's u-boot-qemu binary (the NUL-separated list starting "arch=arm"),
    or, without it, 40 variables of the same size."""
    if UBOOT_BIN.exists():
        raw = UBOOT_BIN.read_bytes()
        i = raw.find(b"arch=arm\0")
        if i >= 0:
            items = raw[i:raw.find(b"\0\0", i)].decode("ascii", "replace").split("\0")
            items = [v for v in items if "=" in v and not v.startswith("BOOT_")]
            if len(items) > 10:
                return items + ["bootcmd=run distro_bootcmd"]
    return [f"filler_{i}=" + "x" * 100 for i in range(40)] + ["bootcmd=run distro_bootcmd"]

@dataclass
class OpResult:
    op: str
    writes: int = 0            # write entries in the window
    flushes: int = 0           # flush entries in the window
    log_writes: int = 0        # whole session
    log_flushes: int = 0
    discards: int = 0
    built: dict = field(default_factory=dict)       # kind -> unique states
    candidates: dict = field(default_factory=dict)  # kind -> before dedup
    booted: int = 0
    boot_slots: dict = field(default_factory=dict)
    env_states: dict = field(default_factory=dict)
    fsck: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    listing: list = field(default_factory=list)
    bootconfig_images: int = 0
    env_vars: int = 0          # variables in the env after the session
    seconds: float = 0.0

    def summary(self):
        b = self.built
        total = sum(b.values())
        lines = [
            f"== {self.op}: session log {self.log_writes} writes, {self.log_flushes} flushes; "
            f"this operation's window {self.writes} writes, {self.flushes} flushes"
            + (f", {self.discards} discards" if self.discards else ""),
            f"   crash states built: {total} ({b.get('prefix', 0)} prefixes, {b.get('torn', 0)} torn, "
            f"{b.get('reordered', 0)} reordered"
            + (f", {b.get('garbage', 0)} garbage" if "garbage" in self.candidates else "")
            + f"; {sum(self.candidates.values())} before dedup); "
            f"{self.bootconfig_images} distinct bootconfig contents host-checked; "
            f"the env after the session holds {self.env_vars} variables",
            f"   env states (BOOT_ORDER/A_LEFT/B_LEFT: states): "
            + ", ".join(f"{k}: {v}" for k, v in sorted(self.env_states.items())),
            "   fsck.vfat -n on bootconfig (rc message: states): "
            + "; ".join(f"{k}: {v}" for k, v in sorted(self.fsck.items())),
            f"   booted {self.booted} of {total}: "
            + ", ".join(f"{k}: {v}" for k, v in sorted(self.boot_slots.items())),
            f"   failures: {len(self.failures)}  ({self.seconds / 60:.1f} min)",
        ]
        lines += [f"   FAIL {f}" for f in self.failures[:40]]
        if len(self.failures) > 40:
            lines.append(f"   ... {len(self.failures) - 40} more")
        return "\n".join(lines)


class Campaign:
    """One temp dir (/tmp/slotinit-crash.*) for everything; close() removes it
    and kills any QEMU still running."""

    def __init__(self, seed=1, log=print, tmp_parent="/tmp", config=None):
        import tempfile
        self.tmp = Path(tempfile.mkdtemp(prefix="slotinit-crash.", dir=tmp_parent))
        self.initrd = None
        self.store = Store()
        if config:
            try:
                self.store = Store.from_config(config)
                self.initrd = self.build_initramfs(config)
            except BaseException:
                self.close()
                raise
        self.rng = random.Random(seed)
        self.seed = seed
        self.log = log
        self.procs = set()
        self.primed = {}
        self.lock = threading.Lock()
        self.stopping = False

    def build_initramfs(self, config):
        """The default initramfs with another config: as tools/build-all builds it, with the
        static e2fsck that repairs a persistent partition a torn write left unmountable
        (without it such a state boots with tmpfs and reads as "files lost")."""
        out = self.tmp / "initramfs.img"
        r = subprocess.run([str(REPO / "initramfs/build"),
                            "--init", str(REPO / "target/aarch64-unknown-linux-gnu/release/slotinit"),
                            "--config", str(config), "--kernel-dir", str(REPO / ".cache/kernel"),
                            "--busybox", str(REPO / ".cache/busybox/busybox"),
                            "--file", f"{REPO / '.cache/e2fsck/e2fsck'}:/sbin/e2fsck",
                            "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"initramfs/build --config {config} failed:\n{r.stdout[-2000:]}")
        return out

    def close(self):
        self.stopping = True
        self.kill_all()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def kill_all(self):
        for p in list(self.procs):
            try:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- priming: the disk states the operations start from
    def session(self, disk, op, write_log=None):
        b = boot(disk, append=f"test.run=crash test.op={op}", timeout=90, write_log=write_log,
                 procs=self.procs, initrd=self.initrd or INITRD)
        rc, console = b.rc, b.console
        done = re.search(r"OP-DONE (\S*) ?(\d+)", console)
        synced = re.findall(r"SYNCED (\d+)", console)
        if rc != 0 or not done or not synced:
            tail = "\n".join(console.splitlines()[-25:])
            raise RuntimeError(f"session {op} on {disk.name} did not complete (rc {rc}):\n{tail}")
        return int(synced[-1]), int(done.group(2)), console

    def primed_disk(self, which):
        """p0: a fresh disk, A committed (boot + mark-good). p1: p0 then
        mark-active b, so the next boot is B's counted trial."""
        if which in self.primed:
            return self.primed[which]
        if which == "p0":
            names = ["--names", self.store.names] if self.store.names else []
            d = mkdisk(self.tmp / "p0.img", "--seed", "crash", *names)
            # The pair holds a bootloader's own variables too, as on a device, so
            # that a copy spans several sectors and a torn write can split it.
            self.write_env(d, [*store_initial(self.store), *bootloader_env()])
            self.session(d, "mark-good")
        else:
            d = self.tmp / "p1.img"
            copy_image(self.primed_disk("p0"), d)
            self.session(d, "mark-active-b")
            if self.store.contract == "article":
                # The article's mark-active sets the counter to 3, which reads committed until
                # U-Boot counts the trial's boot; these boots go around U-Boot, so its count is
                # written here (fw_setenv), or mark-good would have nothing to commit.
                self.write_env(d, [f"boot_{self.store.bootnames[1]}_left={self.store.attempts - 1}"])
        self.primed[which] = d
        return d

    def write_env(self, disk, assignments):
        """A valid env on a fresh disk, written with Debian's fw_setenv."""
        st = self.store
        if st.fat:
            pair = ["--pair"] if len(st.files) == 2 else []
            if len(st.files) not in (1, 2) or st.files[0] != "uboot.env" or (
                    pair and st.files[1] != "uboot-redund.env"):
                raise RuntimeError(f"env files {st.files}: tests/guest/set-env writes uboot.env "
                                   "[+ uboot-redund.env] only")
            subprocess.run([str(REPO / "tests/guest/set-env"), *pair, str(disk), *assignments],
                           check=True, stdout=subprocess.DEVNULL)
            return
        part = next(p for p in partitions(disk) if p.name == st.partition)
        off = part.start * SECTOR
        # Empty valid copies first (mkenvimage), then fw_setenv on the disk image in place.
        for i, raw in enumerate(st.raw_offsets):
            blank = self.tmp / "blank.env"
            opt = ["-r"] if len(st.raw_offsets) > 1 else []
            subprocess.run(["mkenvimage", *opt, "-s", hex(st.size), "-o", str(blank), "-"],
                           input=b"", check=True)
            with open(disk, "r+b") as f:
                f.seek(off + raw)
                f.write(blank.read_bytes())
        cfg = self.tmp / "fw_env.config"
        cfg.write_text("".join(f"{disk} {off + raw:#x} {st.size:#x}\n" for raw in st.raw_offsets))
        script = self.tmp / "env.script"
        script.write_text("\n".join(assignments) + "\n")
        subprocess.run(["fw_setenv", "-c", str(cfg), "-s", str(script)], check=True)

    def start_disk(self, op):
        return self.primed_disk("p0" if op == "mark-active-b" else "p1")

    def host_check(self, part_img, cache, key):
        if key not in cache:
            env, note = read_env_image(self.store, part_img, 0, self.tmp)
            fsck = fsck_vfat(part_img) if self.store.fat else (0, "raw env, no fsck")
            cache[key] = (env, note, fsck)
        return cache[key]

    def run_op(self, op, boots=None, deadline=None, max_subsets=256, max_torn=None,
               verbose=False, jobs=1, garbage=False, only=None, keep=None):
        t0 = time.monotonic()
        res = OpResult(op)
        work = self.tmp / op
        work.mkdir()
        base = work / "base.img"
        copy_image(self.start_disk(op), base)
        disk = work / "session.img"
        copy_image(base, disk)
        wlog = work / "writes.log"
        n_synced, op_rc, console = self.session(disk, "none" if op == "boot" else op, wlog)
        if op_rc != 0:
            res.failures.append(f"the operation itself failed: OP-DONE {op} {op_rc}")
        entries = parse_log(wlog)
        parts = partitions(base)
        bc = next(p for p in parts if p.name == self.store.partition)
        env_after, _ = read_env_image(self.store, disk, bc.start * SECTOR, self.tmp)
        res.env_vars = len(env_after or {})
        res.log_writes = sum(e.write for e in entries)
        res.log_flushes = sum(e.flush for e in entries)

        # Parser self-check: the log replayed on the start disk is the disk QEMU left.
        final = {}
        for e in entries:
            if e.write:
                final.update(e.sectors())
        with open(disk, "rb") as f:
            for s, d in final.items():
                f.seek(s * SECTOR)
                if f.read(SECTOR) != d:
                    raise LogError(f"{wlog}: replayed sector {s} differs from the disk QEMU wrote")

        marks = [e.index for e in entries if e.write and MARK in e.data]
        if len(marks) != 1:
            raise LogError(f"{wlog}: {len(marks)} mark writes (expected 1)")
        mark = marks[0]
        # The file synced before the mark: durable once the last flush before the mark is.
        sync_flush = max((e.index for e in entries[:mark] if e.flush), default=None)
        if sync_flush is None:
            raise LogError(f"{wlog}: no flush before the mark: the guest's sync did not flush")
        lo, hi = (0, mark) if op == "boot" else (mark + 1, len(entries))
        flush0 = max((e.index for e in entries[:lo] if e.flush), default=-1)
        window = entries[lo:hi]
        res.writes = sum(e.write for e in window)
        res.flushes = sum(e.flush for e in window)
        res.discards = sum(e.discard for e in window)
        for e in window:
            if e.flush and not e.write:
                res.listing.append(f"{e.index:4d} FLUSH")
            else:
                res.listing.append(f"{e.index:4d} {'DISCARD' if e.discard else 'write'} "
                                   f"{where(parts, e.sector)} {e.nr} sectors")

        # The window base: the start disk plus every write before the window.
        wbase = work / "wbase.img"
        copy_image(base, wbase)
        pre = {}
        for e in entries[:lo]:
            if e.write:
                pre.update(e.sectors())
        apply(wbase, pre)
        wbase_f = open(wbase, "rb")

        def base_sector(s):
            return os.pread(wbase_f.fileno(), SECTOR, s * SECTOR)

        states, res.candidates = enumerate_states(entries, lo, hi, self.rng, max_subsets,
                                                  max_torn, flush0, garbage)
        unique = {}
        rank = {"prefix": 0, "reordered": 1, "torn": 2, "garbage": 3}
        for st in sorted(states, key=lambda x: rank[x.kind]):  # stable: log order within a kind
            st.key = overlay_key(st.overlay, base_sector)
            first = unique.setdefault(st.key, st)
            if first is not st and st.kind != "torn":
                res.listing.append(f"     same state: {st.kind} [{st.desc}] = {first.kind} [{first.desc}]")
        states = list(unique.values())
        for st in states:
            res.built[st.kind] = res.built.get(st.kind, 0) + 1

        # Host checks, cached per bootconfig content.
        bc_base = bytearray(os.pread(wbase_f.fileno(), (bc.end - bc.start + 1) * SECTOR,
                                     bc.start * SECTOR))
        fat_img = work / "bootconfig.img"
        cache = {}
        prefix_envs = set()
        checked = []
        for st in states:
            img = bytearray(bc_base)
            for s, d in st.overlay.items():
                if bc.start <= s <= bc.end:
                    off = (s - bc.start) * SECTOR
                    img[off:off + SECTOR] = d
            key = hashlib.sha256(img).hexdigest()
            if key not in cache:
                fat_img.write_bytes(img)
            env, note, fsck = self.host_check(fat_img, cache, key)
            checked.append((st, env, note, fsck))
            if st.kind == "prefix" and env is not None:
                prefix_envs.add(store_state(self.store, env))
        res.bootconfig_images = len(cache)
        host_bad = set()
        for st, env, note, (frc, fmsg) in checked:
            label = "-" if env is None else "/".join(str(x) for x in store_state(self.store, env))
            res.env_states[label] = res.env_states.get(label, 0) + 1
            res.fsck[f"{frc} {fmsg}"] = res.fsck.get(f"{frc} {fmsg}", 0) + 1
            problem = None
            if env is None:
                problem = f"fw_printenv finds no valid env ({note})"
            elif store_bootable(self.store, env) is None:
                problem = f"no bootable slot in {store_state(self.store, env)}"
            elif store_state(self.store, env) not in prefix_envs:
                problem = f"env {store_state(self.store, env)} never existed at a write boundary"
            if problem:
                host_bad.add(st.key)
                res.failures.append(f"{st.kind} [{st.desc}]: {problem}")

        # Boots: failures first, then one of each distinct host outcome, then a seeded sample.
        order = list(checked)
        self.rng.shuffle(order)
        seen = set()

        def prio(item):
            st, env, note, fsck = item
            sig = (None if env is None else store_state(self.store, env), fsck[0], st.kind)
            first = sig not in seen
            seen.add(sig)
            return (st.key not in host_bad, not first)
        order = [x for _, x in sorted(((prio(x), i), x) for i, x in enumerate(order))]
        if only:
            order = [x for x in order if only in f"{x[0].kind} [{x[0].desc}]"]
        limit = len(order) if boots is None else min(boots, len(order))
        todo = [x[0] for x in order[:limit]]

        def one(slot_no, st):
            expect = n_synced if st.flush >= sync_flush else n_synced - 1
            return self.boot_check(wbase, st, work / f"crash-{slot_no}.img", expect, keep,
                                   f"{op}-{slot_no}-{time.monotonic_ns()}")

        def worker(slot_no):
            while todo and not (deadline and time.monotonic() > deadline) and not self.stopping:
                st = todo.pop(0)
                t1 = time.monotonic()
                try:
                    problems, slot = one(slot_no, st)
                except Exception as e:  # noqa: BLE001 - a broken check is a failure, not a pass
                    problems, slot = [f"check error: {e!r}"], "error"
                if self.stopping:
                    return  # interrupted: this boot was killed, it proves nothing
                with self.lock:
                    res.booted += 1
                    res.boot_slots[slot] = res.boot_slots.get(slot, 0) + 1
                    if verbose or problems:
                        self.log(f"   boot {res.booted}: {st.kind} [{st.desc}] -> {slot} "
                                 f"({time.monotonic() - t1:.1f}s)"
                                 + (f"  FAIL {problems}" if problems else ""))
                    if problems:
                        res.failures.append(f"{st.kind} [{st.desc}] booted: {'; '.join(problems)}")
        threads = [threading.Thread(target=worker, args=(j,)) for j in range(max(1, jobs))]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
        except BaseException:
            self.stopping = True
            self.kill_all()
            raise
        finally:
            self.stopping = True  # on Ctrl-C the workers stop after their boot
            for t in threads:
                t.join()
            self.stopping = False
        wbase_f.close()
        res.seconds = time.monotonic() - t0
        shutil.rmtree(work, ignore_errors=True)
        return res

    def fsck_persistent(self, img):
        """For a kept failure: what e2fsck -fy makes of persistent, and the files after it."""
        parts = {p.name: p for p in partitions(img)}
        p = parts.get("persistent") or parts.get("data")
        if not p:
            return "no persistent partition to fsck"
        part = Path(str(img) + ".persistent")
        try:
            with open(img, "rb") as src, open(part, "wb") as dst:
                src.seek(p.start * SECTOR)
                left = (p.end - p.start + 1) * SECTOR
                while left:
                    chunk = src.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    dst.write(chunk)
                    left -= len(chunk)
            fsck = subprocess.run(["e2fsck", "-fy", str(part)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
            files = subprocess.run(["debugfs", "-R", "ls -l home/crash", str(part)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            return (f"--- e2fsck -fy on the persistent partition (rc {fsck.returncode})\n"
                    f"{fsck.stdout}\n--- debugfs ls -l home/crash after it\n{files.stdout}")
        finally:
            part.unlink(missing_ok=True)

    def boot_check(self, wbase, st, img, expect, keep=None, name="crash"):
        copy_image(wbase, img)
        apply(img, st.overlay)
        b = boot(img, append="test.run=crash-check", timeout=60, procs=self.procs,
                 initrd=self.initrd or INITRD)
        console = b.console
        problems = []
        slot = b.fields.get("slot-name", "none")
        if not b.reported:
            tail = " | ".join(console.splitlines()[-4:])
            problems.append(f"no slot booted (rc {b.rc}): {tail[:300]}")
        else:
            files = dict(re.findall(r"FILE (\d+) (\S*)", b.test_run))
            lost = [n for n in range(1, expect + 1) if files.get(str(n)) != str(n)]
            if lost:
                problems.append(f"synced files lost or damaged: {lost}")
        # The state the next boot reads, after this boot's own repairs.
        bc = next(p for p in partitions(img) if p.name == self.store.partition)
        scratch = Path(str(img) + ".env")
        scratch.mkdir(exist_ok=True)
        env, note = read_env_image(self.store, img, bc.start * SECTOR, scratch)
        shutil.rmtree(scratch, ignore_errors=True)
        if env is None:
            problems.append(f"after the boot, fw_printenv finds no valid env ({note})")
        elif store_bootable(self.store, env) is None:
            problems.append(f"after the boot, no bootable slot in {store_state(self.store, env)}")
        if problems and keep:
            keep = Path(keep)
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"{name}.txt").write_text(
                f"{st.kind} [{st.desc}] expect files 1..{expect}\n{problems}\n\n"
                f"{self.fsck_persistent(img)}\n\n{console}")
        img.unlink()
        return problems, slot


def to_json(results):
    return json.dumps([{k: v for k, v in r.__dict__.items() if k != "listing"} for r in results],
                      indent=1)
