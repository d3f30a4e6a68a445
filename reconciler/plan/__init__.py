"""The pure core: what to do (``plan``), how each grant stands (``report``), and when a grant
is due for a refresh (``schedule``). Values in, values out: no disk, network or clock.

May import: ``model``, ``errors``, ``secret``.
"""

from .actions import plan
from .schedule import access_deadline, is_due, next_refresh, refresh_reason
from .status import GrantReport, report

__all__ = [
    "GrantReport",
    "access_deadline",
    "is_due",
    "next_refresh",
    "plan",
    "refresh_reason",
    "report",
]
