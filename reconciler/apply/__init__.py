"""Carry out a plan: ``runner`` (one outcome per action, failures isolated, refreshes on a
thread pool or forked ``workers``; over etcd a batch at a time, ``batched``), ``lifecycle``
(link, refresh, revoke of one grant, through ``oauth`` and ``custody``), ``notify`` (signed
webhooks on status changes) and ``prompt``
(what a person sees during a device flow).

May import: ``model``, ``errors``, ``secret``, ``config``, ``plan``, ``vault``, ``oauth``,
``custody``.
"""

from .runner import ApplyError, Context, Outcome, Pending, apply, unresolved

__all__ = ["ApplyError", "Context", "Outcome", "Pending", "apply", "unresolved"]
