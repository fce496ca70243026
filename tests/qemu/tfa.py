"""A TF-A model for QEMU: what ST's TF-A BL2 (and the U-Boot after it) do between a
reset and the kernel on an STM32MP board with Arm PSA FWU metadata (meta-st-ota),
for issue 14 items 1 and 5.

Before each boot the model reads the disk image the way BL2 reads the eMMC: the
FWU metadata, the trial counter in its backup register, the bank to boot; then it
takes that bank's `bootfs-a|b` kernel and initramfs (extlinux.conf on the FAT
partition, as U-Boot's distro boot reads it) and starts QEMU's virt machine
through `qemudriver.run("run", ...)` with `--kernel --initrd --append`, with
`rauc.slot=A|B` on the cmdline: every boot loads the kernel of the bank it picked.

Sources (ARM-software/arm-trusted-firmware at 6a164dd, 2026-08-20, "HEAD" below;
and tag v2.10 for the v1 metadata that devices in the field keep):

- Which copy (drivers/fwu/fwu.c `fwu_init`, `fwu_metadata_load`): the primary
  (`metadata1`, FWU_METADATA_IMAGE_ID), and only if it fails to load, the
  backup (`metadata2`). Both fail: `ERROR("loading of Bkup-FWU-Metadata failed")`
  and `panic()`: the model reports "no-boot" and starts nothing. The partitions
  are found by GPT name (plat/st/common/bl2_io_storage.c
  `set_metadata_image_source`: `get_partition_entry(METADATA_PART_1|2)`,
  plat/st/common/include/stm32mp_io_storage.h: "metadata1", "metadata2"). BL2
  reads `sizeof(struct fwu_metadata)` bytes (`io_read`); fewer: the copy fails.
- v2 copy valid (HEAD `fwu_metadata_sanity_check`, `fwu_metadata_crc_check`):
  version == 2; active_index and previous_active_index < NR_OF_FW_BANKS (2,
  plat/st/common/common.mk); 0x20 <= metadata_size <= sizeof(struct) (120 bytes
  with one image and two banks: NR_OF_IMAGES_IN_FW_BANK, make_helpers/
  defaults.mk); with the firmware-store descriptor (PSA_FWU_METADATA_FW_STORE_DESC,
  on with PSA_FWU_SUPPORT): num_banks == 2, num_images <= NR_OF_IMAGES_IN_FW_BANK,
  bank_info_entry_size == 24, img_entry_size == 32 + 24 * banks, desc_offset ==
  0x20; then CRC-32 (tf_crc32 = zlib's) over bytes 4..metadata_size.
- v1 copy valid (v2.10 drivers/fwu/fwu.c): active_index and
  previous_active_index < 2, CRC-32 over bytes 4..sizeof(struct) (16 + images *
  (32 + 24 * banks) = 96 bytes). v2.10 does not look at the version field.
- The bank (HEAD plat/st/common/bl2_io_storage.c `plat_fwu_get_boot_idx`, once a
  boot): bank_state[active] accepted (0xFC): the trial counter is set to its
  maximum, FWU_MAX_TRIAL_REBOOT = 3 (plat/st/common/include/stm32mp_common.h;
  `stm32_set_max_fwu_trial_boot_cnt`), boot active. Valid (0xFE, a trial):
  `stm32_get_and_dec_fwu_trial_boot_cnt` returns the count and decrements it if
  not 0; a 0 returned: `WARN("Trial FWU fails 3 times")` and the alternate bank
  (drivers/fwu/fwu.c `fwu_get_alternate_boot_bank`: the previous active bank if
  accepted, else another accepted bank, else the previous one if valid, else
  another valid one, else none); else boot active. So from a full counter a trial
  boots 3 times (3->2, 2->1, 1->0) and the 4th reset boots the other bank.
  Anything else (0xFF invalid): `ERROR(... Invalid State)`, the alternate bank,
  counter cleared (`stm32_clear_fwu_trial_boot_cnt`). No alternate bank: HEAD
  only `assert`s (compiled out in release builds, then indexes out of bounds):
  the model reports "no-boot".
  v1 (v2.10 `plat_fwu_get_boot_idx` + drivers/fwu/fwu.c `fwu_is_trial_run_state`):
  a trial is any image whose `accepted` word is 0 in the active bank; trial:
  decrement as above, at 0 the WARN and previous_active_index (no check of its
  state); not a trial: counter to 3, boot active.
- HEAD's `plat_fwu_set_images_source` then needs an image entry of the FIP type
  (STM32MP_FIP_GUID, plat/st/common/include/stm32mp_efi.h) in the descriptor,
  else `panic()`: "no-boot" here too. Its per-bank image GUID names the bank's
  `fip-a|b` partition; this layout has none (see below), so the model maps bank
  0/1 to `bootfs-a`/`bootfs-b` directly.
- The counter (plat/st/common/stm32mp_common.c, FWU_INFO_CNT_MSK = bits 7:4,
  FWU_INFO_IDX_MSK = bits 3:0 of the TAMP backup register 10,
  plat/st/stm32mp1/stm32mp1_private.c TAMP_BOOT_FWU_INFO_REG_ID) lives in a
  host-side file, `register` (the whole 32-bit register, bits 7:4 counter, 3:0
  boot index). It survives every reset (reboot, panic, watchdog); TF-A's own
  comment above `plat_fwu_get_boot_idx` says a power-off before the acceptance
  (and a tamper event) leaves it 0: the backup domain is lost without VBAT. The
  model clears it on a power cut, a power-off and a hang the host ends (a power
  cycle); `vbat=True` keeps it (a board with a backup battery).
- The bank handed on: BL2 writes the boot index into bits 3:0 of the same
  register (`stm32_fwu_set_boot_idx`, called at BL33's load in
  plat/st/stm32mp1/bl2_plat_setup.c); U-Boot reads it (board/st/stm32mp1/
  stm32mp1.c and board/st/stm32mp2/stm32mp2.c `fwu_plat_get_bootidx`:
  TAMP_FWU_BOOT_INFO_REG bits 3:0). How meta-st-ota's boot turns it into the
  kernel's `rauc.slot=` is its env's business: the model passes only the result,
  `rauc.slot=A` for bank 0 and `B` for bank 1, and boots that bank's bootfs.
- `reboot` (and a panic with panic=-1) in the guest is a reset: the model loops
  (`run(n)`), each boot re-reading the disk and the register.

What it leaves out: the ROM code and BL2's own copies, secure boot and
authentication, the FIP (BL31/BL32/U-Boot) and its partitions fip-a/b (U-Boot is
taken as the one the picked bank carries, a Linux loader of that bank's bootfs),
the nv-counters and anti-rollback, the IWDG watchdog TF-A and U-Boot arm (a hang
is the host's power cycle), NOR/NAND (`STM32MP_NOR_*` offsets), the tamper
events, BL2's `assert`s (a debug build would stop on a counter > 3 or an invalid
index), U-Boot's own FWU code (`lib/fwu_updates/`, which may write the metadata on
boot: not modelled; the model never writes the disk), vendorfs and u-boot-env.

Metadata fixtures are built here from the structures (struct.pack, zlib.crc32):
`v1()` and `v2()` (DEN0118; U-Boot include/fwu_mdata.h; TF-A
include/drivers/fwu/fwu_metadata.h), read back by `load()`, the model's reader.
"""
import gzip
import re
import shutil
import struct
import subprocess
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import guest
import qemudriver
import rpifw

