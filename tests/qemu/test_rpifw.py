"""The Raspberry Pi firmware model (tests/qemu/rpifw.py): host tests of its rules
(autoboot.txt rows from raspberrypi/documentation, config.txt, boot.img, the
one-shot tryboot flag on a fake QEMU), then QEMU boots through it of two-kernel
disks: slot A with bookworm's 6.1, slot B with 6.12, ext4 and erofs systems."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import guest
import qemudriver
import rpifw

REPO = qemudriver.REPO
os.environ.setdefault("SLOTINIT", str(rpifw.slotinit_bin()))
KREL = rpifw.releases()
def needs_kernels(test):
    """Both kernels are required: missing ones fail the run (artifacts), never skip."""
    return test
RPI_DEFAULT = rpifw.AUTOBOOT_TEXT


@pytest.fixture(scope="session", autouse=True)
def artifacts():
    """Overrides conftest's: the model builds its own initramfs per kernel (from the
    slotinit binary in $SLOTINIT or target/), it needs no out/initramfs.img."""
    if why := rpifw.missing_artifacts():
        pytest.fail(why)
RPI_SWAPPED = rpifw.AUTOBOOT_SWAPPED


# --- autoboot.txt, config.txt: the documented rows --------------------------------

@pytest.mark.parametrize("text,tryboot,want", [
    # rpi-image-gen's pre-image.sh / autoboot.adoc's initial file
    (RPI_DEFAULT, False, (2, 1)),
    (RPI_DEFAULT, True, (3, 1)),
    # autoboot.adoc's "Updated autoboot.txt" after a commit
    (RPI_SWAPPED, False, (3, 1)),
    (RPI_SWAPPED, True, (2, 1)),
    # no boot_partition: 0, the default partition
    ("[all]\ntryboot_a_b=1\n", False, (0, 1)),
    ("", False, (0, 0)),
    # [none] hides what follows until [all]
    ("boot_partition=2\n[none]\nboot_partition=5\n[all]\ntryboot_a_b=1\n", False, (2, 1)),
    # model filters: a Pi 5 sees [pi5], not [pi4]; same-type filters replace each other
    ("[pi4]\nboot_partition=4\n[pi5]\nboot_partition=5\n[all]\n", False, (5, 0)),
    ("[pi5]\nboot_partition=5\n[pi4]\nboot_partition=4\n", False, (5, 0)),
    # filters of different types combine: [pi5] then [tryboot] needs both
    ("boot_partition=2\n[pi5]\n[tryboot]\nboot_partition=3\n", False, (2, 0)),
    ("boot_partition=2\n[pi5]\n[tryboot]\nboot_partition=3\n", True, (3, 0)),
    ("boot_partition=2\n[pi4]\n[tryboot]\nboot_partition=3\n", True, (2, 0)),
    # [all] resets the filters
    ("[tryboot]\nboot_partition=3\n[all]\nboot_partition=2\n", True, (2, 0)),
    # filters the model cannot evaluate never pass
    ("boot_partition=2\n[EDID=DEL-DELL_U2422H]\nboot_partition=4\n", False, (2, 0)),
    ("boot_partition=2\n[0x12345678]\nboot_partition=4\n[gpio4=1]\nboot_partition=5\n", False, (2, 0)),
    # the last value wins; comments, blanks, CRLF, spaces
    ("# comment\r\n\r\n boot_partition = 2 \r\nboot_partition=3 # trailing\r\n", False, (3, 0)),
    # a value that is not a number is ignored
    ("boot_partition=2\nboot_partition=two\n", False, (2, 0)),
    # tryboot_a_b only means something at 1
    ("tryboot_a_b=2\nboot_partition=2\n", False, (2, 0)),
])
def test_autoboot_rows(text, tryboot, want):
    ab = rpifw.parse_autoboot(text.encode(), tryboot)
    assert (ab["boot_partition"], ab["tryboot_a_b"]) == want


def test_autoboot_reads_512_bytes_only():
    pad = "#" * (512 - len("boot_partition=2\n") - 1) + "\n"
    text = "boot_partition=2\n" + pad + "boot_partition=3\n"
    assert len(text.encode()) > 512
    assert rpifw.parse_autoboot(text.encode(), False)["boot_partition"] == 2


@pytest.mark.parametrize("arg,want", [
    ("0 tryboot", (0, True)), ("2", (2, False)), ("3 tryboot", (3, True)),
    ("", (0, False)), ("tryboot", (0, True)), ("foo", (0, False)),
])
def test_reboot_argument(arg, want):
    assert rpifw.parse_reboot_arg(arg) == want


@pytest.mark.parametrize("config,files,want", [
    # explicit names (what qemu/rpi-boot writes)
    ("kernel=vmlinuz\ninitramfs initramfs.img followkernel\n", {"vmlinuz"},
     ("vmlinuz", ["initramfs.img"], "cmdline.txt", False)),
    # several initramfs files, an address instead of followkernel, another cmdline
    ("kernel=k\ninitramfs a.cpio,b.cpio 0x00800000\ncmdline=c.txt\n", set(),
     ("k", ["a.cpio", "b.cpio"], "c.txt", False)),
    # Pi 5 defaults: kernel_2712.img, auto_initramfs -> initramfs_2712
    ("auto_initramfs=1\n", {"kernel_2712.img", "initramfs_2712"},
     ("kernel_2712.img", ["initramfs_2712"], "cmdline.txt", False)),
    # no kernel_2712.img: kernel8.img and initramfs8
    ("auto_initramfs=1\n", {"kernel8.img", "initramfs8"},
     ("kernel8.img", ["initramfs8"], "cmdline.txt", False)),
    # auto_initramfs with no such file: none
    ("auto_initramfs=1\n", {"kernel8.img"}, ("kernel8.img", [], "cmdline.txt", False)),
    ("boot_ramdisk=1\n", set(), ("kernel_2712.img", [], "cmdline.txt", True)),
    # a [pi4] kernel is not the Pi 5's; [none] hides
    ("kernel=a\n[pi4]\nkernel=b\n[none]\nkernel=c\n[all]\n", set(), ("a", [], "cmdline.txt", False)),
])
def test_config_txt(config, files, want):
    s = rpifw.parse_settings(config, tryboot=False)
    assert rpifw.boot_files(s, "pi5", lambda f: f in files) == want


def test_config_edits_keep_the_profile():
    """The model's initramfs config is the rpi profile with two keys changed."""
    text = rpifw.config_text("erofs", "none")
    assert re.search(r'^\[system\][^\[]*?^fstype = "erofs"', text, re.M | re.S)
    assert re.search(r'^backend = "none"', text, re.M)
    base = (REPO / "configs/rpi-ab-userdata.toml").read_text()
    assert len(text.splitlines()) == len(base.splitlines())


