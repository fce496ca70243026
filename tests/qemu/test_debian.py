"""Issue 6: slotinit boots a real Debian bookworm arm64 systemd system (debian-image/build).

Slot A boots to multi-user.target; udev keeps the by-slot links; mark-good runs
after boot-complete.target; the system powers off cleanly; then slot B boots as
a trial with the same machine-id and journal, and the journal shows slot A's boot.
The console report comes from debian-image/test/report (test.debian=... on the cmdline).
"""
import json
import re
import subprocess
import pytest
from guest import REPO, boot, mkdisk, parse_block, read_env, record

SLOTINIT = REPO / "target/aarch64-unknown-linux-gnu/release/slotinit"
# qemu/mkdisk's layout and order, with system partitions large enough for Debian
# (about 200 MB; qemu/mkdisk's default 48 MiB cannot hold it).
LAYOUT = [("bootconfig", 16), ("boot_a", 32), ("boot_b", 32), ("system_a", 320),
          ("system_b", 320), ("persistent", 256)]
DEV = {name: f"/dev/vda{i + 1}" for i, (name, _) in enumerate(LAYOUT)}
TIMEOUT = 420  # one boot + report + poweroff under TCG, with room for a loaded CI machine


def mkdisk_debian(path, root):
    """A qemu/mkdisk disk with LAYOUT's sizes and `root` in both system partitions."""
    return mkdisk(path, "--sizes", " ".join(str(size) for _, size in LAYOUT),
                  "--system-a", root, "--system-b", root)


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory):
    """The test image's root tree (base tree cached in .cache/debian-root)."""
    root = tmp_path_factory.mktemp("debian") / "root"
    subprocess.run([str(REPO / "debian-image/build"), "--test", "--slotinit", str(SLOTINIT),
                    str(root)], check=True)
    du = subprocess.run(["du", "-sm", "--apparent-size", str(root)], check=True,
                        stdout=subprocess.PIPE, text=True).stdout.split()[0]
    record("debian_root_tree_mb", int(du))
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=True)


class Report:
    """The block debian-image/test/report prints: key=value lines, then --- sections."""

    def __init__(self, console):
        block = parse_block(console, "DEBIAN-REPORT")
        assert block, console[-4000:]
        sections, self.fields = block
        self.sections = {k: v.splitlines() for k, v in sections.items()}

    def unit(self, name):
        """(ActiveState, Result, ConditionResult) of a unit."""
        return tuple(self.fields[f"unit {name}"].split("/"))

    def links(self, section="links"):
        out = {}
        for line in self.sections[section]:
            parts = line.split(" -> ")
            name = parts[0].split()[0].removeprefix("/dev/disk/by-slot/")
            out[name] = parts[2] if len(parts) == 3 else None
        return out

    def json(self, section):
        text = "\n".join(self.sections[section])
        return json.loads(text[:text.rindex("}") + 1])

    def mount(self, point):
        found = []
        for line in self.sections["mountinfo"]:
            pre, _, post = line.partition(" - ")
            f, p = pre.split(), post.split()
            if f[4] == point:
                found.append({"root": f[3], "options": f[5], "fstype": p[0], "source": p[1]})
        assert found, f"nothing mounted at {point}"
        return found[-1]


def expected_links(slot):
    other = "b" if slot == "a" else "a"
    return {"active/boot": DEV[f"boot_{slot}"], "active/system": DEV[f"system_{slot}"],
            "other/boot": DEV[f"boot_{other}"], "other/system": DEV[f"system_{other}"],
            "bootconfig": DEV["bootconfig"], "persistent": DEV["persistent"]}


def boot_debian(disk, actions, log):
    b = boot(disk, append=f"test.debian={actions}", timeout=TIMEOUT, log=log)
    assert b.rc == 0, b.console[-4000:]
    return b, Report(b.console)


