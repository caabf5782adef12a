"""
S3 crash storage: treq sends the requests, botocore signs them (SigV4) and
resolves credentials. One module per job:

- ``keys``: where each file of a crash goes in the bucket (docs/s3.rst, *Bucket layout*)
- ``location``: the bucket's URLs (path style for a custom endpoint)
- ``credentials``: static keys or botocore's chain, resolved off the reactor
- ``signing``: Content-MD5 and SigV4 headers for one request
- ``connection``: requests with timeouts and reactor-timed retries
- ``probe``: the blocking start-up check of the bucket
- ``crashstorage``: ``S3CrashStorage``, the ``ICrashStorage`` backend
"""

from antenna_tw.ext.s3.crashstorage import S3CrashStorage

__all__ = ["S3CrashStorage"]