@needs_kernels
def test_erofs_compressor_table():
    """The table the notes give: which erofs compressors each kernel reads
    (CONFIG_EROFS_FS_ZIP_*; ZIP alone is lz4) and which bookworm's mkfs.erofs writes."""
    def reads(k):
        cfg = (rpifw.KERNELS[k] / "config").read_text()
        on = lambda o: re.search(rf"^CONFIG_{o}=y", cfg, re.M) is not None
        out = {"none"}
        if on("EROFS_FS_ZIP"):
            out |= {"lz4", "lz4hc"}
            for o, c in (("LZMA", "lzma"), ("DEFLATE", "deflate"), ("ZSTD", "zstd")):
                if on(f"EROFS_FS_ZIP_{o}"):
                    out.add(c)
        return out
    assert reads("a") == {"none", "lz4", "lz4hc"}
    assert reads("b") == {"none", "lz4", "lz4hc", "lzma", "deflate", "zstd"}
    helptext = subprocess.run(["mkfs.erofs", "--help"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True).stdout
    writes = set(re.search(r"Available compressors are: (.*)", helptext).group(1)
                 .replace(",", " ").split())
    assert writes == {"lz4", "lz4hc"}, writes   # erofs-utils 1.5: no zstd (rpi-image-gen's -z zstd)


# --- disks without QEMU: GPT types, picks, boot.img -------------------------------

def boot_tree(d, files):
    d.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return d


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    """Builds (once per content: the model never writes a disk) a gpt/ab_userdata disk
    with these boot partition files and autoboot.txt, and empty systems."""
    root = tmp_path_factory.mktemp("rpifw-small")
    (root / "empty").mkdir()
    cache = {}

    def build(boot_a=None, boot_b=None, autoboot=RPI_DEFAULT):
        key = repr((boot_a, boot_b, autoboot))
        if key in cache:
            return cache[key]
        d = root / f"d{len(cache)}"
        d.mkdir()
        args = ["--system-a", root / "empty", "--system-b", root / "empty"]
        for slot, files in (("a", boot_a), ("b", boot_b)):
            if files is not None:
                args += [f"--boot-{slot}", boot_tree(d / f"boot_{slot}", files)]
        if autoboot is not None:
            (d / "autoboot.txt").write_text(autoboot)
            args += ["--bootconfig-file", f"{d / 'autoboot.txt'}:autoboot.txt"]
        cache[key] = guest.mkdisk(d / "disk.img", *args)
        return cache[key]
    return build


LOOSE_A = {"config.txt": "kernel=vmlinuz\ninitramfs initramfs.img followkernel\n",
           "vmlinuz": "KERNEL-A", "initramfs.img": "INITRD-A", "cmdline.txt": "slot=a\n"}
LOOSE_B = {"config.txt": "kernel=vmlinuz\ninitramfs initramfs.img followkernel\n",
           "vmlinuz": "KERNEL-B", "initramfs.img": "INITRD-B", "cmdline.txt": "slot=b\n",
           "tryboot.txt": "kernel=trykernel\n", "trykernel": "KERNEL-B-TRY"}


def test_gpt_types_as_rpi_image_gen(small_disk, tmp_path):
    """genimage.cfg.in.*: bootconfig/boot_a/boot_b type F with bootable = true, the rest L."""
    parts = rpifw.read_gpt(small_disk())
    got = [(p.name, str(p.type).upper(), p.attrs) for p in parts]
    fat, linux = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    assert got == [("bootconfig", fat, 4), ("boot_a", fat, 4), ("boot_b", fat, 4),
                   ("system_a", linux, 0), ("system_b", linux, 0), ("persistent", linux, 0)]


def test_pick_follows_autoboot_and_flag(small_disk, tmp_path):
    disk = small_disk(LOOSE_A, LOOSE_B)
    p = rpifw.pick(disk, workdir=tmp_path)
    assert (p.partition, p.blobs["kernel"], p.blobs["initramfs"], p.cmdline) == \
        (2, b"KERNEL-A", b"INITRD-A", "slot=a")
    p = rpifw.pick(disk, tryboot=True, workdir=tmp_path)
    # tryboot_a_b=1: the normal config.txt, not tryboot.txt
    assert (p.partition, p.config, p.blobs["kernel"]) == (3, "config.txt", b"KERNEL-B")
    # a partition from the reboot argument wins over autoboot.txt
    assert rpifw.pick(disk, reboot_partition=3, workdir=tmp_path).partition == 3


def test_tryboot_without_tryboot_a_b_loads_tryboot_txt(small_disk, tmp_path):
    disk = small_disk(LOOSE_A, LOOSE_B,
                      autoboot="boot_partition=2\n[tryboot]\nboot_partition=3\n")
    p = rpifw.pick(disk, tryboot=True, workdir=tmp_path)
    assert (p.partition, p.config, p.kernel, p.blobs["kernel"]) == \
        (3, "tryboot.txt", "trykernel", b"KERNEL-B-TRY")


def test_missing_autoboot_boots_the_first_bootable_fat(small_disk, tmp_path):
    """autoboot.adoc: partition 0 = the first bootable FAT partition (bootconfig holds
    no config.txt, so boot_a)."""
    disk = small_disk(LOOSE_A, LOOSE_B, autoboot=None)
    p = rpifw.pick(disk, workdir=tmp_path)
    assert p.partition == 2 and "autoboot.txt missing" in p.notes[0]
    # garbage instead of autoboot.txt: nothing applies, the same default
    disk = small_disk(LOOSE_A, LOOSE_B, autoboot="\x00\xff garbage\n[[[\n")
    assert rpifw.pick(disk, workdir=tmp_path).partition == 2
    # no bootable FAT partition at all: nothing boots
    disk = small_disk({"x": "y"}, {"x": "y"}, autoboot=None)
    with pytest.raises(rpifw.NoBoot, match="no bootable FAT"):
        rpifw.pick(disk, workdir=tmp_path)


@pytest.mark.parametrize("autoboot,why", [
    ("boot_partition=4\n", "not FAT"),           # system_a
    ("boot_partition=9\n", "missing"),
    ("boot_partition=1\n", "no config.txt"),     # bootconfig itself
])
def test_unbootable_picks(small_disk, tmp_path, autoboot, why):
    disk = small_disk(LOOSE_A, LOOSE_B, autoboot=autoboot)
    with pytest.raises(rpifw.NoBoot, match=why):
        rpifw.pick(disk, workdir=tmp_path)


def test_missing_kernel_or_initramfs_is_no_boot(small_disk, tmp_path):
    a = dict(LOOSE_A)
    del a["initramfs.img"]
    b = dict(LOOSE_B)
    del b["vmlinuz"]
    disk = small_disk(a, b)
    with pytest.raises(rpifw.NoBoot, match="initramfs initramfs.img missing"):
        rpifw.pick(disk, workdir=tmp_path)
    with pytest.raises(rpifw.NoBoot, match="kernel vmlinuz missing"):
        rpifw.pick(disk, tryboot=True, workdir=tmp_path)


def test_boot_img_read(small_disk, tmp_path):
    """qemu/rpi-boot --boot-img: the partition holds config.txt (boot_ramdisk=1) and a
    FAT boot.img labelled BOOTRD; the model reads kernel, initramfs and cmdline from it."""
    kdir = boot_tree(tmp_path / "kdir", {"vmlinuz": b"\x00KERNEL-IN-RAMDISK", "version": "9.9-test\n"})
    rd = boot_tree(tmp_path / "rd", {"initramfs.img": "INITRD-IN-RAMDISK"}) / "initramfs.img"
    bd = rpifw.boot_dir(tmp_path / "boot_b", kdir, rd, cmdline="slot=b", boot_img=True)
    assert sorted(os.listdir(bd)) == ["boot.img", "config.txt"]
    assert "boot_ramdisk=1" in (bd / "config.txt").read_text()
    assert rpifw.Fat(bd / "boot.img").label() == "BOOTRD"
    disk = small_disk(LOOSE_A, {f: (bd / f).read_bytes() for f in os.listdir(bd)},
                      autoboot=RPI_SWAPPED)
    p = rpifw.pick(disk, workdir=tmp_path)
    assert (p.partition, p.ramdisk, p.kernel) == (3, "boot.img", "vmlinuz")
    assert p.blobs["kernel"] == b"\x00KERNEL-IN-RAMDISK"
    assert p.blobs["initramfs"] == b"INITRD-IN-RAMDISK"
    assert p.cmdline == "console=ttyAMA0 panic=-1 slot=b"
    assert "boot.img label BOOTRD" in p.notes
    assert not (tmp_path / "ramdisk.img").exists()


def test_gzip_kernel_is_unpacked(small_disk, tmp_path):
    import gzip
    a = dict(LOOSE_A, vmlinuz=gzip.compress(b"PLAIN-IMAGE"))
    p = rpifw.pick(small_disk(a, LOOSE_B), workdir=tmp_path)
    assert p.blobs["kernel"] == b"PLAIN-IMAGE"


# --- the one-shot flag and the chain, on a fake QEMU ------------------------------

class FakeQemu:
    """Stands in for qemudriver.run: answers dumpdtb with a tiny tree, and each boot
    with the next scripted console; records what each boot was given."""

    def __init__(self, tmp_path, consoles):
        self.consoles = list(consoles)
        self.boots = []
        src = tmp_path / "virt.dts"
        src.write_text("/dts-v1/;\n/ { chosen { }; };\n")
        self.tree = tmp_path / "tiny.dtb"
        subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(self.tree), str(src)],
                       check=True, stderr=subprocess.DEVNULL)

    def __call__(self, script, args, timeout, qemu_args=(), cut=None, log=None, **kw):
        assert script == "run"
        qa = list(map(str, qemu_args))
        dump = [a for a in qa if a.startswith("dumpdtb=")]
        if dump:
            shutil.copy(self.tree, dump[0].split("=", 1)[1])
            return qemudriver.Run("", 0)
        a = list(map(str, args))
        opt = lambda o: a[a.index(o) + 1]
        dtb = opt("--dtb")
        get = lambda p: int(subprocess.run(["fdtget", "-t", "u", dtb, "/chosen/bootloader", p],
                                           stdout=subprocess.PIPE, text=True, check=True).stdout)
        self.boots.append({"kernel": Path(opt("--kernel")).read_bytes(),
                           "initrd": Path(opt("--initrd")).read_bytes(),
                           "append": opt("--append"), "cut": cut, "qemu_args": qa,
                           **{p: get(p) for p in ("partition", "tryboot", "boot-mode", "pm_rsts")}})
        console, extra = self.consoles.pop(0)
        return qemudriver.Run(console, extra.get("rc", 0), [(1.0, l) for l in console.splitlines()],
                              1.0, extra.get("killed_at"), extra.get("timed_out", False))


