"""Shared fixtures: the artifacts tests/run-all built, checked once per session;
and a check that the run left nothing in /tmp."""
import os
import subprocess
import tempfile
import time
import pytest
from guest import INITRD, OUT, REPO, mkdisk

# What the scripts and the QEMU driver put in /tmp: it must all be gone at the end.
LEFTOVER = ("uboot-run.", "slotinit-")


def leftovers():
    tmp = tempfile.gettempdir()
    return {n for n in os.listdir(tmp) if n.startswith(LEFTOVER)}


def in_use(path):
    """A live process works in `path` (its TMPDIR, its cwd or a file it has open).
    At the end of the session every process of this run is reaped, so such an
    entry is another run's, still booting (another worktree's tests, a campaign)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"TMPDIR={path}".encode() in f.read().split(b"\0"):
                    return True
            fds = f"/proc/{pid}/fd"
            links = [os.readlink(f"/proc/{pid}/cwd")] + [
                os.readlink(os.path.join(fds, fd)) for fd in os.listdir(fds)]
        except OSError:
            continue   # gone, or a kernel thread
        if any(link == path or link.startswith(path + "/") for link in links):
            return True
    return False


def is_worker(config):
    """A pytest-xdist worker (tests/run-all runs the boots on one worker per core): the
    leftover check belongs to the controller, which finishes after every worker."""
    return hasattr(config, "workerinput")


def pytest_sessionstart(session):
    session.config.slotinit_tmp_before = leftovers()


def pytest_sessionfinish(session, exitstatus):
    if is_worker(session.config):
        return
    tmp = tempfile.gettempdir()
    new = leftovers() - getattr(session.config, "slotinit_tmp_before", set())
    for _ in range(10):   # another run's cleanup in flight
        if not new:
            break
        time.sleep(1)
        new &= leftovers()
    left = sorted(n for n in new if not in_use(os.path.join(tmp, n)))
    if left:
        print(f"\nFAILED: the run left {len(left)} entries in {tmp}: {left}")
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def artifacts():
    missing = [p for p in (INITRD, REPO / ".cache/kernel/vmlinuz") if not p.exists()]
    if missing:
        pytest.fail(f"missing {missing}: run tests/run-all (it builds them)")


@pytest.fixture
def disk(tmp_path):
    """A fresh rpi-image-gen gpt/ab_userdata disk."""
    return mkdisk(tmp_path / "disk.img")


@pytest.fixture(scope="session")
def initramfs_with_config(tmp_path_factory):
    """Builds an initramfs like the default one but with another config text."""
    def build(name, text, modules=None, files=(), shell=False):
        d = tmp_path_factory.mktemp(name)
        (d / "slotinit.toml").write_text(text)
        out = d / "initramfs.img"
        extra = ["--modules", modules] if modules else []
        for f in files:
            extra += ["--file", f]
        if shell:
            extra.append("--emergency-shell")
        subprocess.run([str(REPO / "initramfs/build"), *extra,
                        "--init", str(REPO / "target/aarch64-unknown-linux-gnu/release/slotinit"),
                        "--config", str(d / "slotinit.toml"),
                        "--kernel-dir", str(REPO / ".cache/kernel"),
                        "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
        return out
    return build
