"""Issue 16 items 1, 2, 5 and 9: rpi-image-gen's encrypted provisioning maps boot
with slotinit, and fail the way the issue says.

The disks (tests/qemu/cryptlib.py): LUKS2 containers made by Debian's cryptsetup in
a QEMU provisioning boot (tests/guest/crypt-provision), cached by content. slotinit
unlocks them in process (no cryptsetup, kpartx or other process in the boot path),
maps the partitions of the container's own GPT as /dev/mapper/<name>p<N> (kpartx -p p)
and finds the members in it by GPT name.

Scenarios:
- each map (crypt, cryptslots, cryptdata) boots slot A and slot B (one kernel,
  slotinit.slot=b), the members from the container;
- `crypt` through the Raspberry Pi firmware model (each slot its own kernel): A
  committed, B's trial on 6.12 from inside the container, committed;
- a wrong key: `crypt` has no slot at all (fatal, the error names osdata_crypt);
  `cryptdata` boots with persistent on tmpfs, the error names userdata_crypt, and not
  one byte of the encrypted partition changes;
- a damaged primary LUKS2 header: the secondary opens it (as cryptsetup does);
- Adiantum with an argon2id keyslot unlocks; an argon2id cost above max_memory_kib is
  refused with an error naming the container, the cost and the limit.
"""
import hashlib
import re
import subprocess

import pytest

import cryptlib
import guest
import rpifw
from cryptlib import MAPS

KREL = rpifw.releases()
TIMEOUT = 150


@pytest.fixture(scope="module")
def built(tmp_path_factory, initramfs_with_config):
    """build(map, cipher, pbkdf, key=, extra_config=) -> (disk, container partition
    number, luksDump, initramfs); disks and initramfs once per module and arguments.
    The initramfs carries the key file `key` (KEY: the container's; WRONG_KEY: not)."""
    root = tmp_path_factory.mktemp("crypt")
    disks, initrds = {}, {}

    def build(map_key, cipher="aes-xts", pbkdf="pbkdf2-1000", key=cryptlib.KEY, extra_config=""):
        dk = (map_key, cipher, pbkdf)
        if dk not in disks:
            work = root / "-".join(dk)
            disks[dk] = cryptlib.virtio_disk(work / "disk.img", work, map_key, cipher, pbkdf)
        ik = (map_key, key, extra_config)
        if ik not in initrds:
            work = root / f"initrd-{len(initrds)}"
            work.mkdir()
            text = cryptlib.config(f"rpi-{map_key}", cryptlib.SINGLE_KERNEL)
            for k, v in re.findall(r"^(\w+) = (.*)$", extra_config, re.M):
                text = rpifw.set_key(text, "crypt", k, v)
            initrds[ik] = initramfs_with_config(f"crypt-{map_key}", text, modules=cryptlib.VIRTIO_MODULES,
                                                files=[cryptlib.key_file(work, key)])
        return (*disks[dk][:3], initrds[ik])
    return build


# --- what a booted system shows -------------------------------------------------------

def inner_number(m, member):
    """The member's partition number in the container's own GPT (cryptlib.inner_image:
    the members in layout order)."""
    return [r for r in cryptlib.ROLES if r in m.members].index(member) + 1


def outer_device(m, member):
    """The virtio partition of a clear member, or (None) the LUKS2 partition (qemu/mkdisk
    numbers the clear ones first, the container after them)."""
    clear = [r for r in cryptlib.ROLES if r not in m.members]
    return f"/dev/vda{clear.index(member) + 1 if member else len(clear) + 1}"


def problems(h):
    return [f"{p['kind']}: {p['message']}" for p in h["errors"] + h["warnings"]]


def log_text(b):
    return "\n".join(b.slotinit_log())


def assert_booted_from(b, slot, m):
    """Slot `slot` booted with map `m`'s members from the container, the others clear."""
    assert b.rc == 0 and b.reported, b.console[-4000:]
    assert b.fields["slot-name"] == f"system_{slot}", b.fields
    h = b.handoff()
    assert h["slot"] == slot and h["errors"] == [], problems(h)
    dms = cryptlib.dm_devices(b)
    assert m.name in dms, (dms, b.test_run)
    for member, point in ((f"system_{slot}", "/"), ("persistent", "/persistent")):
        mnt = b.mount(point)
        if member in m.members:
            assert cryptlib.dm_name(dms, mnt.source) == f"{m.name}p{inner_number(m, member)}", (mnt, dms)
        else:
            assert mnt.source == outer_device(m, member), mnt
    assert b.mount("/").readonly
    assert not b.mount("/persistent").readonly
    # rpi-image-gen's udev rule (image/gpt/ab_userdata/bdebstrap/customize15-cryptroot:
    # ID_FS_LABEL == the LUKS2 label -> disk/by-slot/<container>, crypttab's source):
    # the link names the LUKS2 partition itself; the usual links name the mapped ones.
    links = cryptlib.by_slot(b)
    assert links.get(m.name) == outer_device(m, None), links
    system = links.get("active/system")
    if f"system_{slot}" in m.members:
        assert system and cryptlib.dm_name(dms, system) == cryptlib.dm_name(dms, b.mount("/").source), links
    else:
        assert system == outer_device(m, f"system_{slot}"), links
    return h


