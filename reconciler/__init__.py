"""oauth-reconciler: outgoing OAuth grants and API keys, declared in ``providers.yaml`` and
kept as SOPS/age-encrypted grant files. Layers, bottom first (a module imports only its own
layer and those below; see the README's layout):

0 values      ``errors``, ``model``, ``secret``, ``catalog/``
1 stages      ``config/``, ``plan/``, ``vault/``, ``oauth/``
2 custody     ``custody/``
3 apply       ``apply/``
4 the door    ``operations/``
5 faces       ``cli``, ``entry``, ``watch/``, ``server/``, ``runtime/``, ``execenv``
"""
