"""One ``providers.<name>`` entry, merged over its preset, checked, as a :class:`Provider`."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..catalog import UnknownPreset, load_preset
from ..model import Provider
from .document import Document
from .durations import duration_at
from .errors import ConfigError, Issue
from .references import parse_reference
from .syntax import URL, URL_HINT
from .wording import closest, did_you_mean, shown

_ENDPOINTS = (
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "device_authorization_endpoint",
    "revocation_endpoint",
    "redirect_uri",
    "mcp",
    "client_metadata_url",
)
_SECRET_METHODS = ("client_secret_basic", "client_secret_post")
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def build_provider(name: str, entry: dict, doc: Document, issues: list[Issue]) -> Provider | None:
    """The provider ``name`` declares, or None after adding its problems to ``issues``."""

    here = ("providers", name)
    preset: dict = {}
    preset_name = entry.get("preset")
    if preset_name is not None:
        try:
            preset = load_preset(preset_name)
        except UnknownPreset as error:
            hint = did_you_mean(error.suggestion, f"known presets: {', '.join(error.known)}")
            issues.append(doc.issue((*here, "preset"), f"unknown preset `{preset_name}`", hint))
            return None

    variables: dict[str, str] = dict(preset.get("vars") or {})
    ok = True
    for var, value in (entry.get("preset_vars") or {}).items():
        if var not in variables:
            known = list(variables)
            hint = did_you_mean(closest(var, known)) or (
                f"its variables: {', '.join(known)}"
                if known
                else "it has no variables; remove preset_vars"
            )
            issues.append(
                doc.issue(
                    (*here, "preset_vars", var),
                    f"preset `{preset_name}` has no variable `{var}`",
                    hint,
                    key=True,
                )
            )
            ok = False
        else:
            variables[var] = value

    def fill(text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: variables.get(m[1], m[0]), text)

    endpoints: dict[str, str | None] = {}
    for field in _ENDPOINTS:
        explicit = field in entry
        value = entry.get(field) if explicit else preset.get(field)
        if value is None:
            endpoints[field] = None
            continue
        value = fill(value)
        where = (*here, field) if explicit else (*here, "preset")
        leftover = _PLACEHOLDER.search(value)
        if leftover:
            issues.append(
                doc.issue(
                    where,
                    f"{field} has an unfilled placeholder `{leftover[0]}`",
                    f"set preset_vars: {{{leftover[1]}: ...}}"
                    if preset
                    else f"replace `{leftover[0]}` with the actual value",
                )
            )
            ok = False
        elif not URL.fullmatch(value):
            what = f"`{shown(value)}`" if explicit else f"{field} `{shown(value)}`"
            issues.append(doc.issue(where, f"{what} is not an allowed URL", URL_HINT))
            ok = False
        endpoints[field] = value

    client_secret = entry.get("client_secret")
    if client_secret is not None:
        try:
            parse_reference(client_secret, f"provider `{name}` client_secret")
        except ConfigError as error:
            issues.append(doc.relocated((*here, "client_secret"), error))
            ok = False

    flow = entry.get("flow", "authorization_code")
    if "token_endpoint_auth_method" in entry:
        method = entry["token_endpoint_auth_method"]
    elif client_secret is not None:
        preset_method = preset.get("token_endpoint_auth_method")
        method = preset_method if preset_method in _SECRET_METHODS else "client_secret_basic"
    else:
        method = "none"

    if method in _SECRET_METHODS and client_secret is None:
        issues.append(
            doc.issue(
                (*here, "token_endpoint_auth_method"),
                f"token_endpoint_auth_method `{method}` needs a client_secret",
                "add client_secret: env:NAME, file:PATH or sops:PATH#key, or use `none` "
                "for a public client",
                key=True,
            )
        )
        ok = False
    if flow == "client_credentials" and client_secret is None:
        issues.append(
            doc.issue(
                (*here, "flow"),
                "flow `client_credentials` needs a client_secret",
                "add client_secret: env:NAME, file:PATH or sops:PATH#key",
            )
        )
        ok = False

    issuer = endpoints["issuer"]
    mcp = endpoints["mcp"]
    if mcp is not None and flow != "authorization_code":
        issues.append(
            doc.issue(
                (*here, "flow"),
                f"flow `{flow}` is not available for an MCP server",
                "MCP servers are linked with authorization_code + PKCE (SPEC §8); remove `flow`",
            )
        )
        ok = False
    if endpoints["client_metadata_url"] is not None and mcp is None:
        issues.append(
            doc.issue(
                (*here, "client_metadata_url"),
                "client_metadata_url is used only with `mcp`",
                "add mcp: <the MCP server's URL>, or remove client_metadata_url",
                key=True,
            )
        )
        ok = False
    how = "add it, or an issuer for discovery" + ("" if preset else ", or use a preset")
    if mcp is not None:
        pass  # the endpoints come from the MCP server's authorization server (SPEC §8)
    elif endpoints["token_endpoint"] is None and issuer is None:
        issues.append(doc.issue(here, "no token_endpoint", how, key=True))
        ok = False
    if (
        flow == "authorization_code"
        and endpoints["authorization_endpoint"] is None
        and not issuer
        and mcp is None
    ):
        issues.append(
            doc.issue(
                here, "flow `authorization_code` needs an authorization_endpoint", how, key=True
            )
        )
        ok = False
    if flow == "device_code" and endpoints["device_authorization_endpoint"] is None and not issuer:
        hint = (
            f"preset `{preset_name}` has no device flow; use flow: authorization_code"
            if preset
            else "add device_authorization_endpoint, or an issuer for discovery"
        )
        issues.append(
            doc.issue(
                (*here, "flow"), "flow `device_code` needs a device_authorization_endpoint", hint
            )
        )
        ok = False
    rotation_grace = None
    if "rotation_grace" in entry:
        hint = "use a number and a unit s, m, h, d or w, e.g. 30s, 2m"
        where = (*here, "rotation_grace")
        rotation_grace = duration_at(doc, where, entry["rotation_grace"], issues, hint)
        ok = ok and rotation_grace is not None
    if not ok:
        return None

    scopes = entry["scopes"] if "scopes" in entry else preset.get("default_scopes") or ()
    extras = {
        key: fill(value) if isinstance(value, str) else value
        for key, value in (preset.get("extras") or {}).items()
    }
    return Provider(
        name=name,
        client_id=entry.get("client_id", ""),
        flow=flow,
        scopes=tuple(scopes),
        client_secret_ref=client_secret,
        preset=preset_name,
        issuer=issuer,
        authorization_endpoint=endpoints["authorization_endpoint"],
        token_endpoint=endpoints["token_endpoint"],
        device_authorization_endpoint=endpoints["device_authorization_endpoint"],
        revocation_endpoint=endpoints["revocation_endpoint"],
        token_endpoint_auth_method=method,
        scope_separator=entry.get("scope_separator", preset.get("scope_separator", " ")),
        pkce=entry.get("pkce", preset.get("pkce", True)),
        authorization_params=_merge_params(
            preset.get("authorization_params"), entry.get("authorization_params")
        ),
        token_params=_merge_params(preset.get("token_params"), entry.get("token_params")),
        redirect_uri=endpoints["redirect_uri"],
        quirks=tuple(preset.get("quirks") or ()),
        extras=extras,
        mcp=mcp,
        client_metadata_url=endpoints["client_metadata_url"],
        rotation_grace=rotation_grace,
        rotates_refresh_tokens=bool(
            entry.get("rotates_refresh_tokens", preset.get("rotates_refresh_tokens", True))
        ),
    )


def _merge_params(preset: Mapping | None, explicit: Mapping | None) -> dict[str, str]:
    """Preset parameters overridden by the entry's; an explicit null removes one."""
    merged: dict[str, str] = {k: _param_value(v) for k, v in (preset or {}).items()}
    for key, value in (explicit or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _param_value(value)
    return merged


def _param_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
