"""Writing and deleting a declared `prompt` secret (`PUT`/`DELETE /v1/secrets/{name}`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..custody import open_custody
from ..errors import ConflictError, UndeclaredError, UserError
from ..model import Grant, Secret
from .basics import load_desired, utcnow


def put_secret(
    config_path: Path, name: str, value: Secret, environ: Mapping[str, str] | None = None
) -> None:
    """Write a `prompt` secret's value (HTTP `PUT /v1/secrets/{name}`)."""
    desired = load_desired(config_path, environ)
    if name not in desired.secrets:
        raise UndeclaredError(f"{name!r} is not a secret declared in {desired.path}")
    if desired.secrets[name].ref != "prompt":
        raise ConflictError(
            f"secret {name!r} takes its value from `{desired.secrets[name].ref}` in "
            f"{desired.path}, so a value written here would be replaced by the next apply; "
            "declare it as `value: prompt` to set it over HTTP"
        )
    if not value:
        raise UserError(f"secret {name!r}: an empty value was given; nothing written")
    grant = Grant(name=name, kind="secret", value=value, obtained_at=utcnow())
    custody = open_custody(desired, None, environ)
    with custody.single_flight(name, replacing=True) as held:
        custody.commit(held, grant, durable=True, recipients=desired.recipients[name])


def delete_secret(config_path: Path, name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Delete a declared secret's file; False when there was none."""
    desired = load_desired(config_path, environ)
    if name not in desired.secrets:
        raise UndeclaredError(f"{name!r} is not a secret declared in {desired.path}")
    return open_custody(desired, None, environ).delete(name)
