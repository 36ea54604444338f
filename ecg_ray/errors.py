"""Exceptions that carry the file and the problem, so users see both in one message."""

from __future__ import annotations


class EcgRayError(Exception):
    """Base class for errors ecg_ray reports to users (the CLI prints them without a traceback)."""


class RecordError(EcgRayError):
    """One record could not be used: names the record, the file and the reason."""

    def __init__(self, record_id: str, file: str, reason: str):
        self.record_id = str(record_id)
        self.file = str(file)
        self.reason = reason
        super().__init__(f"{file}: {reason} (record {record_id})")


class SourceError(EcgRayError):
    """A whole source is unusable (missing directory, unreadable label table, ...)."""


class StoreError(EcgRayError):
    """A store is missing, incomplete, corrupt or of an unknown schema version."""


class ConfigError(EcgRayError):
    """A configuration value or key is invalid; the message names the key."""


class CheckpointError(EcgRayError):
    """A checkpoint or exported encoder is missing, corrupt or not ours."""
