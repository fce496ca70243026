"""Issue 15: RAUC never takes the running slot for the other one. The kernel's
cmdline is the bootloader's word (rauc.slot=A from U-Boot's boot.cmd); slotinit's
decision can differ in the kernel running (here `slotinit.slot=b` on a layout with
one kernel for both slots: slot_kernels = "shared"). With the image's rauc.service drop-in, RAUC's booted
slot is slotinit's; Debian's unit as shipped believes the cmdline and would install
into the running slot.

The same disk carries the chain where slotinit counts (configs/rpi-uboot-rauc.toml,
counter = "init") and RAUC writes the env with its own U-Boot backend (fw_setenv):
an install, B's trial counted by slotinit, the commit."""
import shutil

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
    # configs/rpi-uboot-rauc.toml keeps a redundant env pair: libubootenv needs both files.
    kit = rauclib.kit(tmp_path_factory.mktemp("rauc-cmdline"), CONF, names=("good",),
                      fw_env=REPO / "debian-image/rauc/fw_env-redundant.config")
    persistent = rauclib.persistent_dir(kit)
    config = rpifw.set_key((REPO / "configs/rpi-uboot-rauc.toml").read_text(), "boot",
                           "slot_kernels", '"shared"')
    initrd = rpifw.initramfs(rpifw.KERNELS["a"], config, kit.work / "initramfs.img",
                             modules=tfa.INITRD_MODULES)
    disk = guest.mkdisk(kit.work / "disk.img", "--system-a", kit.systems["a"],
                        "--system-b", kit.systems["b"], "--persistent-dir", persistent,
                        "--sizes", "16 32 32 48 48 96")
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


class Direct:
    """qemu/run with the one kernel: slotinit decides and counts every boot."""
    name = "direct"

    def __init__(self, disk, initrd):
        self.disk, self.initrd, self.boots = disk, initrd, []

    def boot(self, append, log=None):
        b = guest.boot(self.disk, append=append, initrd=self.initrd, timeout=240, log=log)
        kind = "poweroff" if "reboot: Power down" in b.console else "reboot"
        self.boots.append((b.fields.get("slot-name"), kind))
        return b, kind

    def history(self):
        return self.boots

    def record(self):
        return "\n".join(f"boot {i}: {s} -> {k}" for i, (s, k) in enumerate(self.boots, 1))


def test_install_when_slotinit_counts(disk, tmp_path):
    """RAUC's uboot backend writes BOOT_ORDER/BOOT_x_LEFT with fw_setenv; slotinit
    reads them, counts B's trial in the same env, and commits it; fw_printenv on the
    host reads what both say."""
    disk, initrd = disk
    d = tmp_path / "disk.img"
    shutil.copyfile(disk, d)
    chain = Direct(d, initrd)
    v = rauclib.step(chain, "rauc-install", "test.bundle=good", log=tmp_path / "install.log")
    assert v.value("install-exit") == "0", v.tail()
    assert rauclib.agree(v, "before") == "A" and rauclib.agree(v, "after") == "A"
    assert rauclib.rauc_summary(v.rauc("after"))[1] == "rootfs.1"
    env = guest.read_env(d, tmp_path, files=("uboot.env", "uboot-redund.env"))
    assert env and env["BOOT_ORDER"].split()[0] == "B", env
    views = rauclib.until_poweroff(chain, 3, tmp_path)
    rauclib.trial_committed(views[-1], chain.record())
    env = guest.read_env(d, tmp_path, files=("uboot.env", "uboot-redund.env"))
    assert env["BOOT_ORDER"].split()[0] == "B" and int(env["BOOT_B_LEFT"], 16) == 3, env
