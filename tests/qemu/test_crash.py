"""Issue 11 B: power loss, enumerated (tests/crash). A small sample here; the
whole campaign is `tests/crash/run --op all` (figures in tests/crash/README.md)."""
import random
import struct
import sys

from guest import REPO

sys.path.insert(0, str(REPO / "tests/crash"))
import crashlib  # noqa: E402


def write_log(path, entries):
    """A dm-log-writes log as QEMU's blklogwrites writes it (512-byte log sectors)."""
    body = b""
    for sector, nr, flags, data in entries:
        body += struct.pack("<QQQQ", sector, nr, flags, 0).ljust(512, b"\0") + data
    sup = struct.pack("<QQQI", crashlib.WRITE_LOG_MAGIC, 1, len(entries), 512).ljust(512, b"\0")
    path.write_bytes(sup + body)


def test_log_parser_and_states(tmp_path):
    """Host only: parse a log and enumerate its crash states exactly."""
    a, b, c = b"a" * 512, b"b" * 1024, b"c" * 512
    write_log(tmp_path / "w.log", [
        (0, 1, 0, a),                            # 0: write sector 0
        (10, 2, 0, b),                           # 1: write sectors 10-11
        (0, 0, crashlib.LOG_FLUSH_FLAG, b""),    # 2: flush
        (20, 1, 0, c),                           # 3: write sector 20
        (30, 8, crashlib.LOG_DISCARD_FLAG, b""),  # 4: discard (no data in the log)
    ])
    log = crashlib.parse_log(tmp_path / "w.log")
    assert [(e.sector, e.nr, e.flush, e.discard) for e in log] == [
        (0, 1, False, False), (10, 2, False, False), (0, 0, True, False),
        (20, 1, False, False), (30, 8, False, True)]
    states, counts = crashlib.enumerate_states(log, 0, len(log), random.Random(1))
    # Prefixes: before 0, after 0, after 1, after 3 (the discard is not a write).
    # Reordered: of epoch {0, 1} only {1} is not a prefix; epoch {3} has none.
    # Torn: entry 1 (2 sectors), cut after its first sector, either way round.
    assert counts == {"prefix": 4, "reordered": 1, "torn": 2}
    reordered = [s for s in states if s.kind == "reordered"]
    assert reordered[0].overlay == {10: b"b" * 512, 11: b"b" * 512} and reordered[0].flush == -1
    torn = sorted(sorted(s.overlay) for s in states if s.kind == "torn")
    assert torn == [[0, 10], [0, 11]]
    last = [s for s in states if s.kind == "prefix"][-1]
    assert last.flush == 2 and sorted(last.overlay) == [0, 10, 11, 20]


def test_log_with_bad_magic_is_rejected(tmp_path):
    (tmp_path / "w.log").write_bytes(b"\0" * 1024)
    try:
        crashlib.parse_log(tmp_path / "w.log")
    except crashlib.LogError as e:
        assert "bad magic" in str(e)
    else:
        raise AssertionError("a log without the magic was accepted")


def test_mark_bad_crash_states_sample():
    """mark-bad on B's trial: every prefix, 10 torn and the reordered states of
    the logged commit checked on the host, 5 of them booted; none may fail."""
    with crashlib.Campaign(seed=11) as camp:
        r = camp.run_op("mark-bad", boots=5, max_torn=10)
        tmp = camp.tmp
    assert not tmp.exists(), "the campaign's temp dir is removed"
    print(r.summary())
    assert r.failures == [], r.summary()
    # Not vacuous: the log caught the commit, its flushes, and both states.
    assert r.writes > 0 and r.flushes >= 1, r.summary()
    assert r.built.get("prefix", 0) >= r.writes, r.summary()
    assert r.candidates["torn"] >= 10, r.summary()  # the 16 KiB copy is one multi-sector write
    assert len([k for k in r.env_states if k != "-"]) >= 2, r.env_states
    # Five boots, or every distinct state when there are fewer (a commit that
    # writes only the copy's own sectors leaves few).
    assert r.booted == min(5, sum(r.built.values())), r.summary()
