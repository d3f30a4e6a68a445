"""Age identities and recipients, found where sops finds them.

Identity lookup follows sops 3.x (``age/keysource.go``): every source that is present is
used, in this order, and their identities are combined:

1. ``$SOPS_AGE_KEY``: one or more identities, one per line;
2. the file named by ``$SOPS_AGE_KEY_FILE``;
3. the output of ``$SOPS_AGE_KEY_CMD``;
4. ``$XDG_CONFIG_HOME/sops/age/keys.txt`` (``~/.config/sops/age/keys.txt``);
5. SSH keys: ``$SOPS_AGE_SSH_PRIVATE_KEY_FILE``, ``~/.ssh/id_ed25519``, ``~/.ssh/id_rsa``
   (passphrase-protected ones are skipped: reconcile never prompts).

Empty lines and ``#`` comment lines are ignored. Errors never echo a key line.

The lookup imports nothing beyond ``os`` and pyrage (paths are strings here): it is on the
token fast path, where ``pathlib`` or ``re`` alone would cost more than the whole read.
"""

from __future__ import annotations

import os

import pyrage

TYPE_CHECKING = False  # not typing's: see reconciler.cli
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from pathlib import Path
    from typing import TypeAlias

    #: An age identity as pyrage gives it: X25519 (from key files) or SSH (ed25519, RSA).
    Identity: TypeAlias = "pyrage.x25519.Identity | pyrage.ssh.Identity"
    #: The identities a read may decrypt with, as every reader takes them.
    Identities: TypeAlias = Sequence[Identity]

SOPS_AGE_KEY = "SOPS_AGE_KEY"
SOPS_AGE_KEY_FILE = "SOPS_AGE_KEY_FILE"
SOPS_AGE_KEY_CMD = "SOPS_AGE_KEY_CMD"
SOPS_AGE_SSH_PRIVATE_KEY_FILE = "SOPS_AGE_SSH_PRIVATE_KEY_FILE"
KEYS_TXT = os.path.join("sops", "age", "keys.txt")


# ---------------------------------------------------------------------------------------
# Identities.


class IdentityReport:
    """What a lookup found: the identities, and where it looked (for messages)."""

    def __init__(self) -> None:
        self.identities: list[Identity] = []
        #: location -> number of identities found there
        self.found: dict[str, int] = {}
        #: locations that were not set or did not exist
        self.unused: list[str] = []
        #: problems met while reading a location (never contain key material)
        self.errors: list[str] = []
        #: identity lines of kinds reconcile cannot use, which were skipped
        self.skipped: list[str] = []

    def describe(self) -> str:
        looked = ", ".join([*self.found, *self.unused])
        text = f"looked in {looked}" if looked else "looked nowhere"
        if self.errors:
            text += "; problems: " + "; ".join(self.errors)
        if self.skipped:
            text += "; skipped: " + "; ".join(self.skipped)
        return text


def parse_identities(text: str, source: str = "identity") -> list[Identity]:
    """Parse age identities, one per line (``AGE-SECRET-KEY-1...``); skip empty lines, ``#``
    comments and identities of other kinds (see ``read_identities``). Raises ValueError
    naming the source and line number, never the line."""
    return read_identities(text, source)[0]


def read_identities(text: str, source: str = "identity") -> tuple[list[Identity], list[str]]:
    """The X25519 identities in ``text``, and a note for each identity line of a kind
    reconcile cannot use (post-quantum ``AGE-SECRET-KEY-PQ-1...``, age plugins): such a line
    is skipped, so that the same key file serves sops and reconcile. Anything else that is
    not an identity raises ValueError (as in sops)."""
    identities: list[Identity] = []
    skipped = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        upper = line.upper()
        if not upper.startswith("AGE-SECRET-KEY-1"):
            kind = _other_identity_kind(upper)
            if kind is None:
                raise ValueError(f"{source}: line {number} is not an age identity")
            skipped.append(f"{source}: line {number} is an {kind}, which reconcile cannot use")
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise ValueError(f"{source}: line {number} is not a valid age identity") from None
    return identities, skipped


