"""The one way the tests, the power-cut and crash campaigns and the benchmark run QEMU.

`run()` starts qemu/run or qemu/uboot-run in its own session, reads the serial
console as it comes (each line stamped with host seconds since the start),
types the answers to `interact` prompts, cuts the power (SIGKILL of the whole
process group) at a time or on a console line, enforces a host-side deadline
on top of the script's own --timeout, writes the console to `log`, and always
kills and reaps what it started. Each run gets a private TMPDIR that is removed
afterwards: a SIGKILLed script never runs its EXIT trap, so its temp files
would otherwise stay in /tmp.
"""
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# After the script's own --timeout: time for it to kill QEMU and say so.
GRACE = 30
# After a power cut: the pipe closes when the group is dead; never wait longer.
DRAIN = 10
TMP_PREFIX = "slotinit-qemu."


@dataclass
class Run:
    console: str           # the serial console (and the script's messages), CRLF -> LF
    rc: int                # the script's exit code; 124: timeout; -9: power cut
    lines: list = field(default_factory=list)   # (seconds since start, line)
    wall: float = 0.0
    killed_at: float = None    # seconds since start of the power cut, None: no cut
    timed_out: bool = False    # the host-side deadline killed it


def run(script, args, timeout, qemu_args=(), interact=(), cut=None, log=None, procs=None):
    """Runs REPO/qemu/`script` `args` --timeout `timeout` [-- `qemu_args`]; returns a Run.

    `interact`: (text to wait for, line to type) pairs, answered in order; input
    sent before the guest reads it would be lost, so each waits for its text.
    `cut`: (console regex or None, delay in s): SIGKILL the process group `delay`
    seconds after the first line matching the regex (None: after the start), as
    a power cut. `procs`: a set the running Popen is kept in, so another thread
    can kill it (Ctrl-C of a campaign).
    """
    tmpdir = tempfile.mkdtemp(prefix=TMP_PREFIX)
    cmd = [str(REPO / "qemu" / script), *map(str, args), "--timeout", str(timeout)]
    if qemu_args:
        cmd += ["--", *map(str, qemu_args)]
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if interact else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0,
                                start_new_session=True, env=dict(os.environ, TMPDIR=tmpdir))
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    if procs is not None:
        procs.add(proc)
    raw, partial, lines = b"", b"", []
    pending = list(interact)
    cut_time = t0 + cut[1] if cut and cut[0] is None else None
    deadline = t0 + timeout + GRACE
    killed_at, timed_out = None, False

    def kill():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    try:
        fd = proc.stdout.fileno()
        while True:
            now = time.monotonic()
            if cut_time is not None and killed_at is None and now >= cut_time:
                killed_at = now - t0
                kill()
                deadline = min(deadline, now + DRAIN)
            if now >= deadline:
                timed_out = killed_at is None
                kill()
                break
            wake = min(t for t in (deadline, cut_time if killed_at is None else None) if t)
            ready, _, _ = select.select([fd], [], [], max(0.0, wake - now))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            now = time.monotonic()
            raw += chunk
            while pending and pending[0][0].encode() in raw:
                proc.stdin.write(pending.pop(0)[1].encode())
                proc.stdin.flush()
            partial += chunk
            *done, partial = partial.split(b"\n")
            for b in done:
                line = b.decode("utf-8", "replace").rstrip("\r")
                lines.append((now - t0, line))
                if cut and cut[0] is not None and cut_time is None and re.search(cut[0], line):
                    cut_time = now + cut[1]
        if partial:
            lines.append((time.monotonic() - t0, partial.decode("utf-8", "replace")))
    finally:
        # Whatever happened (a cut, a timeout, an exception, Ctrl-C): nothing of
        # the group outlives this call, the process is reaped, TMPDIR removed.
        # At the console's EOF the script has exited already (its stdout closed):
        # the kill then finds at most its zombie, which keeps the group id taken
        # until the wait below reaps it.
        kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout):
            if f:
                f.close()
        if procs is not None:
            procs.discard(proc)
        shutil.rmtree(tmpdir, ignore_errors=True)
        console = raw.decode("utf-8", "replace").replace("\r\n", "\n")
        if log:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            Path(log).write_text(console)
    rc = 124 if timed_out else proc.returncode
    return Run(console, rc, lines, round(time.monotonic() - t0, 3), killed_at, timed_out)