REPO = qemudriver.REPO
MAX_TRIALS = 3            # FWU_MAX_TRIAL_REBOOT
BANKS = 2                 # NR_OF_FW_BANKS (plat/st/common/common.mk)
IMAGES = 1                # NR_OF_IMAGES_IN_FW_BANK for this layout
ACCEPTED, VALID, INVALID = 0xFC, 0xFE, 0xFF    # v2 bank_state
CNT_SHIFT, CNT_MASK, IDX_MASK = 4, 0xF0, 0x0F   # FWU_INFO_CNT_*, FWU_INFO_IDX_*
METADATA = ("metadata1", "metadata2")
BOOTFS = ("bootfs-a", "bootfs-b")
SLOTS = ("A", "B")
# STM32MP_FIP_GUID (plat/st/common/include/stm32mp_efi.h), the FIP's image type.
FIP_TYPE = uuid.UUID("19d5df83-11b0-457b-be2c-7559c13142a5")
# The FWU metadata partition type (U-Boot include/fwu.h FWU_MDATA_GUID, from DEN0118).
MDATA_PART_TYPE = "8A7A84A0-8387-40F6-AB41-A8B9A5A60D23"
LOCATION = uuid.UUID("2d0f3a1e-4c2b-4f1a-9e55-5f2f0c1a7b01")
BANK_IMAGE = (uuid.UUID("4fd84c93-54ef-463f-a7ef-ae25ff887087"),    # fip-a
              uuid.UUID("09c54952-d5bf-45af-acee-335303766fb3"))    # fip-b


