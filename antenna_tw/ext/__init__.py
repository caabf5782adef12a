"""Crash storage backends (filesystem, S3, no-op) behind ``ICrashStorage``."""