TRYBOOT = "reboot: Restarting system with command '0 tryboot'\n"
POWEROFF = "reboot: Power down\n"


def fake_pi(small_disk, tmp_path, monkeypatch, consoles, **disk):
    fake = FakeQemu(tmp_path, consoles)
    monkeypatch.setattr(rpifw.qemudriver, "run", fake)
    d = small_disk(LOOSE_A, LOOSE_B, **disk)
    return rpifw.Pi(d, tmp_path / "work"), fake


def test_tryboot_flag_is_one_shot(small_disk, tmp_path, monkeypatch):
    pi, fake = fake_pi(small_disk, tmp_path, monkeypatch, [
        (TRYBOOT, {}),                       # A: the update client asks for a trial
        (POWEROFF, {}),                      # B: the trial
        (POWEROFF, {}),                      # A again: the flag was cleared
    ])
    kinds = [pi.boot()[1].kind for _ in range(3)]
    assert kinds == ["tryboot", "poweroff", "poweroff"]
    b = fake.boots
    assert [(x["partition"], x["tryboot"], x["kernel"]) for x in b] == \
        [(2, 0, b"KERNEL-A"), (3, 1, b"KERNEL-B"), (2, 0, b"KERNEL-A")]
    assert [x["initrd"] for x in b] == [b"INITRD-A", b"INITRD-B", b"INITRD-A"]
    assert all(x["boot-mode"] == 1 for x in b)
    # power-on, then a reset through the PM watchdog, then a power-on after the power-off
    assert [x["pm_rsts"] for x in b] == [0x1000, 0x20, 0x1000]
    assert b[0]["append"] == "slot=a" and b[1]["append"] == "slot=b"
    # every boot: the SD card and the guest's watchdog
    for x in b:
        assert "sd-card,drive=card0" in x["qemu_args"] and "i6300esb" in x["qemu_args"]
        assert x["cut"] == (rpifw.WATCHDOG_LINE, 0)
    assert "boot 2: partition 3 tryboot=1" in pi.chain()


