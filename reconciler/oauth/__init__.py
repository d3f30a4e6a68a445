"""The OAuth 2.0 protocol, on Authlib and httpx2, one module per concern.

- ``authorize``: authorization code + PKCE S256 through a loopback redirect (RFC 6749, 7636,
  8252, 9207), and the paste fallback;
- ``device``: device authorization grant (RFC 8628);
- ``tokens``: code exchange, refresh, client credentials, token response validation, and
  ``grant_from_result`` to build a ``model.Grant``;
- ``revocation``: token revocation (RFC 7009);
- ``discovery``: RFC 8414 / OpenID metadata with an on-disk cache;
- ``quirks``: named provider hooks selected by ``Provider.quirks``;
- ``errors``: ``OAuthError`` and its subclasses.

Nothing is imported here so that ``import reconciler.oauth.tokens`` stays cheap.
"""
