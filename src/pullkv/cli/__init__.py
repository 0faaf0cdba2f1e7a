"""The ``pullkv`` command: servers, and key/namespace/bulk/token commands in the manner of
``wrangler kv``. A thin layer over the library: every command is a call or two on
:class:`pullkv.Client` (or, for ``keyring`` and ``store``, on the store of a data folder).

:mod:`~pullkv.cli.options` declares the options several commands share,
:mod:`~pullkv.cli.context` what they share at run time, and :mod:`~pullkv.cli.root` the root
group; the commands are in :mod:`~pullkv.cli.client_commands`, :mod:`~pullkv.cli.keyring`,
:mod:`~pullkv.cli.servers` and :mod:`~pullkv.cli.store`.
"""

from pullkv.cli.root import main

__all__ = ["main"]