@pytest.mark.parametrize("console,extra,kind", [
    ("Kernel panic - not syncing: Attempted to kill init!\n", {}, "panic"),
    ("reboot: Restarting system\n", {}, "reboot"),
    ("watchdog armed\nwatchdog: timer fired\n", {"rc": -9, "killed_at": 9.0}, "watchdog"),
    ("stalling\n", {"rc": 124, "timed_out": True}, "hang"),
    ("[    3.0] slotinit: mounts\n", {"rc": -9, "killed_at": 2.0}, "power-cut"),
])
def test_resets_without_the_flag(small_disk, tmp_path, monkeypatch, console, extra, kind):
    """A trial that panics, reboots plainly, is reset by the watchdog, hangs or loses
    power: the next boot is the default partition, without tryboot."""
    pi, fake = fake_pi(small_disk, tmp_path, monkeypatch, [(TRYBOOT, {}), (console, extra), (POWEROFF, {})])
    evs = [pi.boot()[1] for _ in range(3)]
    assert [e.kind for e in evs] == ["tryboot", kind, "poweroff"]
    assert (evs[1].partition, evs[1].tryboot) == (3, True)
    assert [(x["partition"], x["tryboot"]) for x in fake.boots] == [(2, 0), (3, 1), (2, 0)]
    assert fake.boots[2]["pm_rsts"] == (0x20 if kind in ("panic", "reboot", "watchdog") else 0x1000)
    if kind == "watchdog":
        assert "watchdog" in pi.chain()


