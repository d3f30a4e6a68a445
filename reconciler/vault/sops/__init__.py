"""The SOPS file format, as a library (as sops keeps ``stores/``, ``aes/`` and ``age/`` apart):

- ``document``: load and encode a whole SOPS YAML document (decrypt, verify the MAC, encrypt);
- ``syntax`` and ``scalars``: YAML composition and scalar typing as sops (yaml.v3) does it;
- ``cipher``: AES-256-GCM of one value; ``datakey``: the data key and its age/Shamir entries;
- ``metadata``: the ``sops:`` block and the MAC; ``rules``: ``.sops.yaml`` creation rules;
- ``keys``: age and ssh recipients and identities, found the way sops finds them;
- ``shamir``: recombining a data key split among key groups.

Nothing is imported here: ``reconcile token``'s fast path loads ``keys`` alone.

May import: ``model``, ``secret``, and ``vault.errors`` / ``vault.files``.
"""
