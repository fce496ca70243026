"""A Raspberry Pi firmware model for QEMU: what the Pi's bootloader and start
firmware do between a reset and the kernel, for rpi-image-gen's gpt/ab_userdata
disks (issue 13 item 3).

Before each boot the model reads the disk image the way the firmware reads the
SD card, picks the boot partition, takes that partition's kernel, initramfs and
cmdline, and starts QEMU's virt machine through `qemudriver.run("run", ...)`
with `--kernel --initrd --append --dtb`: every boot loads the kernel of the
partition it picked (never one `-kernel` for both slots).

What it models, with sources (raspberrypi/documentation, documentation/asciidoc/
computers/config_txt/{autoboot,boot,conditional}.adoc; rpi-image-gen
image/gpt/ab_userdata/{pre-image.sh,genimage.cfg.in.*}):

- autoboot.txt is read from the first FAT partition of the disk. On GPT the
  partition is recognised by its type (rpi-image-gen's genimage config gives
  bootconfig, boot_a and boot_b type "F", basic data): basic data and the EFI
  system partition count as FAT here (an assumption: the bootloader's exact list
  is not documented). Only its first 512 bytes are read ("limited to 512 bytes").
- Sections: `[all]` resets the filters, `[none]` turns settings off until the next
  `[all]`, `[tryboot]` passes only when the one-shot tryboot flag is set, model
  filters (`[pi4]`, `[pi5]`, `[cm5]`, ...) pass for the modelled board (a Pi 5 by
  default) and replace each other; filters of different types combine (all must
  pass). Filters the model cannot evaluate (`[EDID=...]`, `[0x<serial>]`,
  `[gpioN=...]`, `[HDMI:N]`, `[board-type=...]`) do not pass. The last value of a
  key wins. A value that is not a decimal number is ignored (an assumption).
- `boot_partition=N` picks partition N; 0 (or no autoboot.txt, or no
  boot_partition) means "the default partition, the first bootable FAT
  partition": FAT with `config.txt` (the Pi 5 rule; `start.elf` on older boards).
  A partition number passed to the reboot (`reboot "2"`) wins over autoboot.txt
  for the next boot ("unless the partition number was already specified as a
  parameter to the reboot command").
- The one-shot tryboot flag: set when the guest kernel logs `reboot: Restarting
  system with command '0 tryboot'` (Linux kernel/reboot.c prints the
  LINUX_REBOOT_CMD_RESTART2 argument; on a Pi the watchdog driver passes it to
  the firmware), used by the next boot only and cleared before it starts ("the
  tryboot flag is automatically cleared"). A panic, a plain reboot, a hang past
  the timeout, a watchdog reset or a power cut is a reset without it.
- `tryboot_a_b=1`: in tryboot mode the partition's normal `config.txt` and
  `boot.img` are loaded; without it a tryboot loads `tryboot.txt` and
  `tryboot.img` instead.
- config.txt of the picked partition, with the same filters: `kernel=`
  (default `kernel_2712.img` on a Pi 5, else `kernel8.img`), `initramfs FILE[,FILE]
  ADDR` (`followkernel` or an address: files concatenated), `ramfsfile=`,
  `auto_initramfs=1` (the initramfs named after the kernel: kernel8.img ->
  initramfs8, kernel_2712.img -> initramfs_2712), `cmdline=` (default
  cmdline.txt), `boot_ramdisk=1` (load `boot.img`, a FAT image, and read every
  later file, config.txt included, from it; the model's boot.img is labelled
  BOOTRD as issue 13 describes rpi-image-gen's; raspberrypi/rpi-image-gen at
  262d4df (2026-08-13) has no boot.img in ab_userdata: its boot partitions are
  genimage `boot.vfat` images, label BOOT, files loose). A missing boot.img is
  "no-boot" here; rpi-eeprom pieeprom-2026-02-23 (raspberrypi/rpi-eeprom#812)
  lets the 2712 bootloader's partition walk go on instead (not modelled).
  A 64-bit kernel may be gzip-compressed (boot.adoc, arm_64bit):
  the model gunzips it. A partition, kernel or initramfs that cannot be found is
  "no-boot": the model reports it and starts nothing (the real bootloader then
  tries its next boot mode and retries; not modelled).
- The device tree: QEMU's own virt tree (`-machine dumpdtb=` with the very same
  machine arguments), plus `/chosen/bootloader/{partition,tryboot,boot-mode,
  pm_rsts}` as u32 cells (fdtput), the properties the firmware adds
  (autoboot.adoc's update flow reads `partition` and `tryboot`). boot-mode 1 =
  SD card (BOOT_ORDER's SD value). pm_rsts: 0x1000 (PM_RSTS HADPOR, power-on)
  after a power-on, a power cut or a hang the host ended; 0x20 (HADWRF, watchdog
  full reset) after a reboot, a panic or a watchdog reset: on a Pi the restart
  itself goes through the PM watchdog (Linux drivers/watchdog/bcm2835_wdt.c), so
  the register cannot tell a reboot from a watchdog reset; the model's record can.
- The disk: QEMU's `sdhci-pci` with an `sd-card` holding the image, so the
  kernel sees mmcblk0 as on a Pi (its initramfs needs sdhci_pci; both bookworm
  kernels have it as a module and mmc_block built in). QEMU's sd-card needs a
  power-of-two image size (qemu/mkdisk --pow2). qemu/run wants one --disk: the
  model gives it a 1 MiB blank image (vda, no partition table).
- A watchdog for the guest on every boot: `-device i6300esb` with
  `-action watchdog=debug`: QEMU prints `watchdog: timer fired` when it expires,
  and the model cuts the machine there, as the reset it is, and records
  "watchdog" (a test's own `cut` with a console regex is combined with it; a
  time-only `cut` is not, and then a watchdog is only seen after the run).

What it does not model: the EEPROM's BOOT_ORDER and other boot modes (USB,
network, NVMe), MBR disks, `os_prefix`, `include`, overlays and `dtoverlay`/
`dtparam` (the tree is QEMU's, not a Pi's), `start*.elf`/fixup, the PM_RSTS
partition bits Linux's bcm2835_wdt writes, `[tryboot]` in config.txt influencing
anything but the keys above, the firmware's own retries, and writes: like the
firmware, the model never writes the disk.

`Pi.boot()` takes an `append` string that is not the firmware's: the tests add
`test.run=NAME` to the cmdline.txt they built with it.
"""
import gzip
import re
import shutil
import struct
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import guest
import qemudriver

