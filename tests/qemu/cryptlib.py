"""Disks for issue 16: rpi-image-gen's encrypted provisioning maps and dm-verity
system slots, made with the real tools.

LUKS2 containers are made by Debian's cryptsetup in a QEMU provisioning boot
(tests/guest/crypt-provision: this host has no device-mapper); hash trees by the
host's veritysetup (it works on files). Nothing here encrypts or hashes by itself.

The maps (raspberrypi/rpi-image-gen image/gpt/ab_userdata/device/provisionmap-*.json,
LUKS2 options from layer/rpi/device/provisioning/luks2.yaml):

  crypt       bootconfig, boot_a, boot_b clear; one LUKS2 partition (label OSDATA_CRYPT,
              mname osdata_crypt, etype "partitioned") holding a GPT with system_a,
              system_b, persistent
  cryptslots  LUKS2 OSAB_CRYPT (osab_crypt) holding system_a, system_b; persistent clear
  cryptdata   LUKS2 USERDATA_CRYPT (userdata_crypt) holding persistent; systems clear
              (etype "partitioned" too: a GPT with the one partition)

The GPT name of the LUKS2 partition on the outer disk is not in rpi-image-gen's maps
(its provisioner creates it): here "osdata", "osab", "userdata". qemu/mkdisk appends the
container as an --extra partition after the clear ones, so in `cryptslots` it comes
after persistent (rpi-image-gen puts it before); slotinit finds it by its LUKS2 label.

Containers are cached under .cache/crypt-images/ by what went into them (the system
trees' content, the sizes, the LUKS options, the key, the scripts that make them):
each is provisioned once per machine and content. The tests copy a cached image
before they write to it.
"""
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import guest
import qemudriver
import rpifw

REPO = qemudriver.REPO
CACHE = REPO / ".cache/crypt-images"
PROVISION = REPO / "tests/guest/crypt-provision"
MiB = 1 << 20

# The key file slotinit reads (key = "file:..."); its bytes are keyslot 0's passphrase.
# Fixed bytes, so a container is provisioned once per content.
KEY = hashlib.sha256(b"slotinit issue 16 test key").digest()
WRONG_KEY = hashlib.sha256(b"slotinit issue 16 some other key").digest()
KEY_PATH = "/etc/slotinit/crypt.key"

# rpi-image-gen's two cipher choices (luks2.yaml): AES with the hardware's AES
# instructions (Pi 5), else Adiantum; hash sha256 for both.
CIPHERS = {
    "aes-xts": ["--cipher", "aes-xts-plain64", "--key-size", "512", "--hash", "sha256"],
    "adiantum": ["--cipher", "xchacha12,aes-adiantum-plain64", "--key-size", "256",
                 "--hash", "sha256"],
}
# Keyslot 0's PBKDF. CI uses the cheap ones; bench/crypt-unlock the rest
# (libcryptsetup's own default is argon2id benchmarked to ~2 s, up to 1 GiB).
PBKDF = {
    "pbkdf2-1000": ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"],
    "argon2id-8m": ["--pbkdf", "argon2id", "--pbkdf-memory", "8192",
                    "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"],
    "pbkdf2-100000": ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "100000"],
    "argon2id-64m": ["--pbkdf", "argon2id", "--pbkdf-memory", "65536",
                     "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"],
    "argon2id-256m": ["--pbkdf", "argon2id", "--pbkdf-memory", "262144",
                      "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"],
}


@dataclass(frozen=True)
class Map:
    name: str        # the device-mapper name (rpi-image-gen's mname)
    label: str       # the LUKS2 label
    part: str        # the GPT name of the LUKS2 partition on the outer disk
    members: tuple   # the [partitions] members inside (in the container's own GPT)

    def uuid(self):
        """A fixed LUKS2 UUID per map (rpi-image-gen's ${CRYPT_UUID})."""
        h = hashlib.md5(self.label.encode()).hexdigest()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


