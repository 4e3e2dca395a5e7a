"""Human-friendly durations for config values ("500ms", "1h30m", 2.5)."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Annotated

from pydantic import BeforeValidator

# Largest unit first; parts must follow this order, which catches typos like "5m3h".
_UNITS: dict[str, Fraction] = {
    "d": Fraction(86400),
    "h": Fraction(3600),
    "m": Fraction(60),
    "s": Fraction(1),
    "ms": Fraction(1, 1000),
}
_UNIT_ORDER = {unit: rank for rank, unit in enumerate(_UNITS)}
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_NUMBER_RE = re.compile(_NUMBER)
# "ms" before "m"/"s" so the alternation does not stop early.
_PART = rf"({_NUMBER})(ms|s|m|h|d)"
_PART_RE = re.compile(_PART)
_UNIT_STRING_RE = re.compile(rf"(?:{_PART})+")
# Room for format_duration of any finite float; keeps huge digit strings out of the arithmetic.
_MAX_TEXT_LEN = 400


def _invalid(value: object, why: str = "") -> ValueError:
    try:
        shown = repr(value)
    except ValueError:  # ints beyond sys.get_int_max_str_digits() refuse repr()
        shown = f"<huge {type(value).__name__}>"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ValueError(
        f"invalid duration {shown}{why}: use a number of seconds or a value like 500ms, 3s, 15m, 2h"
    )


def _parse_text(text: str) -> Fraction | None:
    if _NUMBER_RE.fullmatch(text):
        return Fraction(text)
    if not _UNIT_STRING_RE.fullmatch(text):
        return None
    total = Fraction(0)
    last_rank = -1
    for number, unit in _PART_RE.findall(text):
        rank = _UNIT_ORDER[unit]
        if rank <= last_rank:
            return None
        last_rank = rank
        total += Fraction(number) * _UNITS[unit]
    return total


def parse_duration(value: object) -> float:
    """Seconds from a non-negative number or a string like "1.5s" or "1h30m"."""
    # bool is an int subclass, but "timeout: true" is never meant as 1 second.
    if isinstance(value, bool):
        raise _invalid(value)
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise _invalid(value) from None
        if seconds < 0:
            raise _invalid(value, " (durations cannot be negative)")
        if not math.isfinite(seconds):
            raise _invalid(value)
        return seconds
    if not isinstance(value, str):
        raise _invalid(value)
    text = value.strip()
    if not text or len(text) > _MAX_TEXT_LEN:
        raise _invalid(value)
    try:
        exact = _parse_text(text)
        # Exact arithmetic then one rounding, so "1h0m0.001s" equals 3600.001 exactly.
        seconds = float(exact) if exact is not None else math.nan
    except (OverflowError, ValueError):
        raise _invalid(value) from None
    if not math.isfinite(seconds):
        raise _invalid(value)
    return seconds


def format_duration(seconds: float) -> str:
    """Compact form such as "1h30m" or "500ms", rounded to whole milliseconds."""
    if isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration {seconds!r}: must be a finite number >= 0")
    millis = round(Fraction(seconds) * 1000)
    if millis == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in _UNITS.items():
        unit_millis = int(size * 1000)
        count, millis = divmod(millis, unit_millis)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


# A config field in seconds, written as a number or a duration string.
Seconds = Annotated[float, BeforeValidator(parse_duration)]