class NoBoot(Exception):
    """TF-A finds nothing to boot (panic, or no bank): the message says why."""


# --- the structures: fixtures -------------------------------------------------------

def _crc(body):
    return zlib.crc32(body) & 0xFFFFFFFF


def _image_entries(accepted, banks):
    """Per image: type GUID, location GUID, per bank {image GUID, accepted, reserved}."""
    out = b""
    for bits in accepted:
        out += FIP_TYPE.bytes_le + LOCATION.bytes_le
        for b in range(banks):
            out += BANK_IMAGE[b % 2].bytes_le + struct.pack("<II", bits[b], 0)
    return out


def v1(active=0, previous=0, accepted=((1, 1),), version=1):
    """A v1 copy: crc32, version, active_index, previous_active_index, then per image
    {type GUID, location GUID, per bank {image GUID, accepted u32, reserved u32}}:
    96 bytes for 1 image and 2 banks (U-Boot include/fwu_mdata.h, FWU_MDATA_VERSION 1)."""
    banks = len(accepted[0])
    body = struct.pack("<III", version, active, previous) + _image_entries(accepted, banks)
    return struct.pack("<I", _crc(body)) + body


def v2(active=0, previous=0, states=(ACCEPTED, ACCEPTED), accepted=None, images=1,
       size=None, desc_offset=0x20, num_banks=None, version=2, fip=True):
    """A v2 copy: the 32-byte header {crc32, version, active_index,
    previous_active_index, metadata_size, descriptor_offset u16, reserved u16,
    bank_state[4], reserved u32} then the firmware-store descriptor {num_banks u8,
    reserved u8, num_images u16, img_entry_size u16, bank_info_entry_size u16,
    entries}: 120 bytes for 1 image and 2 banks. `accepted` per image per bank
    defaults to the bank states (accepted bit set where 0xFC)."""
    banks = len(states)
    if accepted is None:
        accepted = tuple(tuple(int(s == ACCEPTED) for s in states) for _ in range(images))
    entries = _image_entries(accepted, banks)
    if not fip:
        entries = uuid.UUID(int=1).bytes_le + entries[16:]
    desc = struct.pack("<BBHHH", banks if num_banks is None else num_banks, 0, images,
                       32 + 24 * banks, 24) + entries
    total = 32 + len(desc)
    st = bytes(states) + b"\xff" * (4 - banks)
    hdr = struct.pack("<IIIIHH", version, active, previous,
                      total if size is None else size, desc_offset, 0) + st + bytes(4)
    body = hdr + desc
    return struct.pack("<I", _crc(body[:(total if size is None else size) - 4])) + body


def set_crc(data, size=None):
    """`data` with its CRC recomputed over bytes 4..size (default: all)."""
    size = size or len(data)
    return struct.pack("<I", _crc(data[4:size])) + data[4:]


# --- the reader: TF-A's checks ------------------------------------------------------------

@dataclass
class Mdata:
    version: int
    active: int
    previous: int
    states: list          # v2: bank_state[0..banks]; v1: derived (accepted/valid)
    accepted: list        # per image, per bank: the accepted word
    size: int
    fip: bool = True      # an image entry of the FIP type (v2)

    def trial(self):
        return self.states[self.active] != ACCEPTED


