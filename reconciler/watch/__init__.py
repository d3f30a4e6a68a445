"""`reconcile --watch`: ``loop`` (the watcher: apply at start, then on every change of its
inputs and at refresh deadlines, never dying on a bad edit) and ``inputs`` (what it watches:
the config, `.sops.yaml`, `file:` sources and grant files, and their fingerprints).

A face: it may import ``operations`` (the door), ``model``, ``errors``, ``plan`` (the pure
refresh rule, for its timer) and ``vault.sops.rules`` (where the governing .sops.yaml is).
"""

from .loop import DEBOUNCE_MS, STEP_MS, Event, Watcher, next_wakeup

__all__ = ["DEBOUNCE_MS", "STEP_MS", "Event", "Watcher", "next_wakeup"]