def test_reboot_to_a_partition(small_disk, tmp_path, monkeypatch):
    """`reboot 3`: partition 3 for one boot, no tryboot; then autoboot.txt again."""
    pi, fake = fake_pi(small_disk, tmp_path, monkeypatch, [
        ("reboot: Restarting system with command '3'\n", {}), (POWEROFF, {}), (POWEROFF, {})])
    pi.run(3)   # stops after the first power-off
    assert [(x["partition"], x["tryboot"]) for x in fake.boots] == [(2, 0), (3, 0)]
    pi.boot()
    assert fake.boots[-1]["partition"] == 2


def test_user_cut_keeps_the_watchdog(small_disk, tmp_path, monkeypatch):
    pi, fake = fake_pi(small_disk, tmp_path, monkeypatch, [(POWEROFF, {})])
    pi.boot(cut=("slotinit: mounts", 0.5))
    assert fake.boots[0]["cut"] == (f"(?:slotinit: mounts)|{rpifw.WATCHDOG_LINE}", 0.5)


def test_no_boot_starts_nothing(small_disk, tmp_path, monkeypatch):
    pi, fake = fake_pi(small_disk, tmp_path, monkeypatch, [], autoboot="boot_partition=5\n")
    out = pi.run(3)
    assert len(out) == 1 and out[0][1].kind == "no-boot" and "not FAT" in out[0][1].detail
    assert fake.boots == []


