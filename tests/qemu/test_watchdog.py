"""Issue 13 item 5: a watchdog across the handoff, under QEMU with `-device i6300esb`.

slotinit arms /dev/watchdog (the i6300esb module in the initramfs), feeds it
while it works and leaves it running into the system. A system that never
feeds it is reset about the timeout after the handoff, and the next boot's
`slotinit status` says the reset was the watchdog's (Linux's i6300esb reads
the hardware's timeout flag into its boot status at probe, esb_initdevice;
QEMU's hw/watchdog/wdt_i6300esb.c keeps that flag across the machine reset,
`i6300esb_reset` leaves previous_reboot_flag alone). A system that feeds it
(busybox's watchdog daemon, systemd's RuntimeWatchdogSec= in the Debian slot)
is not reset.
"""
import re
import subprocess
import pytest
import qemudriver
from guest import INITRD, REPO, boot, json_after, record, report
from test_debian import TIMEOUT, Report, debian_root, dev_ca, mkdisk_debian  # noqa: F401 (fixtures)

MODULES = "virtio_pci virtio_blk ext4 vfat nls_cp437 nls_ascii overlay i6300esb"
# `-action reboot=reset` after qemu/run's -no-reboot: a guest reset (the watchdog's)
# boots the machine again instead of ending QEMU.
RESETS = ("-device", "i6300esb", "-action", "reboot=reset")
NO_RESET = ("-device", "i6300esb")
TIMEOUT_S = 10


