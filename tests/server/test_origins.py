"""The return_url allowlist: exact origins, nothing a browser could read differently."""

from __future__ import annotations

import contextlib
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.server.origins import (
    OriginError,
    check_return_url,
    normalise_origin,
    parse_origins,
    with_result,
)

ALLOWED = frozenset(
    parse_origins(["http://127.0.0.1:4000", "https://composer.example", "http://[::1]:5000"])
)


@pytest.mark.parametrize(
    "origin", ["http://127.0.0.1:4000", "HTTP://127.0.0.1:4000/", "  http://127.0.0.1:4000 "]
)
def test_normalise(origin):
    assert normalise_origin(origin) == "http://127.0.0.1:4000"


def test_default_ports_are_explicit():
    assert normalise_origin("https://composer.example") == "https://composer.example:443"
    assert normalise_origin("http://localhost") == "http://localhost:80"
    assert normalise_origin("http://[::1]:5000") == "http://[::1]:5000"


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:4000/path",
        "http://127.0.0.1:4000?x",
        "ftp://host",
        "http://",
        "http://u@host",
        "http://host:99999",
        "http://host:-1",
        "host:4000",
        "http://ho st",
        "http://[::1",
        "http://*.example.com",
    ],
)
def test_bad_allowed_origins(origin):
    with pytest.raises(OriginError):
        parse_origins([origin])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:4000",
        "http://127.0.0.1:4000/",
        "http://127.0.0.1:4000/a/b?c=d#e",
        "https://composer.example/x",
        "https://COMPOSER.example:443/x",
        "http://[::1]:5000/x",
    ],
)
def test_allowed(url):
    assert check_return_url(url, ALLOWED) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:4000.evil.com",
        "http://127.0.0.1:4000.evil.com/x",
        "http://user@127.0.0.1:4000/",
        "http://127.0.0.1:4000@evil.com/",
        "http://127.0.0.1@evil.com:4000/",
        "http://:@127.0.0.1:4000/",
        "http://127.0.0.1:4000\\@evil.com/",
        "http://127.0.0.1:4000\\.evil.com/",
        "http://127.0.0.1:4000%40evil.com/",
        "http://127.0.0.1%3a4000/",
        "https://composer.example.evil.com/",
        "https://evilcomposer.example/",
        "http://composer.example/",
        "https://composer.example:8443/",
        "http://127.0.0.1:/",
        "http://[::1/",
        "http://127.1:4000/",
        "http://0x7f.0.0.1:4000/",
        "http://[::ffff:127.0.0.1]:4000/",
        "http://[::1]:4000/",
        "http://localhost:4000/",
        "//127.0.0.1:4000/",
        "http:127.0.0.1:4000/",
        "http:/127.0.0.1:4000/",
        "http:///127.0.0.1:4000/",
        "javascript://127.0.0.1:4000/%0aalert(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "http://127.0.0.1:4000/\r\nSet-Cookie: x=1",
        "http://127.0.0.1:4000/\t",
        "http://127.0.0.1:4000/ä",
        "http://bücher.example/",
        "",
        "x" * 3000,
    ],
)
def test_refused(url):
    with pytest.raises(OriginError):
        check_return_url(url, ALLOWED)


def test_port_with_leading_zero_is_not_a_different_origin_trick():
    # "04000" is port 4000 to a browser; the parser agrees or refuses, never confuses.
    with contextlib.suppress(OriginError):
        assert check_return_url("http://127.0.0.1:04000/", ALLOWED)


@given(st.text(max_size=80))
def test_anything_accepted_is_on_an_allowed_origin(suffix):
    for prefix in ("http://127.0.0.1:4000", "http://127.0.0.1:4000/", "https://composer.example"):
        url = prefix + suffix
        try:
            check_return_url(url, ALLOWED)
        except OriginError:
            continue
        parts = urlsplit(url)
        assert parts.username is None and parts.password is None
        origin = f"{parts.scheme.lower()}://{parts.hostname}:{parts.port or 443}"
        if parts.hostname and ":" in parts.hostname:
            origin = f"{parts.scheme.lower()}://[{parts.hostname}]:{parts.port}"
        assert normalise_origin(origin) in ALLOWED, url


def test_with_result_replaces_our_parameters_only():
    url = "https://composer.example/done?tab=x&oauth_status=ok&entry_id=evil#frag"
    result = with_result(url, [("oauth_status", "error"), ("oauth_error", "a&b=c")])
    parts = urlsplit(result)
    assert parts.fragment == "frag" and parts.netloc == "composer.example"
    assert parse_qsl(parts.query) == [
        ("tab", "x"),
        ("oauth_status", "error"),
        ("oauth_error", "a&b=c"),
    ]
