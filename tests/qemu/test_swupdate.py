"""Issue 15 item 4: Debian's SWUpdate (bookworm's 2022.12, arm64) drives slotinit
through U-Boot. SWUpdate's U-Boot interface writes the env with libubootenv
(/etc/fw_env.config): a foreign writer of the file slotinit and uboot/boot.cmd share
(configs/uboot-rauc.toml, RAUC's contract: BOOT_ORDER, BOOT_x_LEFT).

The systems are tests/guest/mkroot's busybox systems plus what
tests/guest/swupdate-root takes from the Debian image's base tree (swupdate,
libubootenv, fw_printenv/fw_setenv and their libraries) and debian-image/swupdate
(swupdate.cfg, hwrevision). The .swu is made here from debian-image/swupdate/
sw-description: the gzip'd system image, streamed by the raw handler into
system_b, and a bootenv section arming B's trial; sw-description is signed (CMS)
by a test CA made here with openssl, which the devices' /etc/swupdate/ca.pem holds.
The chain: Debian's U-Boot running uboot/boot.cmd (with the tests' hook), slot A
on 6.1 and B on 6.12 (each slot's kernel on its boot partition).
"""
import gzip
import hashlib
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import guest
import rauclib
import rpifw
import uboot
from guest import REPO

PROFILE = REPO / "configs/uboot-rauc.toml"
TEMPLATE = REPO / "debian-image/swupdate/sw-description"
# MiB: bootconfig, boot_a/b (a kernel and its initramfs each: 6.12's Image.gz is the
# larger), system_a/b (SWUpdate's closure is ~60 MB: libarchive pulls in libxml2 and
# ICU's 31 MB data), persistent (the .swu files). The update image: IMAGE_MIB.
SIZES = "16 64 64 96 96 32"
IMAGE_MIB = 16
# The initramfs of both kernels: the virtio disk of the U-Boot chain.
MODULES = "virtio_pci virtio_blk ext4 vfat nls_cp437 nls_ascii overlay i6300esb"
IMAGE = "rootfs.ext4.gz"


# --- systems, image, .swu -------------------------------------------------------------