@pytest.fixture(scope="module")
def watchdog_initrd(tmp_path_factory):
    """This layout's U-Boot env profile (slotinit counts, as the tests below check)
    with boot.watchdog_s = 10 and the i6300esb module."""
    text = (REPO / "configs/rpi-uboot-rauc.toml").read_text()
    assert text.count("[boot]\n") == 1
    d = tmp_path_factory.mktemp("watchdog")
    (d / "slotinit.toml").write_text(text.replace("[boot]\n", f"[boot]\nwatchdog_s = {TIMEOUT_S}\n"))
    out = d / "initramfs.img"
    subprocess.run([str(REPO / "initramfs/build"), "--modules", MODULES,
                    "--init", str(REPO / "target/aarch64-unknown-linux-gnu/release/slotinit"),
                    "--config", str(d / "slotinit.toml"),
                    "--kernel-dir", str(REPO / ".cache/kernel"),
                    "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def warnings_but_slot_kernel(h):
    """The handoff's warning kinds, but `slot-kernel`: qemu/run boots one kernel for
    both slots and no slot source names one, so a per-slot layout warns of that."""
    return [w["kind"] for w in h["warnings"] if w["kind"] != "slot-kernel"]


def boots_of(console):
    """The console split at each kernel start."""
    parts = re.split(r"(?=Booting Linux on physical CPU)", console)
    return [p for p in parts if "Booting Linux" in p]


def line_time(run, pattern, after=0.0):
    """Host seconds of the first console line matching `pattern` after `after`."""
    for t, line in run.lines:
        if t >= after and re.search(pattern, line):
            return t
    return None


def test_a_hang_is_reset_by_the_watchdog_and_the_next_boot_says_so(disk, watchdog_initrd):
    run = qemudriver.run("run", ["--initrd", watchdog_initrd, "--disk", disk,
                                 "--append", "test.run=watchdog-hang"], 240, qemu_args=RESETS)
    boots = boots_of(run.console)
    assert len(boots) == 2, run.console[-4000:]
    first, second = (report(qemudriver.Run(b, 0)) for b in boots)
    # First boot: armed after the modules, left running at the handoff.
    h = first.handoff()
    w = h["watchdog"]
    assert (w["device"], w["requested_s"], w["timeout_s"]) == ("/dev/watchdog", TIMEOUT_S, TIMEOUT_S), w
    assert w["running"] is True and w["error"] is None, w
    assert w["identity"] == "i6300ESB timer", w
    # A fresh machine: i6300esb does not list WDIOF_CARDRESET, its flag is clear.
    assert w["last_reset"] == "unknown", w
    stages = [name for name, _ in h["timings_us"]]
    assert stages.index("modules") + 1 == stages.index("watchdog"), stages
    assert warnings_but_slot_kernel(h) == [], h["warnings"]
    log = first.slotinit_log()
    assert any("leaving the watchdog /dev/watchdog running for the system" in l for l in log), log
    # It hangs: its test run never ends.
    assert "hanging-without-feeding" in boots[0], boots[0][-2000:]
    # The reset: about the timeout after the last feed (the handover, right after
    # "switching to"), measured on the host's clock.
    fed = line_time(run, r"slotinit: switching to ")
    reset = line_time(run, r"Booting Linux on physical CPU", after=fed)
    assert fed is not None and reset is not None, run.console[-4000:]
    after = reset - fed
    record("watchdog_hang_reset_after_s", round(after, 2))
    assert TIMEOUT_S - 0.5 <= after <= TIMEOUT_S + 6, after
    assert "reboot: Restarting" not in boots[0], "the guest did not reboot itself"
    # Second boot: the driver read the flag, slotinit and status say so.
    w2 = second.handoff()["watchdog"]
    assert w2["last_reset"] == "watchdog", w2
    assert "watchdog-reset-seen" in second.test_run, second.test_run
    s = json_after(second.test_run, "")
    assert s["watchdog"]["last_reset"] == "watchdog", s
    assert "the last reset WAS the watchdog's" in second.test_run, second.test_run
    assert "reboot: Power down" in boots[1], boots[1][-2000:]
    # The boot the watchdog cut short counted: slotinit's counter (the default
    # profile's) took one attempt each boot, the reset did not give one back.
    assert h["bootstate"]["left"] == [["A", 2], ["B", 3]], h["bootstate"]
    assert second.handoff()["bootstate"]["left"] == [["A", 1], ["B", 3]]


def test_a_system_that_feeds_it_is_not_reset(disk, watchdog_initrd):
    b = boot(disk, initrd=watchdog_initrd, append="test.run=watchdog-feed", timeout=180,
             qemu_args=NO_RESET)
    assert b.rc == 0, b.console[-4000:]
    assert len(boots_of(b.console)) == 1
    assert "alive-after-25s" in b.test_run, b.console[-4000:]
    assert "reboot: Power down" in b.console
    h = b.handoff()
    assert h["watchdog"]["running"] is True
    # What arming and feeding cost at boot (the handoff's stage timings, us).
    t = dict(h["timings_us"])
    record("watchdog_arm_us", t["watchdog"])
    record("watchdog_boot_total_us", t["total"])


def test_without_a_watchdog_device_the_boot_goes_on(disk):
    """slotinit.watchdog= with no watchdog (no device, no module): a warning."""
    b = boot(disk, initrd=INITRD, append=f"slotinit.watchdog={TIMEOUT_S}")
    assert b.reported, b.console[-3000:]
    h = b.handoff()
    assert warnings_but_slot_kernel(h) == ["watchdog"], h["warnings"]
    assert any("/dev/watchdog" in w["message"] for w in h["warnings"] if w["kind"] == "watchdog")
    assert h["watchdog"]["running"] is False and h["watchdog"]["error"], h["watchdog"]
    assert h["errors"] == []


def test_debian_systemd_takes_the_watchdog_over(debian_root, tmp_path, watchdog_initrd):
    """The Debian slot's systemd (RuntimeWatchdogSec=15s, debian-image/system.conf.d)
    opens the watchdog slotinit left running with 10 s and feeds it: the boot
    takes longer than that to reach multi-user.target and is never reset."""
    disk = mkdisk_debian(tmp_path / "debian.img", debian_root)
    b = boot(disk, initrd=watchdog_initrd, append="test.debian=report", timeout=TIMEOUT,
             log=tmp_path / "boot.log", qemu_args=NO_RESET)
    assert b.rc == 0, b.console[-4000:]
    assert len(boots_of(b.console)) == 1, "reset by the watchdog"
    r = Report(b.console)
    assert r.fields["system-state"] == "running", (r.fields, r.sections["failed"])
    fields = dict(line.split("=", 1) for line in r.sections["watchdog"] if "=" in line)
    assert fields["identity"] == "i6300ESB timer", r.sections["watchdog"]
    assert fields["state"] == "active", r.sections["watchdog"]
    # systemd's timeout, not slotinit's: systemd set it when it took it over.
    assert fields["timeout"] == "15", r.sections["watchdog"]
    # multi-user.target came more than slotinit's timeout after its last feed.
    switched = b.kernel_time(r"slotinit: switching to ")
    assert int(r.fields["multi-user-at"]) / 1e6 > switched + TIMEOUT_S, (switched, r.fields)
    h = r.json("handoff")
    assert h["watchdog"]["running"] is True and h["watchdog"]["timeout_s"] == TIMEOUT_S
    s = r.json("status")
    assert s["watchdog"]["device"] == "/dev/watchdog", s
    assert "reboot: Power down" in b.console
