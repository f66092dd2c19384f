"""Errors of the shared glue.

    BikesenseError
    ├── ConfigurationError   a setting is missing or malformed
    └── ServiceError         a local service could not be installed, started or found
"""


class BikesenseError(Exception):
    """Base of the errors raised by the ``bikesense`` package."""


class ConfigurationError(BikesenseError):
    """A setting is missing or malformed; the message names the variable."""


class ServiceError(BikesenseError):
    """A local service (PostgreSQL, Mosquitto) could not be started, stopped or found."""
