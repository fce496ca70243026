"""Issue 6: slotinit boots a real Debian bookworm arm64 systemd system (debian-image/build).

Slot A boots to multi-user.target; udev keeps the by-slot links; mark-good runs
after boot-complete.target; the system powers off cleanly; then slot B boots as
a trial with the same machine-id and journal, and the journal shows slot A's boot.
The console report comes from debian-image/test/report (test.debian=... on the cmdline).

Issue 15: the image carries RAUC (debian-image/build --rauc rpi, the default: RAUC's
custom backend is slotinit, whatever slotinit's own backend; here the U-Boot env of
initramfs-uboot-env.img, no firmware, so every slot decision is slotinit's). Debian's
rauc.service, started by D-Bus activation with the image's drop-in, installs a signed
bundle into B; B boots as a trial and commits.
"""
import json
import os
import re
import subprocess
import time
import pytest
import rauclib
from guest import REPO, boot, mkdisk, parse_block, read_env, record

SLOTINIT = REPO / "target/aarch64-unknown-linux-gnu/release/slotinit"
# qemu/mkdisk's layout and order, with system partitions large enough for Debian
# (about 200 MB; qemu/mkdisk's default 48 MiB cannot hold it).
LAYOUT = [("bootconfig", 16), ("boot_a", 32), ("boot_b", 32), ("system_a", 320),
          ("system_b", 320), ("persistent", 256)]
DEV = {name: f"/dev/vda{i + 1}" for i, (name, _) in enumerate(LAYOUT)}
TIMEOUT = 600  # one boot + report + poweroff under TCG, with room for a loaded machine (4 QEMU users on 2 cores: 414 s seen)


def mkdisk_debian(path, root):
    """A qemu/mkdisk disk with LAYOUT's sizes and `root` in both system partitions."""
    return mkdisk(path, "--sizes", " ".join(str(size) for _, size in LAYOUT),
                  "--system-a", root, "--system-b", root)


@pytest.fixture(scope="module")
def dev_ca(tmp_path_factory):
    """debian-image/build's development CA directory (dev-ca.pem, dev-ca.key), here
    per test run instead of .cache/rauc-dev-ca."""
    return tmp_path_factory.mktemp("rauc-dev-ca")


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory, dev_ca):
    """The test image's root tree (base tree cached in .cache/debian-root), with RAUC
    for the rpi profile, the development CA made in `dev_ca`, and the loop and
    squashfs modules of the kernel qemu/run boots (RAUC mounts plain bundles)."""
    root = tmp_path_factory.mktemp("debian") / "root"
    subprocess.run([str(REPO / "debian-image/build"), "--test", "--slotinit", str(SLOTINIT),
                    "--rauc", "rpi", "--ca-dir", str(dev_ca),
                    "--kernel-dir", str(rauclib.KERNELS["a"]), str(root)], check=True)
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


# --- issue 15: RAUC in the Debian image ----------------------------------------------------

RAUC_CONF = REPO / "debian-image/rauc/system-rpi.conf"
# Full run: the persistent partition holds the bundle of the whole Debian image.
FULL_LAYOUT_SIZES = "16 32 32 320 320 640"


def assert_rauc_image(root, dev_ca):
    """What debian-image/build --rauc rpi put in the tree: the profile's system.conf,
    the drop-in, the handler, the development CA's certificate and not its key."""
    assert (root / "etc/rauc/system.conf").read_text() == RAUC_CONF.read_text()
    assert (root / "usr/lib/systemd/system/rauc.service.d/rauc-slotinit.conf").read_text() \
        == (REPO / "debian-image/rauc/rauc-slotinit.conf").read_text()
    assert os.access(root / "usr/lib/slotinit/rauc-backend", os.X_OK)
    assert (root / "etc/rauc/keyring.pem").read_text() == (dev_ca / "dev-ca.pem").read_text()
    key = (dev_ca / "dev-ca.key").read_bytes()
    r = subprocess.run(["grep", "-rlF", "PRIVATE KEY", str(root / "etc"), str(root / "usr/lib/slotinit")],
                       stdout=subprocess.PIPE, text=True)
    assert r.stdout == "", r.stdout
    assert b"PRIVATE KEY" in key
    # RAUC 1.8 mounts a plain bundle through loop + squashfs: modules of the kernel qemu/run boots.
    ver = (rauclib.KERNELS["a"] / "version").read_text().strip()
    mods = (root / f"usr/lib/modules/{ver}/modules.dep").read_text()
    assert "loop.ko" in mods and "squashfs.ko" in mods, mods


