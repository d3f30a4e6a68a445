"""Failpoints, as etcd's gofail: named places in a refresh where the tests of stopped and
killed holders (tests/cluster/) make this process stop or die at a known moment.

``RECONCILER_FAILPOINTS=before-send=stop,after-answer=kill`` makes the process send itself
SIGSTOP or SIGKILL on reaching the named point. Unset, as it is outside those tests, a point
costs one dictionary lookup. The points:

- ``before-send``: the intent is recorded, the lock's final check and the request are next;
- ``after-answer``: the provider answered and the answer is in the local escrow; the commit
  is next.
"""

from __future__ import annotations

import os
import signal

_ACTIONS = {"stop": signal.SIGSTOP, "kill": signal.SIGKILL}


def _parse(text: str) -> dict[str, signal.Signals]:
    points: dict[str, signal.Signals] = {}
    for item in text.split(","):
        name, _, action = item.strip().partition("=")
        if name and action in _ACTIONS:
            points[name] = _ACTIONS[action]
    return points


_POINTS = _parse(os.environ.get("RECONCILER_FAILPOINTS", ""))


def hit(name: str) -> None:
    """Stop or kill this process if the failpoint ``name`` is armed."""
    found = _POINTS.get(name)
    if found is not None:
        os.kill(os.getpid(), found)
