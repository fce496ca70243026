"""Shared fixtures: the artifacts tests/run-all built, checked once per session."""
import subprocess
import pytest
from guest import INITRD, OUT, REPO, mkdisk


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
    def build(name, text, modules=None, files=()):
        d = tmp_path_factory.mktemp(name)
        (d / "slotinit.toml").write_text(text)
        out = d / "initramfs.img"
        extra = ["--modules", modules] if modules else []
        for f in files:
            extra += ["--file", f]
        subprocess.run([str(REPO / "initramfs/build"), *extra,
                        "--init", str(REPO / "target/aarch64-unknown-linux-gnu/release/slotinit"),
                        "--config", str(d / "slotinit.toml"),
                        "--kernel-dir", str(REPO / ".cache/kernel"),
                        "--busybox", str(REPO / ".cache/busybox/busybox"),
                        "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
        return out
    return build
