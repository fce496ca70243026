"""Issue 15 item 3: Debian's RAUC installs signed bundles through Debian's U-Boot
(uboot/boot.cmd with the tests' hook, tests/qemu/uboot.py) with RAUC's own
`bootloader=uboot` backend (debian-image/rauc/system-uboot.conf): RAUC writes
BOOT_ORDER / BOOT_B_LEFT with fw_setenv (libubootenv, /etc/fw_env.config on
/boot/bootconfig/uboot.env), U-Boot counts the attempts, slotinit (configs/
uboot-rauc.toml, counter = "bootloader") follows rauc.slot= and commits with
mark-good. Slot A boots 6.1 from boot_a, slot B 6.12 from boot_b; the bundle
replaces system_b only. rauclib.py says how the systems and bundles are made.

Three writers share one env file: U-Boot (boot.cmd's bs_save, every boot: its
three variables and the tests' extra_bootargs), RAUC (fw_setenv, a whole-env
rewrite) and slotinit (its own power-safe store, on top of the current copy).
After every boot the env is read on the host with Debian's fw_printenv and must
hold every variable U-Boot wrote at that boot's start, with what both views
claimed.
"""
import shutil

import pytest

import guest
import rauclib
import rpifw
import uboot
from guest import REPO

CONF = REPO / "debian-image/rauc/system-uboot.conf"
PROFILE = REPO / "configs/uboot-rauc.toml"
# bootconfig, boot_a/b (6.12's Image is ~44 MB), system_a/b (the 44 MiB bundle
# image), persistent (two bundles of ~12 MB and RAUC's data directory).
SIZES = "16 96 96 48 48 64"
MODULES = "virtio_pci virtio_blk ext4 vfat nls_cp437 nls_ascii"
# What boot.cmd (with the tests' hook) imports and writes back at every boot.
UBOOT_VARS = ("BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT", "extra_bootargs")
ATTEMPTS = 3   # boot.cmd's default, system-uboot.conf's boot-attempts(-primary)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    if why := rpifw.missing_artifacts():
        pytest.fail(why)
    return rauclib.kit(tmp_path_factory.mktemp("rauc-uboot"), CONF, ("good", "health-fail"))


@pytest.fixture(scope="module")
def disk(kit):
    """boot.scr (tests' hook) + the default env on bootconfig; boot_a: 6.1 and its
    initramfs, boot_b: 6.12 and its own (both slotinit with configs/uboot-rauc.toml);
    both systems with RAUC; the bundles on persistent."""
    out = uboot.build_uboot(kit.work / "uboot", kernel_b=rpifw.KERNELS["b"] / "vmlinuz")
    config = PROFILE.read_text()
    initrd = {k: rpifw.initramfs(rpifw.KERNELS[k], config, kit.work / f"initrd-{k}.img",
                                 modules=MODULES) for k in "ab"}
    persistent = rauclib.persistent_dir(kit)
    path = uboot.mkdisk(kit.work / "disk.img", initrd["a"], kit.systems, "--sizes", SIZES,
                        "--persistent-dir", persistent, uboot=out, initramfs_b=initrd["b"])
    shutil.rmtree(persistent)
    shutil.rmtree(out)
    for f in initrd.values():
        f.unlink()
    return path