def _other_identity_kind(line: str) -> str | None:
    """What kind of age identity an upper-cased line other than X25519 is, if it is one:
    ``AGE-PLUGIN-<NAME>-1<data>`` or ``AGE-SECRET-KEY-<KIND>-1<data>`` (bech32)."""
    for prefix, what in (("AGE-PLUGIN-", "age plugin identity"), ("AGE-SECRET-KEY-", "")):
        if not line.startswith(prefix):
            continue
        kind, sep, data = line[len(prefix) :].rpartition("1")
        if not (sep and kind.endswith("-") and len(kind) > 1 and data):
            return None
        if not set(data.lower()) <= _BECH32:
            return None
        if what:
            return f"{what} ({kind[:-1]})"
        label = "post-quantum identity" if kind == "PQ-" else "identity"
        return f"age {label} (AGE-SECRET-KEY-{kind}1...)"
    return None


def _ssh_identity(path: str) -> Identity:
    with open(path, "rb") as file:
        return pyrage.ssh.Identity.from_buffer(file.read())


def user_config_dir(environ: Mapping[str, str]) -> str | None:
    """Go's os.UserConfigDir on Unix: $XDG_CONFIG_HOME (absolute) else $HOME/.config."""
    xdg = environ.get("XDG_CONFIG_HOME", "")
    if xdg:
        return xdg if os.path.isabs(xdg) else None
    home = environ.get("HOME", "")
    return os.path.join(home, ".config") if home else None


def default_keys_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """``$XDG_CONFIG_HOME/sops/age/keys.txt`` (``~/.config/sops/age/keys.txt``)."""
    from pathlib import Path  # this module loads alone on the token fast path, which uses str

    found = _keys_txt(os.environ if environ is None else environ)
    return Path(found) if found is not None else None


def _keys_txt(environ: Mapping[str, str]) -> str | None:
    base = user_config_dir(environ)
    return os.path.join(base, KEYS_TXT) if base is not None else None


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


def find_identities(
    environ: Mapping[str, str] | None = None, *, ssh: bool = True
) -> IdentityReport:
    """Every age identity sops would use, with a report of where it looked. ``ssh=False``
    skips the SSH keys (for reading what was encrypted to X25519 recipients only)."""
    environ = os.environ if environ is None else environ
    report = IdentityReport()

    def add(location: str, read: Callable[[], tuple[list[Identity], list[str]]]) -> None:
        try:
            ids, skipped = read()
        except (OSError, ValueError) as error:
            report.errors.append(_describe_error(location, error))
            return
        report.found[location] = len(ids)
        report.identities.extend(ids)
        report.skipped.extend(skipped)

    if SOPS_AGE_KEY in environ:
        add(f"${SOPS_AGE_KEY}", lambda: read_identities(environ[SOPS_AGE_KEY], SOPS_AGE_KEY))
    else:
        report.unused.append(f"${SOPS_AGE_KEY}")

    if SOPS_AGE_KEY_FILE in environ:
        key_file = os.path.expanduser(environ[SOPS_AGE_KEY_FILE])
        add(key_file, lambda: read_identities(_read_text(key_file), key_file))
    else:
        report.unused.append(f"${SOPS_AGE_KEY_FILE}")

    if SOPS_AGE_KEY_CMD in environ:
        command = environ[SOPS_AGE_KEY_CMD]
        add(f"${SOPS_AGE_KEY_CMD}", lambda: read_identities(_run(command), SOPS_AGE_KEY_CMD))
    else:
        report.unused.append(f"${SOPS_AGE_KEY_CMD}")

    keys_txt = _keys_txt(environ)
    if keys_txt is not None:
        if os.path.exists(keys_txt):
            add(keys_txt, lambda: read_identities(_read_text(keys_txt), keys_txt))
        else:
            report.unused.append(keys_txt)

    if ssh:
        _find_ssh_identities(environ, report)
    return report


