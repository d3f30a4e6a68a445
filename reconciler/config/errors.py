"""What config reports: located :class:`Issue` s, gathered into one :class:`ConfigError`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ReconcilerError

#: Most issues listed in one ConfigError (the rest are counted).
MAX_ISSUES = 5


@dataclass(frozen=True)
class Issue:
    """One problem in a config file, with where it is and how to fix it."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file is not None:
            location = self.file
            if self.line is not None:
                location += f":{self.line}:{self.column or 1}"
            parts.append(location)
        if self.path:
            parts.append(self.path)
        parts.append(self.message + (f" ({self.hint})" if self.hint else ""))
        return ": ".join(parts)


class ConfigError(ReconcilerError):
    """An invalid config or an unresolvable reference.

    ``str()`` is one paragraph: one ``<file>:<line>:<col>: <json path>: <what> (<hint>)``
    line per issue, the most relevant first. ``issues`` holds them as :class:`Issue`.
    """

    kind = "config"

    def __init__(self, issues: str | Issue | Iterable[Issue]) -> None:
        if isinstance(issues, str):
            issues = (Issue(issues),)
        elif isinstance(issues, Issue):
            issues = (issues,)
        self.issues: tuple[Issue, ...] = tuple(issues) or (Issue("invalid configuration"),)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)

    # The first (most relevant) issue's location, for callers that show one.
    @property
    def file(self) -> str | None:
        return self.issues[0].file

    @property
    def line(self) -> int | None:
        return self.issues[0].line

    @property
    def column(self) -> int | None:
        return self.issues[0].column

    @property
    def path(self) -> str | None:
        return self.issues[0].path

    @property
    def hint(self) -> str | None:
        return self.issues[0].hint


class PromptRequired(ConfigError):
    """The reference is ``prompt``: there is no value to read, it must be asked for."""


def raise_if_any(issues: list[Issue], file: str) -> None:
    """Raise one :class:`ConfigError` with the first :data:`MAX_ISSUES` of ``issues``."""
    if not issues:
        return
    shown = issues[:MAX_ISSUES]
    if len(issues) > MAX_ISSUES:
        more = len(issues) - MAX_ISSUES
        shown.append(Issue(f"and {more} more problem(s); fix these first", file))
    raise ConfigError(shown)
