"""`reconcile serve`: the local HTTP link and secret surface (SPEC §5).

One concern per module, starlette and uvicorn imported only here (never by other faces):

- ``gates``: the local gate (loopback peer, ``Host`` allowlist, bearer local secret) and the
  control-plane gate (``x-control-plane-secret``), plus where the local secret comes from;
- ``origins``: the ``return_url`` allowlist (exact scheme + host + port);
- ``pending``: link attempts and device flows in flight (expiry, single use, browser binding);
- ``service``: the operations behind the routes, shared by ``/v1`` and ``/internal``;
- ``app``: the starlette application (routes, JSON bodies, errors, headers);
- ``run``: bind the socket, build the app, run uvicorn (what ``cli.cmd_serve`` calls);
- ``protocol``: uvicorn's HTTP protocol with a deadline on reading a request's head.

A face: it may import ``operations`` (the door), ``model``, ``errors``, ``secret``; and, for
no logic of theirs, ``oauth.endpoints`` (the callback path and loopback hosts) and
``vault.files`` (writing its own local-secret file atomically).
"""
