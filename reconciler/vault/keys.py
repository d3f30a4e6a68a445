"""Age identities and recipients, found where sops finds them, and ``.sops.yaml`` rules.

Identity lookup follows sops 3.x (``age/keysource.go``): every source that is present is
used, in this order, and their identities are combined:

1. ``$SOPS_AGE_KEY``: one or more identities, one per line;
2. the file named by ``$SOPS_AGE_KEY_FILE``;
3. the output of ``$SOPS_AGE_KEY_CMD``;
4. ``$XDG_CONFIG_HOME/sops/age/keys.txt`` (``~/.config/sops/age/keys.txt``);
5. SSH keys: ``$SOPS_AGE_SSH_PRIVATE_KEY_FILE``, ``~/.ssh/id_ed25519``, ``~/.ssh/id_rsa``
   (passphrase-protected ones are skipped: reconcile never prompts).

Empty lines and ``#`` comment lines are ignored. Errors never echo a key line.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import MalformedError, NoIdentityError

SOPS_AGE_KEY = "SOPS_AGE_KEY"
SOPS_AGE_KEY_FILE = "SOPS_AGE_KEY_FILE"
SOPS_AGE_KEY_CMD = "SOPS_AGE_KEY_CMD"
SOPS_AGE_SSH_PRIVATE_KEY_FILE = "SOPS_AGE_SSH_PRIVATE_KEY_FILE"
KEYS_TXT = Path("sops") / "age" / "keys.txt"
SOPS_CONFIG_NAME = ".sops.yaml"
#: sops searches this many folders upward for ``.sops.yaml``.
MAX_CONFIG_DEPTH = 100


# ---------------------------------------------------------------------------------------
# Identities.


@dataclass
class IdentityReport:
    """What a lookup found: the identities, and where it looked (for messages)."""

    identities: list[Any] = field(default_factory=list)
    #: location -> number of identities found there
    found: dict[str, int] = field(default_factory=dict)
    #: locations that were not set or did not exist
    unused: list[str] = field(default_factory=list)
    #: problems met while reading a location (never contain key material)
    errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        looked = ", ".join([*self.found, *self.unused])
        text = f"looked in {looked}" if looked else "looked nowhere"
        if self.errors:
            text += "; problems: " + "; ".join(self.errors)
        return text


def parse_identities(text: str, source: str = "identity") -> list[Any]:
    """Parse age identities, one per line (``AGE-SECRET-KEY-1...``); skip empty lines and
    ``#`` comments. Raises ValueError naming the source and line number, never the line."""
    import pyrage

    identities = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("AGE-PLUGIN-"):
            raise ValueError(f"{source}: line {number} is an age plugin identity (unsupported)")
        if not line.upper().startswith("AGE-SECRET-KEY-1"):
            raise ValueError(f"{source}: line {number} is not an age identity")
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise ValueError(f"{source}: line {number} is not a valid age identity") from None
    return identities


def _ssh_identity(path: Path) -> Any:
    import pyrage

    return pyrage.ssh.Identity.from_buffer(path.read_bytes())


def user_config_dir(environ: Mapping[str, str]) -> Path | None:
    """Go's os.UserConfigDir on Unix: $XDG_CONFIG_HOME (absolute) else $HOME/.config."""
    xdg = environ.get("XDG_CONFIG_HOME", "")
    if xdg:
        return Path(xdg) if os.path.isabs(xdg) else None
    home = environ.get("HOME", "")
    return Path(home) / ".config" if home else None


def default_keys_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """``$XDG_CONFIG_HOME/sops/age/keys.txt`` (``~/.config/sops/age/keys.txt``)."""
    base = user_config_dir(os.environ if environ is None else environ)
    return base / KEYS_TXT if base is not None else None


