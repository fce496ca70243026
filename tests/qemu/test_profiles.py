"""Issue 4: every device of the design boots both slots with its shipped config;
slot sources; squashfs and erofs systems."""
import subprocess
from guest import REPO, boot, json_after, mkdisk, part_offset

CONFIGS = REPO / "configs"
DEFAULT_MODULES = "virtio_pci virtio_blk ext4 vfat nls_cp437 nls_ascii overlay"


def profile_initrd(initramfs_with_config, name, change=None, modules=None):
    """An initramfs with a shipped profile, one line of it changed if asked."""
    text = (CONFIGS / f"{name}.toml").read_text()
    if change:
        old, new = change
        assert old in text, old
        text = text.replace(old, new, 1)
    tag = name.replace("-", "_") + (new.split('"')[1] if change else "")
    return initramfs_with_config(tag, text, modules)


def root_source(b):
    return b.mount("/").source


def test_mapio_follows_rauc_slot_and_locks_the_override(tmp_path, initramfs_with_config):
    initrd = profile_initrd(initramfs_with_config, "mapio")
    disk = mkdisk(tmp_path / "mapio.img", "--names", "boot - - rootfsA rootfsB data")
    for slot, dev in (("A", "/dev/vda2"), ("B", "/dev/vda3")):
        b = boot(disk, initrd=initrd, append=f"rauc.slot={slot} slotinit.slot=a")
        assert b.reported, b.console[-3000:]
        assert root_source(b) == dev
        assert b.mount("/").readonly
        local = b.mount("/usr/local")
        assert (local.source, local.root) == ("/dev/vda4", "/")
        assert b.mount("/etc/machine-id").root == "/etc/machine-id"
        h = b.handoff()
        assert h["decision"]["source"] == "bootloader"
        assert h["hint"]["source"] == f'rauc.slot="{slot}"'
        assert any(w["kind"] == "override-refused" for w in h["warnings"]), h["warnings"]
        links = b.links()
        assert links["active/boot"][1] == links["other/boot"][1] == "/dev/vda1"
        assert links["active/system"][1] == dev
    # The boot partition is shared: both slots see the same machine-id on data.
    assert b.handoff()["machine_id_source"] == "persistent"


def test_generic_ab_overlay_root_and_root_cmdline(tmp_path, initramfs_with_config):
    # The article's design arms a watchdog (watchdog_s = 30): give it one. Its
    # modules are what the config needs (initramfs/build asks slotinit): the
    # watchdog's driver (boot.watchdog_module, loaded with the disk's) and
    # overlay among them.
    initrd = profile_initrd(initramfs_with_config, "generic-ab")
    disk = mkdisk(tmp_path / "generic.img", "--names", "boot - - rootfs_A rootfs_B data")
    for label, dev in (("rootfs_A", "/dev/vda2"), ("rootfs_B", "/dev/vda3")):
        b = boot(disk, initrd=initrd, append=f"root=PARTLABEL={label}",
                 qemu_args=["-device", "i6300esb"])
        assert b.reported, b.console[-3000:]
        loaded = b.sections["modules"].split()
        assert {"i6300esb", "overlay", "ext4", "vfat"} <= set(loaded), loaded
        w = b.handoff()["watchdog"]
        assert (w["timeout_s"], w["running"]) == (30, True), w
        assert not any(x["kind"] == "watchdog" for x in b.handoff()["warnings"])
        root = b.mount("/")
        assert root.fstype == "overlay", root
        assert "lowerdir=/run/slotinit/lower" in root.super_options, root
        lower = b.mount("/run/slotinit/lower")
        assert (lower.source, lower.readonly) == (dev, True)
        upper = b.mount("/run/slotinit/overlay/0")
        assert (upper.fstype, "size=65536k" in upper.super_options) == ("tmpfs", True), upper
        assert "/ writable" in b.sections["write-test"]
        assert b.mount("/data").source == "/dev/vda4"
        assert b.handoff()["hint"]["source"] == f"root=PARTLABEL={label}"
    # root=/dev/... and root=PARTUUID= name the slot as well.
    b = boot(disk, initrd=initrd, append="root=/dev/vda3")
    assert b.mount("/run/slotinit/lower").source == "/dev/vda3"
    uuid = subprocess.run(["sgdisk", "-i", "2", str(disk)], stdout=subprocess.PIPE, text=True,
                          check=True).stdout.split("unique GUID: ")[1].split()[0]
    b = boot(disk, initrd=initrd, append=f"root=PARTUUID={uuid.lower()}")
    assert b.mount("/run/slotinit/lower").source == "/dev/vda2", b.console[-2000:]


# A U-Boot env kept raw in a partition of its own, a redundant pair at 0 and 0x4000 (eMMC
# boards whose fw_env.config names a partition: ST's images before FWU metadata, many
# others), read by U-Boot's counters: the uboot-env store's raw_offsets.
RAW_ENV_CONFIG = """
[boot]
sources = ["rauc"]

[partitions]
bootconfig = "u-boot-env"
boot_a = "bootfs-a"
boot_b = "bootfs-b"
system_a = "rootfs-a"
system_b = "rootfs-b"
persistent = "userfs"

[persistent]
mountpoint = "/usr/local"
machine_id = "etc/machine-id"
dir = []
bind = []

[bootstate]
backend = "uboot-env"

[bootstate.uboot-env]
counter = "bootloader"
env_owner = "bootloader"
partition = "bootconfig"
raw_offsets = [0, 0x4000]
size = 0x4000
"""


