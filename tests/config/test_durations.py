from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxproxy.config.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (3, 3.0),
        (2.5, 2.5),
        ("3", 3.0),
        ("2.5", 2.5),
        ("0", 0.0),
        ("500ms", 0.5),
        ("3s", 3.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("1d2h3m4s5ms", 93784.005),
        ("0.5h", 1800.0),
        ("  15m\n", 900.0),
        ("\t7 ", 7.0),
    ],
)
def test_valid(value: object, expected: float) -> None:
    result = parse_duration(value)
    assert isinstance(result, float)
    assert result == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "abc",
        "-1",
        "-1s",
        "+3s",
        "3S",
        "3sec",
        "3 s",
        "1h 30m",
        "3us",
        "1w",
        "s",
        "1.s",
        ".5s",
        "1e3",
        "nan",
        "inf",
        "NaN",
        "1_000",
        "5m3h",  # out of order
        "1s1s",  # repeated unit
        "3s\x00",
        "３s",  # fullwidth digit
        "9" * 500 + "s",
        "9" * 399 + "d",  # overflows a float
        -1,
        -0.5,
        math.nan,
        math.inf,
        -math.inf,
        True,
        False,
        None,
        [3],
        {"s": 3},
        b"3s",
        10**400,
    ],
)
def test_invalid(value: object) -> None:
    with pytest.raises(ValueError, match=r"^invalid duration .*: use a number of seconds"):
        parse_duration(value)


def test_error_message_exact() -> None:
    with pytest.raises(ValueError, match="abc") as excinfo:
        parse_duration("abc")
    assert str(excinfo.value) == (
        "invalid duration 'abc': use a number of seconds or a value like 500ms, 3s, 15m, 2h"
    )


def test_error_message_bounded_for_huge_input() -> None:
    with pytest.raises(ValueError, match="invalid duration 'xxx") as excinfo:
        parse_duration("x" * 1_000_000)
    assert len(str(excinfo.value)) < 200


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.0004, "0s"),
        (0.5, "500ms"),
        (3, "3s"),
        (60, "1m"),
        (90, "1m30s"),
        (900, "15m"),
        (5400, "1h30m"),
        (7200, "2h"),
        (86400, "1d"),
        (93784.005, "1d2h3m4s5ms"),
        (1.5, "1s500ms"),
    ],
)
def test_format(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize("seconds", [-1, math.nan, math.inf])
def test_format_rejects(seconds: float) -> None:
    with pytest.raises(ValueError, match="cannot format duration"):
        format_duration(seconds)


@given(st.integers(min_value=0, max_value=10**15))
def test_round_trip_whole_milliseconds(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.floats(min_value=0, max_value=1e308, allow_nan=False, allow_infinity=False))
def test_round_trip_is_stable(seconds: float) -> None:
    # Any value round-trips after one rounding to whole milliseconds.
    text = format_duration(seconds)
    assert format_duration(parse_duration(text)) == text


@given(
    st.fixed_dictionaries(
        {},
        optional={
            unit: st.integers(0, 10_000).map(str)
            | st.integers(0, 99_999).map(lambda n: f"{n // 100}.{n % 100:02d}")
            for unit in ("d", "h", "m", "s", "ms")
        },
    ).filter(bool)
)
def test_unit_strings(parts: dict[str, str]) -> None:
    factors = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    text = "".join(f"{parts[u]}{u}" for u in factors if u in parts)
    expected = sum(float(parts[u]) * factors[u] for u in parts)
    assert parse_duration(text) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@given(st.text(max_size=50))
def test_arbitrary_text_parses_or_raises_value_error(text: str) -> None:
    try:
        result = parse_duration(text)
    except ValueError as exc:
        error: str | None = str(exc)
    else:
        error = None
        assert math.isfinite(result)
        assert result >= 0
    assert error is None or error.startswith("invalid duration")


@given(st.floats() | st.integers(-(10**30), 10**30))
def test_numbers(value: float) -> None:
    if (isinstance(value, float) and not math.isfinite(value)) or value < 0:
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(value)
    else:
        assert parse_duration(value) == float(value)
