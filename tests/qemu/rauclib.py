"""Debian's real RAUC (bookworm's 1.8, arm64) driving slotinit under QEMU (issue 15).

The systems are small: tests/guest/mkroot's busybox test system plus what
tests/guest/rauc-root takes from the Debian image's base tree (rauc, dbus-daemon,
fw_printenv/fw_setenv and their libraries) and the image's RAUC pieces
(debian-image/rauc: the profile's system.conf, the rauc.service drop-in whose
ExecStart= starts the service, the custom backend handler). The bundles are real
RAUC bundles made by the host's rauc 1.8 (the same release) and signed by a test
CA made here with openssl; the devices' keyring holds that CA only.

A chain (`PiChain`, `UBootChain`, `TfaChain`) boots a disk through its firmware:
the Raspberry Pi firmware model, Debian's U-Boot, or the TF-A model, each slot on
its own kernel (A 6.1, B 6.12). Each boot runs one guest script of
tests/guest/rauc.d: `rauc-install` (the update client) or `rauc-check` (the
health check the image's boot-complete.target runs), which print both views of
the boot state, `rauc status` and `slotinit status`, as JSON the tests compare.
"""
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import guest
import rpifw
import tfa
import uboot

REPO = guest.REPO
KERNELS = rpifw.KERNELS
# A bundle's rootfs image: it must fit every layout's system partition (48 MiB).
IMAGE_MIB = 44
COMPATIBLE = "slotinit-debian-arm64"


# --- the CA, the systems, the bundles ---------------------------------------------------

