"""``walfast check``: a pre-flight and monitoring check, in the style of ``barman check``.

One line per item, ``NAME: OK|WARNING|CRITICAL (detail)``, then the
overall status; the exit status is the Nagios plugin convention (0 OK,
1 WARNING, 2 CRITICAL).  Usage errors exit 1, as for every walfast command
(:mod:`walfast.cli.usage`): a monitoring system sees a WARNING, and the
message on stderr says what is wrong with the command line.

Each item says what is wrong and what to do, in one line.  The work is
split in two so that the evaluation can be tested without a server:

* *probes* connect and collect raw values: :func:`probe_replication`
  (a physical replication connection: ``IDENTIFY_SYSTEM`` and the sizes,
  :func:`walfast.replication.commands.server_facts`), :func:`probe_sql` (a
  normal connection: the role, walsenders in use, the slot's row; every
  version-dependent query is built in :func:`slot_query` and
  :func:`idle_timeout_query`), :func:`disk_usage` and the receiver's
  progress state (:func:`walfast.monitor.progress.read_progress`);
* one ``check_*`` function per item turns those values into a
  :class:`CheckResult` (a frozen record: name, status, detail, the measured
  values), without any I/O except :func:`check_directory`, which looks at
  the directory itself.

Items that need the server are reported ``WARNING (not checked: ...)``
when it cannot be reached; the ``connection`` item is then CRITICAL, so the
overall status is too.  A normal SQL connection is tried even when the
replication connection was refused by the server (pg_hba, role,
max_wal_senders), because the SQL items then tell why.

psycopg is imported only when a connection is made.
"""

from walfast.cli.usage import parse_size
from walfast.monitor.check.command import CheckOptions, format_report, main, run_checks
from walfast.monitor.check.items import (
    check_behind, check_connection, check_directory, check_disk, check_receiver, check_role,
    check_slot, check_wal_senders,
)
from walfast.monitor.check.probes import (
    INACTIVE_SINCE_VERSION, DiskUsage, ReplicationProbe, RoleRow, SendersRow, SlotRow,
    SqlProbe, _slot_row, disk_usage, idle_timeout_query, probe_replication, probe_sql,
    slot_query,
)
from walfast.monitor.check.results import (
    CheckResult, SizeLimit, Status, Thresholds, overall,
)

__all__ = [
    "INACTIVE_SINCE_VERSION", "CheckOptions", "CheckResult", "DiskUsage", "ReplicationProbe",
    "RoleRow", "SendersRow", "SizeLimit", "SlotRow", "SqlProbe", "Status", "Thresholds",
    "check_behind", "check_connection", "check_directory", "check_disk", "check_receiver",
    "check_role", "check_slot", "check_wal_senders", "disk_usage", "format_report",
    "idle_timeout_query", "main", "overall", "parse_size", "probe_replication", "probe_sql",
    "run_checks", "slot_query", "_slot_row",
]