def struct_size(version, images=IMAGES, banks=BANKS):
    """sizeof(struct fwu_metadata) of the TF-A build reading `version`."""
    entries = images * (32 + 24 * banks)
    return 16 + entries if version == 1 else 32 + 8 + entries


def load(data, tfa=2, images=IMAGES, banks=BANKS):
    """One copy as TF-A (`tfa` = 2: HEAD, v2 metadata; 1: v2.10, v1 metadata) loads
    it: an Mdata, or ValueError saying which check failed (TF-A's WARN)."""
    need = struct_size(tfa, images, banks)
    if len(data) < need:
        raise ValueError(f"read {len(data)} bytes instead of {need}")
    data = data[:need]
    crc, version, active, previous = struct.unpack_from("<IIII", data)
    if tfa == 1:
        if active >= banks or previous >= banks:
            raise ValueError(f"index out of range: active {active}, previous {previous}")
        if crc != _crc(data[4:]):
            raise ValueError("CRC check failed")
        acc, off = [], 16
        for _ in range(images):
            acc.append([struct.unpack_from("<I", data, off + 32 + 24 * b + 16)[0]
                        for b in range(banks)])
            off += 32 + 24 * banks
        states = [ACCEPTED if all(a[b] != 0 for a in acc) else VALID for b in range(banks)]
        return Mdata(version, active, previous, states, acc, need)
    size, desc_off = struct.unpack_from("<IH", data, 16)
    if version != 2:
        raise ValueError(f"incorrect FWU metadata version {version}")
    if active >= banks or previous >= banks:
        raise ValueError(f"index out of range: active {active}, previous {previous}")
    if size > need or size < 0x20:
        raise ValueError(f"metadata size {size} out of range [32, {need}]")
    nbanks, _, nimages, img_size, bank_size = struct.unpack_from("<BBHHH", data, 32)
    if nbanks != banks:
        raise ValueError(f"number of banks {nbanks} != {banks}")
    if nimages > images:
        raise ValueError(f"number of images {nimages} > {images}")
    if bank_size != 24 or img_size != 32 + 24 * banks:
        raise ValueError(f"entry sizes {img_size}/{bank_size}")
    if desc_off != 0x20:
        raise ValueError(f"descriptor offset {desc_off:#x} != 0x20")
    if crc != _crc(data[4:size]):
        raise ValueError("CRC check failed")
    states = list(data[24:24 + banks])
    acc, fip, off = [], False, 40
    for _ in range(nimages):
        fip |= uuid.UUID(bytes_le=data[off:off + 16]) == FIP_TYPE
        acc.append([struct.unpack_from("<I", data, off + 32 + 24 * b + 16)[0]
                    for b in range(banks)])
        off += img_size
    return Mdata(version, active, previous, states, acc, size, fip)


def read_copies(disk):
    """[(bytes or None if the partition is missing)] of metadata1, metadata2."""
    parts = {p.name: p for p in rpifw.read_gpt(disk)}
    out = []
    with open(disk, "rb") as f:
        for name in METADATA:
            p = parts.get(name)
            if p is None:
                out.append(None)
                continue
            f.seek(p.first)
            out.append(f.read(min(p.size, 4096)))
    return out


def metadata(disk, tfa=2):
    """(Mdata, copy number 1|2, [warnings]) as fwu_init loads it; NoBoot if neither."""
    warns = []
    for n, data in enumerate(read_copies(disk), 1):
        if data is None:
            warns.append(f"{METADATA[n - 1]}: no such partition")
            continue
        try:
            return load(data, tfa), n, warns
        except ValueError as e:
            warns.append(f"{METADATA[n - 1]}: {e}")
    raise NoBoot("loading of FWU-Metadata and Bkup-FWU-Metadata failed (panic): "
                 + "; ".join(warns))


# --- the decision: plat_fwu_get_boot_idx --------------------------------------------------

def alternate(md):
    """drivers/fwu/fwu.c fwu_get_alternate_boot_bank (HEAD), or None."""
    s = md.states
    if s[md.previous] == ACCEPTED:
        return md.previous
    for i in range(len(s)):
        if i not in (md.active, md.previous) and s[i] == ACCEPTED:
            return i
    if s[md.previous] == VALID:
        return md.previous
    for i in range(len(s)):
        if i not in (md.active, md.previous) and s[i] == VALID:
            return i
    return None


