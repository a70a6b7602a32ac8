"""The WAL directory (``-D``) and everything walfast writes into it.

:class:`~walfast.waldir.directory.WalDirectory` is its one owner; the other
modules are its parts: where streaming resumes (``scan``, ``resume``),
whose WAL the directory holds (``identity``), durable small writes
(``durable``), compressed files (``codecs``, ``compressor``).
"""