# --- QEMU boots through the model ----------------------------------------------------

def kernel_report(boot):
    """The `kernel` guest script's key=value lines."""
    return dict(l.split("=", 1) for l in boot.test_run.splitlines() if "=" in l)


def check_slot(boot, ev, slot, kernel, partition, tryboot=0):
    """From inside the system: the slot, its kernel, its modules, the firmware's word."""
    r = kernel_report(boot)
    assert boot.fields.get("slot-name") == f"system_{slot}", boot.console[-3000:]
    assert r.get("uname-r") == KREL[kernel] == ev.kernel, r
    assert r.get("modules-dir") == "yes" and int(r.get("modules-ko", 0)) >= 2, r
    assert r.get("modprobe") == "ok", r
    assert r.get("dt-partition") == f"{partition:08x}" and r.get("dt-tryboot") == f"{tryboot:08x}"
    assert r.get("dt-boot-mode") == "00000001"
    assert boot.mount("/").source == f"/dev/mmcblk0p{4 if slot == 'a' else 5}"
    assert ev.partition == partition


def copy_disk(src, dst):
    """A sparse copy (shutil.copyfile would write the holes of 512 MiB)."""
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)


@pytest.fixture(scope="module")
def two_kernel_disk(tmp_path_factory):
    """boot_a: 6.1, loose files; boot_b: 6.12 inside boot.img; ext4 systems."""
    d = tmp_path_factory.mktemp("rpifw-ext4")
    return rpifw.make_disk(d / "disk.img", d / "work", boot_img=(False, True))


@needs_kernels
def test_slot_a_then_trial_of_b(two_kernel_disk, tmp_path):
    """A boots 6.1 (autoboot.txt's [all]); the guest's reboot "0 tryboot" sets the flag;
    the trial boots boot_b's 6.12 from its boot.img with system_b; the flag is gone
    for the boot after: A again."""
    disk = tmp_path / "disk.img"
    copy_disk(two_kernel_disk, disk)
    pi = rpifw.Pi(disk, tmp_path / "work")
    b, ev = pi.boot(append="test.run=kernel", log=tmp_path / "a.log")
    check_slot(b, ev, "a", "a", 2)
    assert ev.kind == "poweroff" and ev.pm_rsts == 0x1000
    b, ev = pi.boot(append="test.run=tryboot", log=tmp_path / "arm.log")
    assert ev.kind == "tryboot" and ev.reboot_arg == "0 tryboot" and pi.tryboot, pi.chain()
    assert pi.pick().ramdisk == "boot.img"
    b, ev = pi.boot(append="test.run=kernel", log=tmp_path / "b.log")
    check_slot(b, ev, "b", "b", 3, tryboot=1)
    assert kernel_report(b)["dt-pm_rsts"] == "00000020"
    assert not pi.tryboot
    b, ev = pi.boot(append="test.run=kernel", log=tmp_path / "a2.log")
    check_slot(b, ev, "a", "a", 2)
    guest.record("rpifw-boot-wall-s", [round(e.wall, 2) for e in pi.history])
    print(pi.chain())


