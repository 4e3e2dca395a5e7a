"""Validation of everything a client may put into a guest command: structural, not a blacklist.

Commands are argv lists and every argument is shell-quoted before it is typed, so shell
metacharacters (`;`, `|`, `$()`, backticks...) stay literal. What quoting cannot make safe is
rejected outright: characters that end or rewrite the typed line (newline, CR, NUL, ESC, every
C0/C1 control, DEL, Unicode line/paragraph separators) and bidi controls that make audit logs
lie. Service names and file paths follow strict patterns; limits are small integers; the total
size is bounded. Each failure names the offending value, character and position.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence

__all__ = [
    "MAX_ARGS",
    "MAX_FILES",
    "MAX_TOTAL_BYTES",
    "MAX_UNITS",
    "ValidationError",
    "check_text",
    "validate_argv",
    "validate_limit",
    "validate_path",
    "validate_timeout",
    "validate_unit",
]

MAX_TOTAL_BYTES = 8 * 1024  # the whole command line, before quoting
MAX_ARGS = 256
MAX_PATH = 4096
MAX_FILES = 16
MAX_UNITS = 16
LIMIT_MIN, LIMIT_MAX = 1, 1000
TIMEOUT_MAX_S = 3600.0

# systemd unit names: letters, digits, ":-_.\\@"; we leave out "\\" (escapes) on purpose and
# refuse a leading "-" so a name can never be read as an option.
_UNIT_RE = re.compile(r"[A-Za-z0-9:_.@][A-Za-z0-9:_.@-]{0,255}")

_C0_NAMES = {
    0x00: "NULL",
    0x07: "BELL",
    0x08: "BACKSPACE",
    0x09: "CHARACTER TABULATION",
    0x0A: "LINE FEED",
    0x0B: "LINE TABULATION",
    0x0C: "FORM FEED",
    0x0D: "CARRIAGE RETURN",
    0x1B: "ESCAPE",
    0x7F: "DELETE",
    0x85: "NEXT LINE",
    0x9B: "CONTROL SEQUENCE INTRODUCER",
}
# Bidi embedding/override/isolate controls (Trojan Source): harmless to the shell, but they
# make the argv shown in logs differ from what ran.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class ValidationError(ValueError):
    """Input refused before anything reaches Proxmox. `rule` is short, for the audit log."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


def describe(char: str) -> str:
    """`U+000A LINE FEED`: the code point and its name (controls have none in unicodedata)."""
    code = ord(char)
    name = _C0_NAMES.get(code) or unicodedata.name(char, "")
    if not name:
        name = "control character" if unicodedata.category(char) == "Cc" else "unnamed character"
    return f"U+{code:04X} {name}"


def _forbidden(char: str) -> bool:
    if char in _BIDI:
        return True
    # Cc: C0, DEL, C1 (incl. U+0085); Zl/Zp: U+2028/U+2029; Cs: lone surrogates.
    return unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs")


def check_text(value: str, where: str) -> None:
    for i, char in enumerate(value):
        if _forbidden(char):
            raise ValidationError(
                "control character", f"{where} contains {describe(char)} at position {i}"
            )


def validate_argv(value: object) -> list[str]:
    """A non-empty list of strings; argv[0] a command name, not an option or empty."""
    if not isinstance(value, list):
        raise ValidationError("argv type", "argv must be a JSON list of strings")
    if not value:
        raise ValidationError("argv empty", "argv must not be empty")
    if len(value) > MAX_ARGS:
        raise ValidationError("argv size", f"argv has {len(value)} items; at most {MAX_ARGS}")
    total = 0
    for i, arg in enumerate(value):
        if not isinstance(arg, str):
            raise ValidationError("argv type", f"argv[{i}] is not a string")
        total += len(arg.encode("utf-8", "surrogatepass")) + 1
        if total > MAX_TOTAL_BYTES:
            raise ValidationError(
                "argv size", f"argv is longer than {MAX_TOTAL_BYTES} bytes (at argv[{i}])"
            )
    for i, arg in enumerate(value):
        check_text(arg, f"argv[{i}]")
    first = value[0]
    if not first.strip():
        raise ValidationError("argv[0]", "argv[0] must name a command")
    if first.startswith("-"):
        raise ValidationError("argv[0]", "argv[0] must name a command, not an option")
    return list(value)


def validate_unit(value: str, where: str = "service") -> str:
    check_text(value, where)
    if not _UNIT_RE.fullmatch(value) or value in (".", ".."):
        raise ValidationError(
            "unit name",
            f"{where} {value[:80]!r} is not a systemd unit name "
            "(letters, digits, ':', '_', '.', '@', '-'; not starting with '-')",
        )
    return value


def validate_path(
    value: str, where: str = "file", allowed_prefixes: Sequence[str] | None = None
) -> str:
    """An absolute, normalised, printable path; inside one of `allowed_prefixes` if given."""
    check_text(value, where)
    if len(value.encode("utf-8")) > MAX_PATH:
        raise ValidationError("path size", f"{where} is longer than {MAX_PATH} bytes")
    if not value.startswith("/"):
        raise ValidationError("path", f"{where} {value[:80]!r} must be an absolute path")
    if "//" in value:
        raise ValidationError("path", f"{where} {value[:80]!r} must not contain '//'")
    if value != "/" and value.endswith("/"):
        raise ValidationError("path", f"{where} {value[:80]!r} must name a file, not a folder")
    for segment in value.split("/")[1:]:
        if segment in (".", ".."):
            raise ValidationError(
                "path", f"{where} {value[:80]!r} must not contain '{segment}' segments"
            )
    if any(not c.isprintable() and c != " " for c in value):
        bad = next(c for c in value if not c.isprintable() and c != " ")
        raise ValidationError(
            "path", f"{where} contains {describe(bad)} at position {value.index(bad)}"
        )
    if allowed_prefixes is not None and not any(_under(value, p) for p in allowed_prefixes):
        raise ValidationError(
            "path allowlist",
            f"{where} {value[:80]!r} is outside the paths this token may read: "
            + ", ".join(allowed_prefixes),
        )
    return value


def _under(path: str, prefix: str) -> bool:
    base = prefix.rstrip("/")
    return path == prefix or path.startswith(base + "/")


def validate_limit(value: str | None, where: str = "limit", default: int = 100) -> int:
    """ASCII digits only (int() would take '+5', ' 5', '1_0' and other scripts' digits)."""
    if value is None:
        return default
    if not value or not value.isascii() or not value.isdigit() or len(value) > 4:
        raise ValidationError(
            "limit", f"{where} must be an integer from {LIMIT_MIN} to {LIMIT_MAX}"
        )
    number = int(value)
    if not LIMIT_MIN <= number <= LIMIT_MAX:
        raise ValidationError("limit", f"{where} {number} is outside {LIMIT_MIN}..{LIMIT_MAX}")
    return number


def validate_timeout(value: object, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError("timeout", "timeout must be a number of seconds")
    if not 0 < value <= TIMEOUT_MAX_S:
        raise ValidationError("timeout", f"timeout must be in (0, {TIMEOUT_MAX_S:g}] seconds")
    return float(value)


def validate_flag(value: str | None, where: str, default: bool) -> bool:
    if value is None:
        return default
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ValidationError("flag", f"{where} must be 0 or 1")
