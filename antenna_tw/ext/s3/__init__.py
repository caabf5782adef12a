"""
S3 crash storage: Twisted's Agent sends the requests, signed with SigV4 as
botocore signs them; botocore resolves credentials.

- ``storage``: ``S3CrashStorage``, the ``ICrashStorage`` backend; where each
  file of a crash goes in the bucket (docs/s3.rst, *Bucket layout*); what a
  HEAD of the bucket says, at start-up and for the heartbeat
- ``client``: the bucket's URLs, credentials (static keys or botocore's
  chain, resolved off the reactor), signing, requests with timeouts and
  reactor-timed retries, and the blocking HEAD of the start-up check
"""

from antenna_tw.ext.s3.client import S3Connection, S3Error, S3Unreachable
from antenna_tw.ext.s3.storage import S3CrashStorage

__all__ = ["S3Connection", "S3CrashStorage", "S3Error", "S3Unreachable"]