def find_identities(environ: Mapping[str, str] | None = None) -> IdentityReport:
    """Every age identity sops would use, with a report of where it looked."""
    environ = os.environ if environ is None else environ
    report = IdentityReport()

    def add(location: str, read: Any) -> None:
        try:
            ids = read()
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            report.errors.append(_describe_error(location, error))
            return
        report.found[location] = len(ids)
        report.identities.extend(ids)

    if SOPS_AGE_KEY in environ:
        add(f"${SOPS_AGE_KEY}", lambda: parse_identities(environ[SOPS_AGE_KEY], SOPS_AGE_KEY))
    else:
        report.unused.append(f"${SOPS_AGE_KEY}")

    if SOPS_AGE_KEY_FILE in environ:
        key_file = Path(environ[SOPS_AGE_KEY_FILE]).expanduser()
        add(str(key_file), lambda: parse_identities(key_file.read_text(), str(key_file)))
    else:
        report.unused.append(f"${SOPS_AGE_KEY_FILE}")

    if SOPS_AGE_KEY_CMD in environ:
        command = environ[SOPS_AGE_KEY_CMD]
        add(f"${SOPS_AGE_KEY_CMD}", lambda: parse_identities(_run(command), SOPS_AGE_KEY_CMD))
    else:
        report.unused.append(f"${SOPS_AGE_KEY_CMD}")

    keys_txt = default_keys_file(environ)
    if keys_txt is not None:
        if keys_txt.exists():
            add(str(keys_txt), lambda: parse_identities(keys_txt.read_text(), str(keys_txt)))
        else:
            report.unused.append(str(keys_txt))

    _find_ssh_identities(environ, report)
    return report


def _find_ssh_identities(environ: Mapping[str, str], report: IdentityReport) -> None:
    candidates: list[Path] = []
    if SOPS_AGE_SSH_PRIVATE_KEY_FILE in environ:
        candidates.append(Path(environ[SOPS_AGE_SSH_PRIVATE_KEY_FILE]).expanduser())
    home = environ.get("HOME", "")
    if home:
        candidates += [Path(home) / ".ssh" / "id_ed25519", Path(home) / ".ssh" / "id_rsa"]
    for path in candidates:
        if not path.exists():
            continue
        try:
            identity = _ssh_identity(path)
        except Exception:
            # Passphrase-protected or unsupported: sops would prompt; we skip it quietly.
            report.errors.append(f"{path}: not usable as an age identity (passphrase?)")
            continue
        report.found[str(path)] = 1
        report.identities.append(identity)


def _run(command: str) -> str:
    args = shlex.split(command)
    if not args:
        raise ValueError("empty command")
    done = subprocess.run(args, capture_output=True, timeout=60, check=True)
    return done.stdout.decode()


def _describe_error(location: str, error: BaseException) -> str:
    if isinstance(error, FileNotFoundError):
        return f"{location}: no such file"
    if isinstance(error, PermissionError):
        return f"{location}: permission denied"
    if isinstance(error, subprocess.CalledProcessError):
        return f"{location}: the command failed with exit code {error.returncode}"
    if isinstance(error, OSError):
        return f"{location}: {error.strerror or type(error).__name__}"
    # ValueError messages from parse_identities name the source and line, not the key.
    return str(error) if isinstance(error, ValueError) else f"{location}: {type(error).__name__}"


def load_identities(environ: Mapping[str, str] | None = None, *, required: bool = False) -> list:
    """The age identities sops would use (possibly none). With ``required``, raise
    NoIdentityError, saying where sops looks, when there are none."""
    report = find_identities(environ)
    if required and not report.identities:
        raise NoIdentityError(no_identity_message(report))
    return report.identities


def no_identity_message(report: IdentityReport | None = None, subject: str = "") -> str:
    where = f"{subject}: " if subject else ""
    detail = f" (reconcile {report.describe()})" if report is not None else ""
    return (
        f"{where}no age identity found{detail}. Like sops, reconcile reads $SOPS_AGE_KEY, "
        "$SOPS_AGE_KEY_FILE, $SOPS_AGE_KEY_CMD, then $XDG_CONFIG_HOME/sops/age/keys.txt "
        "(default ~/.config/sops/age/keys.txt). Point SOPS_AGE_KEY_FILE at your key file, or "
        "run `reconcile init` to create one."
    )


