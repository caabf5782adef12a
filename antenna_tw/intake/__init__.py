"""
Reading uploads: from the bytes on a connection to a parsed crash report.

``http`` holds the twisted.web Request, Channel and Site that read bodies as
they arrive; ``payload`` (with ``formdata`` and ``inflate``) turns a body into
a ``CrashReport`` and knows nothing of Twisted; ``heap`` gives memory back
after a large upload is dropped.
"""