AUTOBOOT = "autoboot.txt"
AUTOBOOT_MAX = 512
# GPT types the bootloader reads as FAT (see the module doc).
FAT_TYPES = {
    uuid.UUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),   # basic data (genimage "F", sgdisk 0700)
    uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),   # EFI system partition
}
PM_RSTS_POWER_ON = 0x1000   # HADPOR
PM_RSTS_WATCHDOG = 0x20     # HADWRF
BOOT_MODE_SD = 1
WATCHDOG_LINE = r"watchdog: timer fired"
# Which model filters a board sees (conditional.adoc's table; a Pi 5 sees [pi5]).
BOARDS = {
    "pi5": {"pi5"}, "cm5": {"pi5", "cm5"}, "pi4": {"pi4"}, "pi400": {"pi4", "pi400"},
    "cm4": {"pi4", "cm4"}, "pi3": {"pi3"}, "pi02": {"pi0", "pi0w", "pi02"},
}
MODEL_FILTERS = {"pi1", "pi2", "pi3", "pi3+", "pi4", "pi400", "cm4", "cm4s", "pi0", "pi0w",
                 "pi02", "pi5", "pi500", "cm5"}


class NoBoot(Exception):
    """The firmware finds nothing to boot (the message says what is missing)."""


# --- parsing: text in, values out ------------------------------------------------

def section_filter(name, tryboot, board="pi5"):
    """(filter type, passes) of a `[name]` line; type None for [all]."""
    n = name.strip().lower()
    if n == "all":
        return None, True
    if n == "none":
        return "none", False
    if n == "tryboot":
        return "tryboot", bool(tryboot)
    if n in MODEL_FILTERS:
        return "model", n in BOARDS.get(board, {board})
    kind = n.split("=", 1)[0].split(":", 1)[0]
    return kind, False   # EDID, serial, gpio, HDMI, board-type: not modelled, never pass


def parse_settings(text, tryboot, board="pi5"):
    """The settings of a config.txt-style text under the firmware's conditional
    filters: [(key, value)] in file order for the lines that apply. `initramfs`
    lines (no `=`) give ("initramfs", "FILE ADDR")."""
    active, out = {}, []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"\[([^\]]*)\]", line)
        if m:
            kind, ok = section_filter(m.group(1), tryboot, board)
            if kind is None:
                active.clear()
            else:
                active[kind] = ok
            continue
        if not all(active.values()):
            continue
        if "=" in line:
            k, _, v = line.partition("=")
            out.append((k.strip(), v.strip()))
        else:
            k, _, v = line.partition(" ")
            if k.strip() == "initramfs":
                out.append(("initramfs", v.strip()))
    return out


def last_int(settings, key):
    """The last decimal value of `key` (non-numbers ignored), or None."""
    val = None
    for k, v in settings:
        if k == key and re.fullmatch(r"\d+", v):
            val = int(v)
    return val


def parse_autoboot(data, tryboot, board="pi5"):
    """autoboot.txt bytes -> {"boot_partition": N, "tryboot_a_b": 0|1} (what applies;
    0 = the default partition). Only the first 512 bytes count."""
    text = data[:AUTOBOOT_MAX].decode("latin-1")
    s = parse_settings(text, tryboot, board)
    return {"boot_partition": last_int(s, "boot_partition") or 0,
            "tryboot_a_b": 1 if last_int(s, "tryboot_a_b") == 1 else 0}


def parse_reboot_arg(arg):
    """`reboot "<arg>"` as the firmware takes it: (partition or 0, tryboot flag)."""
    words = arg.split()
    part = int(words[0]) if words and words[0].isdigit() else 0
    return part, "tryboot" in words[1:] or (words[:1] == ["tryboot"])


