"""Grant state on this machine's disk: ``store`` (one SOPS grant file per grant: read, scan,
write, delete), ``cache`` (the age-encrypted token cache and the rollback memory outside the
repository), ``files`` (atomic, durable writes and the file lock), ``fingerprint`` (which
version of a file is on disk), ``errors``, over the format library ``vault/sops/``.

Writers of grant state go through ``custody``; nothing is imported here, so that the fast
path of ``reconcile token`` loads ``cache`` and ``sops.keys`` alone.

May import: ``model``, ``secret``, ``errors``.
"""