def partition_sha(disk, number):
    """sha256 of GPT partition `number`'s bytes."""
    part = next(p for p in rpifw.read_gpt(disk) if p.number == number)
    h = hashlib.sha256()
    with open(disk, "rb") as f:
        f.seek(part.first)
        left = part.size
        while left:
            chunk = f.read(min(left, 1 << 20))
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest(), part


# --- the real tool's word on the containers ---------------------------------------------

@pytest.mark.parametrize("map_key", list(MAPS))
def test_the_real_tool_opens_each_container_with_its_key_only(tmp_path, map_key):
    """Debian's cryptsetup (the provisioning guest) opens the container with KEY and
    finds the members in the GPT inside; WRONG_KEY opens no keyslot (exit 2, "No key
    available with this passphrase"). What the slotinit scenarios below rely on."""
    m = MAPS[map_key]
    work = tmp_path / "work"
    *_, cont = cryptlib.virtio_disk(tmp_path / "disk.img", work, map_key)
    copy = cryptlib.copy(cont, tmp_path / "container.img")
    key = tmp_path / "key"
    key.write_bytes(cryptlib.KEY)
    out = tmp_path / "out"
    subprocess.run([str(cryptlib.PROVISION), "--container", str(copy), "--key", str(key),
                    "--out-dir", str(out),
                    "--sh", "cryptsetup open --readonly --key-file $KEY $DEV x && "
                            "dd if=/dev/mapper/x of=$OUT/head.img bs=1M count=1 && cryptsetup close x",
                    "--sh", f"echo {cryptlib.WRONG_KEY.hex()} | xxd -r -p >/tmp/wrong && "
                            "cryptsetup open --test-passphrase --key-file /tmp/wrong $DEV"],
                   check=True, stdout=subprocess.DEVNULL)
    assert (out / "sh-1.txt").read_text().strip().endswith("exit=0"), (out / "sh-1.txt").read_text()
    inner = [p.name for p in rpifw.read_gpt(out / "head.img")]
    assert inner == [r for r in cryptlib.ROLES if r in m.members], inner
    wrong = (out / "sh-2.txt").read_text()
    assert wrong.strip().endswith("exit=2") and "No key available" in wrong, wrong


# --- the maps boot ---------------------------------------------------------------------

@pytest.mark.parametrize("map_key", list(MAPS))
def test_each_map_boots_both_slots(built, tmp_path, map_key):
    m = MAPS[map_key]
    disk, number, dump, initrd = built(map_key)
    # What the real tool says of the container that was made (luksDump in the
    # provisioning guest): rpi-image-gen's options.
    for want in (rf"Label:\s+{m.label}$", rf"UUID:\s+{m.uuid()}$", r"cipher: aes-xts-plain64$",
                 r"Key:\s+512 bits$", r"PBKDF:\s+pbkdf2$", r"Iterations:\s+1000$"):
        assert re.search(want, dump, re.M), (want, dump)
    disk = cryptlib.copy(disk, tmp_path / "disk.img")
    b = guest.boot(disk, initrd=initrd, append="test.run=cryptfacts", timeout=TIMEOUT,
                   log=tmp_path / "a.log")
    h = assert_booted_from(b, "a", m)
    guest.record(f"crypt-{map_key}-timings-us", h["timings_us"])
    b = guest.boot(disk, initrd=initrd, append="slotinit.slot=b test.run=cryptfacts",
                   timeout=TIMEOUT, log=tmp_path / "b.log")
    assert_booted_from(b, "b", m)
    # The unlock is logged with its time (bench/crypt-unlock reads it).
    assert re.search(rf"crypt: {m.name}\b.* unlocked in \d+ ms", log_text(b)), log_text(b)


