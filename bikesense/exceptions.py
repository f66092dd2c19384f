"""Errors of the shared glue, and the root of every bikesense package's errors.

    BikesenseError
    ├── ConfigurationError   a setting is missing or malformed
    ├── ServiceError         a local service could not be installed, started or found
    ├── ProtocolError        firmware_protocol.exceptions
    ├── StreamCoreError      stream.core.exceptions
    ├── StorageError         storage.exceptions
    ├── IngestError          ingest.exceptions (and ingest.handover.HandoverError)
    ├── DistributedError     stream.faust_app.exceptions
    ├── SimulatorError       simulators.exceptions
    └── ApiError             api.errors (and api.export_stream.ExportCutShortError)

One root, so that each command line edge translates it once: ``bikesense`` ends a
failure with one line and an exit code, never a traceback (bikesense.cli).
"""


class BikesenseError(Exception):
    """Base of the errors raised by the ``bikesense`` package."""


class ConfigurationError(BikesenseError):
    """A setting is missing or malformed; the message names the variable."""


class ServiceError(BikesenseError):
    """A local service (PostgreSQL, Mosquitto) could not be started, stopped or found."""
