"""What grant names and endpoint URLs may look like (the schema's patterns, for Python)."""

from __future__ import annotations

import re

#: A provider or secret name: it becomes the grant file's name.
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
URL = re.compile(
    r"(?:https://[^\s/?#@]+|http://(?:127\.0\.0\.1|\[::1\]|localhost))"
    r"(?::[0-9]{1,5})?(?:[/?#]\S*)?"
)
URL_HINT = "endpoints must use https://; http:// only on 127.0.0.1, [::1] or localhost"