def test_crypt_trial_through_the_firmware_model(tmp_path):
    """`crypt` on the two-kernel disk: A (6.1) committed arms B's trial; B boots on
    6.12 from osdata_crypt's system_b and commits; B is the default after."""
    if why := rpifw.missing_artifacts():
        pytest.fail(why)
    m = MAPS["crypt"]
    work = tmp_path / "work"
    systems = cryptlib.pi_systems(work)
    cont, dump = cryptlib.container(m, work, systems, cryptlib.PI_INNER, tag="osdata_crypt-pi")
    assert re.search(rf"Label:\s+{m.label}$", dump, re.M), dump
    disk = cryptlib.pi_disk(tmp_path / "disk.img", work, cryptlib.config("rpi-crypt"),
                            files=[cryptlib.key_file(work)],
                            mkdisk_args=cryptlib.outer_args(m, cont))
    pi = rpifw.Pi(disk, work, timeout=TIMEOUT)
    root_of = re.compile(rf"/dev/(mapper/{m.name}p(\d)|dm-\d+)$")

    b, ev = pi.boot(append="test.run=update", log=tmp_path / "1.log")
    assert (b.fields.get("slot-name"), ev.kernel, ev.partition, ev.kind) == (
        "system_a", KREL["a"], 2, "tryboot"), pi.chain() + b.console[-3000:]
    assert root_of.match(b.mount("/").source), b.mount("/")
    s = guest.json_after(b.console, "=== STATUS ===")
    assert (s["booted_slot"], s["boot"]) == ("a", "committed"), s

    b, ev = pi.boot(append="test.run=commit", log=tmp_path / "2.log")
    assert (b.fields.get("slot-name"), ev.kernel, ev.partition, ev.tryboot) == (
        "system_b", KREL["b"], 3, True), pi.chain() + b.console[-3000:]
    src = root_of.match(b.mount("/").source)
    assert src and src.group(2) in (None, "2"), b.mount("/")
    assert root_of.match(b.mount("/persistent").source), b.mount("/persistent")
    s = guest.json_after(b.console, "=== STATUS ===")
    assert (s["booted_slot"], s["boot"]) == ("b", "trial"), s
    assert "mark-good-exit=0" in b.console, b.console[-3000:]
    assert ev.kind == "reboot", pi.chain()

    b, ev = pi.boot(append="test.run=status", log=tmp_path / "3.log")
    assert (b.fields.get("slot-name"), ev.kernel, ev.partition, ev.tryboot) == (
        "system_b", KREL["b"], 3, False), pi.chain()
    s = guest.json_after(b.console, "=== STATUS ===")
    assert (s["booted_slot"], s["boot"]) == ("b", "committed"), s
    assert b.handoff()["errors"] == [], problems(b.handoff())
    guest.record("crypt-rpi-trial-walls-s", [round(e.wall, 2) for e in pi.history])
    print(pi.chain())


# --- failures ------------------------------------------------------------------------

def test_wrong_key_crypt_boots_no_slot(built, tmp_path):
    """Every system is inside osdata_crypt: without its key there is no slot. The
    fatal error names the container; nothing is mounted, no init runs."""
    disk, number, _, initrd = built("crypt", key=cryptlib.WRONG_KEY)
    disk = cryptlib.copy(disk, tmp_path / "disk.img")
    before, _ = partition_sha(disk, number)
    b = guest.boot(disk, initrd=initrd, timeout=TIMEOUT, log=tmp_path / "boot.log")
    assert not b.reported, "a system ran without the container's key"
    log = log_text(b)
    assert re.search(r"osdata_crypt.*(key|passphrase|keyslot)|(key|passphrase|keyslot).*osdata_crypt",
                     log, re.I), log
    assert re.search(r"fatal|no slot|no usable slot", log, re.I), log
    assert partition_sha(disk, number)[0] == before


def test_wrong_key_cryptdata_falls_back_to_tmpfs_and_writes_nothing(built, tmp_path):
    """persistent is inside userdata_crypt: a wrong key is persistent's failure: the
    system boots with /var and /home on tmpfs, the error names userdata_crypt, and
    not one byte of the encrypted partition changes (never plaintext in its place)."""
    m = MAPS["cryptdata"]
    disk, number, _, initrd = built("cryptdata", key=cryptlib.WRONG_KEY)
    disk = cryptlib.copy(disk, tmp_path / "disk.img")
    before, part = partition_sha(disk, number)
    assert part.name == m.part
    b = guest.boot(disk, initrd=initrd, append="test.run=cryptfacts", timeout=TIMEOUT,
                   log=tmp_path / "boot.log")
    assert b.rc == 0 and b.reported, b.console[-4000:]
    assert b.fields["slot-name"] == "system_a"
    h = b.handoff()
    assert h["persistent_degraded"] is True, h
    assert any(m.name in p["message"] for p in h["errors"]), problems(h)
    assert b.mount("/var").fstype == "tmpfs", b.mount("/var")
    assert m.name not in cryptlib.dm_devices(b), "the container is open"
    assert partition_sha(disk, number)[0] == before, "the encrypted partition was written"


