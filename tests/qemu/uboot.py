"""Boot test disks through Debian's U-Boot (qemu/uboot-run) and read what happened.

The chain: U-Boot's distro boot runs uboot/boot.cmd (boot.scr on bootconfig),
which counts the attempt in bootconfig:/uboot.env and boots the slot's
Image.gz + initramfs.img with rauc.slot=A|B; slotinit (counter = "bootloader")
follows. The console is parsed with guest.py's report parser; on top of that
every console line carries the host time since QEMU started, so a boot can be
split into U-Boot, kernel and init phases.
"""
import os
import random
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import guest
import qemudriver
from guest import REPO, Boot

SLOTINIT = REPO / "target/aarch64-unknown-linux-gnu/release/slotinit"
# The tests' boot.scr (with the test hook below) lives apart from out/uboot,
# which holds what uboot/build makes of the shipped script (qemu/demo --uboot).
UBOOT_OUT = REPO / "out/uboot-test"
SHIPPED_OUT = REPO / "out/uboot"
CONFIG = REPO / "configs/uboot-rauc.toml"
# The system's view of the boot state: bootconfig mounted here by the
# test.d/uboot-* scripts (fw_printenv would need the same line).
GUEST_FW_ENV = "/run/bootconfig/uboot.env 0x0 0x4000\n"
# Debian's firmware waits 2 s for a key before autoboot; the tests boot a copy
# patched to bootdelay=0 (qemu/uboot-run --bootdelay) unless this says "stock".
BOOTDELAY = os.environ.get("SLOTINIT_UBOOT_BOOTDELAY", "0")

# Console milestones, in boot order: name -> regex on a console line.
MILESTONES = [
    ("uboot", r"^U-Boot 20\d\d"),
    ("autoboot", r"Hit any key to stop autoboot"),
    ("script", r"^## Executing script"),
    ("picked", r"^bootstate: booting slot"),
    ("written", r"^\d+ bytes written"),
    ("kernel", r"^Starting kernel"),
    ("run_init", r"Run /init as init process"),
    ("switch", r"slotinit: switching to "),
    ("report", r"^=== SLOTINIT-REPORT BEGIN"),
]


@dataclass
class UBoot(Boot):
    """A Boot whose console went through U-Boot; `times` are host seconds since QEMU started."""
    lines: list = field(default_factory=list)   # (seconds, line)
    times: dict = field(default_factory=dict)
    wall: float = 0.0
    killed_at: float = None

    def bootstate(self):
        """boot.cmd's own lines ("bootstate: ..."), in order."""
        return [l for _, l in self.lines if l.startswith("bootstate: ")]

    def picked(self):
        """The slot U-Boot booted ("A"/"B"), None if it did not get that far, per run."""
        return [m.group(1) for l in self.bootstate()
                if (m := re.match(r"bootstate: booting slot (\w+)", l))]

    @property
    def reset(self):
        return any(re.match(r"^resetting \.\.\.", l) for _, l in self.lines)


# The tests' hook, kept out of the script integrators ship: import
# `extra_bootargs` from uboot.env and put it on the cmdline *before* the slot
# (rauc.slot= or root=), so a test passes `test.run=NAME` and can never
# overrule the slot. One pair of anchors per shipped script.
HOOKS = {
    "boot.cmd": [
        ('setenv bs_vars "BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT"',
         'setenv bs_vars "BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT extra_bootargs"'),
        ('setenv bootargs "console=ttyAMA0 panic=-1 rauc.slot=${bs_slot}"',
         'setenv bootargs "console=ttyAMA0 panic=-1 ${extra_bootargs} rauc.slot=${bs_slot}"'),
    ],
    "article.cmd": [
        ('setenv bs_vars "boot_slot boot_a_left boot_b_left"',
         'setenv bs_vars "boot_slot boot_a_left boot_b_left extra_bootargs"'),
        ('setenv bootargs "console=ttyAMA0 panic=-1 root=PARTLABEL=${bs_label}"',
         'setenv bootargs "console=ttyAMA0 panic=-1 ${extra_bootargs} root=PARTLABEL=${bs_label}"'),
    ],
    "mender.cmd": [
        ('setenv bs_vars "mender_boot_part mender_boot_part_hex upgrade_available bootcount '
         'bootlimit"',
         'setenv bs_vars "mender_boot_part mender_boot_part_hex upgrade_available bootcount '
         'bootlimit extra_bootargs"'),
        ('setenv bootargs "console=ttyAMA0 panic=-1 root=/dev/vda${mender_boot_part}"',
         'setenv bootargs "console=ttyAMA0 panic=-1 ${extra_bootargs} '
         'root=/dev/vda${mender_boot_part}"'),
    ],
}
TEST_HOOK = HOOKS["boot.cmd"]