def normalize_identities(identities: Iterable[Any]) -> list[Any]:
    """Accept pyrage identities or ``AGE-SECRET-KEY-1...`` strings; return pyrage objects."""
    out: list[Any] = []
    for identity in identities:
        if isinstance(identity, str):
            out.extend(parse_identities(identity, "identity"))
        else:
            out.append(identity)
    return out


def identity_recipients(identities: Iterable[Any]) -> frozenset[str]:
    """The age recipients (public keys) of the X25519 identities among ``identities``."""
    out = set()
    for identity in identities:
        to_public = getattr(identity, "to_public", None)
        if to_public is not None:
            out.add(str(to_public()))
    return frozenset(out)


def generate_identity(path: Path) -> str:
    """Create an age identity file at ``path`` (mode 0600, age-keygen's format) and return
    its recipient. Refuses to overwrite an existing file."""
    import pyrage

    from .files import atomic_write

    path = Path(path).expanduser()
    if path.exists():
        raise FileExistsError(f"{path} already exists; not overwriting an identity file")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    created = datetime.now().astimezone().replace(microsecond=0).isoformat()
    if created.endswith("+00:00"):
        created = created[:-6] + "Z"
    text = f"# created: {created}\n# public key: {recipient}\n{identity}\n"
    atomic_write(path, text.encode(), mode=0o600, overwrite=False)
    return recipient


# ---------------------------------------------------------------------------------------
# Recipients.

_AGE_RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]+\Z")


def parse_recipient(text: str) -> Any:
    """A pyrage recipient for an age X25519 (``age1...``) or SSH (``ssh-ed25519 ...``,
    ``ssh-rsa ...``) public key. Raises ValueError for anything else."""
    import pyrage

    text = text.strip()
    if text.startswith("age1"):
        if text.count("1") > 1 and not _AGE_RECIPIENT.match(text):
            raise ValueError(f"{text!r} looks like an age plugin recipient, which is unsupported")
        try:
            return pyrage.x25519.Recipient.from_str(text)
        except pyrage.RecipientError:
            raise ValueError(f"{text!r} is not a valid age recipient") from None
    if text.startswith("ssh-"):
        try:
            return pyrage.ssh.Recipient.from_str(text)
        except pyrage.RecipientError:
            raise ValueError(f"{text!r} is not a valid SSH public key for age") from None
    raise ValueError(f"{text!r} is not an age recipient (age1...) nor an SSH public key")