def openssl_ca(d, name):
    """A self-signed CA `name` in directory `d` (name.pem, name.key), made here,
    never committed: RSA 2048, valid two days."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"),
                    "-subj", f"/CN=slotinit test CA {name}", "-days", "2"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return d / f"{name}.pem", d / f"{name}.key"


def system(work, name, conf, keyring, health="ok", init=True, fw_env=None):
    """A small RAUC system tree `name`: mkroot (modules of both kernels: the tree
    boots under either), rauc-root with `conf` and `keyring`, /etc/health =
    `health` (what rauc-check's health check reads), and without /sbin/init
    when `init` is False (an image whose init never starts); `fw_env` the
    /etc/fw_env.config (default: rauc-root's)."""
    d = Path(work) / name
    shutil.rmtree(d, ignore_errors=True)
    env = dict(os.environ, KERNEL_DIR=str(KERNELS["a"]), KMODS=rpifw.SYSTEM_MODULES,
               SLOTINIT=str(rpifw.slotinit_bin()))
    subprocess.run([str(REPO / "tests/guest/mkroot"), str(d), name], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run([str(REPO / "qemu/rpi-boot"), "--modules-tree", str(KERNELS["b"]),
                    rpifw.SYSTEM_MODULES, str(d)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(REPO / "tests/guest/rauc-root"), str(d), "--conf", str(conf),
                    "--keyring", str(keyring), "--kernel-dir", str(KERNELS["a"]),
                    "--kernel-dir", str(KERNELS["b"]),
                    *(["--fw-env", str(fw_env)] if fw_env else [])],
                   check=True, stdout=subprocess.DEVNULL)
    (d / "etc/health").write_text(f"{health}\n")
    if not init:
        (d / "sbin/init").unlink()
    return d


def ext4_image(tree, out, mib=IMAGE_MIB):
    """`tree` as an ext4 image of `mib` MiB (mke2fs -d, as qemu/mkdisk fills a slot)."""
    out = Path(out)
    out.unlink(missing_ok=True)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "rauc-update", "-d", str(tree),
                    str(out), f"{mib}M"], check=True, env=dict(os.environ, E2FSPROGS_FAKE_TIME="1"))
    return out


def bundle(out, image, cert, key, version="2"):
    """A plain RAUC bundle at `out` holding `image` for slot class rootfs, signed with
    `cert`/`key` by the host's rauc 1.8 (Debian's, the devices' release)."""
    out = Path(out)
    content = out.parent / (out.stem + ".content")
    shutil.rmtree(content, ignore_errors=True)
    content.mkdir(parents=True)
    shutil.copy(image, content / "rootfs.ext4")
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible={COMPATIBLE}\nversion={version}\n\n"
        "[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.ext4\n")
    out.unlink(missing_ok=True)
    r = subprocess.run(["rauc", f"--cert={cert}", f"--key={key}", "bundle", str(content),
                        str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    shutil.rmtree(content)
    if r.returncode != 0:
        raise RuntimeError(f"rauc bundle {out}: {r.stdout}")
    return out


def tampered(signed, out):
    """`signed` with one byte of its payload (the squashfs, in the middle) flipped."""
    data = bytearray(Path(signed).read_bytes())
    size = int.from_bytes(data[-8:], "big")
    data[(len(data) - 8 - size) // 2] ^= 0xFF
    Path(out).write_bytes(bytes(data))
    return Path(out)


def unsigned(signed, out):
    """`signed` without its signature: a plain bundle is the squashfs, the CMS
    signature, then the signature's size (8 bytes, big endian; rauc v1.8
    src/bundle.c); here the squashfs alone with a size of 0."""
    data = Path(signed).read_bytes()
    size = int.from_bytes(data[-8:], "big")
    Path(out).write_bytes(data[:len(data) - 8 - size] + (0).to_bytes(8, "big"))
    return Path(out)


@dataclass
class Kit:
    """What a chain's scenarios need: the systems on the disk, the bundles dir."""
    work: Path
    conf: Path
    systems: dict       # slot -> tree
    bundles: Path       # a directory: NAME.raucb, copied to /persistent/bundles
    ca: tuple


def kit(work, conf, names=("good",), fw_env=None):
    """Both slots' systems for `conf` (debian-image/rauc/system-*.conf) and bundles
    `names` of: good (health ok), health-fail, no-init, other-ca (good, signed by
    another CA), unsigned (good without its signature), tampered (good with one
    payload byte flipped after signing)."""
    work = Path(work)
    ca = openssl_ca(work / "pki", "test")
    systems = {s: system(work, f"system_{s}", conf, ca[0], fw_env=fw_env) for s in "ab"}
    bundles = work / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    variants = {"good": {}, "health-fail": {"health": "fail"}, "no-init": {"init": False}}
    images = {}
    for name in names:
        base = name if name in variants else "good"
        if base not in images:
            tree = system(work, f"update-{base}", conf, ca[0], fw_env=fw_env, **variants[base])
            images[base] = ext4_image(tree, work / f"update-{base}.ext4")
            shutil.rmtree(tree)
        if name == "other-ca":
            other = openssl_ca(work / "pki", "other")
            bundle(bundles / "other-ca.raucb", images[base], *other)
        elif name in ("unsigned", "tampered"):
            good = bundle(work / "signed.raucb", images[base], *ca)
            (unsigned if name == "unsigned" else tampered)(good, bundles / f"{name}.raucb")
            good.unlink()
        else:
            bundle(bundles / f"{name}.raucb", images[base], *ca)
    for img in images.values():
        img.unlink()
    return Kit(work, Path(conf), systems, bundles, ca)


def persistent_dir(k):
    """The persistent partition's content: the bundles in /bundles."""
    d = k.work / "persistent"
    shutil.rmtree(d, ignore_errors=True)
    (d / "bundles").mkdir(parents=True)
    for b in k.bundles.glob("*.raucb"):
        shutil.copy(b, d / "bundles" / b.name)
    return d


# --- what a boot printed ----------------------------------------------------------------

@dataclass
class View:
    """One boot's run of a rauc.d script, read from its console."""
    boot: guest.Boot
    kind: str           # how the boot ended: poweroff, reboot, tryboot, reset, ...
    wall: float

    @property
    def console(self):
        return self.boot.console

    @property
    def slot_name(self):
        return self.boot.fields.get("slot-name")

    def rauc(self, tag):
        return guest.json_after(self.console, f"=== RAUC-STATUS {tag} ===")

    def slotinit(self, tag):
        return guest.json_after(self.console, f"=== SLOTINIT-STATUS {tag} ===")

    def value(self, key):
        m = re.findall(rf"^{re.escape(key)}=(.*)$", self.console, re.M)
        return m[-1].strip() if m else None

    def ran(self, tag):
        return f"=== RAUC-STATUS {tag} ===" in self.console

    def tail(self, n=4000):
        return self.console[-n:]


def rauc_summary(status):
    """rauc status JSON -> (booted bootname, primary slot, {slot: (state, boot_status)})."""
    slots = {}
    for entry in status["slots"]:
        for name, s in entry.items():
            slots[name] = (s.get("state"), s.get("boot_status"))
    return status.get("booted"), status.get("boot_primary"), slots


def agree(view, tag):
    """rauc status and slotinit status of one point agree: the same booted slot,
    and RAUC marks booted the slot slotinit booted, never the other."""
    booted, _, slots = rauc_summary(view.rauc(tag))
    si = view.slotinit(tag)
    assert si["booted_slot"] is not None, view.tail()
    assert booted == si["booted_slot"].upper(), (booted, si, view.tail())
    want = "rootfs.0" if booted == "A" else "rootfs.1"
    assert slots[want][0] == "booted", (slots, view.tail())
    other = "rootfs.1" if want == "rootfs.0" else "rootfs.0"
    assert slots[other][0] != "booted", slots
    return booted


def trial_committed(view, record=""):
    """The boot was the bundle's good system in B, a trial, and its health check
    committed it through slotinit: rauc status and slotinit status agree before
    and after, and RAUC then sees rootfs.1 booted, primary and good."""
    assert view.slot_name == "update-good", (view.slot_name, record or view.tail())
    assert agree(view, "before") == "B"
    assert view.slotinit("before")["boot"] == "trial", view.slotinit("before")
    assert view.value("mark-good-exit") == "0", view.tail()
    assert agree(view, "after") == "B"
    assert view.slotinit("after")["boot"] == "committed", view.slotinit("after")
    _, primary, slots = rauc_summary(view.rauc("after"))
    assert primary == "rootfs.1" and slots["rootfs.1"] == ("booted", "good"), slots


# --- the chains ---------------------------------------------------------------------------

def step(chain, script, extra="", log=None):
    """One boot running tests/guest/rauc.d/`script`; a View."""
    t0 = time.monotonic()
    b, kind = chain.boot(f"test.run={script} {extra}".strip(), log=log)
    return View(b, kind, time.monotonic() - t0)


def until_poweroff(chain, limit, log_dir=None, tag="check"):
    """Boots running rauc-check until one powers off (a health check that passed),
    at most `limit` boots; the Views."""
    views = []
    for i in range(limit):
        log = Path(log_dir) / f"{tag}-{len(chain.history())}.log" if log_dir else None
        v = step(chain, "rauc-check", log=log)
        views.append(v)
        if v.kind in ("poweroff", "no-boot", "hang", "exit"):
            break
    return views


class PiChain:
    """The Raspberry Pi firmware model (tests/qemu/rpifw.py) on a gpt/ab_userdata disk."""
    name = "rpi"

    def __init__(self, disk, work, timeout=240):
        self.pi = rpifw.Pi(disk, work, timeout=timeout)

    def boot(self, append, log=None):
        b, ev = self.pi.boot(append=append, log=log)
        return b, ev.kind

    def history(self):
        return self.pi.history

    def record(self):
        return self.pi.chain()


class TfaChain:
    """The TF-A model (tests/qemu/tfa.py) on an STM32MP layout with FWU metadata."""
    name = "fwu"

    def __init__(self, disk, work, timeout=240):
        self.t = tfa.Tfa(disk, work, timeout=timeout)

    def boot(self, append, log=None):
        b, ev = self.t.boot(append=append, log=log)
        return b, ev.kind

    def history(self):
        return self.t.history

    def record(self):
        return self.t.chain()


class UBootChain:
    """Debian's U-Boot running uboot/boot.cmd (with the tests' extra_bootargs hook).
    Each boot is one QEMU run: a reset ends it and the next boot() is the board
    starting again (the env on the disk carries the state, as on the board)."""
    name = "uboot"

    def __init__(self, disk, timeout=240):
        self.disk = disk
        self.timeout = timeout
        self._history = []

    def boot(self, append, log=None):
        uboot.set_env(self.disk, f"extra_bootargs={append}")
        b = uboot.boot(self.disk, timeout=self.timeout, log=log)
        run = SimpleNamespace(console=b.console, killed_at=b.killed_at, rc=b.rc,
                              timed_out=b.rc == 124)
        kind = rpifw.classify(run, False)[0]
        self._history.append((b.picked(), kind))
        return b, kind

    def history(self):
        return self._history

    def record(self):
        return "\n".join(f"boot {i}: U-Boot picked {p or '-'} -> {k}"
                         for i, (p, k) in enumerate(self._history, 1))