class Board:
    """A UBootChain on a copy of the disk that reads the env after every boot."""

    def __init__(self, disk, tmp_path):
        self.tmp = tmp_path
        self.path = tmp_path / "disk.img"
        shutil.copyfile(disk, self.path)
        self.chain = rauclib.UBootChain(self.path)
        self.envs = []      # (what the boot ran, the env it left)
        self.picks = []     # the slot U-Boot booted, per boot
        self.walls = []     # host seconds per boot

    def env(self):
        d = self.tmp / f"env-{len(self.envs)}"
        d.mkdir()
        env = guest.read_env(self.path, d)
        shutil.rmtree(d)
        assert env is not None, "fw_printenv rejects uboot.env"
        return env

    def next_slot(self):
        """The slot boot.cmd picks on the next boot, from the env on the disk: the
        first of BOOT_ORDER with attempts left (hex)."""
        env = self.env()
        for name in env.get("BOOT_ORDER", "A B").split():
            if int(env.get(f"BOOT_{name}_LEFT", "3"), 16) > 0:
                return name
        return None

    def step(self, script, extra=""):
        """One boot (one QEMU run, ended by the guest's reset or power-off): a View and
        the env it left. Every variable U-Boot wrote at its start survived RAUC's and
        slotinit's writes, extra_bootargs with this boot's value."""
        n = len(self.envs) + 1
        v = rauclib.step(self.chain, script, extra, log=self.tmp / f"boot-{n}-{script}.log")
        picked = v.boot.picked()
        assert len(picked) == 1, (picked, v.tail())
        self.picks.append(picked[0])
        self.walls.append(v.wall)
        env = self.env()
        self.envs.append((script, env))
        for var in UBOOT_VARS:
            assert var in env, (f"boot {n}: {var} dropped", env, self.chain.record())
        assert env["extra_bootargs"] == f"test.run={script} {extra}".strip(), env
        return v, env

    def record(self):
        return self.chain.record() + "".join(
            f"\n  boot {i} ({script}, {wall:.0f} s) left: "
            + " ".join(f"{k}={env.get(k)}" for k in UBOOT_VARS[:3])
            for i, ((script, env), wall) in enumerate(zip(self.envs, self.walls), 1))


def states(view, tag):
    """rauc status of one point: (booted, primary, rootfs.0 boot_status, rootfs.1 boot_status)."""
    booted, primary, slots = rauclib.rauc_summary(view.rauc(tag))
    return booted, primary, slots["rootfs.0"][1], slots["rootfs.1"][1]


def claims_match_env(view, tag, env):
    """What rauc status says at the end of a boot is what the env says (RAUC 1.8
    src/bootchooser.c: primary = the first of BOOT_ORDER with BOOT_x_LEFT > 0; a
    slot is good while its BOOT_x_LEFT > 0)."""
    _, primary, s0, s1 = states(view, tag)
    order = env["BOOT_ORDER"].split()
    left = {n: int(env[f"BOOT_{n}_LEFT"], 16) for n in "AB"}
    first = next((n for n in order if left[n] > 0), None)
    assert primary == {"A": "rootfs.0", "B": "rootfs.1"}[first], (primary, env)
    assert (s0, s1) == tuple("good" if left[n] > 0 else "bad" for n in "AB"), (s0, s1, env)
    # slotinit's store, read at the same point, holds the same order and counters.
    store = view.slotinit(tag)["store"]
    assert (store["order"], dict(store["left"])) == (order, left), (store, env)


def install(board, bundle, left_before):
    """Boot A (a boot U-Boot counted: BOOT_A_LEFT `left_before` - 1), its health check
    commits it (slotinit mark-good: BOOT_A_LEFT back to 3), then `rauc install`
    `bundle` (tests/guest/rauc.d/chains-install): RAUC took A as booted, wrote
    system_b and put B first with fresh attempts (fw_setenv). The env on the host
    holds both writers' variables: slotinit's A count and RAUC's order and B count."""
    v, env = board.step("chains-install", f"test.bundle={bundle}")
    assert board.picks[-1] == "A", board.record()
    assert v.kind == "reboot", (v.kind, board.record())
    assert rauclib.agree(v, "before") == "A"
    assert dict(v.slotinit("before")["store"]["left"])["A"] == left_before - 1, board.record()
    assert v.value("mark-good-exit") == "0", v.tail()
    assert rauclib.agree(v, "committed") == "A"
    assert v.slotinit("committed")["boot"] == "committed", v.slotinit("committed")
    assert dict(v.slotinit("committed")["store"]["left"])["A"] == ATTEMPTS
    assert states(v, "committed")[2] == "good"
    assert v.value("install-exit") == "0", v.tail()
    assert rauclib.agree(v, "after") == "A"
    _, primary, _, s1 = states(v, "after")
    assert (primary, s1) == ("rootfs.1", "good"), (states(v, "after"), v.tail())
    # RAUC's writes (uboot_set_state, uboot_set_primary) are in the env, and so is
    # slotinit's commit of A before them (RAUC's fw_setenv kept it).
    assert (env["BOOT_ORDER"], env["BOOT_A_LEFT"], env["BOOT_B_LEFT"]) == (
        "B A", str(ATTEMPTS), str(ATTEMPTS)), env
    claims_match_env(v, "after", env)
    return v