MAPS = {
    "crypt": Map("osdata_crypt", "OSDATA_CRYPT", "osdata", ("system_a", "system_b", "persistent")),
    "cryptslots": Map("osab_crypt", "OSAB_CRYPT", "osab", ("system_a", "system_b")),
    "cryptdata": Map("userdata_crypt", "USERDATA_CRYPT", "userdata", ("persistent",)),
}
ROLES = ("bootconfig", "boot_a", "boot_b", "system_a", "system_b", "persistent")


def crypt_modules():
    """tests/guest/crypt.d/modules: device-mapper, dm-crypt, dm-verity and the ciphers."""
    text = (REPO / "tests/guest/crypt.d/modules").read_text()
    return " ".join(re.sub(r"#.*", "", text).split())


# The initramfs modules: initramfs/build's default set (virtio disks) or the firmware
# model's (the SD card, both kernels), each with the crypt stack.
VIRTIO_MODULES = "virtio_pci virtio_blk ext4 vfat nls_cp437 nls_ascii overlay " + crypt_modules()
PI_MODULES = rpifw.INITRD_MODULES + " " + crypt_modules()


def luks_options(m, cipher="aes-xts", pbkdf="pbkdf2-1000", extra=()):
    """cryptsetup luksFormat options for map `m` as rpi-image-gen gives them."""
    return [*CIPHERS[cipher], *PBKDF[pbkdf], "--label", m.label, "--uuid", m.uuid(), *extra]


# --- content hashes and the cache ------------------------------------------------------