def hooked_script(dest, script="boot.cmd"):
    """uboot/<script> with its test hook applied; each line must match exactly once,
    so a change to the shipped script cannot silently drop the hook."""
    text = (REPO / "uboot" / script).read_text()
    for old, new in HOOKS[script]:
        if text.count(old) != 1:
            raise RuntimeError(f"uboot/{script}: test hook anchor not found once: {old}")
        text = text.replace(old, new)
    Path(dest).write_text(text)
    return Path(dest)


def build_uboot(out=UBOOT_OUT, shipped=False, script="boot.cmd", env_text=None, kernel_b=None,
                redundant=False):
    """boot.scr, uboot.env and Image.gz into `out`: the tests' variant of
    uboot/<script>, or with `shipped` exactly that script; `env_text` the
    initial env (default uboot/default-env.txt), `kernel_b` slot B's own kernel
    (Image-b.gz), `redundant` the env as a pair (uboot.env + uboot-redund.env)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(REPO / "uboot/build"), "--out", str(out)]
    if not shipped:
        cmd += ["--script", str(hooked_script(out / f"test-{script}", script))]
    elif script != "boot.cmd":
        cmd += ["--script", str(REPO / "uboot" / script)]
    if env_text:
        cmd += ["--env-text", str(env_text)]
    if kernel_b:
        cmd += ["--kernel-b", str(kernel_b)]
    if redundant:
        cmd.append("--redundant")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def build_initramfs(out):
    """The initramfs of the chain: configs/uboot-rauc.toml, busybox for the emergency shell."""
    subprocess.run([str(REPO / "initramfs/build"), "--init", str(SLOTINIT),
                    "--config", str(CONFIG), "--kernel-dir", str(REPO / ".cache/kernel"),
                    "--busybox", str(REPO / ".cache/busybox/busybox"), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    return Path(out)


def build_roots(base):
    """Both system trees: tests/guest/mkroot (busybox, report-init, /usr/bin/slotinit,
    /test.d) plus /etc/fw_env.config for the system's view of uboot.env."""
    roots = {}
    for slot in ("a", "b"):
        d = Path(base) / f"system_{slot}"
        subprocess.run([str(REPO / "tests/guest/mkroot"), str(d), f"system_{slot}"], check=True)
        (d / "etc/fw_env.config").write_text(GUEST_FW_ENV)
        roots[slot] = d
    return roots


def mkdisk(path, initramfs, roots, *args, no_env=False, uboot=UBOOT_OUT, initramfs_b=None,
           root_kernels=False):
    """A chain disk: uboot/mkdisk (qemu/mkdisk plus boot.scr, uboot.env and each slot's
    kernel: on boot_a/boot_b, or with `root_kernels` in each root's /boot)."""
    own = ["--initramfs", initramfs, "--uboot", uboot]
    if initramfs_b:
        own += ["--initramfs-b", initramfs_b]
    if no_env:
        own.append("--no-env")
    if root_kernels:
        own += ["--root-kernels", "--system-a", roots["a"], "--system-b", roots["b"], "--"]
    else:
        own += ["--", "--system-a", roots["a"], "--system-b", roots["b"]]
    return guest.mkdisk(path, *own, *args, script="uboot/mkdisk")


def boot(disk, timeout=120, resets=0, kill=None, log=None, bootdelay=BOOTDELAY):
    """Boots `disk` through U-Boot with qemu/uboot-run; returns a UBoot.

    `bootdelay`: a digit for qemu/uboot-run --bootdelay, or "stock" for Debian's
    unpatched u-boot.bin (2 s autoboot delay).

    `kill`: (console regex, delay in s): SIGKILL the whole QEMU process group
    `delay` seconds after the first line matching the regex, as a power cut.
    """
    args = ["--disk", disk, "--resets", resets]
    if bootdelay != "stock":
        args += ["--bootdelay", bootdelay]
    r = qemudriver.run("uboot-run", args, timeout, cut=kill, log=log)
    b = guest.report(r)
    times = {}
    for name, pattern in MILESTONES:
        for t, l in r.lines:
            if re.search(pattern, l):
                times[name] = round(t, 3)
                break
    return UBoot(b.console, b.rc, b.sections, b.fields, b.test_run, lines=r.lines,
                 times=times, wall=r.wall, killed_at=r.killed_at)


def set_env(disk, *assignments):
    """fw_setenv on the disk's uboot.env (tests/guest/set-env), e.g. "BOOT_ORDER=B A"."""
    subprocess.run([str(REPO / "tests/guest/set-env"), str(disk), *assignments], check=True,
                   stdout=subprocess.DEVNULL)


def seeded_delays(count, low, high, stream):
    """`count` delays in [low, high] s from SLOTINIT_SEED (default 1); `stream` names an
    independent sequence of that seed."""
    rng = random.Random(f"{os.environ.get('SLOTINIT_SEED', '1')}:{stream}")
    return [round(rng.uniform(low, high), 3) for _ in range(count)]
