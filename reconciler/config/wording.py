"""Phrasing shared by the messages: shortened values, type names, "did you mean" hints."""

from __future__ import annotations

from collections.abc import Iterable


def shown(value: object, limit: int = 60) -> str:
    """``value`` as text, cut to ``limit`` characters."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def type_name(value: object) -> str:
    """What a YAML value is, in words: ``a string``, ``a list``..."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a YAML {type(value).__name__}"


def closest(word: object, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` was most likely meant to be, ignoring case, if any is close."""
    import difflib  # only for a did-you-mean hint

    candidates = list(candidates)
    text = str(word)
    lowered = {c.lower(): c for c in candidates}
    if text.lower() in lowered:
        return lowered[text.lower()]
    matches = difflib.get_close_matches(text, candidates, n=1, cutoff=0.6)
    if not matches:
        matches = difflib.get_close_matches(text.lower(), list(lowered), n=1, cutoff=0.6)
        matches = [lowered[m] for m in matches]
    return matches[0] if matches else None


def did_you_mean(suggestion: str | None, then: str | None = None) -> str | None:
    """``did you mean `suggestion`?``, followed by ``then``; just ``then`` without one."""
    if not suggestion:
        return then
    return f"did you mean `{suggestion}`?" + (f" {then}" if then else "")