def test_raw_redundant_env_partition(tmp_path, initramfs_with_config):
    initrd = initramfs_with_config("raw_env", RAW_ENV_CONFIG)
    disk = mkdisk(tmp_path / "raw.img", "--names",
                  "u-boot-env bootfs-a bootfs-b rootfs-a rootfs-b userfs")
    env_txt = tmp_path / "env.txt"
    env_txt.write_text("bootcmd=run distro_bootcmd\nBOOT_ORDER=B A\nBOOT_A_LEFT=3\nBOOT_B_LEFT=2\n")
    img = tmp_path / "env.img"
    subprocess.run(["mkenvimage", "-r", "-s", "0x4000", "-o", str(img), str(env_txt)], check=True)
    with open(disk, "r+b") as f:  # the factory image's raw env, both copies
        for off in (0, 0x4000):
            f.seek(part_offset(disk, 1) + off)
            f.write(img.read_bytes())
    for slot, dev in (("A", "/dev/vda4"), ("B", "/dev/vda5")):
        b = boot(disk, initrd=initrd, append=f"rauc.slot={slot} test.run=status")
        assert b.reported, b.console[-3000:]
        assert root_source(b) == dev
        assert b.mount("/usr/local").source == "/dev/vda6"
        s = json_after(b.test_run, "")
        assert s["store"]["order"] == ["B", "A"], s
        assert s["store"]["location"] == "/dev/vda1@0 + /dev/vda1@16384"
        assert s["attempts_left"] == {"A": 3, "B": 2}[slot]
        assert s["boot"] == ("committed" if slot == "A" else "trial")


def make_dtb(tmp_path, partition):
    dtb = tmp_path / f"virt-{partition}.dtb"
    subprocess.run(["qemu-system-aarch64", "-M", f"virt,dumpdtb={dtb}", "-cpu", "cortex-a57",
                    "-smp", "1", "-m", "512", "-nographic", "-net", "none"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["fdtput", "-c", str(dtb), "/chosen/bootloader"], check=True)
    subprocess.run(["fdtput", "-t", "u", str(dtb), "/chosen/bootloader", "partition",
                    str(partition)], check=True)
    return dtb


def test_rpi_firmware_partition_in_the_device_tree(disk, tmp_path, initramfs_with_config):
    initrd = profile_initrd(initramfs_with_config, "rpi-ab-userdata",
                            ('backend = "rpi-tryboot"', 'backend = "none"'))
    for partition, slot in ((3, "system_b"), (2, "system_a")):
        b = boot(disk, initrd=initrd, dtb=make_dtb(tmp_path, partition))
        assert b.fields["slot-name"] == slot, b.console[-3000:]
        h = b.handoff()
        assert h["hint"]["source"] == f"device-tree boot partition {partition}"
        assert h["decision"]["source"] == "bootloader"


def test_android_suffix_source(disk, initramfs_with_config):
    initrd = profile_initrd(initramfs_with_config, "rpi-ab-userdata",
                            ('backend = "rpi-tryboot"', 'backend = "none"'))
    b = boot(disk, initrd=initrd, append="androidboot.slot_suffix=_b")
    assert b.fields["slot-name"] == "system_b"
    log = "\n".join(b.slotinit_log())
    assert "slot source Rauc: silent" in log and "slot source Root: silent" in log
    assert "slot source Android: androidboot.slot_suffix=_b -> slot b" in log


def test_squashfs_and_erofs_systems(tmp_path, initramfs_with_config):
    for fstype, mkfs in (("squashfs", ["mksquashfs", "{src}", "{img}", "-noappend",
                                       "-all-root", "-quiet"]),
                         ("erofs", ["mkfs.erofs", "--all-root", "{img}", "{src}"])):
        initrd = profile_initrd(initramfs_with_config, "rpi-ab-userdata",
                                ('fstype = "ext4"', f'fstype = "{fstype}"'),
                                modules=f"{DEFAULT_MODULES} {fstype}")
        disk = mkdisk(tmp_path / f"{fstype}.img")
        for number, slot in ((4, "system_a"), (5, "system_b")):
            src = tmp_path / f"{fstype}-{slot}"
            subprocess.run([str(REPO / "tests/guest/mkroot"), str(src), slot], check=True)
            img = tmp_path / f"{fstype}-{slot}.img"
            subprocess.run([a.format(src=src, img=img) for a in mkfs], check=True)
            assert img.stat().st_size < 48 << 20
            with open(disk, "r+b") as f:
                f.seek(part_offset(disk, number))
                f.write(img.read_bytes())
        for append, slot in (("", "system_a"), ("slotinit.slot=b", "system_b")):
            b = boot(disk, initrd=initrd, append=append)
            assert b.fields.get("slot-name") == slot, b.console[-3000:]
            assert b.mount("/").fstype == fstype
            assert b.mount("/var").root == f"/slots/{slot}/var"