def default_kernel(board):
    return "kernel_2712.img" if board in ("pi5", "cm5") else "kernel8.img"


def boot_files(settings, board, exists):
    """From config.txt settings: (kernel, [initramfs files], cmdline file, boot_ramdisk).
    `exists(name)` tells whether a file is there (the default-kernel fallback)."""
    kernel = None
    initrds, auto, cmdline, ramdisk = [], False, "cmdline.txt", False
    for k, v in settings:
        if k == "kernel":
            kernel = v
        elif k == "initramfs":
            files = v.split()[0] if v.split() else ""
            initrds = [f for f in files.split(",") if f]
        elif k == "ramfsfile":
            initrds = [f for f in v.split(",") if f]
        elif k == "auto_initramfs":
            auto = v == "1"
        elif k == "cmdline":
            cmdline = v
        elif k == "boot_ramdisk":
            ramdisk = v == "1"
    if kernel is None:
        kernel = default_kernel(board)
        if not exists(kernel) and exists("kernel8.img"):
            kernel = "kernel8.img"
    if not initrds and auto:
        name = re.sub(r"\.img$", "", kernel.lstrip("/"))
        if name.startswith("kernel"):
            cand = "initramfs" + name[len("kernel"):]
            if exists(cand):
                initrds = [cand]
    return kernel, initrds, cmdline, ramdisk


# --- the disk ----------------------------------------------------------------------

@dataclass
class Part:
    number: int
    type: uuid.UUID
    name: str
    first: int      # byte offset
    size: int
    attrs: int

    @property
    def fat(self):
        return self.type in FAT_TYPES


def read_gpt(disk):
    """The partitions of a GPT disk image (primary table), in table order."""
    with open(disk, "rb") as f:
        f.seek(512)
        hdr = f.read(92)
        if hdr[:8] != b"EFI PART":
            raise NoBoot(f"{disk}: no GPT header at LBA 1")
        entries_lba, count, esize = struct.unpack_from("<QII", hdr, 72)
        f.seek(entries_lba * 512)
        table = f.read(count * esize)
    parts = []
    for i in range(count):
        e = table[i * esize:(i + 1) * esize]
        if e[:16] == bytes(16):
            continue
        first, last, attrs = struct.unpack_from("<QQQ", e, 32)
        name = e[56:128].decode("utf-16-le").rstrip("\0")
        parts.append(Part(i + 1, uuid.UUID(bytes_le=e[:16]), name, first * 512,
                          (last - first + 1) * 512, attrs))
    return parts


