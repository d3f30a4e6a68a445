"""Durations such as ``5m`` or ``1h30m``, and the ``defaults:`` that hold them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta

from .document import Document, NodePath
from .errors import Issue
from .wording import shown

DEFAULT_REFRESH_BEFORE = timedelta(minutes=5)
DEFAULT_KEEPALIVE = timedelta(days=7)
DEFAULT_REQUEST_DEADLINE = timedelta(seconds=30)

_DURATION = re.compile(r"(?:[0-9]+[smhdw])+")
_DURATION_PART = re.compile(r"([0-9]+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: object) -> timedelta:
    """``30s``, ``5m``, ``2h``, ``7d``, ``1w``, or combined like ``1h30m``."""
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 2h, 7d)")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


#: How an invalid duration's message says to write one.
DURATION_HINT = "use a number and a unit s, m, h, d or w, e.g. 30s, 5m, 2h, 7d"


def duration_at(
    doc: Document,
    path: NodePath,
    value: object,
    issues: list[Issue],
    hint: str = DURATION_HINT,
) -> timedelta | None:
    """``value`` (found at ``path``) as a duration; None, with an issue, when it is none."""
    try:
        return parse_duration(value)
    except ValueError:
        issues.append(doc.issue(path, f"invalid duration `{shown(value)}`", hint))
        return None


def default_duration(
    doc: Document, defaults: Mapping, key: str, fallback: timedelta, issues: list[Issue]
) -> timedelta:
    """``defaults.<key>`` as a duration, or ``fallback``; problems go to ``issues``."""
    if key not in defaults:
        return fallback
    value = duration_at(doc, ("defaults", key), defaults[key], issues)
    if value is None:
        return fallback
    if key in ("keepalive", "request_deadline") and value <= timedelta(0):
        issues.append(doc.issue(("defaults", key), f"{key} must be longer than 0s"))
    return value