def test_debian_image_rauc_wiring(debian_root, dev_ca):
    """Host only: the tree debian-image/build --rauc rpi made (no boot)."""
    assert_rauc_image(debian_root, dev_ca)
    wants = debian_root / "etc/systemd/system"
    # One update client: swupdate's units are not enabled in a RAUC image.
    assert not list(wants.glob("*.wants/swupdate*")), list(wants.glob("*.wants/*"))
    # rauc.service is Debian's, started by D-Bus activation only (no [Install]).
    unit = (debian_root / "usr/lib/systemd/system/rauc.service").read_text()
    assert "[Install]" not in unit and "RuntimeDirectory=rauc" in unit, unit
    assert "SystemdService=rauc.service" in (
        debian_root / "usr/share/dbus-1/system-services/de.pengutronix.rauc.service").read_text()


def test_debian_build_refuses_bad_rauc_arguments(tmp_path):
    """Host only: an unknown profile and a keyring holding a private key are refused
    before anything is built."""
    build = [str(REPO / "debian-image/build"), "--slotinit", str(SLOTINIT)]
    r = subprocess.run(build + ["--rauc", "bogus", str(tmp_path / "root")],
                       stderr=subprocess.PIPE, text=True)
    assert r.returncode == 1 and "--rauc 'bogus'" in r.stderr, r.stderr
    cert, key = rauclib.openssl_ca(tmp_path / "pki", "maker")
    both = tmp_path / "both.pem"
    both.write_text(cert.read_text() + key.read_text())
    r = subprocess.run(build + ["--keyring", str(both), str(tmp_path / "root")],
                       stderr=subprocess.PIPE, text=True)
    assert r.returncode == 1 and "holds a private key" in r.stderr, r.stderr
    # A development CA directory git would commit (inside the repository, not ignored).
    r = subprocess.run(build + ["--ca-dir", str(REPO / "debian-image/dev-ca-test"),
                                str(tmp_path / "root")], stderr=subprocess.PIPE, text=True)
    assert r.returncode == 1 and "not ignored by git" in r.stderr, r.stderr
    assert not (REPO / "debian-image/dev-ca-test").exists()
    assert not (tmp_path / "root").exists()


def sign_bundle(work, image, dev_ca, name):
    """`image` as bundle NAME.raucb in work/bundles, signed with the image's development CA."""
    bundles = work / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    return rauclib.bundle(bundles / f"{name}.raucb", image, dev_ca / "dev-ca.pem",
                          dev_ca / "dev-ca.key")


def rauc_view(b, t0):
    return rauclib.View(b, "poweroff" if b.rc == 0 else f"rc={b.rc}", time.monotonic() - t0)


def rauc_unit(console):
    """The RAUC-UNIT block of debian-image/test/report: (fields, activation lines)."""
    m = re.search(r"=== RAUC-UNIT run ===\n(.*?)=== RAUC-UNIT END ===", console, re.S)
    assert m, console[-4000:]
    head, _, rest = m.group(1).partition("--- activation\n")
    fields = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    activation, _, rest = rest.partition("--- journal\n")
    journal, _, data_dir = rest.partition("--- data-directory\n")
    return fields, activation.splitlines(), journal, data_dir