class Fat:
    """Files of one FAT filesystem: a partition of the disk or an image file (mtools)."""

    def __init__(self, image, offset=0):
        self.spec = f"{image}@@{offset}" if offset else str(image)

    def read(self, name):
        r = subprocess.run(["mcopy", "-n", "-i", self.spec, f"::{name.lstrip('/')}", "-"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
        return r.stdout if r.returncode == 0 else None

    def exists(self, name):
        return self.read(name) is not None

    def label(self):
        r = subprocess.run(["mlabel", "-s", "-i", self.spec, "::"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True,
                           env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
        m = re.search(r"Volume label is (\S+)", r.stdout)
        return m.group(1) if m else None


# --- one pick, one boot ----------------------------------------------------------

@dataclass
class Pick:
    """What the firmware loads for one boot."""
    partition: int
    tryboot: bool
    config: str            # config.txt or tryboot.txt
    ramdisk: str = None    # boot.img / tryboot.img when boot_ramdisk=1
    kernel: str = ""       # file names as the firmware resolved them
    initramfs: list = field(default_factory=list)
    cmdline_file: str = "cmdline.txt"
    cmdline: str = ""
    notes: list = field(default_factory=list)   # why: autoboot missing, defaults, ...
    blobs: dict = field(default_factory=dict)   # kernel / initramfs bytes


@dataclass
class Event:
    """How a boot ended, as the model records it in the chain."""
    kind: str              # reboot, tryboot, panic, watchdog, hang, poweroff, power-cut, no-boot, exit
    partition: int = 0
    tryboot: bool = False  # the flag this boot ran with
    reboot_arg: str = None
    pm_rsts: int = 0
    wall: float = 0.0
    detail: str = ""
    kernel: str = ""       # the release the console printed ("Linux version ...")


def pick(disk, tryboot=False, reboot_partition=0, board="pi5", workdir=None):
    """The firmware's choice for one boot of `disk` (pure apart from reading the image;
    a boot.img is read through a file in `workdir`, removed before it returns)."""
    ramfile = Path(workdir or guest.OUT / "rpifw") / "ramdisk.img"
    try:
        return _pick(disk, tryboot, reboot_partition, board, ramfile)
    finally:
        ramfile.unlink(missing_ok=True)


def _pick(disk, tryboot, reboot_partition, board, ramfile):
    parts = read_gpt(disk)
    fats = [p for p in parts if p.fat]
    if not fats:
        raise NoBoot(f"{disk}: no FAT partition (GPT type basic data / ESP)")
    notes = []
    data = Fat(disk, fats[0].first).read(AUTOBOOT)
    if data is None:
        notes.append(f"{AUTOBOOT} missing on partition {fats[0].number}: default partition")
        ab = {"boot_partition": 0, "tryboot_a_b": 0}
    else:
        if len(data) > AUTOBOOT_MAX:
            notes.append(f"{AUTOBOOT} is {len(data)} bytes: only the first {AUTOBOOT_MAX} read")
        ab = parse_autoboot(data, tryboot, board)
        if ab["boot_partition"] == 0:
            notes.append(f"{AUTOBOOT} names no boot_partition: default partition")
    number = reboot_partition or ab["boot_partition"]
    if reboot_partition:
        notes.append(f"partition {reboot_partition} from the reboot argument")
    config = "tryboot.txt" if tryboot and not ab["tryboot_a_b"] else "config.txt"
    if number == 0:
        # The first bootable FAT partition: one holding config.txt (Pi 5).
        boot = next((p for p in fats if Fat(disk, p.first).exists("config.txt")), None)
        if boot is None:
            raise NoBoot(f"{disk}: no bootable FAT partition (none holds config.txt)")
        number = boot.number
    part = next((p for p in parts if p.number == number), None)
    if part is None or not part.fat:
        raise NoBoot(f"{disk}: boot partition {number} is "
                     f"{'missing' if part is None else 'not FAT'}")
    fs = Fat(disk, part.first)
    text = fs.read(config)
    if text is None and config == "config.txt":
        raise NoBoot(f"{disk}: partition {number} has no config.txt (not bootable)")
    if text is None:
        notes.append(f"partition {number} has no {config}: firmware defaults")
    settings = parse_settings((text or b"").decode("latin-1"), tryboot, board)
    p = Pick(number, tryboot, config, notes=notes)
    kernel, initrds, cmdfile, ramdisk = boot_files(settings, board, fs.exists)
    if ramdisk:
        p.ramdisk = "tryboot.img" if config == "tryboot.txt" else "boot.img"
        img = fs.read(p.ramdisk)
        if img is None:
            raise NoBoot(f"{disk}: partition {number}: boot_ramdisk=1 but no {p.ramdisk}")
        ramfile.parent.mkdir(parents=True, exist_ok=True)
        ramfile.write_bytes(img)
        fs = Fat(ramfile)
        p.notes.append(f"{p.ramdisk} label {fs.label()}")
        text = fs.read("config.txt")
        settings = parse_settings((text or b"").decode("latin-1"), tryboot, board)
        kernel, initrds, cmdfile, _ = boot_files(settings, board, fs.exists)
    p.kernel, p.initramfs, p.cmdline_file = kernel, initrds, cmdfile
    k = fs.read(kernel)
    if k is None:
        raise NoBoot(f"{disk}: partition {number}{' ' + p.ramdisk if p.ramdisk else ''}: "
                     f"kernel {kernel} missing")
    p.blobs["kernel"] = gzip.decompress(k) if k[:2] == b"\x1f\x8b" else k
    rd = b""
    for f in initrds:
        b = fs.read(f)
        if b is None:
            raise NoBoot(f"{disk}: partition {number}: initramfs {f} missing")
        rd += b
    p.blobs["initramfs"] = rd
    cmd = fs.read(cmdfile)
    p.cmdline = (cmd or b"").decode("latin-1").split("\n")[0].strip()
    if cmd is None:
        p.notes.append(f"{cmdfile} missing: empty cmdline")
    return p


def classify(run, watchdog_cut):
    """How a qemudriver.Run ended: (kind, reboot argument or None, detail)."""
    c = run.console
    m = re.search(r"reboot: Restarting system with command '([^']*)'", c)
    if watchdog_cut or re.search(WATCHDOG_LINE, c):
        return "watchdog", None, "the watchdog (i6300esb) expired: reset"
    if run.killed_at is not None:
        return "power-cut", None, f"power cut at {run.killed_at:.2f}s"
    if run.timed_out or run.rc == 124:
        return "hang", None, "no reset before the timeout: the host ended it"
    if m:
        part, flag = parse_reboot_arg(m.group(1))
        return ("tryboot" if flag else "reboot"), m.group(1), f"reboot with command '{m.group(1)}'"
    if "Kernel panic" in c:
        return "panic", None, "kernel panic: reset (panic=-1)"
    if "reboot: Restarting system" in c:
        return "reboot", None, "plain reboot"
    if "reboot: Power down" in c:
        return "poweroff", None, "powered off"
    return "exit", None, f"QEMU exited with {run.rc}"


def boots_in_a_row(boot, n, **kw):
    """Up to `n` boots of a firmware model in a row (each reset boots again: `boot(**kw)`
    returns (guest.Boot, Event)); stops after a power-off or a boot with nothing to boot.
    Returns [(guest.Boot, Event)]. The Pi model's and the TF-A model's `run`."""
    out = []
    for _ in range(n):
        b, ev = boot(**kw)
        out.append((b, ev))
        if ev.kind in ("poweroff", "no-boot"):
            break
    return out


class Pi:
    """One Raspberry Pi with a disk: the firmware's one-shot state across boots.

    `tryboot` is the one-shot flag for the next boot; `history` the chain's
    records (one Event per boot)."""

    def __init__(self, disk, workdir, board="pi5", timeout=120, smp=1, mem=512):
        self.disk = Path(disk)
        self.work = Path(workdir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.board, self.timeout, self.smp, self.mem = board, timeout, smp, mem
        self.tryboot = False
        self.reboot_partition = 0
        self.pm_rsts = PM_RSTS_POWER_ON
        self.history = []
        self.write_log = None
        self.blank = self.work / "blank.img"
        if not self.blank.exists():
            with open(self.blank, "wb") as f:
                f.truncate(1 << 20)
        self._base_dtb = None

    def machine_args(self):
        """What qemu/run passes after `--`: the SD card, the watchdog. With
        `self.write_log` set, the card goes through QEMU's blklogwrites driver:
        every write the guest issues is logged there (tests/crash)."""
        drive = f"if=none,id=card0,file={self.disk},format=raw"
        if self.write_log:
            Path(self.write_log).touch()   # QEMU opens the log, it does not create it
            drive = ("driver=blklogwrites,if=none,id=card0,file.driver=file,"
                     f"file.filename={self.disk},log.driver=file,"
                     f"log.filename={self.write_log},log-sector-size=512")
        return ["-drive", drive,
                "-device", "sdhci-pci", "-device", "sd-card,drive=card0",
                "-device", "i6300esb", "-action", "watchdog=debug"]

    def script_args(self, kernel, initrd):
        return ["--disk", self.blank, "--kernel", kernel, "--initrd", initrd,
                "--smp", self.smp, "--mem", self.mem]

    def base_dtb(self, kernel, initrd):
        """QEMU's virt tree for these very machine arguments (dumped once)."""
        if self._base_dtb is None:
            out = self.work / "virt.dtb"
            r = qemudriver.run("run", self.script_args(kernel, initrd), 60,
                               qemu_args=self.machine_args() + ["-machine", f"dumpdtb={out}"])
            if not out.exists():
                raise RuntimeError(f"dumpdtb failed:\n{r.console}")
            self._base_dtb = out
        return self._base_dtb

    def dtb(self, n, kernel, initrd, partition, tryboot):
        d = self.work / f"boot-{n}.dtb"
        shutil.copyfile(self.base_dtb(kernel, initrd), d)
        subprocess.run(["fdtput", "-c", str(d), "/chosen/bootloader"], check=True)
        for prop, val in (("partition", partition), ("tryboot", int(tryboot)),
                          ("boot-mode", BOOT_MODE_SD), ("pm_rsts", self.pm_rsts)):
            subprocess.run(["fdtput", "-t", "u", str(d), "/chosen/bootloader", prop, str(val)],
                           check=True)
        return d

    def pick(self):
        """What the next boot would load (does not consume the one-shot flag)."""
        return pick(self.disk, self.tryboot, self.reboot_partition, self.board, self.work)

    def boot(self, timeout=None, cut=None, append="", log=None):
        """One boot: (guest.Boot, Event). The one-shot flag and reboot partition are
        consumed (cleared before the firmware starts); the event sets them again."""
        n = len(self.history) + 1
        flag, rpart, rsts = self.tryboot, self.reboot_partition, self.pm_rsts
        self.tryboot, self.reboot_partition = False, 0
        try:
            p = pick(self.disk, flag, rpart, self.board, self.work)
        except NoBoot as e:
            ev = Event("no-boot", 0, flag, pm_rsts=rsts, detail=str(e))
            self.history.append(ev)
            self.pm_rsts = PM_RSTS_POWER_ON
            return guest.Boot("", 0), ev
        kernel, initrd = self.work / f"boot-{n}.kernel", self.work / f"boot-{n}.initrd"
        kernel.write_bytes(p.blobs["kernel"])
        initrd.write_bytes(p.blobs["initramfs"])
        dtb = self.dtb(n, kernel, initrd, p.partition, flag)
        cmdline = " ".join(x for x in (p.cmdline, append) if x)
        wcut = cut
        if cut is None:
            wcut = (WATCHDOG_LINE, 0)
        elif cut[0] is not None:
            wcut = (f"(?:{cut[0]})|{WATCHDOG_LINE}", cut[1])
        args = self.script_args(kernel, initrd) + ["--append", cmdline, "--dtb", dtb]
        run = qemudriver.run("run", args, timeout or self.timeout,
                             qemu_args=self.machine_args(), cut=wcut, log=log)
        wd = run.killed_at is not None and any(re.search(WATCHDOG_LINE, l) for _, l in run.lines)
        kind, arg, detail = classify(run, wd)
        rel = re.search(r"Linux version (\S+)", run.console)
        ev = Event(kind, p.partition, flag, arg, rsts, run.wall, detail,
                   rel.group(1) if rel else "")
        if kind == "tryboot" or (kind == "reboot" and arg):
            self.reboot_partition, self.tryboot = parse_reboot_arg(arg)
        self.pm_rsts = (PM_RSTS_WATCHDOG if kind in ("reboot", "tryboot", "panic", "watchdog")
                        else PM_RSTS_POWER_ON)
        self.history.append(ev)
        for f in (kernel, initrd):
            f.unlink()
        return guest.report(run), ev

    def run(self, n, **kw):
        return boots_in_a_row(self.boot, n, **kw)

    def chain(self):
        """The chain's record, one line a boot."""
        return "\n".join(f"boot {i}: partition {e.partition} tryboot={int(e.tryboot)} "
                         f"pm_rsts={e.pm_rsts:#x} kernel={e.kernel or '-'} -> {e.kind}: {e.detail}"
                         for i, e in enumerate(self.history, 1))


# --- building a two-kernel disk ------------------------------------------------------

REPO = qemudriver.REPO
KERNELS = {"a": REPO / ".cache/kernel", "b": REPO / ".cache/kernel-b"}
# Both kernels: the SD card (sdhci_pci; mmc_block is built in), the filesystems, the watchdog.
INITRD_MODULES = "sdhci_pci ext4 vfat nls_cp437 nls_ascii overlay erofs i6300esb"
AUTOBOOT_TEXT = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
# The same after B was committed (autoboot.adoc's "Updated autoboot.txt").
AUTOBOOT_SWAPPED = "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"
SIZES = "16 96 96 48 48 64"   # MiB: bootconfig, boot_a/b (a 44 MB 6.12 Image in a boot.img), ...


def slotinit_bin():
    import os
    return Path(os.environ.get("SLOTINIT")
                or REPO / "target/aarch64-unknown-linux-gnu/release/slotinit")


def release(kdir):
    return (Path(kdir) / "version").read_text().strip()


def releases():
    """{"a": 6.1's release, "b": 6.12's} of the kernels qemu/fetch put in .cache."""
    return {k: release(d) for k, d in KERNELS.items() if (d / "version").exists()}


def missing_artifacts():
    """Why the model cannot boot here (the aarch64 slotinit, both kernels), or None.
    The tests fail on it, never skip."""
    if not slotinit_bin().exists():
        return f"{slotinit_bin()} missing: tools/build-init (or set SLOTINIT)"
    if len(releases()) != 2:
        return "both kernels are needed: run qemu/fetch (.cache/kernel and .cache/kernel-b)"
    return None


def set_key(text, section, key, value):
    """`key = value` (value a TOML literal) in `[section]` of a TOML text, set in place."""
    lines, current, done = text.splitlines(keepends=True), None, False
    for i, line in enumerate(lines):
        m = re.match(r"\s*\[+([^\]]+)\]+\s*$", line)
        if m:
            current = m.group(1).strip()
        elif current == section and re.match(rf"{re.escape(key)}\s*=", line):
            lines[i] = f"{key} = {value}\n"
            done = True
            break
    assert done, f"no {key} in [{section}]"
    return "".join(lines)


def config_text(system_fs="ext4", backend="none", base=REPO / "configs/rpi-ab-userdata.toml"):
    """The rpi profile's config with another [system] fstype and [bootstate] backend."""
    text = set_key(Path(base).read_text(), "system", "fstype", f'"{system_fs}"')
    return set_key(text, "bootstate", "backend", f'"{backend}"')


def initramfs(kdir, config, out, modules=INITRD_MODULES, as_shipped=False, files=()):
    """An initramfs for kernel dir `kdir`: its modules decompressed (qemu/rpi-boot
    --modules-tree), or `as_shipped` (6.12's .ko.xz, which slotinit's
    finit_module asks the kernel to decompress), slotinit with `config` (text)."""
    out = Path(out)
    work = out.parent / (out.name + ".d")
    shutil.rmtree(work, ignore_errors=True)
    (work / "kd").mkdir(parents=True)
    kd = work / "kd"
    if as_shipped:
        kd = Path(kdir)
    else:
        subprocess.run([str(REPO / "qemu/rpi-boot"), "--modules-tree", str(kdir), modules,
                        str(work / "kd")], check=True, stdout=subprocess.DEVNULL)
        (work / "kd/version").write_text(release(kdir) + "\n")
    (work / "slotinit.toml").write_text(config)
    subprocess.run([str(REPO / "initramfs/build"), "--init", str(slotinit_bin()),
                    "--config", str(work / "slotinit.toml"), "--kernel-dir", str(kd),
                    "--modules", modules, "--storage", "",
                    *[a for f in files for a in ("--file", str(f))],
                    "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(work)
    return out


def boot_dir(out, kdir, initrd, cmdline="", boot_img=False, auto=False, config_lines=()):
    """One boot partition's content (qemu/rpi-boot)."""
    args = [str(REPO / "qemu/rpi-boot"), "--out", str(out), "--kernel-dir", str(kdir),
            "--initramfs", str(initrd), "--cmdline", cmdline]
    if boot_img:
        args.append("--boot-img")
    if auto:
        args.append("--auto-initramfs")
    for line in config_lines:
        args += ["--config-line", line]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return Path(out)


# The system's own modules: the watchdog's, and one no initramfs loads, which the
# system modprobes from /lib/modules/$(uname -r) to show its modules are there.
SYSTEM_MODULES = "i6300esb crc_itu_t"
# Guest scripts (test.run=NAME) the model's system trees carry.
SCRIPTS = {
    # What kernel runs, whether the system has its modules, what the firmware told it.
    "kernel": """r=$(uname -r)
echo "uname-r=$r"
if [ -f "/lib/modules/$r/modules.dep" ]; then echo "modules-dir=yes"; else echo "modules-dir=no"; fi
echo "modules-ko=$(find "/lib/modules/$r" -name '*.ko' 2>/dev/null | wc -l)"
if modprobe crc_itu_t 2>&1 && grep -q '^crc_itu_t ' /proc/modules; then echo "modprobe=ok"; else echo "modprobe=failed"; fi
for f in /proc/device-tree/chosen/bootloader/*; do
  [ -f "$f" ] && [ "${f##*/}" != name ] && echo "dt-$(basename "$f")=$(hexdump -v -e '1/1 "%02x"' "$f")"
done
""",
    # The update client's reboot into a trial: LINUX_REBOOT_CMD_RESTART2 "0 tryboot"
    # (busybox's reboot takes no argument: /usr/bin/reboot-arg, built by reboot_arg_binary).
    "tryboot": """sync
/usr/bin/reboot-arg "0 tryboot"
echo "reboot-arg failed: $?"
""",
    # A plain restart (no argument): the flag must not be set by it.
    "reboot": """sync
reboot -f
""",
    # A kernel panic (sysrq crash): with panic=-1 the kernel resets at once.
    "panic": """sync
echo c >/proc/sysrq-trigger
""",
    # A system that stops without arming any watchdog: only the host's timeout ends it.
    "stall": """echo "stalling"
while :; do sleep 1; done
""",
    # slotinit's view of this boot (rpi-tryboot: trial or committed, the record).

    # An update client: the other slot is written; arm its trial and restart into
    # it through the firmware (reboot "0 tryboot").
    "update": """echo "=== STATUS ==="
slotinit status --json
echo
echo "=== UPDATE ==="
slotinit mark-active other --reboot
echo "mark-active-exit=$?"
""",
    # The health check passed: commit the trial, then a plain restart.
    "commit": """echo "uname-r=$(uname -r)"
echo "=== STATUS ==="
slotinit status --json
echo
slotinit mark-good
echo "mark-good-exit=$?"
echo "=== COMMITTED ==="
slotinit status --json
echo
sync
reboot -f
""",
    # A system that arms the watchdog (opening /dev/watchdog starts i6300esb) and hangs.
    "hang": """if exec 3>/dev/watchdog; then echo "watchdog armed"; else echo "no /dev/watchdog"; fi
while :; do sleep 1; done
""",
}
# slotinit's view of this boot (rpi-tryboot: trial or committed, the record),
# after the kernel facts.
SCRIPTS["status"] = SCRIPTS["kernel"] + """echo "=== STATUS ==="
slotinit status --json
echo
"""
REBOOT_ARG_C = r"""
/* reboot-arg: restart with a command string (LINUX_REBOOT_CMD_RESTART2), what the
   Pi's `reboot "0 tryboot"` does; busybox's reboot cannot pass one. */
#include <linux/reboot.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: reboot-arg ARG\n"); return 2; }
    sync();
    syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
            LINUX_REBOOT_CMD_RESTART2, argv[1]);
    perror("reboot");
    return 1;
}
"""


def reboot_arg_binary(work):
    """A static aarch64 /usr/bin/reboot-arg (gcc-aarch64-linux-gnu), built once in `work`."""
    out = Path(work) / "reboot-arg"
    if not out.exists():
        src = Path(work) / "reboot-arg.c"
        src.write_text(REBOOT_ARG_C)
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-Os", "-o", str(out), str(src)],
                       check=True)
    return out


def system_tree(d, name, kernel, work):
    """A test system (tests/guest/mkroot) for slot `name` with kernel `kernel`'s
    (a/b) modules, the SCRIPTS in /test.d and /usr/bin/reboot-arg."""
    import os
    d = Path(d)
    shutil.rmtree(d, ignore_errors=True)
    env = dict(os.environ, KERNEL_DIR=str(KERNELS[kernel]), KMODS=SYSTEM_MODULES,
               SLOTINIT=str(slotinit_bin()))
    subprocess.run([str(REPO / "tests/guest/mkroot"), str(d), name], check=True, env=env)
    for n, text in SCRIPTS.items():
        (d / "test.d" / n).write_text(text)
        (d / "test.d" / n).chmod(0o755)
    shutil.copy(reboot_arg_binary(work), d / "usr/bin/reboot-arg")
    return d


def make_disk(path, work, system_fs="ext4", erofs_z="lz4hc", boot_img=(False, False),
              autoboot=AUTOBOOT_TEXT, cmdline="", kernels=("a", "b"), systems=(None, None),
              backend="none", config=None, own_systems=True, as_shipped=False,
              initramfs_files=(), mkdisk_args=()):
    """A gpt/ab_userdata disk for the model: boot_a with kernel `kernels[0]` (a = 6.1,
    b = 6.12) and its initramfs, boot_b with `kernels[1]`, each system with its
    kernel's /lib/modules, `autoboot` on bootconfig (None: no autoboot.txt).
    `own_systems`: system trees from system_tree() (the model's test scripts);
    `mkdisk_args` go to qemu/mkdisk last (a later --sizes wins)."""
    import os
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = config or config_text(system_fs, backend)
    args = ["--sizes", SIZES, "--pow2", "--system-fs", system_fs, "--erofs-z", erofs_z]
    for slot, k, img, system in zip("ab", kernels, boot_img, systems):
        kdir = KERNELS[k]
        rd = initramfs(kdir, cfg, work / f"initramfs-{slot}.img", as_shipped=as_shipped,
                       files=initramfs_files)
        bd = work / f"boot_{slot}"
        shutil.rmtree(bd, ignore_errors=True)
        boot_dir(bd, kdir, rd, cmdline, boot_img=img)
        rd.unlink()
        args += [f"--boot-{slot}", bd, f"--kernel-{slot}", kdir]
        if system is None and own_systems:
            system = system_tree(work / f"system_{slot}", f"system_{slot}", k, work)
        if system:
            args += [f"--system-{slot}", system]
    if autoboot is not None:
        (work / "autoboot.txt").write_text(autoboot)
        args += ["--bootconfig-file", f"{work / 'autoboot.txt'}:autoboot.txt"]
    env = dict(os.environ, SLOTINIT=str(slotinit_bin()))
    subprocess.run([str(REPO / "qemu/mkdisk"), "--out", str(path), *map(str, args),
                    *map(str, mkdisk_args)], check=True, stdout=subprocess.DEVNULL, env=env)
    for slot in "ab":
        shutil.rmtree(work / f"boot_{slot}", ignore_errors=True)
        shutil.rmtree(work / f"system_{slot}", ignore_errors=True)
    return Path(path)


DEMO_BOOTS = [
    ("test.run=update", "slot A, committed; the update client arms B's trial: "
                        "slotinit mark-active other --reboot"),
    ("test.run=commit", "the one-shot flag picks autoboot.txt's [tryboot] partition: B's trial "
                        "on its own kernel; the health check commits it: slotinit mark-good"),
    ("test.run=status", "autoboot.txt now names B: B by default, committed"),
]


def main(argv):
    """qemu/demo --firmware rpi: build the two-kernel disk, boot it through the model."""
    import argparse
    ap = argparse.ArgumentParser(prog="rpifw.py")
    ap.add_argument("--disk", default=str(guest.OUT / "rpi/demo-disk.img"))
    ap.add_argument("--system-fs", default="ext4", choices=("ext4", "erofs"))
    ap.add_argument("--no-build", action="store_true", help="boot an existing --disk")
    a = ap.parse_args(argv)
    work = Path(a.disk).parent / "rpifw-work"
    if not a.no_build:
        make_disk(a.disk, work, system_fs=a.system_fs, boot_img=(False, True),
                  config=(REPO / "configs/rpi-ab-userdata.toml").read_text()
                  if a.system_fs == "ext4" else config_text(a.system_fs, "rpi-tryboot"))
        print(f"rpifw: {a.disk}: boot_a {release(KERNELS['a'])} (loose files), "
              f"boot_b {release(KERNELS['b'])} (in boot.img), {a.system_fs} systems, "
              f"the rpi profile (bootstate backend \"rpi-tryboot\")")
    pi = Pi(a.disk, work)
    for n, (append, why) in enumerate(DEMO_BOOTS, 1):
        print(f"\n=================== firmware model, boot {n}: {why} ===================")
        try:
            p = pi.pick()
            print(f"firmware: partition {p.partition}, tryboot={int(p.tryboot)}, {p.config}"
                  f"{' -> ' + p.ramdisk if p.ramdisk else ''}: kernel {p.kernel}, "
                  f"initramfs {','.join(p.initramfs) or '-'}, cmdline \"{p.cmdline}\"")
            for note in p.notes:
                print(f"  note: {note}")
        except NoBoot as e:
            print(f"firmware: nothing to boot: {e}")
        b, ev = pi.boot(append=append, log=guest.OUT / f"rpi/demo-boot-{n}.log")
        r = dict(l.split("=", 1) for l in b.test_run.splitlines() if "=" in l)
        for line in b.slotinit_log():
            if re.search(r"slot source Devicetree|slotinit: slot [ab] |tryboot|trial|"
                         r"marked|through the firmware", line):
                print(f"  {line}")
        for line in b.console.splitlines():
            if re.match(r"(slot [ab] |restarting|\{\"booted_slot)", line):
                print(f"  system: {line[:200]}")
        if r:
            print(f"system: {b.fields.get('slot-name')}, uname -r {r.get('uname-r')}, "
                  f"/lib/modules/{r.get('uname-r')}: {r.get('modules-dir')}, modprobe {r.get('modprobe')}")
        print(f"end: {ev.kind} ({ev.detail}, {ev.wall:.1f} s)")
    print("\nchain:\n" + pi.chain())
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
