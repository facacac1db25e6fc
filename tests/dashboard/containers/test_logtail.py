"""LogTail on real files in conmon's format: tail N from the end across chunk
boundaries, partial records joined, streams and since filtered, growth followed,
truncation (conmon's rotation) restarting from the top."""

from __future__ import annotations

from pathlib import Path

from dashboard.services import logs as logsvc


def rec(i: int, stream: str = "stdout", tag: str = "F", text: str | None = None) -> bytes:
    t = text if text is not None else f"line {i}"
    return f"2026-01-01T00:00:{i % 60:02d}.000000000Z {stream} {tag} {t}\n".encode()


def read_all(t: logsvc.LogTail, chunk: int = logsvc.CHUNK) -> list[list[str]]:
    out = []
    while True:
        lines, n = t.read(chunk)
        if not n:
            return out
        out += lines


def test_tail_n_across_chunk_boundaries(tmp_path: Path):
    p = tmp_path / "ctr.log"
    p.write_bytes(b"".join(rec(i) for i in range(20000)))  # ~1.2 MB: many chunks
    for n in (0, 1, 7, 5000, 20000, 30000):
        with logsvc.LogTail(str(p), tail=n) as t:
            got = [ln[2] for ln in read_all(t, 4096)]
        want = [f"line {i}" for i in range(max(0, 20000 - n), 20000)]
        assert got == want, n
    assert logsvc.open_count() == 0


def test_partial_records_streams_and_since(tmp_path: Path):
    p = tmp_path / "ctr.log"
    p.write_bytes(
        rec(1, tag="P", text="hel")
        + rec(2, stream="stderr", text="oops")
        + rec(3, tag="F", text="lo")
        + rec(4, text="")
    )
    with logsvc.LogTail(str(p)) as t:
        assert read_all(t) == [
            ["2026-01-01T00:00:02.000000000Z", "stderr", "oops"],
            ["2026-01-01T00:00:03.000000000Z", "stdout", "hello"],
            ["2026-01-01T00:00:04.000000000Z", "stdout", ""],
        ]
    with logsvc.LogTail(str(p), streams=("stdout",)) as t:
        assert [ln[2] for ln in read_all(t)] == ["hello", ""]
    since = logsvc.parse_since("2026-01-01T00:00:03+00:00")
    with logsvc.LogTail(str(p), since=since) as t:
        assert [ln[2] for ln in read_all(t)] == ["hello", ""]


def test_follows_growth_and_restarts_after_truncation(tmp_path: Path):
    p = tmp_path / "ctr.log"
    with logsvc.LogTail(str(p)) as t:  # not there yet: nothing, no error
        assert t.read() == ([], 0)
        p.write_bytes(rec(1))
        assert [ln[2] for ln in read_all(t)] == ["line 1"]
        with open(p, "ab") as f:
            f.write(rec(2)[:20])  # half a record: not given out yet
        assert read_all(t) == []
        with open(p, "ab") as f:
            f.write(rec(2)[20:])
        assert [ln[2] for ln in read_all(t)] == ["line 2"]
        p.write_bytes(rec(9))  # rotated: shorter than what was read
        assert [ln[2] for ln in read_all(t)] == ["line 9"]


def test_parse_since_says_what_is_wrong():
    import pytest

    from engine.errors import InvalidArgument

    assert logsvc.parse_since("") == 0.0
    assert logsvc.parse_since("1700000000") == 1700000000.0
    with pytest.raises(InvalidArgument, match="invalid since 'yesterday'"):
        logsvc.parse_since("yesterday")