def split_recipients(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """sops' reading of an ``age:`` value: a comma-separated string or a list of them;
    items are trimmed, empty ones dropped, duplicates removed (order kept)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected a recipient string, got {type(item).__name__}")
        for part in item.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return tuple(out)


def validate_recipients(recipients: Iterable[str]) -> tuple[str, ...]:
    """Check every recipient parses; return them trimmed. Raises ValueError."""
    out = tuple(r.strip() for r in recipients)
    for recipient in out:
        parse_recipient(recipient)
    return out


# ---------------------------------------------------------------------------------------
# .sops.yaml


@dataclass(frozen=True)
class CreationRule:
    """The ``.sops.yaml`` creation rule that applies to a file."""

    config_path: Path
    index: int
    path_regex: str
    recipients: tuple[str, ...]
    #: Other key types the rule names (pgp, kms, ...), which reconcile cannot write to.
    other_keys: tuple[str, ...] = ()
    encrypted_regex: str = ""


def find_sops_config(start: Path) -> Path | None:
    """The nearest ``.sops.yaml`` in ``start`` or a parent folder (sops searches up to 100
    levels; ``.sops.yml`` is not used, as in sops)."""
    folder = Path(os.path.abspath(start))
    for _ in range(MAX_CONFIG_DEPTH):
        candidate = folder / SOPS_CONFIG_NAME
        if candidate.is_file():
            return candidate
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def _config_error(config: Path, what: str) -> MalformedError:
    return MalformedError(
        f"{config}: {what}. Fix .sops.yaml (see https://getsops.io/docs/ creation_rules), or "
        "list the recipients under `store.recipients` in providers.yaml.",
        config,
    )


def creation_rule_for(file_path: Path, config: Path | None = None) -> CreationRule | None:
    """The first creation rule of ``config`` (default: the nearest ``.sops.yaml`` above the
    file's folder) whose ``path_regex`` matches ``file_path``, as sops matches it: against
    the path relative to the config's folder when the file is below it, else the absolute
    path; ``re.search`` semantics; a rule without ``path_regex`` matches everything.
    None when there is no config or no rule matches."""
    import yaml

    file_abs = os.path.abspath(file_path)
    if config is None:
        config = find_sops_config(Path(file_abs).parent)
        if config is None:
            return None
    try:
        loaded = yaml.load(
            Path(config).read_bytes(), Loader=getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
        )
    except yaml.YAMLError:
        raise _config_error(config, "is not valid YAML") from None
    if not isinstance(loaded, dict):
        return None
    rules = loaded.get("creation_rules")
    if rules is None:
        return None
    if not isinstance(rules, list):
        raise _config_error(config, "creation_rules is not a list")
    config_dir = os.path.abspath(os.path.dirname(config))
    relative = file_abs
    if relative.startswith(config_dir + os.sep):
        relative = relative[len(config_dir) + 1 :]
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise _config_error(config, f"creation_rules[{index}] is not a mapping")
        pattern = rule.get("path_regex") or ""
        if pattern:
            if not isinstance(pattern, str):
                raise _config_error(config, f"creation_rules[{index}].path_regex is not a string")
            try:
                matched = re.search(pattern.replace(r"\z", r"\Z"), relative)
            except re.error:
                raise _config_error(
                    config, f"creation_rules[{index}].path_regex is not a valid regex"
                ) from None
            if not matched:
                continue
        return _rule(Path(config), index, pattern, rule)
    return None


_RULE_OTHER_KEYS = ("pgp", "kms", "gcp_kms", "azure_keyvault", "hc_vault_transit_uri")
_GROUP_OTHER_KEYS = ("pgp", "kms", "gcp_kms", "azure_keyvault", "hc_vault")


def _rule(config: Path, index: int, pattern: str, rule: dict) -> CreationRule:
    where = f"creation_rules[{index}]"
    try:
        groups = rule.get("key_groups")
        if groups:
            if not isinstance(groups, list):
                raise ValueError("key_groups is not a list")
            if len(groups) > 1:
                raise ValueError(
                    "key_groups has several groups (Shamir secret sharing), which reconcile "
                    "does not support"
                )
            recipients, other = _group_keys(groups[0])
        else:
            recipients = split_recipients(rule.get("age"))
            other = tuple(k for k in _RULE_OTHER_KEYS if rule.get(k))
        validate_recipients(recipients)
    except ValueError as error:
        raise _config_error(config, f"{where}: {error}") from None
    regex = rule.get("encrypted_regex")
    return CreationRule(
        config_path=config,
        index=index,
        path_regex=pattern,
        recipients=recipients,
        other_keys=other,
        encrypted_regex=regex if isinstance(regex, str) else "",
    )


def _group_keys(group: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(group, dict):
        raise ValueError("a key group is not a mapping")
    recipients: list[str] = []
    other: list[str] = []
    for sub in group.get("merge") or ():
        sub_recipients, sub_other = _group_keys(sub)
        recipients += sub_recipients
        other += sub_other
    age = group.get("age") or ()
    if isinstance(age, str):
        raise ValueError("a key group's age must be a list")
    recipients += split_recipients(age)
    other += [k for k in _GROUP_OTHER_KEYS if group.get(k)]
    return tuple(dict.fromkeys(recipients)), tuple(dict.fromkeys(other))


def rule_recipients(file_path: Path, config: Path | None = None) -> tuple[str, ...] | None:
    """The age recipients of the creation rule for ``file_path``; None if no rule applies."""
    rule = creation_rule_for(file_path, config)
    return None if rule is None else rule.recipients


__all__ = [
    "CreationRule",
    "IdentityReport",
    "creation_rule_for",
    "default_keys_file",
    "find_identities",
    "find_sops_config",
    "generate_identity",
    "identity_recipients",
    "load_identities",
    "normalize_identities",
    "parse_identities",
    "parse_recipient",
    "rule_recipients",
    "split_recipients",
    "validate_recipients",
]
