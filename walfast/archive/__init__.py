"""The archive beyond the receiver's disk: WAL files shipped to object
storage as they are completed, and fetched back for ``restore_command``.

* :mod:`~walfast.archive.store`    where archived files live: an S3 bucket
  and prefix, or a local directory (for restoring from walfast's own ``-D``);
  put, get, head, list.  The only module that talks to boto3.
* :mod:`~walfast.archive.uploader` the worker thread that ships files off
  the receive path, records what the bucket holds durably in ``.walfast/``
  and tells the receive loop how far the bucket goes (the slot gate).
* :mod:`~walfast.archive.restore`  ``walfast restore``: one WAL file for
  PostgreSQL's ``restore_command``, with prefetch.
"""
