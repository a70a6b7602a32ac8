"""The receiver's shared progress state and its readers.

:mod:`~walfast.monitor.progress` defines the state's reader (the compiled
engine writes it); ``walfast status`` and ``walfast wait``
(:mod:`~walfast.monitor.status`), the Prometheus endpoint
(:mod:`~walfast.monitor.metrics`) and the catch-up bar
(:mod:`~walfast.monitor.extras`) read it without talking to the receiver.
``walfast check`` (:mod:`~walfast.monitor.check`) reads it too, and asks
the server, for a ``barman check``-style verdict with Nagios exit codes.
"""
