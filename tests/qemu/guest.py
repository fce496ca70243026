"""Boot the project's initramfs under qemu-system-aarch64 and read what the guest reports.

The guest's /sbin/init (tests/guest/report-init) prints one report block; this
module turns it, the kernel log and the handoff record into Python values.
"""
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import qemudriver

REPO = qemudriver.REPO
OUT = REPO / "out"
# The initramfs most QEMU tests boot: this layout's U-Boot + RAUC variant
# (configs/rpi-uboot-rauc.toml: slotinit counts in uboot.env on bootconfig),
# which boots without the Raspberry Pi firmware. The rpi profile's own
# initramfs (out/initramfs.img, rpi-tryboot) boots through the firmware model
# (tests/qemu/rpifw.py, test_rpi.py).
INITRD = OUT / "initramfs-uboot-env.img"


def mkdisk(path, *args, script="qemu/mkdisk"):
    """Builds a GPT test disk with qemu/mkdisk (or uboot/mkdisk, which adds the
    chain's files and passes what follows `--` to qemu/mkdisk); returns its path.
    Every disk the tests, the campaigns and the benchmark boot is built here."""
    subprocess.run([str(REPO / script), "--out", str(path), *map(str, args)],
                   check=True, stdout=subprocess.DEVNULL)
    return Path(path)


@dataclass
class Mount:
    root: str
    mount_point: str
    options: str
    fstype: str
    source: str
    super_options: str

    @property
    def readonly(self):
        return "ro" in self.options.split(",")


@dataclass
class Boot:
    console: str
    rc: int
    sections: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)
    test_run: str = ""

    @property
    def reported(self):
        return "mountinfo" in self.sections

    def mounts(self):
        out = []
        for line in self.sections.get("mountinfo", "").splitlines():
            pre, _, post = line.partition(" - ")
            f = pre.split()
            p = post.split()
            if len(f) >= 6 and len(p) >= 3:
                out.append(Mount(f[3], f[4], f[5], p[0], p[1], p[2]))
        return out

    def mount(self, point):
        """The mount visible at `point` (the last one mounted there)."""
        found = [m for m in self.mounts() if m.mount_point == point]
        assert found, f"nothing mounted at {point}:\n{self.sections.get('mountinfo')}"
        return found[-1]

    def links(self):
        """by-slot link name -> (readlink, readlink -f), or None when missing."""
        out = {}
        for line in self.sections.get("links", "").splitlines():
            name = line.split()[0]
            parts = line.split(" -> ")
            out[name.removeprefix("/dev/disk/by-slot/")] = (
                (parts[1], parts[2]) if len(parts) == 3 else None)
        return out

    def handoff(self):
        return json.loads(self.sections["handoff"])

    def machine_id(self):
        return self.sections.get("machine-id", "").strip()

    def stat(self, path):
        for line in self.sections.get("stat", "").splitlines():
            if line.split()[0] == path:
                return line.split()[1:]
        return None

    def slotinit_log(self):
        """slotinit's kmsg lines as the console printed them."""
        return [re.sub(r"^\[[ \d.]+\] ", "", l) for l in self.console.splitlines()
                if "slotinit: " in l]

    def kernel_time(self, pattern):
        """The kernel timestamp (seconds) of the first console line matching `pattern`."""
        for line in self.console.splitlines():
            m = re.match(r"^\[\s*(\d+\.\d+)\] (.*)", line)
            if m and re.search(pattern, m.group(2)):
                return float(m.group(1))
        return None


def parse_block(console, name):
    """The `=== NAME BEGIN ===` ... `=== NAME END ===` block of a console: None
    if absent, else (sections, fields): `key=value` lines up to the first
    `--- section` line, then each section's text (lines with their newlines)."""
    m = re.search(rf"=== {name} BEGIN ===\n(.*?)=== {name} END ===", console, re.S)
    if not m:
        return None
    sections, fields, current = {}, {}, None
    for line in m.group(1).splitlines(keepends=True):
        if line.startswith("--- "):
            current = line[4:].strip()
            sections[current] = ""
        elif current is not None:
            sections[current] += line
        elif "=" in line:
            k, _, v = line.rstrip("\n").partition("=")
            fields[k] = v
    return sections, fields


def parse_report(console):
    """What report-init printed: (sections, fields, test-run text); the one
    parser of the tests, tests/crash, bench/run and the demo's summary."""
    sections, fields = parse_block(console, "SLOTINIT-REPORT") or ({}, {})
    t = re.search(r"=== TEST-RUN BEGIN ===\n(.*?)=== TEST-RUN END ===", console, re.S)
    return sections, fields, (t.group(1) if t else "")


