"""Issue 17: the initramfs carries the modules its config needs and no more
(initramfs/build asks `slotinit initramfs-needs`), and slotinit loads them
from several threads in dependency order, the disk's drivers first."""
import subprocess

import qemudriver
from guest import INITRD, REPO, mkdisk, report


def load_list(initrd):
    """The image's /etc/slotinit/modules.load lines."""
    cpio = subprocess.run(["lz4", "-dc", str(initrd)], stdout=subprocess.PIPE, check=True).stdout
    out = subprocess.run(["cpio", "-i", "--quiet", "--to-stdout", "etc/slotinit/modules.load"],
                         input=cpio, stdout=subprocess.PIPE, check=True).stdout.decode()
    return [line.split() for line in out.splitlines() if line and not line.startswith("#")]


def name(path):
    return path.rsplit("/", 1)[1].split(".ko")[0].replace("-", "_")


def boot_smp(disk, smp, append=""):
    return report(qemudriver.run("run", ["--initrd", INITRD, "--disk", disk, "--smp", str(smp),
                                         "--append", append], 120))


def test_the_default_image_carries_and_loads_what_its_config_needs(tmp_path):
    """rpi-uboot-rauc: the disk's drivers (early), ext4 for system and
    persistent, FAT with its code pages for uboot.env; no overlay (the config
    has none), no device-mapper, no busybox. At -smp 2 two threads load them;
    the booted system has exactly these modules."""
    lines = load_list(INITRD)
    names = [name(f[0]) for f in lines]
    assert {"virtio_blk", "virtio_pci", "ext4", "jbd2", "vfat", "fat", "nls_cp437",
            "nls_ascii"} <= set(names), names
    assert not {"overlay", "dm_mod", "dm_crypt", "dm_verity", "i6300esb"} & set(names), names
    early = [name(f[0]) for f in lines if "early" in f[1:]]
    assert {"virtio_blk", "virtio_pci"} <= set(early) and "ext4" not in early, lines
    assert names.index("virtio_blk") < names.index("ext4"), "the disk's drivers come first"
    ext4 = next(f for f in lines if name(f[0]) == "ext4")
    assert any(a.startswith("after=") and "jbd2" in a for a in ext4), ext4
    disk = mkdisk(tmp_path / "disk.img")
    for smp, threads in ((2, ""), (2, "slotinit.module_threads=1"), (1, "")):
        b = boot_smp(disk, smp, threads)
        assert b.reported, b.console[-3000:]
        h = b.handoff()
        assert h["errors"] == [], h["errors"]
        assert sorted(b.sections["modules"].split()) == sorted(names), (smp, threads)
        stages = [s for s, _ in h["timings_us"]]
        assert stages.index("modules") < stages.index("devices") < stages.index("modules-late"), stages
        log = "\n".join(b.slotinit_log())
        assert f"modules: {len(names)} loaded, 0 already present, 0 optional not loaded, 0 failed" in log


def test_busybox_and_e2fsck_only_when_asked(tmp_path):
    """busybox only with --emergency-shell; a config with persistent.fsck is
    refused without the checker it needs."""
    slotinit = REPO / "target/aarch64-unknown-linux-gnu/release/slotinit"
    config = tmp_path / "fsck.toml"
    config.write_text("[persistent]\nfsck = true\n")
    r = subprocess.run([str(REPO / "initramfs/build"), "--init", str(slotinit), "--config", str(config),
                        "--out", str(tmp_path / "x.img")], capture_output=True, text=True)
    assert r.returncode != 0 and "needs /sbin/e2fsck (persistent.fsck)" in r.stderr, r.stderr
    listing = {}
    for shell in (False, True):
        out = tmp_path / f"shell-{shell}.img"
        subprocess.run([str(REPO / "initramfs/build"), "--init", str(slotinit),
                        "--config", str(REPO / "configs/rpi-uboot-rauc.toml"), "--out", str(out),
                        *(["--emergency-shell"] if shell else [])], check=True, stdout=subprocess.DEVNULL)
        cpio = subprocess.run(["lz4", "-dc", str(out)], stdout=subprocess.PIPE, check=True).stdout
        listing[shell] = subprocess.run(["cpio", "-it", "--quiet"], input=cpio, stdout=subprocess.PIPE,
                                        check=True).stdout.decode().split()
    assert "bin/busybox" not in listing[False] and "bin/sh" not in listing[False]
    assert "bin/busybox" in listing[True] and "bin/sh" in listing[True]
