"""The OAuth 2.0 protocol, on Authlib and httpx2, one module per concern.

- ``authorize``: the authorization request with PKCE S256 and its answer (RFC 6749 §4.1, RFC
  7636, RFC 9207), and the paste fallback;
- ``loopback``: the loopback redirect server that receives the answer for the CLI (RFC 8252);
- ``device``: device authorization grant (RFC 8628);
- ``tokens``: code exchange, refresh, client credentials, token response validation, and
  ``grant_from_result`` to build a ``model.Grant``;
- ``revocation``: token revocation (RFC 7009);
- ``discovery``: RFC 8414 / OpenID metadata with an on-disk cache;
- ``quirks``: named provider hooks selected by ``Provider.quirks``;
- ``errors``: ``OAuthError`` and its subclasses.

Nothing is imported here so that ``import reconciler.oauth.tokens`` stays cheap.
"""