def assert_rauc_service(v, slot):
    """rauc.service ran as Debian ships it plus the image's drop-in: not at boot, started
    by D-Bus activation on the first client call, told the booted slot by slotinit."""
    assert v.value("rauc-before-first-call") == "inactive", v.tail()
    fields, activation, journal, data_dir = rauc_unit(v.console)
    assert fields["rauc.service ActiveState"] == "active", (fields, journal)
    assert fields["rauc.service DropInPaths"] == \
        "/usr/lib/systemd/system/rauc.service.d/rauc-slotinit.conf", fields
    assert fields["rauc.service NRestarts"] == "0", fields
    bootname = slot.upper()
    assert fields["rauc.service cmdline"].split() == \
        ["/usr/bin/rauc", "--mount=/run/rauc", "service", f"--override-boot-slot={bootname}"], fields
    # dbus-daemon handed the name to systemd (SystemdService=rauc.service), which
    # started the unit with the drop-in.
    assert any("Activating via systemd" in l and "de.pengutronix.rauc" in l
               and "rauc.service" in l for l in activation), activation
    # The read-only root: RAUC's status lives in data-directory=/persistent/rauc.
    assert "Using central status file /persistent/rauc/central.raucs" in journal, journal
    assert "central.raucs" in data_dir, data_dir
    return fields, journal, data_dir


def assert_installed_into_b(v):
    """Debian in A: rauc install took A as booted, wrote B, made it primary."""
    assert v.value("install-exit") == "0", v.tail(8000)
    assert rauclib.agree(v, "before") == "A"
    assert rauclib.agree(v, "after") == "A"
    _, primary, slots = rauclib.rauc_summary(v.rauc("before"))
    assert primary == "rootfs.0", slots
    _, primary, slots = rauclib.rauc_summary(v.rauc("after"))
    assert primary == "rootfs.1", (slots, v.tail())
    assert slots["rootfs.1"] == ("inactive", "good"), slots
    assert slots["rootfs.0"] == ("booted", "good"), slots
    assert v.slotinit("before")["boot"] == "committed", v.slotinit("before")
    fields, journal, data_dir = assert_rauc_service(v, "a")
    # RAUC took A as the active slot and marked B through slotinit (the custom
    # backend): bad before writing, then primary.
    assert "Active slot bootname: A" in journal, journal
    bad = journal.index('slotinit rauc-backend: slot b (B) marked bad: BOOT_ORDER="A"')
    written = journal.index("writing data to device /dev/disk/by-partlabel/system_b")
    active = journal.index('slotinit rauc-backend: slot b (B) marked active: BOOT_ORDER="B A"')
    assert bad < written < active, journal
    return int(v.value("install-ms"))


def test_debian_rauc_install_small_b(debian_root, dev_ca, tmp_path):
    """Debian in A under systemd: `rauc install` (rauc.service D-Bus-activated, the
    drop-in's --override-boot-slot from slotinit) of a bundle holding the small RAUC
    system (tests/guest/rauc-root) writes B and arms it (set-primary = slotinit
    mark-active); B boots as a trial under slotinit's decision and its health check
    commits. rauc status agrees with slotinit status before and after, in A and in B."""
    assert_rauc_image(debian_root, dev_ca)
    tree = rauclib.system(tmp_path, "update-good", RAUC_CONF, dev_ca / "dev-ca.pem")
    image = rauclib.ext4_image(tree, tmp_path / "update-good.ext4")
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    bundle = sign_bundle(tmp_path, image, dev_ca, "good")
    image.unlink()
    disk = bundle_disk(tmp_path, debian_root, bundle, " ".join(str(size) for _, size in LAYOUT))

    t0 = time.monotonic()
    b = boot(disk, append="test.debian=report,rauc-install test.bundle=good",
             timeout=TIMEOUT + 180, log=tmp_path / "install-a.log")
    assert b.rc == 0, b.console[-4000:]
    assert_good_boot(b, Report(b.console), "a")
    v = rauc_view(b, t0)
    install_ms = assert_installed_into_b(v)
    env = read_env(disk, tmp_path)
    assert (env["BOOT_ORDER"], env["BOOT_A_LEFT"], env["BOOT_B_LEFT"]) == ("B A", "3", "3"), env

    # B: the bundle's small system, a trial (3 -> 2), committed by rauc-check.
    t1 = time.monotonic()
    b = boot(disk, append="test.run=rauc-check", timeout=240, log=tmp_path / "check-b.log")
    assert b.rc == 0, b.console[-4000:]
    v = rauc_view(b, t1)
    assert b.handoff()["slot"] == "b"
    assert b.handoff()["bootstate"]["left"] == [["A", 3], ["B", 2]], b.handoff()["bootstate"]
    rauclib.trial_committed(v)
    env = read_env(disk, tmp_path)
    assert (env["BOOT_ORDER"], env["BOOT_B_LEFT"]) == ("B A", "3"), env
    record("debian-rauc-install-ms", install_ms)
    record("debian-rauc-install-to-committed-s", round(time.monotonic() - t0, 1))


