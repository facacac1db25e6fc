"""engine.build.options and the small parsers of engine.build.steps."""

from __future__ import annotations

import pytest

from engine.build.options import BuildStepFailed, parse_pairs
from engine.build.steps import parse_duration
from engine.errors import EngineError, InvalidArgument


def test_parse_pairs_like_docker():
    assert parse_pairs(["A=1", "B=x=y", "C="], "--label") == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(InvalidArgument, match="expected KEY=VALUE"):
        parse_pairs(["A"], "--label")
    # A bare --build-arg takes its value from the environment, or is dropped.
    assert parse_pairs(["HOME", "NOPE"], "--build-arg", env={"HOME": "/root"}) == {"HOME": "/root"}
    with pytest.raises(InvalidArgument):
        parse_pairs(["=v"], "--build-arg", env={})


@pytest.mark.parametrize(
    "text, ns",
    [
        ("30s", 30 * 10**9),
        ("1m30s", 90 * 10**9),
        ("500ms", 5 * 10**8),
        ("1.5h", 5400 * 10**9),
        ("0", 0),
    ],
)
def test_durations(text, ns):
    assert parse_duration(text, "interval") == ns


def test_bad_duration_and_step_error():
    with pytest.raises(InvalidArgument, match="invalid duration '30'"):
        parse_duration("30", "interval")
    e = BuildStepFailed(3, 7, "/bin/sh -c exit 4", 4)
    assert isinstance(e, EngineError) and e.exit_code == 4
    assert str(e) == "step 3/7: the command '/bin/sh -c exit 4' returned a non-zero code: 4"