def committed(board, v, env):
    """The boot was the bundle's system in B, a trial (U-Boot counted it), committed by
    its health check through slotinit; RAUC, slotinit and the env agree."""
    assert board.picks[-1] == "B", board.record()
    assert v.kind == "poweroff", (v.kind, board.record())
    assert f"Linux version {rpifw.releases()['b']}" in v.console, board.record()
    rauclib.trial_committed(v, board.record())
    assert v.slotinit("before")["attempts_left"] == ATTEMPTS - 1, v.slotinit("before")
    # slotinit's commit kept RAUC's order and gave B its attempts back.
    assert env["BOOT_ORDER"] == "B A", env
    assert env["BOOT_B_LEFT"] == str(ATTEMPTS), env
    claims_match_env(v, "after", env)


def test_failed_trial_falls_back_then_install_commits(disk, tmp_path):
    """Booted A: the health check commits A (slotinit), rauc install of the
    health-fail bundle writes system_b and the env (fw_setenv: B first, 3 attempts);
    the client's reboot; U-Boot boots B's own kernel
    as a trial BOOT_B_LEFT (3) times, its health check fails each time and no one
    commits; the next boot is A (boot.cmd: B has no attempts left), where rauc status
    shows rootfs.1 bad, as the env (BOOT_B_LEFT=0), and slotinit agrees that A is
    booted; that boot's commit and the next install (good) work; U-Boot boots B as a trial
    and its health check commits it (slotinit mark-good). Six boots. rauc status and
    slotinit status agree before and after each write, and the env read on the host
    after every boot says what both claimed and kept every variable U-Boot wrote."""
    board = Board(disk, tmp_path)
    env0 = board.env()
    assert (env0["BOOT_ORDER"], env0["BOOT_A_LEFT"], env0["BOOT_B_LEFT"]) == ("A B", "3", "3")
    install(board, "health-fail", ATTEMPTS)
    # B's trials: the first with both views (rauc-check), the others with slotinit's
    # only (chains-trial: no RAUC service, half the boot).
    trials = 0
    while board.next_slot() == "B":
        assert trials < ATTEMPTS, ("B booted more often than its attempts", board.record())
        v, env = board.step("rauc-check" if trials == 0 else "chains-trial")
        trials += 1
        assert board.picks[-1] == "B", board.record()
        assert v.slot_name == "update-health-fail", (v.slot_name, board.record())
        assert f"Linux version {rpifw.releases()['b']}" in v.console, board.record()
        assert v.value("health") == "fail", v.tail()
        assert v.kind == "reboot", (v.kind, board.record())
        if trials == 1:
            assert rauclib.agree(v, "before") == "B"
            # RAUC: B booted, primary and good while it has attempts left
            assert states(v, "before")[1:] == ("rootfs.1", "good", "good"), states(v, "before")
        si = v.slotinit("before")
        assert (si["booted_slot"], si["boot"]) == ("b", "trial"), si
        assert si["attempts_left"] == ATTEMPTS - trials, (si, board.record())
        assert int(env["BOOT_B_LEFT"], 16) == ATTEMPTS - trials, env
        assert env["BOOT_ORDER"] == "B A", env
    assert trials == ATTEMPTS, board.record()
    # Back on A (boot.cmd skipped B): RAUC sees the failed trial (rootfs.1 bad), as
    # the env does; slotinit: A booted (a trial: U-Boot counted it); install again.
    t0 = rauclib.time.monotonic()
    v = install(board, "good", ATTEMPTS)
    assert states(v, "before") == ("A", "rootfs.0", "good", "bad"), board.record()
    si = v.slotinit("before")
    assert (si["booted_slot"], si["boot"]) == ("a", "trial"), si
    assert dict(si["store"]["left"]) == {"A": ATTEMPTS - 1, "B": 0}, si
    assert board.next_slot() == "B"
    v, env = board.step("rauc-check")
    committed(board, v, env)
    guest.record("rauc-uboot-install-to-committed-s", round(rauclib.time.monotonic() - t0, 1))
    # install, 3 trials of B, A (the second install), B committed; U-Boot's next
    # pick, from the env: B.
    assert board.picks == ["A", "B", "B", "B", "A", "B"], board.record()
    assert board.next_slot() == "B", board.record()
    print(board.record())