def select(md, counter, tfa=2):
    """(bank or None, counter after, [log lines]): the bank BL2 boots and what it
    leaves in the register's counter, from the metadata and the counter before."""
    bank, log = md.active, []
    if tfa == 1:
        trial = any(a[md.active] == 0 for a in md.accepted)
        if not trial:
            return bank, MAX_TRIALS, log
        if counter == 0:
            log.append(f"WARNING: Trial FWU fails {MAX_TRIALS} times")
            return md.previous, 0, log
        return bank, counter - 1, log
    state = md.states[md.active]
    if state == VALID:
        if counter == 0:
            log.append(f"WARNING: Trial FWU fails {MAX_TRIALS} times")
            return alternate(md), 0, log
        return bank, counter - 1, log
    if state == ACCEPTED:
        return bank, MAX_TRIALS, log
    log.append(f"ERROR: The active bank({md.active}) of the platform is in Invalid State.")
    return alternate(md), 0, log


# --- the bank's kernel: extlinux.conf on bootfs ---------------------------------------------

def parse_extlinux(text):
    """(kernel, initrd, append) of the DEFAULT label (else the first) of an extlinux.conf."""
    labels, default, cur = {}, None, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, val = line.partition(" ")
        key, val = key.upper(), val.strip()
        if key == "DEFAULT":
            default = val
        elif key == "LABEL":
            cur = labels.setdefault(val, {})
        elif cur is not None and key in ("KERNEL", "LINUX", "INITRD", "APPEND", "FDT"):
            cur["LINUX" if key == "KERNEL" else key] = val
    if not labels:
        return None
    lab = labels.get(default) or next(iter(labels.values()))
    return lab.get("LINUX"), lab.get("INITRD"), lab.get("APPEND", "")


EXTLINUX = "extlinux/extlinux.conf"


@dataclass
class Pick:
    """What BL2 + U-Boot load for one boot."""
    bank: int
    copy: int               # 1: metadata1, 2: metadata2
    counter_before: int
    counter_after: int
    trial: bool
    log: list = field(default_factory=list)
    cmdline: str = ""
    blobs: dict = field(default_factory=dict)

    @property
    def slot(self):
        return SLOTS[self.bank]


def pick(disk, counter, tfa=2):
    """The model's choice for one boot of `disk` with the register's `counter`
    (pure apart from reading the image). NoBoot when TF-A panics or has no bank."""
    md, copy, warns = metadata(disk, tfa)
    if tfa == 2 and not md.fip:
        raise NoBoot("No FIP image type found in the FWU metadata (panic)")
    bank, after, log = select(md, counter, tfa)
    if bank is None:
        raise NoBoot(f"no bank to boot: active {md.active} state {md.states} (assert)")
    parts = {p.name: p for p in rpifw.read_gpt(disk)}
    part = parts.get(BOOTFS[bank])
    if part is None:
        raise NoBoot(f"{disk}: no {BOOTFS[bank]} partition for bank {bank}")
    fs = rpifw.Fat(disk, part.first)
    conf = fs.read(EXTLINUX)
    spec = parse_extlinux(conf.decode("latin-1")) if conf is not None else None
    if not spec or not spec[0]:
        raise NoBoot(f"{BOOTFS[bank]}: no {EXTLINUX} with a kernel")
    p = Pick(bank, copy, counter, after, md.trial(), warns + log)
    k = fs.read(spec[0])
    if k is None:
        raise NoBoot(f"{BOOTFS[bank]}: kernel {spec[0]} missing")
    p.blobs["kernel"] = gzip.decompress(k) if k[:2] == b"\x1f\x8b" else k
    rd = fs.read(spec[1]) if spec[1] else b""
    if rd is None:
        raise NoBoot(f"{BOOTFS[bank]}: initrd {spec[1]} missing")
    p.blobs["initramfs"] = rd
    p.cmdline = " ".join(x for x in (spec[2], f"rauc.slot={p.slot}") if x)
    return p