def system(work, name, ca, with_swupdate=True):
    """A small SWUpdate system tree `name` (mkroot, modules of both kernels: the tree
    boots under either; swupdate-root with `ca`); without SWUpdate (only
    fw_printenv and the swu-* scripts) unless `with_swupdate`."""
    d = Path(work) / name
    shutil.rmtree(d, ignore_errors=True)
    env = dict(rauclib.os.environ, KERNEL_DIR=str(rpifw.KERNELS["a"]),
               KMODS=rpifw.SYSTEM_MODULES, SLOTINIT=str(rpifw.slotinit_bin()))
    subprocess.run([str(REPO / "tests/guest/mkroot"), str(d), name], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run([str(REPO / "qemu/rpi-boot"), "--modules-tree", str(rpifw.KERNELS["b"]),
                    rpifw.SYSTEM_MODULES, str(d)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(REPO / "tests/guest/swupdate-root"), str(d), "--ca", str(ca),
                    *([] if with_swupdate else ["--without-swupdate"])],
                   check=True, stdout=subprocess.DEVNULL)
    (d / "etc/health").write_text("ok\n")
    return d


def sw_description(image_gz, version):
    """debian-image/swupdate/sw-description for `image_gz` (its SHA-256 as stored in
    the .swu: SWUpdate hashes the archive's file, before decompressing it)."""
    digest = hashlib.sha256(Path(image_gz).read_bytes()).hexdigest()
    text = TEMPLATE.read_text()
    for k, v in {"@VERSION@": version, "@IMAGE@": IMAGE, "@SHA256@": digest}.items():
        assert text.count(k) >= 1, f"{TEMPLATE}: no {k}"
        text = text.replace(k, v)
    assert "@" not in re.sub(r"#.*", "", text), text
    return text


def swu(out, image_gz, cert, key, version="2", with_image=True):
    """A signed .swu at `out`: a cpio (newc with CRC, SWUpdate's format) of
    sw-description, its CMS signature (openssl cms, DER, no S/MIME capabilities, as
    SWUpdate's documentation signs it) by `cert`/`key`, then the image (left out
    with `with_image` False: a .swu refused at its signature never gets there)."""
    out = Path(out)
    d = out.parent / (out.stem + ".content")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    (d / "sw-description").write_text(sw_description(image_gz, version))
    if with_image:
        shutil.copy(image_gz, d / IMAGE)
    subprocess.run(["openssl", "cms", "-sign", "-in", str(d / "sw-description"),
                    "-out", str(d / "sw-description.sig"), "-signer", str(cert),
                    "-inkey", str(key), "-outform", "DER", "-nosmimecap", "-binary"],
                   check=True)
    # sw-description first, its signature second: SWUpdate reads them in that order.
    names = "sw-description\nsw-description.sig\n" + (IMAGE + "\n" if with_image else "")
    with open(out, "wb") as f:
        subprocess.run(["cpio", "-o", "--quiet", "-H", "crc"], input=names.encode(), cwd=d,
                       stdout=f, check=True)
    shutil.rmtree(d)
    return out


def uboot_out(work):
    """uboot/build's output for this chain (the tests' boot.cmd, slot B on 6.12) in
    `work`/uboot. uboot/build gzips a kernel only when its .sha256 differs: seed the
    Image.gz files from another out/uboot-* that holds the same kernels (checked by
    decompressing), which saves ~30 s of gzip -9 when another test made them."""
    out = Path(work) / "uboot"
    out.mkdir(parents=True, exist_ok=True)
    for name, kernel in (("Image.gz", rpifw.KERNELS["a"] / "vmlinuz"),
                         ("Image-b.gz", rpifw.KERNELS["b"] / "vmlinuz")):
        data = kernel.read_bytes()
        want = hashlib.sha256(data).hexdigest()
        for cand in sorted((REPO / "out").glob(f"uboot*/{name}")):
            try:
                gz = cand.read_bytes()
                if hashlib.sha256(gzip.decompress(gz)).hexdigest() != want:
                    continue
            except (OSError, EOFError, gzip.BadGzipFile):
                continue
            (out / name).write_bytes(gz)
            (out / f"{name}.sha256").write_text(want + "\n")
            break
    return uboot.build_uboot(out, kernel_b=rpifw.KERNELS["b"] / "vmlinuz")


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    if why := rpifw.missing_artifacts():
        pytest.fail(why)
    if not Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin").exists():
        pytest.fail("u-boot-qemu is not installed: run tools/install-deps")
    work = tmp_path_factory.mktemp("swupdate")
    ca = rauclib.openssl_ca(work / "pki", "test")
    other = rauclib.openssl_ca(work / "pki", "other")
    systems = {s: system(work, f"system_{s}", ca[0]) for s in "ab"}
    # The update: the small system B boots after it, running only the health check
    # (no SWUpdate: its ~60 MB would be streamed for nothing).
    tree = system(work, "update-good", ca[0], with_swupdate=False)
    image = rauclib.ext4_image(tree, work / "update.ext4", IMAGE_MIB)
    shutil.rmtree(tree)
    image_gz = work / IMAGE
    image_gz.write_bytes(gzip.compress(image.read_bytes(), compresslevel=6, mtime=0))
    persistent = work / "persistent"
    (persistent / "swu").mkdir(parents=True)
    swu(persistent / "swu/good.swu", image_gz, *ca)
    swu(persistent / "swu/other-ca.swu", image_gz, *other, with_image=False)
    out = uboot_out(work)
    config = PROFILE.read_text()
    initrd = {k: rpifw.initramfs(rpifw.KERNELS[k], config, work / f"initrd-{k}.img",
                                 modules=MODULES) for k in "ab"}
    disk = uboot.mkdisk(work / "disk.img", initrd["a"], systems, "--sizes", SIZES,
                        "--persistent-dir", persistent, uboot=out, initramfs_b=initrd["b"])
    return {"work": work, "disk": disk, "image": image,
            "image_sha": hashlib.sha256(image.read_bytes()).hexdigest()}


# --- what a boot printed ---------------------------------------------------------------

def env_view(v, tag):
    """The guest's fw_printenv at point `tag` (libubootenv's reading): a dict."""
    c = v.console
    start = c.index(f"=== ENV {tag} ===")
    block = c[start:c.index(f"=== ENV {tag} END ===", start)]
    assert "env-exit=0" in block, block
    return dict(l.split("=", 1) for l in block.splitlines()[1:]
                if "=" in l and not l.startswith("env-exit="))


def slotinit_view(v, tag):
    return guest.json_after(v.console, f"=== SLOTINIT-STATUS {tag} ===")


def partition_sha(disk, name, size):
    part = {p.name: p for p in rpifw.read_gpt(disk)}[name]
    with open(disk, "rb") as f:
        f.seek(part.first)
        return hashlib.sha256(f.read(size)).hexdigest()


def agree(v, tag):
    """slotinit status and the env (libubootenv's reading) of one point agree: slotinit's
    view of the store is valid and holds the env's BOOT_ORDER and BOOT_x_LEFT (hex).
    Returns (env, status)."""
    env, si = env_view(v, tag), slotinit_view(v, tag)
    st = si["store"]
    assert st is not None and st["health"] == "environment valid", (tag, si)
    assert st["order"] == env["BOOT_ORDER"].split(), (tag, st, env)
    assert dict(st["left"]) == {"A": int(env["BOOT_A_LEFT"], 16),
                                "B": int(env["BOOT_B_LEFT"], 16)}, (tag, st, env)
    booted = si["booted_slot"].upper()
    assert si["attempts_left"] == int(env[f"BOOT_{booted}_LEFT"], 16), (tag, si, env)
    return env, si


def test_install_trial_commit(kit, tmp_path):
    """Booted A: a .swu signed by another CA is refused and writes nothing, swupdate -i streams the image into system_b and
    writes the bootenv section (BOOT_ORDER="B A", BOOT_B_LEFT=3) with libubootenv;
    on the host every variable U-Boot and slotinit had is still there. The
    client's reboot: U-Boot boots B on its own kernel, slotinit says trial; the
    health check's slotinit mark-good commits and keeps every variable. slotinit
    status agrees with the env at each step."""
    disk = tmp_path / "disk.img"
    shutil.copyfile(kit["disk"], disk)
    chain = rauclib.UBootChain(disk)
    t0 = time.monotonic()

    # 1. A: refusal, install, reboot.
    v = rauclib.step(chain, "swu-install", "test.swu=good test.refused=other-ca",
                     log=tmp_path / "install.log")
    assert v.slot_name == "system_a", (v.slot_name, chain.record())
    assert v.value("booted-slot") == "a", v.tail()
    before, si = agree(v, "before")
    # RAUC's U-Boot contract counts every boot: U-Boot took one of A's attempts
    # (3 -> 2) and nothing marked A good yet; slotinit reads the same.
    assert before["BOOT_ORDER"] == "A B" and before["BOOT_A_LEFT"] == "2", before
    assert si["booted_slot"] == "a" and si["boot"] == "trial", si
    assert si["attempts_left"] == 2, si
    # Another CA's signature: refused before anything is written.
    assert v.value("refused-exit") not in (None, "0"), v.tail(8000)
    assert "Authentication of all signatures failed" in v.console, v.tail(8000)
    assert agree(v, "refused")[0] == before, (env_view(v, "refused"), before)
    assert v.value("install-exit") == "0", v.tail(8000)
    after, si = agree(v, "after")
    assert si["booted_slot"] == "a", si
    assert after["BOOT_ORDER"] == "B A" and after["BOOT_B_LEFT"] == "3", after
    assert v.kind in ("reboot", "reset"), (v.kind, chain.record())

    # On the host, as U-Boot will read it: SWUpdate's store kept every variable
    # (U-Boot's counters, the tests' extra_bootargs), armed B, left its state marker
    # ustate=1 (STATE_INSTALLED) and cleared its transaction marker recovery_status.
    env = guest.read_env(disk, tmp_path, files=("uboot.env",))
    assert env is not None, "fw_printenv rejects uboot.env after SWUpdate wrote it"
    missing = set(before) - set(env)
    assert not missing, (missing, env)
    assert env["BOOT_ORDER"] == "B A" and env["BOOT_B_LEFT"] == "3", env
    assert env["BOOT_A_LEFT"] == before["BOOT_A_LEFT"], (env, before)
    assert env.get("ustate") == "1", env
    assert "recovery_status" not in env, env
    print("env after swupdate:", env)
    # The raw handler wrote the image (decompressed) into system_b.
    assert partition_sha(disk, "system_b", kit["image"].stat().st_size) == kit["image_sha"]

    # 2. B: its trial, on its own kernel; the health check commits.
    v = rauclib.step(chain, "swu-check", log=tmp_path / "check.log")
    assert v.kind == "poweroff", (v.kind, chain.record(), v.tail())
    assert v.slot_name == "update-good", (v.slot_name, chain.record())
    assert re.findall(r"Linux version (\S+)", v.console) == [rpifw.releases()["b"]]
    e0, s0 = agree(v, "before")
    assert s0["booted_slot"] == "b" and s0["boot"] == "trial", s0
    # U-Boot counted this attempt: 3 -> 2; slotinit reads the same.
    assert e0["BOOT_ORDER"] == "B A" and e0["BOOT_B_LEFT"] == "2", e0
    assert s0["attempts_left"] == 2, s0
    assert v.value("mark-good-exit") == "0", v.tail()
    e1, s1 = agree(v, "after")
    assert s1["booted_slot"] == "b" and s1["boot"] == "committed", s1
    assert e1["BOOT_ORDER"] == "B A" and e1["BOOT_B_LEFT"] == "3", e1
    assert not set(e0) - set(e1), (e0, e1)
    # On the host: what U-Boot reads at the next power-on boots B, a full count.
    env = guest.read_env(disk, tmp_path, files=("uboot.env",))
    assert env is not None and env["BOOT_ORDER"] == "B A" and env["BOOT_B_LEFT"] == "3", env
    print("env after commit:", env)
    # SWUpdate's state marker after U-Boot's write on B's first boot (boot.cmd
    # exports only its own bs_vars): for the report, not a slotinit property.
    print("ustate after U-Boot's write:", e0.get("ustate"))
    guest.record("swupdate-install-to-committed-s", round(time.monotonic() - t0, 1))
    print(chain.record())
