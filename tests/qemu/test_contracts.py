"""Issue 14, items 2, 3 and 5: the article's and Mender's boot-state contracts through real
U-Boot (Debian's u-boot-qemu running uboot/article.cmd and uboot/mender.cmd), with the shipped
profiles configs/generic-ab.toml and configs/mender.toml. Each root carries its own kernel
(/boot/Image.gz: 6.1 in rootfs_A, 6.12 in rootfs_B) and initramfs, as both layouts keep them.

Per contract, four boots on one disk: A boots and installs B (mark-active b); B boots as a
trial and commits (mark-good); an update of A written from the host as the update client
writes it (fw_setenv) boots A once and is not committed; the next boot rolls back to B. The env
is read after each boot with Debian's fw_printenv.
"""
import os
import re

import pytest
import rpifw
from guest import REPO, json_after, read_env
from uboot import boot, build_roots, build_uboot, mkdisk, set_env

MODULES = "virtio_pci virtio_blk ext4 vfat nls_cp437 nls_ascii overlay i6300esb"
LAYOUT = ("--names", "boot - - rootfs_A rootfs_B data", "--sizes", "16 32 32 64 64 16")
CONTRACTS = {
    "article": ("article.cmd", "uboot/article-env.txt", "generic-ab"),
    "mender": ("mender.cmd", "uboot/mender-env.txt", "mender"),
}
ARTICLE = ("boot_slot", "boot_a_left", "boot_b_left")
MENDER = ("mender_boot_part", "mender_boot_part_hex", "upgrade_available", "bootcount",
          "bootlimit")


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    why = rpifw.missing_artifacts()
    if why:
        pytest.fail(why)
    if not os.path.exists("/usr/lib/u-boot/qemu_arm64/u-boot.bin"):
        pytest.fail("u-boot-qemu is not installed: run tools/install-deps")
    base = tmp_path_factory.mktemp("contracts")
    return base, build_roots(base / "roots")


def chain_disk(parts, name):
    """The contract's script (with the tests' hook), env and both kernels; an initramfs per
    kernel with the shipped profile; the disk with each slot's kernel in its root."""
    base, roots = parts
    script, env_text, profile = CONTRACTS[name]
    out = build_uboot(REPO / f"out/uboot-{name}", script=script, env_text=REPO / env_text,
                      kernel_b=rpifw.KERNELS["b"] / "vmlinuz", redundant=True)
    config = (REPO / "configs" / f"{profile}.toml").read_text()
    initrd = {k: rpifw.initramfs(rpifw.KERNELS[k], config, base / f"{name}-initrd-{k}.img",
                                 modules=MODULES) for k in "ab"}
    return mkdisk(base / f"{name}.img", initrd["a"], roots, *LAYOUT, uboot=out,
                  initramfs_b=initrd["b"], root_kernels=True)


def booted(b, slot, root):
    """The system of `slot` booted its own kernel with `root` on the cmdline."""
    assert b.rc == 0 and b.reported, b.console[-3000:]
    assert b.fields["slot-name"] == f"system_{slot}", b.bootstate()
    # the kernel's own banner: this slot's kernel, not the other's
    versions = re.findall(r"Linux version (\S+)", b.console)
    assert versions == [rpifw.releases()[slot]], versions
    assert root in b.fields["cmdline"].split(), b.fields["cmdline"]
    assert b.handoff()["slot"] == slot
    assert b.handoff()["decision"]["source"] == "bootloader"


def env_of(disk, tmp, names):
    env = read_env(disk, tmp)
    assert env is not None, "fw_printenv rejects uboot.env"
    return tuple(env.get(n) for n in names)


def status(b, marker):
    s = json_after(b.test_run, marker)
    return s["boot"], s["attempts_left"]


def test_article_generic_ab(parts, tmp_path):
    disk = chain_disk(parts, "article")
    assert env_of(disk, tmp_path, ARTICLE) == ("a", "3", "3")
    set_env(disk, "extra_bootargs=test.run=mark-active-b")
    b = boot(disk)
    booted(b, "a", "root=PARTLABEL=rootfs_A")
    assert "mark-exit=0" in b.test_run, b.test_run
    # a was counted by the script (3 -> 2): a trial until committed
    assert status(b, "mark-exit=") == ("trial", 2)
    assert env_of(disk, tmp_path, ARTICLE) == ("b", "2", "3")

    set_env(disk, "extra_bootargs=test.run=mark-good")
    b = boot(disk)
    booted(b, "b", "root=PARTLABEL=rootfs_B")
    assert "mark-exit=0" in b.test_run, b.test_run
    assert status(b, "mark-exit=") == ("committed", 3)
    assert env_of(disk, tmp_path, ARTICLE) == ("b", "2", "3")

    # An update of a with one attempt, as an update client writes it; never committed.
    set_env(disk, "boot_slot=a", "boot_a_left=1", "extra_bootargs=test.run=status")
    b = boot(disk)
    booted(b, "a", "root=PARTLABEL=rootfs_A")
    assert status(b, "status-exit=0") == ("trial", 0)
    assert env_of(disk, tmp_path, ARTICLE) == ("a", "0", "3")

    # a at zero: the script switches boot_slot to b
    b = boot(disk)
    assert "bootstate: slot a has no attempts left: switching to b" in b.bootstate()
    booted(b, "b", "root=PARTLABEL=rootfs_B")
    assert status(b, "status-exit=0") == ("trial", 2)
    assert env_of(disk, tmp_path, ARTICLE) == ("b", "0", "2")


def test_mender(parts, tmp_path):
    disk = chain_disk(parts, "mender")
    assert env_of(disk, tmp_path, MENDER) == ("2", "2", "0", "0", "1")
    set_env(disk, "extra_bootargs=test.run=mark-active-b")
    b = boot(disk)
    booted(b, "a", "root=/dev/vda2")
    assert "mark-exit=0" in b.test_run, b.test_run
    assert status(b, "mark-exit=")[0] == "committed"
    # the install: Mender's trial of partition 3
    assert env_of(disk, tmp_path, MENDER) == ("3", "3", "1", "0", "1")

    set_env(disk, "extra_bootargs=test.run=mark-good")
    b = boot(disk)
    booted(b, "b", "root=/dev/vda3")
    assert "mark-exit=0" in b.test_run, b.test_run
    assert status(b, "mark-exit=")[0] == "committed"
    assert env_of(disk, tmp_path, MENDER) == ("3", "3", "0", "0", "1")

    # What Mender's client writes for an update of partition 2, through fw_setenv.
    set_env(disk, "mender_boot_part=2", "mender_boot_part_hex=2", "upgrade_available=1",
            "bootcount=0", "extra_bootargs=test.run=status")
    b = boot(disk)
    booted(b, "a", "root=/dev/vda2")
    # U-Boot counted this boot: bootcount 1 of bootlimit 1, nothing left
    assert status(b, "status-exit=0") == ("trial", 0)
    assert env_of(disk, tmp_path, MENDER) == ("2", "2", "1", "1", "1")

    # Not committed: the next boot exceeds bootlimit, altbootcmd rolls back to partition 3.
    b = boot(disk)
    assert any("Bootlimit (1) exceeded" in line for _, line in b.lines), b.bootstate()
    booted(b, "b", "root=/dev/vda3")
    assert status(b, "status-exit=0")[0] == "committed"
    assert env_of(disk, tmp_path, MENDER)[:3] == ("3", "3", "0")