@dataclass
class Event:
    """How a boot ended, as the model records it in the chain."""
    kind: str               # reboot, panic, hang, poweroff, power-cut, no-boot, exit
    bank: int = None
    copy: int = 0
    counter_before: int = 0
    counter_after: int = 0
    trial: bool = False
    wall: float = 0.0
    detail: str = ""
    kernel: str = ""
    log: list = field(default_factory=list)

    @property
    def slot(self):
        return None if self.bank is None else SLOTS[self.bank]


# Ends after which the backup domain is lost (no VBAT): the host cut the power.
POWER_LOST = ("power-cut", "poweroff", "hang")


class Tfa:
    """One STM32MP board with a disk: the backup register across boots.

    `tfa` = 2: TF-A HEAD reading v2 metadata; 1: TF-A v2.10 reading v1. `history`
    holds one Event per boot. `write_log`: the next boots' writes are logged
    through QEMU's blklogwrites (qemu/run --write-log; tests/crash)."""

    def __init__(self, disk, workdir, tfa=2, vbat=False, timeout=120, mem=512):
        self.disk = Path(disk)
        self.work = Path(workdir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.tfa, self.vbat, self.timeout, self.mem = tfa, vbat, timeout, mem
        self.reg_file = self.work / "tamp-bkpr10"
        self.history = []
        self.write_log = None

    @property
    def register(self):
        return int(self.reg_file.read_text()) if self.reg_file.exists() else 0

    @register.setter
    def register(self, value):
        self.reg_file.write_text(f"{value}\n")

    @property
    def counter(self):
        return (self.register & CNT_MASK) >> CNT_SHIFT

    def pick(self):
        """What the next boot would load (changes nothing)."""
        return pick(self.disk, self.counter, self.tfa)

    def boot(self, append="", timeout=None, cut=None, log=None):
        """One boot: (guest.Boot, Event)."""
        n = len(self.history) + 1
        before = self.counter
        try:
            p = self.pick()
        except NoBoot as e:
            ev = Event("no-boot", counter_before=before, counter_after=before, detail=str(e))
            self.history.append(ev)
            return guest.Boot("", 0), ev
        # BL2: the counter (bits 7:4) and the boot index (bits 3:0) before U-Boot runs.
        reg = self.register & ~(CNT_MASK | IDX_MASK)
        self.register = reg | (p.counter_after << CNT_SHIFT) | p.bank
        kernel, initrd = self.work / f"boot-{n}.kernel", self.work / f"boot-{n}.initrd"
        kernel.write_bytes(p.blobs["kernel"])
        initrd.write_bytes(p.blobs["initramfs"])
        args = ["--disk", self.disk, "--kernel", kernel, "--initrd", initrd, "--mem", self.mem,
                "--append", " ".join(x for x in (p.cmdline, append) if x)]
        if self.write_log:
            Path(self.write_log).touch()
            args += ["--write-log", self.write_log]
        try:
            run = qemudriver.run("run", args, timeout or self.timeout, cut=cut, log=log)
        finally:
            kernel.unlink()
            initrd.unlink()
        kind, _, detail = rpifw.classify(run, False)
        rel = re.search(r"Linux version (\S+)", run.console)
        ev = Event(kind, p.bank, p.copy, before, p.counter_after, p.trial, run.wall, detail,
                   rel.group(1) if rel else "", p.log)
        if kind in POWER_LOST and not self.vbat:
            self.register = 0
        self.history.append(ev)
        return guest.report(run), ev

    def run(self, n, **kw):
        return rpifw.boots_in_a_row(self.boot, n, **kw)

    def chain(self):
        """The chain's record, one line a boot."""
        return "\n".join(
            f"boot {i}: metadata{e.copy or '-'} bank {e.slot or '-'} trial={int(e.trial)} "
            f"counter {e.counter_before}->{e.counter_after} kernel={e.kernel or '-'} "
            f"-> {e.kind}: {e.detail}{' [' + '; '.join(e.log) + ']' if e.log else ''}"
            for i, e in enumerate(self.history, 1))


# --- the STM32MP disk -------------------------------------------------------------------

# bootfs-a/b (FAT; a kernel + initramfs each), rootfs-a/b (ext4), userfs; then
# metadata1/2 (1 MiB each, raw, type FWU metadata) appended by qemu/mkdisk --extra.
NAMES = "- bootfs-a bootfs-b rootfs-a rootfs-b userfs"
SIZES = "1 64 64 48 48 32"
INITRD_MODULES = "virtio_pci virtio_blk ext4 vfat nls_cp437 nls_ascii"
CONFIG = REPO / "configs/stm32mp.toml"
# Guest scripts (test.run=NAME) beside rpifw.SCRIPTS' update / commit / status.
SCRIPTS = {
    # The commit without a restart: status, mark-good, status, then report-init powers off.
    "accept": """echo "uname-r=$(uname -r)"
echo "=== STATUS ==="
slotinit status --json
echo
slotinit mark-good
echo "mark-good-exit=$?"
echo "=== COMMITTED ==="
slotinit status --json
echo
""",
}


def bootfs_dir(out, kdir, initrd):
    """One bank's bootfs: the kernel, its initramfs and extlinux/extlinux.conf (as
    ST's bootfs carries one for U-Boot's distro boot)."""
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    (out / "extlinux").mkdir(parents=True)
    shutil.copy(Path(kdir) / "vmlinuz", out / "Image.gz")
    shutil.copy(initrd, out / "initramfs.img")
    (out / EXTLINUX).write_text("DEFAULT stm32mp\nLABEL stm32mp\n  LINUX /Image.gz\n"
                                "  INITRD /initramfs.img\n  APPEND rootwait\n")
    return out


def make_disk(path, work, copies, config=None, kernels=("a", "b"), systems=None,
              mkdisk_args=()):
    """An STM32MP layout disk for the model: bootfs-a with kernel `kernels[0]`
    (a = bookworm's 6.1, b = 6.12) and its initramfs (slotinit with `config`,
    default configs/stm32mp.toml), bootfs-b with `kernels[1]`, each rootfs with its
    kernel's modules and the test scripts, metadata1/2 holding `copies`
    (bytes, bytes). `systems` ({"a": tree, "b": tree}) replaces the test systems;
    `mkdisk_args` go to qemu/mkdisk last (a later --sizes wins)."""
    import os
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = config or CONFIG.read_text()
    args = ["--names", NAMES, "--sizes", SIZES]
    for slot, k in zip("ab", kernels):
        kdir = rpifw.KERNELS[k]
        rd = rpifw.initramfs(kdir, cfg, work / f"initramfs-{slot}.img", modules=INITRD_MODULES)
        bootfs_dir(work / f"bootfs_{slot}", kdir, rd)
        rd.unlink()
        if systems:
            system = systems[slot]
        else:
            system = rpifw.system_tree(work / f"rootfs_{slot}", f"rootfs-{slot}", k, work)
            for n, text in SCRIPTS.items():
                (system / "test.d" / n).write_text(text)
                (system / "test.d" / n).chmod(0o755)
        args += [f"--boot-{slot}", work / f"bootfs_{slot}", f"--system-{slot}", system]
    for name, data in zip(METADATA, copies):
        f = work / f"{name}.bin"
        f.write_bytes(data)
        args += ["--extra", f"{name}:1:{f}:{MDATA_PART_TYPE}"]
    env = dict(os.environ, SLOTINIT=str(rpifw.slotinit_bin()))
    subprocess.run([str(REPO / "qemu/mkdisk"), "--out", str(path), *map(str, args),
                    *map(str, mkdisk_args)], check=True, stdout=subprocess.DEVNULL, env=env)
    for slot in "ab":
        shutil.rmtree(work / f"bootfs_{slot}", ignore_errors=True)
        shutil.rmtree(work / f"rootfs_{slot}", ignore_errors=True)
    for name in METADATA:
        (work / f"{name}.bin").unlink()
    return Path(path)


def write_copy(disk, n, data):
    """Overwrite metadata copy `n` (1|2) of `disk` with `data` (a host-side change)."""
    part = {p.name: p for p in rpifw.read_gpt(disk)}[METADATA[n - 1]]
    with open(disk, "r+b") as f:
        f.seek(part.first)
        f.write(data)