@needs_kernels
def test_autoboot_pointing_at_b(two_kernel_disk, tmp_path):
    """autoboot.txt as after a commit of B: B is the default, 6.12, no tryboot."""
    disk = tmp_path / "disk.img"
    copy_disk(two_kernel_disk, disk)
    (tmp_path / "autoboot.txt").write_text(RPI_SWAPPED)
    guest.fat_put(disk, tmp_path / "autoboot.txt", "autoboot.txt")
    pi = rpifw.Pi(disk, tmp_path / "work")
    b, ev = pi.boot(append="test.run=kernel", log=tmp_path / "b.log")
    check_slot(b, ev, "b", "b", 3)


@needs_kernels
@pytest.mark.parametrize("script,kind,append,timeout", [
    ("panic", "panic", "", 90),
    ("reboot", "reboot", "", 90),
    ("hang", "watchdog", "i6300esb.heartbeat=5", 90),
    ("stall", "hang", "", 25),
])
def test_trial_resets_without_flag(two_kernel_disk, tmp_path, script, kind, append, timeout):
    """A trial of B (6.12) that panics, reboots plainly, hangs with the watchdog armed
    or stalls: the model records how it ended and the next boot is A."""
    disk = tmp_path / "disk.img"
    copy_disk(two_kernel_disk, disk)
    pi = rpifw.Pi(disk, tmp_path / "work")
    pi.tryboot = True   # as after the guest's reboot "0 tryboot" (test_slot_a_then_trial_of_b)
    b, ev = pi.boot(append=f"test.run={script} {append}".strip(), timeout=timeout,
                    log=tmp_path / "trial.log")
    assert (ev.kind, ev.partition, ev.tryboot, ev.kernel) == (kind, 3, True, KREL["b"]), pi.chain()
    assert not pi.tryboot and pi.pick().partition == 2
    if kind == "watchdog":
        assert "watchdog armed" in b.console and "watchdog" in pi.chain()
        guest.record("rpifw-watchdog-reset", {"heartbeat_s": 5, "wall_s": ev.wall})


@needs_kernels
@pytest.mark.parametrize("z", ["lz4hc", "none"])
def test_erofs_systems(tmp_path, z):
    """erofs systems (rpi-image-gen's default filesystem) under both kernels: 6.1 reads
    lz4 (lz4hc is lz4's format), 6.12 also reads zstd, which bookworm's mkfs.erofs
    cannot write (test_erofs_compressor_table)."""
    disk = rpifw.make_disk(tmp_path / "disk.img", tmp_path / "work", system_fs="erofs", erofs_z=z)
    # the systems are what was asked for: LZ4 0padding is the compressed images' feature
    for part in rpifw.read_gpt(disk)[3:5]:
        with open(disk, "rb") as f:
            f.seek(part.first)
            (tmp_path / "sys.erofs").write_bytes(f.read(part.size))
        info = subprocess.run(["dump.erofs", "-s", str(tmp_path / "sys.erofs")],
                              stdout=subprocess.PIPE, text=True, check=True).stdout
        assert "0xE0F5E1E2" in info and ("0padding" in info) == (z != "none"), info
    (tmp_path / "sys.erofs").unlink()
    pi = rpifw.Pi(disk, tmp_path / "work")
    b, ev = pi.boot(append="test.run=kernel", log=tmp_path / "a.log")
    check_slot(b, ev, "a", "a", 2)
    assert b.mount("/").fstype == "erofs"
    pi.tryboot = True
    b, ev = pi.boot(append="test.run=kernel", log=tmp_path / "b.log")
    check_slot(b, ev, "b", "b", 3, tryboot=1)
    assert b.mount("/").fstype == "erofs"
