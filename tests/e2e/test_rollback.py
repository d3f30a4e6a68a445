"""Rollback: an older, valid grant file put back (a `git checkout`, a revert, a bad merge).
Its refresh token may already be rotated away; presenting it again makes a provider that
detects reuse revoke the grant. This machine remembers the newest version it has seen and
refuses to refresh from an older one unless `--force`. Against the real test authorization
server, which rotates refresh tokens."""

from __future__ import annotations

import time


def test_an_older_grant_file_put_back_is_not_refreshed_without_force(e2e):
    client = e2e.auth.add_client("rot-app", "rot-secret-0123456789")
    e2e.declare("rot", client)
    e2e.write_config()
    e2e.auth.token_lifetime = 1  # the linked access token is due at once
    assert e2e.run("link", "rot").code == 0
    e2e.auth.token_lifetime = 3600
    path = e2e.grant_file("rot")
    committed = path.read_bytes()
    time.sleep(1.1)  # file versions are sops' `lastmodified`, to the second

    assert e2e.run("token", "rot").code == 0  # rotates: a newer file, remembered
    newest = path.read_bytes()
    assert newest != committed and e2e.token_calls("refresh_token") == 1

    path.write_bytes(committed)  # e.g. `git checkout HEAD -- secrets/rot.sops.yaml`
    for args in (("token", "rot"), ("apply",)):
        ran = e2e.run(*args)
        assert ran.code == 1, ran
        message = " ".join(ran.stderr.split())
        assert str(path) in message and "older grant file was put back" in message, ran
        assert "--force" in message and "Traceback" not in message
        assert e2e.token_calls("refresh_token") == 1  # the old refresh token was not presented
        assert path.read_bytes() == committed

    path.write_bytes(newest)  # restoring the newest version is all it takes
    assert e2e.run("token", "rot").code == 0
    assert e2e.token_calls("refresh_token") == 1

    path.write_bytes(committed)
    forced = e2e.run("token", "rot", "--force")  # presented: the provider saw a reused token
    assert e2e.token_calls("refresh_token") == 2
    assert forced.code == 1 and "rot needs to be linked again" in forced.stderr, forced