def report(run):
    """A qemudriver.Run as a Boot: the console and the parsed report."""
    return Boot(run.console, run.rc, *parse_report(run.console))


def boot(*disks, append="", initrd=INITRD, timeout=120, interact=(), dtb=None, log=None,
         qemu_args=(), write_log=None, cut=None, procs=None):
    """Boots the disks with qemu/run; returns the console and the parsed report.

    `interact`: (text to wait for, line to type) pairs, answered in order on the
    serial console. `cut`, `procs`: qemudriver.run's power cut and registry;
    `write_log`: qemu/run --write-log (tests/crash).
    """
    args = ["--initrd", initrd]
    for d in disks:
        args += ["--disk", d]
    if append:
        args += ["--append", append]
    if dtb:
        args += ["--dtb", dtb]
    if write_log:
        args += ["--write-log", write_log]
    return report(qemudriver.run("run", args, timeout, qemu_args=qemu_args, interact=interact,
                                 cut=cut, log=log, procs=procs))


def record(name, value):
    """Appends a measurement to out/measurements.jsonl for the notes and README."""
    OUT.mkdir(exist_ok=True)
    with open(OUT / "measurements.jsonl", "a") as f:
        f.write(json.dumps({"name": name, "value": value}) + "\n")


def part_offset(disk, number):
    """Byte offset of GPT partition `number` in a disk image."""
    out = subprocess.run(["sgdisk", "-i", str(number), str(disk)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"First sector: (\d+)", out)
    assert m, out
    return int(m.group(1)) * 512


def fat_get(disk, name, dest, part=1):
    """Copies `name` out of the FAT partition `part` (bootconfig); False if absent."""
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    r = subprocess.run(["mcopy", "-n", "-o", "-i", f"{disk}@@{part_offset(disk, part)}",
                        f"::{name}", str(dest)], env=env, stderr=subprocess.PIPE)
    return r.returncode == 0


def fat_put(disk, src, name, part=1):
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    subprocess.run(["mcopy", "-o", "-i", f"{disk}@@{part_offset(disk, part)}",
                    str(src), f"::{name}"], env=env, check=True)


PAIR = ("uboot.env", "uboot-redund.env")


def read_env(disk, tmp, files=None, size=0x4000):
    """The boot-state env on the disk as fw_printenv (libubootenv) reads it:
    a dict, or None when fw_printenv rejects it (no valid copy). `files`
    defaults to the redundant pair when the disk has its second file."""
    tmp = Path(tmp)
    if files is None:
        files = PAIR if fat_get(disk, PAIR[1], tmp / "probe-redund.env") else PAIR[:1]
    lines = []
    for f in files:
        local = tmp / f"read-{f}"
        if not fat_get(disk, f, local):
            local.write_bytes(b"")
        lines.append(f"{local} 0x0 {size:#x}")
    cfg = tmp / "fw_env.config"
    cfg.write_text("\n".join(lines) + "\n")
    r = subprocess.run(["fw_printenv", "-c", str(cfg)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0 or "Bad CRC" in r.stderr:
        return None
    return dict(l.split("=", 1) for l in r.stdout.splitlines() if "=" in l)


def json_after(text, marker):
    """The JSON object printed after `marker` in a test-run block."""
    start = text.index("{", text.index(marker) if marker else 0)
    depth = 0
    for i, c in enumerate(text[start:], start):
        depth += c == "{"
        depth -= c == "}"
        if depth == 0:
            return json.loads(text[start:i + 1])
    raise ValueError(text)


def append_cpio(initrd, dest, files):
    """`initrd` followed by an uncompressed newc archive holding `files`
    ({path in the initramfs: text}): the kernel unpacks both, the later entry
    wins. It stands for a damaged or tampered initramfs, which initramfs/build
    itself never makes (it refuses a config check-config rejects)."""
    root = Path(dest).with_suffix(".root")
    for name, text in files.items():
        f = root / name.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    names = "\n".join(str(f.relative_to(root)) for f in sorted(root.rglob("*"))) + "\n"
    extra = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=names.encode(),
                           stdout=subprocess.PIPE, check=True).stdout
    # The kernel's lz4 decoder reads to the end of its input: append to the
    # unpacked archive instead.
    base = subprocess.run(["lz4", "-dc", str(initrd)], stdout=subprocess.PIPE, check=True).stdout
    Path(dest).write_bytes(base + extra)
    return Path(dest)


def persistent_tree(tmp_path, name, build):
    """A directory `name` under tmp_path filled by build(dir): the persistent
    partition's content for qemu/mkdisk --persistent-dir."""
    d = tmp_path / name
    d.mkdir()
    build(d)
    return d
