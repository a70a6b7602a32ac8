"""Talking to the server: the replication connection and its commands.

* :mod:`~walfast.replication.connection`: opening a physical replication
  connection from any libpq conninfo, and the libpq the engine calls;
* :mod:`~walfast.replication.commands`: the replication commands and the
  start of the COPY (``START_REPLICATION``) and its end;
* :mod:`~walfast.replication.walrcv`: the walreceiver-style
  connect/receive/send API for tools that want the messages themselves.

The COPY stream's bytes are the engine's (:mod:`walfast._core`).
"""