def assert_good_boot(b, r, slot):
    """What every boot of either slot must show."""
    assert r.fields["system-state"] == "running", (r.fields, r.sections["failed"])
    assert r.sections["failed"] == [], r.sections["failed"]
    h = r.json("handoff")
    assert h["slot"] == slot
    root = r.mount("/")
    assert (root["source"], root["options"].split(",")[0]) == (DEV[f"system_{slot}"], "ro")
    assert r.mount("/var")["root"] == f"/slots/system_{slot}/var"
    assert r.mount("/var/log/journal")["root"] == "/log/journal"
    assert r.mount("/etc/machine-id")["root"] == "/common/etc/machine-id"
    assert r.mount("/tmp")["fstype"] == "tmpfs"
    # Mounted once each: nothing in fstab mounts them again.
    points = [line.split()[4] for line in r.sections["mountinfo"]]
    for point in ("/", "/persistent", "/var", "/home", "/var/log/journal", "/etc/machine-id"):
        assert points.count(point) == 1, (point, points)
    # The machine-id slotinit bound is the one systemd uses: no first boot, no new id.
    assert re.fullmatch(r"[0-9a-f]{32}", r.fields["machine-id"]), r.fields
    assert r.fields["machine-id"] == h["machine_id"]
    assert r.unit("first-boot-complete.target")[2] == "no", "systemd saw a first boot"
    assert r.unit("systemd-machine-id-commit.service")[0] == "inactive"
    assert not any("Detected first boot" in l for l in b.console.splitlines())
    # The links: from udev's database, after systemd-udevd's coldplug, and made again
    # by udev after they were deleted and after change and add events.
    expect = expected_links(slot)
    for section in ("links", "links-after-trigger", "links-after-add"):
        assert r.links(section) == expect, (section, r.sections[section])
    from_udev = {}
    for line in r.sections["udev-symlinks"]:
        dev, *links = line.split()
        for link in links:
            from_udev[link.removeprefix("/dev/").removeprefix("disk/by-slot/")] = f"/dev/{dev}"
    assert from_udev == expect, r.sections["udev-symlinks"]
    # Two names on one line of PROGRAM output are two links (udev splits %c on spaces).
    role = "active" if slot == "a" else "other"
    two = [f"disk/by-slot/{role}/boot", f"disk/by-slot/{role}/system"]
    lines = r.sections["udev-two-links"]
    assert any(line.endswith(f"(out) '{' '.join(two)}'") for line in lines), lines
    assert [line for line in lines if line.startswith("LINK")] == [f"LINK '{l}'" for l in two]
    assert r.links("links-final") == expect, r.sections["links-final"]
    # ... so systemd has device units for them too.
    devices = {n: (state, f"/dev/{dev}") for n, state, dev in
               (line.split() for line in r.sections["device-units"])}
    assert devices == {n: ("active", dev) for n, dev in expect.items()}, devices
    # mark-good ran after boot-complete.target and committed the booted slot.
    assert r.unit("slotinit-mark-good.service")[:2] == ("active", "success")
    assert r.unit("boot-complete.target")[0] == "active"
    assert int(r.fields["mark-good-at"]) >= int(r.fields["boot-complete-at"]) > 0
    s = r.json("status")
    assert (s["booted_slot"], s["boot"], s["attempts_left"]) == (slot, "committed", 3), s
    # The journal is persistent, in the shared directory of this machine-id.
    journal = r.sections["journal"]
    assert any(r.fields["machine-id"] in line for line in journal), journal
    assert "/var/log/journal 2755 systemd-journal" in journal
    # slotinit's mounts are units with unit files (slotinit-mount-generator), so systemd
    # orders them like fstab mounts: the binds after /persistent, /var/log/journal after /var.
    units = {}
    for line in r.sections["mount-units"]:
        unit, _, prop = line.partition(" ")
        key, _, value = prop.partition("=")
        units.setdefault(unit, {})[key] = value.split()
    for unit in ("persistent.mount", "var.mount", "var-log-journal.mount", "home.mount"):
        assert units[unit]["FragmentPath"] == [f"/run/systemd/generator/{unit}"], units[unit]
    assert "persistent.mount" in units["var.mount"]["After"]
    assert "var.mount" in units["var-log-journal.mount"]["After"]
    assert "var-log-journal.mount" in units["systemd-journal-flush.service"]["Requires"]
    # A clean poweroff: every mount unit stopped, systemd-shutdown found nothing left.
    tail = b.console[b.console.index("=== DEBIAN-REPORT END ==="):]
    unmounted = re.findall(r"Unmounted \S*?((?:var|persistent|home)\S*?\.mount)", tail)
    assert unmounted.index("var-log-journal.mount") < unmounted.index("var.mount") \
        < unmounted.index("persistent.mount"), unmounted
    assert "relinquish /var/log/journal" in tail, "journald left /var/log/journal before its unmount"
    assert "Failed unmounting" not in tail, tail
    assert not re.search(r"Not all file ?systems unmounted", tail), tail
    assert "reboot: Power down" in tail, tail[-3000:]
    return h


