"""The ``coordination:`` section (SPEC §7): the engine that keeps live grant state for many
machines. Only etcd v3 today. Secrets stay references; files are resolved against the config's
folder (``~`` expanded)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from ..model import Coordination
from .document import Document
from .durations import parse_duration
from .errors import ConfigError, Issue
from .references import parse_reference
from .syntax import URL, URL_HINT
from .wording import shown

DEFAULT_LEASE = timedelta(seconds=15)


def build_coordination(
    section: Mapping, config_path: Path, doc: Document, issues: list[Issue]
) -> Coordination | None:
    """The declared engine, or None after adding its problems to ``issues``."""
    etcd = section["etcd"]
    here = ("coordination", "etcd")
    ok = True
    for at, endpoint in enumerate(etcd["endpoints"]):
        if not URL.fullmatch(endpoint):
            issues.append(
                doc.issue((*here, "endpoints", at), f"`{shown(endpoint)}` is not allowed", URL_HINT)
            )
            ok = False
    password = etcd.get("password")
    if password is not None:
        try:
            parse_reference(password, "coordination.etcd.password")
        except ConfigError as error:
            issues.append(doc.relocated((*here, "password"), error))
            ok = False
    lease = DEFAULT_LEASE
    if "lease" in section:
        try:
            lease = parse_duration(section["lease"])
        except ValueError:
            lease = timedelta(0)
        if lease < timedelta(seconds=2):
            issues.append(
                doc.issue(
                    ("coordination", "lease"),
                    f"invalid lease `{shown(section['lease'])}`",
                    "use a duration of at least 2s, e.g. 15s",
                )
            )
            ok = False
    if not ok:
        return None
    base = Path(os.path.abspath(config_path)).parent

    def local(key: str) -> str | None:
        value = etcd.get(key)
        return str(base / os.path.expanduser(value)) if value is not None else None

    return Coordination(
        endpoints=tuple(etcd["endpoints"]),
        namespace=etcd["namespace"],
        username=etcd.get("username"),
        password_ref=password,
        ca_file=local("ca_file"),
        cert_file=local("cert_file"),
        key_file=local("key_file"),
        lease=lease,
    )
