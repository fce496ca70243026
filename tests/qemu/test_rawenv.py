"""Issue 11, B: a boot-state commit on the FAT bootconfig partition writes only
the data sectors of the copy it replaces. Before, it remounted the FAT
read-write around the write: the kernel rewrote the boot sector twice (the
dirty bit, fs/fat/inode.c fat_set_state) and the root directory sector that
holds both copies' entries (mtime), so a sector torn by a power cut there could
lose the filesystem or both copies at once."""
import re
import struct
import subprocess
import pytest
from guest import REPO, boot, mkdisk, part_offset, read_env, record

SECTOR = 512


def partition(disk, number=1):
    """The bytes of GPT partition `number` (bootconfig: 16 MiB)."""
    start = part_offset(disk, number)
    out = subprocess.run(["sgdisk", "-i", str(number), str(disk)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    last = int(out.split("Last sector: ")[1].split()[0])
    with open(disk, "rb") as f:
        f.seek(start)
        return f.read((last + 1) * SECTOR - start)


def regions(fat):
    """Byte ranges of a FAT filesystem image by role, from its BPB."""
    bps, spc, reserved, nfats, root_entries = struct.unpack_from("<HBHBH", fat, 11)
    fat16_size = struct.unpack_from("<H", fat, 22)[0]
    assert bps == SECTOR, bps
    if fat16_size:  # FAT12/16: a fixed root directory after the FATs
        fat_size = fat16_size
        root = (reserved + nfats * fat_size) * bps
        root_len = root_entries * 32
        data = root + root_len
        root_range = (root, root + root_len)
    else:  # FAT32: the root directory is a cluster chain (its first cluster here)
        fat_size = struct.unpack_from("<I", fat, 36)[0]
        data = (reserved + nfats * fat_size) * bps
        root_cluster = struct.unpack_from("<I", fat, 44)[0]
        root = data + (root_cluster - 2) * spc * bps
        root_range = (root, root + spc * bps)
    return {
        "boot": (0, bps),
        "reserved": (0, reserved * bps),
        "fats": (reserved * bps, (reserved + nfats * fat_size) * bps),
        "root": root_range,
        "data": (data, len(fat)),
    }


def boot_traced(disk, trace, append="", timeout=120):
    """Boots `disk` with guest.boot, with QEMU tracing every write the guest
    issues to it (block layer `blk_co_pwritev`: byte offset and length)."""
    b = boot(disk, append=append, timeout=timeout,
             qemu_args=["-trace", "blk_co_pwritev", "-D", trace])
    writes = [(int(m.group(1)), int(m.group(2))) for m in
              re.finditer(r"blk_co_pwritev .*?offset (\d+) bytes (\d+)", trace.read_text())]
    return b, writes


def written_sectors(writes, start, end):
    """Sectors of the partition [start, end) that the writes touched, in order."""
    out = []
    for offset, length in writes:
        for pos in range(offset - offset % SECTOR, offset + length, SECTOR):
            if start <= pos < end:
                out.append((pos - start) // SECTOR)
    return out


def changed_sectors(before, after):
    return [i for i in range(0, len(before), SECTOR)
            if before[i:i + SECTOR] != after[i:i + SECTOR]]


@pytest.mark.parametrize("run, commits, expected", [
    # The boot's trial commit: A's counter decremented.
    ("", 1, ("A B", "2", "3")),
    # Then `slotinit mark-active b` in the booted system (it mounts the
    # bootconfig itself): a second commit, onto the other copy.
    ("test.run=mark-active-b", 2, ("B A", "2", "3")),
], ids=["boot", "boot+mark-active"])
def test_trial_commit_writes_only_the_copy_data(tmp_path, run, commits, expected):
    disk = mkdisk(tmp_path / "disk.img")
    # Both copies at full size, as after the first boots of a device: the
    # next boot decrements A's counter (counter = "init").
    subprocess.run([str(REPO / "tests/guest/set-env"), "--pair", str(disk), "BOOT_ORDER=A B",
                    "BOOT_A_LEFT=3", "BOOT_B_LEFT=3"], check=True)
    before = partition(disk)
    r = regions(before)
    fat_type = "FAT32" if not struct.unpack_from("<H", before, 22)[0] else (
        before[54:62].decode("ascii", "replace").strip())

    b, writes = boot_traced(disk, tmp_path / "trace.log", append=run)
    assert b.fields["slot-name"] == "system_a", b.console[-3000:]
    if run:
        assert "mark-exit=0" in b.test_run, b.test_run
    env = read_env(disk, tmp_path)
    assert env is not None, "fw_printenv reads the committed state"
    assert (env["BOOT_ORDER"], env["BOOT_A_LEFT"], env["BOOT_B_LEFT"]) == expected, env

    after = partition(disk)
    changed = changed_sectors(before, after)
    start = part_offset(disk, 1)
    written = written_sectors(writes, start, start + len(before))
    where = {name: sorted({s for s in written if lo <= s * SECTOR < hi})
             for name, (lo, hi) in r.items()}
    record("rawenv-commit-written-sectors", {
        "run": run or "boot", "fat": fat_type, "writes": len(written), "sectors": len(set(written)),
        "changed": len(changed), "by-region": {k: len(v) for k, v in where.items()}})
    print(f"{fat_type}: {len(written)} sector writes, {len(changed)} sectors changed: {where}")
    # What the guest wrote, not only what it left: the dirty bit is set and
    # cleared again, so the boot sector's final bytes alone cannot show it.
    assert not where["boot"], f"the FAT boot sector was written {written.count(0)} times"
    assert not where["fats"], f"FAT sectors written: {where['fats']}"
    assert not where["root"], f"root directory sectors written: {where['root']}"
    assert written and all(s * SECTOR >= r["data"][0] for s in written), where
    assert len(set(written)) <= commits * 0x4000 // SECTOR, where
    lo, hi = r["boot"]
    assert after[lo:hi] == before[lo:hi], "the FAT boot sector was rewritten"
    lo, hi = r["root"]
    assert after[lo:hi] == before[lo:hi], f"the root directory changed: sectors {where['root']}"
    lo, hi = r["fats"]
    assert after[lo:hi] == before[lo:hi], "the FATs changed"
    # Only data sectors, and no more than one copy's (0x4000 bytes).
    assert changed and all(s >= r["data"][0] for s in changed), changed
    assert len(changed) <= commits * 0x4000 // SECTOR, changed

    image = tmp_path / "bootconfig.img"
    image.write_bytes(after)
    fsck = subprocess.run(["fsck.vfat", "-n", str(image)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    assert fsck.returncode == 0, fsck.stdout
