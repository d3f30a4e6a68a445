"""What a person sees during a device flow (RFC 8628 §3.3): the code, where to enter it, and a
countdown to its expiry. A browser is a convenience: when none opens, the lines shown are
enough to finish the link from any other device."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

TYPE_CHECKING = False  # see reconciler.cli
if TYPE_CHECKING:
    from ..oauth.device import DeviceAuthorization


class DevicePrompt:
    """``announce`` and ``waiting`` for ``oauth.device.run_device_flow``, showing lines through
    ``show`` and opening the verification page through ``open`` (None: do not open)."""

    def __init__(
        self, name: str, show: Callable[[str], None], open: Callable[[str], None] | None
    ) -> None:
        self.name = name
        self.show = show
        self.open = open
        self._minutes: int | None = None

    def announce(self, authorization: DeviceAuthorization) -> None:
        name = self.name
        self.show(
            f"{name}: open {authorization.verification_uri} and enter the code "
            f"{authorization.user_code}"
        )
        complete = authorization.verification_uri_complete
        if complete:
            self.show(f"{name}: or open {complete} (the code is filled in)")
        self._minutes = None
        self.waiting(authorization.expires_in)
        if self.open is not None:
            # A console browser blocks until it exits: polling must not wait for it.
            threading.Thread(
                target=self._open, args=(complete or authorization.verification_uri,), daemon=True
            ).start()

    def waiting(self, seconds_left: float) -> None:
        """Show the time left once per minute (and once when under a minute is left)."""
        minutes = math.ceil(seconds_left / 60) if seconds_left > 60 else 0
        if minutes == self._minutes:
            return
        self._minutes = minutes
        left = f"{minutes} min" if minutes else "less than a minute"
        self.show(f"{self.name}: waiting for approval; the code expires in {left}")

    def _open(self, url: str) -> None:
        assert self.open is not None
        try:
            self.open(url)
        except Exception:  # no usable browser: the lines above are enough
            self.show(f"{self.name}: no browser could be opened; use the address above instead")