def bundle_disk(tmp_path, root, bundle, sizes):
    """A Debian disk (`root` in slot A, partitions `sizes` MiB) with `bundle` as
    /persistent/bundles/<its name>."""
    persistent = tmp_path / "persistent"
    (persistent / "bundles").mkdir(parents=True)
    os.replace(bundle, persistent / "bundles" / bundle.name)
    disk = mkdisk(tmp_path / "debian.img", "--sizes", sizes, "--system-a", root,
                  "--persistent-dir", persistent)
    subprocess.run(["rm", "-rf", str(persistent)], check=True)
    return disk


@pytest.mark.skipif(os.environ.get("SLOTINIT_RAUC_FULL") != "1",
                    reason="opt-in: SLOTINIT_RAUC_FULL=1 (the bundle is the whole Debian image)")
def test_debian_rauc_install_full(debian_root, dev_ca, tmp_path):
    """The full run: the bundle carries the Debian image itself. Debian A installs it
    into B; B's Debian boots as a trial, boot-complete.target is reached (the image's
    health unit) and slotinit-mark-good.service commits; rauc status on B agrees."""
    assert_rauc_image(debian_root, dev_ca)
    image = rauclib.ext4_image(debian_root, tmp_path / "debian.ext4", mib=312)
    bundle = sign_bundle(tmp_path, image, dev_ca, "debian")
    image.unlink()
    size = bundle.stat().st_size
    disk = bundle_disk(tmp_path, debian_root, bundle, FULL_LAYOUT_SIZES)

    t0 = time.monotonic()
    b = boot(disk, append="test.debian=report,rauc-install test.bundle=debian",
             timeout=TIMEOUT + 900, log=tmp_path / "install-a.log")
    assert b.rc == 0, b.console[-4000:]
    assert_good_boot(b, Report(b.console), "a")
    install_ms = assert_installed_into_b(rauc_view(b, t0))
    env = read_env(disk, tmp_path)
    assert (env["BOOT_ORDER"], env["BOOT_B_LEFT"]) == ("B A", "3"), env

    t1 = time.monotonic()
    b = boot(disk, append="test.debian=report,rauc-status", timeout=TIMEOUT + 600,
             log=tmp_path / "boot-b.log")
    assert b.rc == 0, b.console[-4000:]
    r = Report(b.console)
    h = assert_good_boot(b, r, "b")   # trial, boot-complete.target, mark-good committed
    assert h["bootstate"]["left"] == [["A", 3], ["B", 2]], h["bootstate"]
    v = rauc_view(b, t1)
    assert rauclib.agree(v, "before") == "B"
    assert v.slotinit("before")["boot"] == "committed", v.slotinit("before")
    _, primary, slots = rauclib.rauc_summary(v.rauc("before"))
    assert primary == "rootfs.1" and slots["rootfs.1"] == ("booted", "good"), slots
    assert_rauc_service(v, "b")
    env = read_env(disk, tmp_path)
    assert (env["BOOT_ORDER"], env["BOOT_B_LEFT"]) == ("B A", "3"), env
    record("debian-rauc-full-bundle-bytes", size)
    record("debian-rauc-full-install-ms", install_ms)
    record("debian-rauc-full-install-to-committed-s", round(time.monotonic() - t0, 1))