def boot_seconds(b, r):
    """Kernel start -> multi-user.target reached, from systemd's monotonic clock."""
    return int(r.fields["multi-user-at"]) / 1e6


def test_debian_boots_a_then_b(debian_root, tmp_path):
    disk = mkdisk_debian(tmp_path / "debian.img", debian_root)
    # Slot A, first boot of a fresh disk: slotinit counts a trial (3 -> 2),
    # mark-good commits it (back to 3); then an update client makes B next.
    b, r = boot_debian(disk, "report,mark-active-b", tmp_path / "boot-a.log")
    h = assert_good_boot(b, r, "a")
    assert h["decision"]["source"] == "counters"
    assert h["bootstate"]["left"] == [["A", 2], ["B", 3]], h["bootstate"]
    assert r.fields["boots"] == "1"
    assert "mark-exit=0" in b.console
    env = read_env(disk, tmp_path)
    assert (env["BOOT_ORDER"], env["BOOT_A_LEFT"], env["BOOT_B_LEFT"]) == ("B A", "3", "3")
    record("debian_boot_to_multi_user_s", boot_seconds(b, r))
    machine_id = r.fields["machine-id"]

    # Slot B, a trial after mark-active: counted down, then committed by mark-good.
    b, r = boot_debian(disk, "report", tmp_path / "boot-b.log")
    h = assert_good_boot(b, r, "b")
    assert h["decision"]["source"] == "counters"
    assert h["bootstate"]["left"] == [["A", 3], ["B", 2]], h["bootstate"]
    env = read_env(disk, tmp_path)
    assert (env["BOOT_ORDER"], env["BOOT_B_LEFT"]) == ("B A", "3")
    # Same machine, same journal: slot A's boot is the previous one.
    assert r.fields["machine-id"] == machine_id
    assert r.fields["boots"] == "2", r.sections["list-boots"]
    assert r.sections["previous-boot"] == ["journal marker: booted slot a"], r.sections
    assert r.sections["this-boot"] == ["journal marker: booted slot b"], r.sections
    record("debian_boot_to_multi_user_s_slot_b", boot_seconds(b, r))


def test_failed_health_check_keeps_the_trial(debian_root, tmp_path):
    """A health check required by boot-complete.target fails: mark-good does not
    run, the slot stays a trial and its attempts keep counting down."""
    disk = mkdisk_debian(tmp_path / "debian.img", debian_root)
    b = boot(disk, append="test.debian=report,health-fail", timeout=TIMEOUT,
             log=tmp_path / "boot.log")
    assert b.rc == 0, b.console[-4000:]
    r = Report(b.console)
    assert r.unit("slotinit-test-health.service")[:2] == ("failed", "exit-code")
    assert r.unit("slotinit-mark-good.service")[0] == "inactive"
    assert r.unit("boot-complete.target")[0] == "inactive"
    s = r.json("status")
    assert (s["booted_slot"], s["boot"], s["attempts_left"]) == ("a", "trial", 2), s
    env = read_env(disk, tmp_path)
    assert env["BOOT_A_LEFT"] == "2"