def test_damaged_primary_header_opens_from_the_secondary(built, tmp_path):
    """The primary LUKS2 header's JSON area is overwritten (its checksum fails): the
    secondary copy at 16 KiB opens the container, as cryptsetup does."""
    m = MAPS["crypt"]
    disk, number, _, initrd = built("crypt")
    disk = cryptlib.copy(disk, tmp_path / "disk.img")
    part = next(p for p in rpifw.read_gpt(disk) if p.number == number)
    with open(disk, "r+b") as f:
        f.seek(part.first + 4096)   # the primary's JSON (LUKS2 on-disk format: 4 KiB binary header first)
        f.write(b"\xff" * 512)
    # The real tool's word on a copy of the damaged container: still LUKS2, read from
    # the secondary header; and the primary was damaged: cryptsetup rewrites it from
    # the secondary when it loads the header (lib/luks2/luks2_disk_metadata.c, the
    # auto-recovery), so the copy's primary changes back.
    copy = tmp_path / "container-copy.img"
    with open(disk, "rb") as f:
        f.seek(part.first)
        copy.write_bytes(f.read(part.size))
    r = subprocess.run(["cryptsetup", "luksDump", str(copy)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert r.returncode == 0 and re.search(rf"Label:\s+{m.label}", r.stdout), r.stdout
    with open(copy, "rb") as f:
        f.seek(4096)
        assert f.read(512) != b"\xff" * 512, "cryptsetup found the primary header intact"
    b = guest.boot(disk, initrd=initrd, append="test.run=cryptfacts", timeout=TIMEOUT,
                   log=tmp_path / "boot.log")
    assert_booted_from(b, "a", m)
    print("\n".join(l for l in b.slotinit_log() if "crypt" in l or "secondary" in l))


def test_adiantum_with_argon2id_unlocks(built, tmp_path):
    """cryptdata with Adiantum (rpi-image-gen's cipher without AES instructions; its
    keyslot area is encrypted with Adiantum too, libcryptsetup's default) and an
    argon2id keyslot (8 MiB, t=4): it unlocks and persistent is the mapped partition."""
    m = MAPS["cryptdata"]
    disk, number, dump, initrd = built("cryptdata", "adiantum", "argon2id-8m")
    for want in (r"cipher: xchacha12,aes-adiantum-plain64$", r"Cipher:\s+xchacha12,aes-adiantum-plain64$",
                 r"PBKDF:\s+argon2id$", r"Memory:\s+8192$", r"Time cost:\s+4$", r"Key:\s+256 bits$"):
        assert re.search(want, dump, re.M), (want, dump)
    disk = cryptlib.copy(disk, tmp_path / "disk.img")
    b = guest.boot(disk, initrd=initrd, append="test.run=cryptfacts", timeout=TIMEOUT,
                   log=tmp_path / "boot.log")
    assert_booted_from(b, "a", m)


def test_argon2id_cost_above_the_limit_is_refused(built, tmp_path):
    """The same kind of keyslot (argon2id 8 MiB, t=4, aes-xts) unlocks under the default
    limit (half of MemTotal); with max_memory_kib = 4096 it is refused before any work,
    with an error naming the container, the cost and the limit; persistent falls back
    to tmpfs and the partition is not written."""
    m = MAPS["cryptdata"]
    disk, number, dump, initrd = built("cryptdata", "aes-xts", "argon2id-8m")
    assert re.search(r"PBKDF:\s+argon2id$", dump, re.M) and re.search(r"Memory:\s+8192$", dump, re.M)
    disk = cryptlib.copy(disk, tmp_path / "disk.img")
    b = guest.boot(disk, initrd=initrd, append="test.run=cryptfacts", timeout=TIMEOUT,
                   log=tmp_path / "ok.log")
    assert_booted_from(b, "a", m)

    *_, limited = built("cryptdata", "aes-xts", "argon2id-8m", extra_config="max_memory_kib = 4096")
    before, _ = partition_sha(disk, number)
    b = guest.boot(disk, initrd=limited, append="test.run=cryptfacts", timeout=TIMEOUT,
                   log=tmp_path / "limited.log")
    assert b.rc == 0 and b.reported, b.console[-4000:]
    h = b.handoff()
    assert h["persistent_degraded"] is True, h
    msgs = [p["message"] for p in h["errors"] if m.name in p["message"]]
    assert msgs and re.search(r"8192", msgs[0]) and re.search(r"4096", msgs[0]), problems(h)
    assert b.mount("/var").fstype == "tmpfs"
    assert partition_sha(disk, number)[0] == before