def _find_ssh_identities(environ: Mapping[str, str], report: IdentityReport) -> None:
    candidates: list[str] = []
    if SOPS_AGE_SSH_PRIVATE_KEY_FILE in environ:
        candidates.append(os.path.expanduser(environ[SOPS_AGE_SSH_PRIVATE_KEY_FILE]))
    home = environ.get("HOME", "")
    if home:
        candidates += [os.path.join(home, ".ssh", key) for key in ("id_ed25519", "id_rsa")]
    for path in candidates:
        if not os.path.exists(path):
            continue
        try:
            identity = _ssh_identity(path)
        except Exception:
            # Passphrase-protected or unsupported: sops would prompt; we skip it quietly.
            report.errors.append(f"{path}: not usable as an age identity (passphrase?)")
            continue
        report.found[path] = 1
        report.identities.append(identity)


class _CommandFailed(ValueError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _run(command: str) -> str:
    """The output of ``$SOPS_AGE_KEY_CMD`` (its modules are loaded only when one is set)."""
    import shlex  # these two (~5 ms) only for a key command (SOPS_AGE_KEY_CMD),
    import subprocess  # never on the cached read

    args = shlex.split(command)
    if not args:
        raise ValueError("empty command")
    try:
        done = subprocess.run(args, capture_output=True, timeout=60, check=True)
    except subprocess.CalledProcessError as error:
        raise _CommandFailed(f"the command failed with exit code {error.returncode}") from None
    except subprocess.SubprocessError as error:
        raise _CommandFailed(f"the command failed ({type(error).__name__})") from None
    return done.stdout.decode()


def _describe_error(location: str, error: BaseException) -> str:
    if isinstance(error, FileNotFoundError):
        return f"{location}: no such file"
    if isinstance(error, PermissionError):
        return f"{location}: permission denied"
    if isinstance(error, _CommandFailed):
        return f"{location}: {error.detail}"
    if isinstance(error, OSError):
        return f"{location}: {error.strerror or type(error).__name__}"
    # ValueError messages from parse_identities name the source and line, not the key.
    return str(error) if isinstance(error, ValueError) else f"{location}: {type(error).__name__}"


def load_identities(
    environ: Mapping[str, str] | None = None, *, required: bool = False, ssh: bool = True
) -> list[Identity]:
    """The age identities sops would use (possibly none). With ``required``, raise
    NoIdentityError, saying where sops looks, when there are none. ``ssh`` as for
    ``find_identities``."""
    report = find_identities(environ, ssh=ssh)
    if required and not report.identities:
        from ..errors import NoIdentityError  # keys loads alone on the token fast path

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


def normalize_identities(identities: Iterable[Identity | str]) -> list[Identity]:
    """Accept pyrage identities or ``AGE-SECRET-KEY-1...`` strings; return pyrage objects."""
    out: list[Identity] = []
    for identity in identities:
        if isinstance(identity, str):
            out.extend(parse_identities(identity, "identity"))
        else:
            out.append(identity)
    return out


def identity_recipients(identities: Iterable[object]) -> frozenset[str]:
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
    from datetime import datetime  # these three only to create a key: keys loads alone on
    from pathlib import Path  # the token fast path

    from ..files import atomic_write  # keys loads alone on the token fast path

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

#: The bech32 alphabet: an X25519 recipient is ``age1`` and these only.
_BECH32 = frozenset("qpzry9x8gf2tvdw0s3jn54khce6mua7l")


def parse_recipient(text: str) -> object:
    """A pyrage recipient for an age X25519 (``age1...``) or SSH (``ssh-ed25519 ...``,
    ``ssh-rsa ...``) public key. Raises ValueError for anything else."""
    text = text.strip()
    if text.startswith("age1"):
        if text.count("1") > 1 and not set(text[4:]) <= _BECH32:
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


__all__ = [
    "IdentityReport",
    "default_keys_file",
    "find_identities",
    "generate_identity",
    "identity_recipients",
    "load_identities",
    "normalize_identities",
    "parse_identities",
    "parse_recipient",
    "read_identities",
    "split_recipients",
    "validate_recipients",
]
