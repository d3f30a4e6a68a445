"""Fixtures for the notify tests: ``receiver`` makes webhook receivers (support.py) and stops
them after the test."""

from __future__ import annotations

from typing import Any

import pytest

from .support import Receiver


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for each in made:
        each.stop()
