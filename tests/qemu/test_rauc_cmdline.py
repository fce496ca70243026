"""Issue 15: RAUC never takes the running slot for the other one. The kernel's
cmdline is the bootloader's word (rauc.slot=A from U-Boot's boot.cmd); slotinit's
decision can differ in the kernel running (here `slotinit.slot=b` on a layout with
one kernel for both slots: slot_kernels = "shared"). With the image's rauc.service drop-in, RAUC's booted
slot is slotinit's; Debian's unit as shipped believes the cmdline and would install
into the running slot."""
import pytest

import guest
import rauclib
import rpifw
import tfa
from guest import REPO

CONF = REPO / "debian-image/rauc/system-uboot.conf"


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    if why := rpifw.missing_artifacts():
        pytest.fail(why)
    kit = rauclib.kit(tmp_path_factory.mktemp("rauc-cmdline"), CONF, names=())
    config = rpifw.set_key((REPO / "configs/rpi-uboot-rauc.toml").read_text(), "boot",
                           "slot_kernels", '"shared"')
    initrd = rpifw.initramfs(rpifw.KERNELS["a"], config, kit.work / "initramfs.img",
                             modules=tfa.INITRD_MODULES)
    disk = guest.mkdisk(kit.work / "disk.img", "--system-a", kit.systems["a"],
                        "--system-b", kit.systems["b"])
    return disk, initrd


def test_rauc_takes_slotinits_slot_not_the_cmdlines(disk, tmp_path):
    disk, initrd = disk
    b = guest.boot(disk, append="rauc.slot=A slotinit.slot=b test.run=rauc-cmdline",
                   initrd=initrd, timeout=240, log=tmp_path / "boot.log")
    v = rauclib.View(b, "poweroff", 0)
    assert v.slot_name == "system_b", v.tail()
    assert b.handoff()["decision"]["source"] == "override", b.handoff()
    # The drop-in: RAUC's booted slot is the one slotinit booted, B, and rootfs.1
    # is the slot it would never install into.
    assert rauclib.agree(v, "override") == "B"
    _, _, slots = rauclib.rauc_summary(v.rauc("override"))
    assert slots["rootfs.1"][0] == "booted" and slots["rootfs.0"][0] == "inactive", slots
    # Without it, RAUC 1.8 takes rauc.slot=A from the cmdline: the running B would be
    # its install target. This is what the drop-in is for.
    booted, _, slots = rauclib.rauc_summary(v.rauc("plain"))
    assert booted == "A" and slots["rootfs.0"][0] == "booted", slots
    assert slots["rootfs.1"][0] == "inactive", slots