def tree_hash(d):
    """A hash of a directory tree's names, types, modes, owners, contents and symlink
    targets (not its times: mkroot builds a new tree for each test)."""
    h = hashlib.sha256()
    d = Path(d)
    for root, dirs, files in os.walk(d):
        dirs.sort()
        for name in sorted(dirs + files):
            p = Path(root) / name
            st = p.lstat()
            h.update(f"{p.relative_to(d)}\0{st.st_mode:o}\0{st.st_uid}:{st.st_gid}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p).encode())
            elif stat.S_ISREG(st.st_mode):
                h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def file_hash(*paths):
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def tools_hash():
    """The scripts that make an image: a change in any of them makes new images (the
    recipes name everything else: trees, sizes, options, key)."""
    return file_hash(PROVISION, REPO / "tests/guest/crypt.d/provision-init", REPO / "qemu/mkdisk")


class Cached:
    """`with Cached(tag, recipe) as c:` c.path is the cached file for `recipe` (any
    JSON value); c.hit tells whether it is there already; otherwise the block makes
    c.tmp and it becomes c.path. Other files of the same `tag` go (one image per tag
    and machine). pytest-xdist workers share the cache: a lock per recipe."""

    def __init__(self, tag, recipe, suffix=".img"):
        CACHE.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(json.dumps([recipe, tools_hash()], sort_keys=True).encode()).hexdigest()[:16]
        self.tag = tag
        self.path = CACHE / f"{tag}-{key}{suffix}"
        self.tmp = CACHE / f"{tag}-{key}.tmp{suffix}"
        self.lock = CACHE / f".{tag}-{key}.lock"

    def __enter__(self):
        self.fd = os.open(self.lock, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.hit = self.path.exists()
        return self

    def __exit__(self, exc, *rest):
        try:
            if exc is None and not self.hit:
                os.replace(self.tmp, self.path)
                for old in CACHE.glob(f"{self.tag}-*"):
                    if old.name.startswith(self.path.stem) or ".tmp" in old.name:
                        continue
                    if re.fullmatch(rf"{re.escape(self.tag)}-[0-9a-f]{{16}}(\..*)?", old.name):
                        old.unlink(missing_ok=True)
            for extra in CACHE.glob(f"{self.tmp.stem}*"):
                extra.unlink(missing_ok=True)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.lock.unlink(missing_ok=True)
        return False


def copy(src, dst):
    """A sparse copy (a test writes its own disk, never the cached one)."""
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    return Path(dst)


# --- system trees --------------------------------------------------------------------

# Guest scripts (test.run=NAME) of the crypt and verity systems.
SCRIPTS = {
    # The device-mapper devices (name, uuid, read-only, sectors) and the by-slot links.
    "cryptfacts": """for d in /sys/block/dm-*; do
  [ -e "$d/dm/name" ] && echo "dm $(basename "$d") $(cat "$d/dm/name") uuid=$(cat "$d/dm/uuid") ro=$(cat "$d/ro") sectors=$(cat "$d/size")"
done
for l in /dev/disk/by-slot/* /dev/disk/by-slot/*/*; do
  [ -L "$l" ] && echo "by-slot $l -> $(readlink "$l") -> $(readlink -f "$l")"
done
""",
}
# The facts first, then read the file whose block a test tampered with (dm-verity
# checks it now; restart_on_corruption restarts before the read returns).
SCRIPTS["readprobe"] = SCRIPTS["cryptfacts"] + """echo "reading /verity-probe"
sync
cat /verity-probe >/dev/null
echo "read-exit=$?"
"""


def dm_devices(b):
    """SCRIPTS["cryptfacts"]: {dm name: {"dev": "dm-N", "uuid":, "ro":, "sectors":}}."""
    out = {}
    for line in b.test_run.splitlines():
        f = line.split()
        if f[:1] == ["dm"] and len(f) >= 3:
            out[f[2]] = {"dev": f[1], **dict(x.split("=", 1) for x in f[3:] if "=" in x)}
    return out


def by_slot(b):
    """SCRIPTS["cryptfacts"]: {link below /dev/disk/by-slot/: resolved path}."""
    out = {}
    for line in b.test_run.splitlines():
        m = re.match(r"by-slot /dev/disk/by-slot/(\S+) -> \S+ -> (\S+)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def dm_name(dms, source):
    """The device-mapper name behind a mount source (/dev/mapper/NAME or /dev/dm-N)."""
    if source.startswith("/dev/mapper/"):
        return source.removeprefix("/dev/mapper/")
    for name, d in dms.items():
        if source == f"/dev/{d['dev']}":
            return name
    return None


def system_tree(d, name, kernel=None, work=None, extra_files=None, slotinit=False):
    """A test system: tests/guest/mkroot (kernel None, single-kernel boots) or the
    firmware model's (rpifw.system_tree: kernel "a"/"b" modules, the model's test
    scripts, reboot-arg, slotinit). Both carry SCRIPTS. `extra_files`: {path in the
    tree: bytes}. A mkroot tree has /usr/bin/slotinit only with `slotinit` (without it
    the tree, and so a container holding it, stays the same across slotinit builds)."""
    d = Path(d)
    shutil.rmtree(d, ignore_errors=True)
    if kernel:
        rpifw.system_tree(d, name, kernel, work or d.parent)
    else:
        env = dict(os.environ, SLOTINIT=str(rpifw.slotinit_bin()) if slotinit else "/nonexistent")
        subprocess.run([str(REPO / "tests/guest/mkroot"), str(d), name], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for n, text in SCRIPTS.items():
        (d / "test.d" / n).write_text(text)
        (d / "test.d" / n).chmod(0o755)
    for path, data in (extra_files or {}).items():
        f = d / path.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
    return d


# --- LUKS2 containers ----------------------------------------------------------------

def provision(out, plain, opts, key=KEY, dump=None, log=None):
    """tests/guest/crypt-provision: `out` = a LUKS2 container (`opts`) holding `plain`,
    sized to fit it behind the default 16 MiB LUKS2 header."""
    mib = 16 + -(-Path(plain).stat().st_size // MiB)
    keyfile = Path(out).with_suffix(".key")
    keyfile.write_bytes(key)
    try:
        args = [str(PROVISION), "--container", str(out), "--size", str(mib), "--plain", str(plain),
                "--key", str(keyfile), "--luks-opt", " ".join(opts)]
        if dump:
            args += ["--dump", str(dump)]
        if log:
            args += ["--log", str(log)]
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"crypt-provision failed:\n{r.stdout[-4000:]}")
    finally:
        keyfile.unlink(missing_ok=True)
    return Path(out)


def inner_image(out, m, systems, sizes):
    """The GPT image inside map `m`'s container: its members only (qemu/mkdisk with the
    other names left out), systems from the `systems` trees {"system_a": dir, ...},
    persistent an empty ext4. `sizes`: MiB per role (ROLES order)."""
    names = " ".join(r if r in m.members else "-" for r in ROLES)
    args = ["--names", names, "--sizes", " ".join(map(str, sizes)), "--seed", f"inner-{m.name}"]
    for slot in "ab":
        if f"system_{slot}" in m.members:
            args += [f"--system-{slot}", systems[f"system_{slot}"]]
    return guest.mkdisk(out, *args)


def container(m, work, systems, sizes, cipher="aes-xts", pbkdf="pbkdf2-1000", key=KEY,
              extra_opts=(), tag=None):
    """Map `m`'s LUKS2 container (cached): the inner GPT with its members, encrypted.
    Returns (container path, luksDump text of the real tool)."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    opts = luks_options(m, cipher, pbkdf, extra_opts)
    recipe = {"map": m.name, "sizes": list(sizes), "opts": opts, "key": key.hex(),
              "systems": {k: tree_hash(v) for k, v in systems.items() if k in m.members}}
    tag = tag or f"{m.name}-{cipher}-{pbkdf}"
    with Cached(tag, recipe) as c:
        dump = c.path.with_suffix(".luksDump.txt")
        if not c.hit:
            plain = inner_image(work / f"{m.name}-plain.img", m, systems, sizes)
            provision(c.tmp, plain, opts, key, dump=c.tmp.with_suffix(".luksDump.txt"),
                      log=work / f"{m.name}-provision.log")
            os.replace(c.tmp.with_suffix(".luksDump.txt"), dump)
            plain.unlink()
    return c.path, dump.read_text()


def outer_args(m, cont):
    """qemu/mkdisk arguments: the clear partitions of map `m` (the others left out) and
    the container appended as one more partition named m.part."""
    names = " ".join("-" if r in m.members else r for r in ROLES)
    mib = -(-cont.stat().st_size // MiB)
    return ["--names", names, "--extra", f"{m.part}:{mib}:{cont}"]


# Sizes in MiB (ROLES order). Single-kernel systems are small mkroot trees.
SMALL = (16, 8, 8, 16, 16, 16)


def virtio_disk(path, work, map_key, cipher="aes-xts", pbkdf="pbkdf2-1000", key=KEY,
                systems=None):
    """A single-kernel disk (qemu/run, virtio) with map `map_key`: returns
    (disk, container partition number, luksDump text, the cached container)."""
    m = MAPS[map_key]
    work = Path(work)
    systems = systems or {f"system_{s}": system_tree(work / f"system_{s}", f"system_{s}")
                          for s in "ab"}
    cont, dump = container(m, work, systems, SMALL, cipher, pbkdf, key)
    args = ["--sizes", " ".join(map(str, SMALL)), *outer_args(m, cont)]
    for slot in "ab":
        if f"system_{slot}" not in m.members:
            args += [f"--system-{slot}", systems[f"system_{slot}"]]
    disk = guest.mkdisk(path, *args)
    number = len([r for r in ROLES if r not in m.members]) + 1
    return disk, number, dump, cont


# --- configs and initramfs -------------------------------------------------------------

def config(name, extra=""):
    """configs/<name>.toml, then `extra` (TOML tables the file does not have)."""
    return (REPO / f"configs/{name}.toml").read_text() + ("\n" + extra if extra else "")


# Single-kernel boots (qemu/run): no firmware, one kernel for both slots, the slot from
# slotinit.slot=; no boot-state store.
# A fatal error reboots after 1 s (QEMU runs with -no-reboot: it exits).
SINGLE_KERNEL = ('[boot]\nslot_kernels = "shared"\nreboot_delay_s = 1\n\n'
                 '[bootstate]\nbackend = "none"\n')


def key_file(work, key=KEY):
    f = Path(work) / "crypt.key"
    f.write_bytes(key)
    return f"{f}:{KEY_PATH}"


def pi_disk(path, work, cfg, cmdlines=("", ""), files=(), mkdisk_args=(),
            autoboot=rpifw.AUTOBOOT_TEXT, modules=PI_MODULES):
    """rpifw.make_disk's two-kernel disk (boot_a: 6.1, boot_b: 6.12, each with its
    initramfs and slotinit config `cfg`), with the crypt modules in both initramfs and
    a cmdline.txt per slot (a slot's roothash=). The systems come in `mkdisk_args`."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    args = ["--sizes", rpifw.SIZES, "--pow2"]
    for slot, cmdline in zip("ab", cmdlines):
        kdir = rpifw.KERNELS[slot]
        rd = rpifw.initramfs(kdir, cfg, work / f"initramfs-{slot}.img", modules=modules,
                             files=files)
        bd = work / f"boot_{slot}"
        shutil.rmtree(bd, ignore_errors=True)
        rpifw.boot_dir(bd, kdir, rd, cmdline)
        rd.unlink()
        args += [f"--boot-{slot}", bd]
    if autoboot is not None:
        (work / "autoboot.txt").write_text(autoboot)
        args += ["--bootconfig-file", f"{work / 'autoboot.txt'}:autoboot.txt"]
    env = dict(os.environ, SLOTINIT=str(rpifw.slotinit_bin()))
    subprocess.run([str(REPO / "qemu/mkdisk"), "--out", str(path), *map(str, args),
                    *map(str, mkdisk_args)], check=True, stdout=subprocess.DEVNULL, env=env)
    for slot in "ab":
        shutil.rmtree(work / f"boot_{slot}", ignore_errors=True)
    return Path(path)


# Inside a container on the firmware model's disk: its system trees (a kernel's modules
# each, ~5 MB) in 24 MiB, persistent 16 MiB (the first three sizes are not used).
PI_INNER = (1, 1, 1, 24, 24, 16)


def pi_systems(work):
    """The firmware model's two system trees (A with 6.1's modules, B with 6.12's)."""
    work = Path(work)
    return {f"system_{s}": system_tree(work / f"system_{s}", f"system_{s}", kernel=s, work=work)
            for s in "ab"}


# --- dm-verity -------------------------------------------------------------------------

@dataclass
class Verity:
    image: Path       # the filesystem with its hash tree appended
    root_hash: str    # veritysetup's "Root hash:"
    fs_bytes: int     # the filesystem's size = where the tree (its superblock first) starts
    dump: str         # `veritysetup dump` of the tree's superblock


BLOCK = 4096


def verity_image(tree, out, fs_mib, label):
    """An ext4 of `fs_mib` MiB from `tree` with the hash tree appended right after it
    (veritysetup format --hash-offset = the filesystem's size, a multiple of 4096: the
    tree starts with veritysetup's superblock there). sha256, 4096-byte blocks
    (rpi-image-gen's system.verity: sha256, 4k)."""
    out = Path(out)
    fs = fs_mib * MiB
    out.unlink(missing_ok=True)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-T", "default", "-b", str(BLOCK),
                    "-L", label, "-E", "root_owner=0:0", "-d", str(tree), str(out), f"{fs_mib}M"],
                   check=True, stdout=subprocess.DEVNULL)
    assert out.stat().st_size == fs
    # A salt and UUID of its own per label: the same tree gives the same image.
    seed = hashlib.sha256(f"verity {label}".encode()).hexdigest()
    uuid = f"{seed[:8]}-{seed[8:12]}-{seed[12:16]}-{seed[16:20]}-{seed[20:32]}"
    r = subprocess.run(["veritysetup", "format", "--hash", "sha256", "--data-block-size", str(BLOCK),
                        f"--salt={seed}", f"--uuid={uuid}",
                        "--hash-block-size", str(BLOCK), f"--data-blocks={fs // BLOCK}",
                        f"--hash-offset={fs}", str(out), str(out)],
                       check=True, stdout=subprocess.PIPE, text=True).stdout
    root = re.search(r"^Root hash:\s+([0-9a-f]{64})$", r, re.M).group(1)
    dump = subprocess.run(["veritysetup", "dump", f"--hash-offset={fs}", str(out)],
                          check=True, stdout=subprocess.PIPE, text=True).stdout
    return Verity(out, root, fs, dump)


def verify_on_host(v):
    """veritysetup verify of the image as it is: True when every block checks."""
    r = subprocess.run(["veritysetup", "verify", f"--hash-offset={v.fs_bytes}", str(v.image),
                        str(v.image), v.root_hash], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    return r.returncode == 0


def flip(path, offset):
    """Inverts one byte of a file in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


# veritysetup's superblock (cryptsetup lib/verity/verity.c struct verity_sb): signature
# "verity\0\0", version, hash_type, uuid[16], algorithm[32], data/hash block sizes,
# data_blocks, salt_size, pad, then the salt at byte 88.
SALT_OFFSET = 88


def tamper_superblock(v, image=None):
    """One byte of the salt in the tree's superblock changes: the superblock still
    parses, but block 0 no longer hashes up to the root hash, which the init finds
    at activation (verity_corrupted) before it mounts anything."""
    flip(image or v.image, v.fs_bytes + SALT_OFFSET)


def file_block(image, path):
    """The byte offset of the first data block of `path` in an ext4 image (debugfs)."""
    out = subprocess.run(["debugfs", "-R", f"bmap {path} 0", str(image)], check=True,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    return int(out.split()[0]) * BLOCK


def tamper_file(v, path, image=None):
    """One byte of `path`'s first data block changes: nothing notices until it is read
    (then dm-verity's restart_on_corruption restarts the machine)."""
    flip(image or v.image, file_block(v.image, path))


def put_partition(disk, number, image):
    """Writes `image` at the start of GPT partition `number` of `disk`."""
    subprocess.run(["dd", f"if={image}", f"of={disk}", "bs=1M", "conv=notrunc,sparse",
                    f"seek={guest.part_offset(disk, number)}", "oflag=seek_bytes", "status=none"],
                   check=True)


def verity_systems(work, kernel_trees=False, fs_mib=24, probe=b"verity probe\n" * 4096):
    """Both slots' systems with hash trees (cached by content): {slot: Verity}. Each tree
    carries /verity-probe (a file the tampered-file scenario reads after boot).
    `kernel_trees`: the firmware model's trees (a kernel's modules each)."""
    work = Path(work)
    out = {}
    for s in "ab":
        name = f"system_{s}"
        tree = system_tree(work / name, name, kernel=s if kernel_trees else None, work=work,
                           extra_files={"verity-probe": probe})
        recipe = {"tree": tree_hash(tree), "fs_mib": fs_mib}
        with Cached(f"verity-{name}{'-pi' if kernel_trees else ''}", recipe) as c:
            if not c.hit:
                v = verity_image(tree, c.tmp, fs_mib, name)
                c.path.with_suffix(".json").write_text(json.dumps(
                    {"root_hash": v.root_hash, "fs_bytes": v.fs_bytes, "dump": v.dump}))
        meta = json.loads(c.path.with_suffix(".json").read_text())
        img = copy(c.path, work / f"{name}.verity.img")
        out[s] = Verity(img, meta["root_hash"], meta["fs_bytes"], meta["dump"])
        shutil.rmtree(tree)
    return out


def verity_virtio_disk(path, images, fs_mib=24):
    """A single-kernel clear gpt/ab_userdata disk whose system partitions hold the
    Verity `images` ({"a": Verity, ...}; a slot left out keeps qemu/mkdisk's plain ext4,
    no hash tree)."""
    sizes = list(SMALL)
    sizes[3] = sizes[4] = fs_mib + 2
    disk = guest.mkdisk(path, "--sizes", " ".join(map(str, sizes)))
    for slot, v in images.items():
        put_partition(disk, 4 if slot == "a" else 5, v.image)
    return disk


def roothash_files(work, images):
    """initramfs/build --file arguments: /etc/slotinit/roothash-<slot letter> (the
    configs' roothash_file "/etc/slotinit/roothash-{slot}") for each of `images`."""
    out = []
    for slot, v in images.items():
        f = Path(work) / f"roothash-{slot}"
        f.write_text(v.root_hash + "\n")
        out.append(f"{f}:/etc/slotinit/roothash-{slot}")
    return out
