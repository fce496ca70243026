"""qemudriver.run on a stand-in for qemu/run (host only, a few seconds): a power
cut kills the whole process group, the private TMPDIR goes, the console and
the log are kept, prompts are answered, the host-side deadline holds."""
import os
import time

import qemudriver

# Stands in for qemu/run: a temp file in TMPDIR (as uboot-run's console file),
# a child in the same group (as QEMU under `timeout`), console lines with CRLF.
FAKE = """#!/usr/bin/env bash
set -eu
echo "$TMPDIR" >"{out}/tmpdir"
mktemp "$TMPDIR/uboot-run.XXXXXX" >/dev/null
sleep 300 & echo $! >"{out}/child"
printf 'booting\\r\\n'
{body}
"""


def fake(tmp_path, body):
    script = tmp_path / "fake-run"
    script.write_text(FAKE.format(out=tmp_path, body=body))
    script.chmod(0o755)
    return script


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:   # a zombie is dead
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def assert_cleaned(tmp_path):
    assert not os.path.exists((tmp_path / "tmpdir").read_text().strip()), "TMPDIR removed"
    child = int((tmp_path / "child").read_text())
    for _ in range(50):
        if not alive(child):
            break
        time.sleep(0.1)
    assert not alive(child), "the whole process group is killed"


def test_cut_on_a_console_line_kills_the_group_and_removes_tmpdir(tmp_path):
    script = fake(tmp_path, "echo 'Starting kernel'; sleep 0.2; echo after; sleep 300")
    r = qemudriver.run(script, [], 60, cut=(r"^Starting kernel", 0.5), log=tmp_path / "log")
    assert r.killed_at is not None and 0.5 <= r.killed_at < 10, r
    assert r.rc == -9 and not r.timed_out
    assert r.console == "booting\nStarting kernel\nafter\n", r.console
    assert [l for _, l in r.lines] == ["booting", "Starting kernel", "after"]
    assert (tmp_path / "log").read_text() == r.console
    assert_cleaned(tmp_path)


def test_cut_at_a_time(tmp_path):
    script = fake(tmp_path, "sleep 300")
    t0 = time.monotonic()
    r = qemudriver.run(script, [], 60, cut=(None, 0.3))
    assert 0.3 <= r.killed_at < 5 and time.monotonic() - t0 < 15, r
    assert_cleaned(tmp_path)


def test_prompts_are_answered_in_order(tmp_path):
    script = fake(tmp_path, "printf 'login: '; read a; printf 'shell# '; read b; "
                            "echo \"got $a $b\"; kill $(cat " + str(tmp_path / "child") + ")")
    r = qemudriver.run(script, [], 60, interact=[("login: ", "root\n"), ("shell# ", "ls\n")])
    assert r.rc == 0 and "got root ls" in r.console, r.console
    assert_cleaned(tmp_path)


def test_the_host_deadline_kills_a_script_that_ignores_its_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(qemudriver, "GRACE", 1)
    script = fake(tmp_path, "sleep 300")
    t0 = time.monotonic()
    r = qemudriver.run(script, [], 1)
    assert r.timed_out and r.rc == 124 and r.killed_at is None, r
    assert time.monotonic() - t0 < 10
    assert_cleaned(tmp_path)


def test_an_exception_while_reading_still_kills_and_cleans(tmp_path, monkeypatch):
    script = fake(tmp_path, "sleep 300")

    def boom(*_):
        raise RuntimeError("boom")
    monkeypatch.setattr(qemudriver.re, "search", boom)
    try:
        qemudriver.run(script, [], 60, cut=("never", 1))
    except RuntimeError:
        pass
    else:
        raise AssertionError("the exception was swallowed")
    assert_cleaned(tmp_path)


def test_a_script_that_cannot_start_leaves_no_tmpdir(tmp_path, monkeypatch):
    made = []
    real = qemudriver.tempfile.mkdtemp
    monkeypatch.setattr(qemudriver.tempfile, "mkdtemp", lambda **kw: made.append(real(**kw)) or made[-1])
    try:
        qemudriver.run(tmp_path / "missing", [], 60)
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("a missing script ran")
    assert made and not os.path.exists(made[0])
