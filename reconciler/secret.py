"""The redacted wrapper secrets travel in. Kept apart and import-free, so that the token
fast path can use it without loading the rest of the model."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: see reconciler.cli
if TYPE_CHECKING:
    from typing import NoReturn


class Secret:
    """A string whose ``repr``/``str`` never show it; ``reveal()`` it at the point of use."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac  # hashlib and OpenSSL (~4 ms): the cached token read compares no secrets

        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, len(self._value)))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret values are not picklable")
