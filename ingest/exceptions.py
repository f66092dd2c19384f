"""Errors of the ingest stage.

    BikesenseError (bikesense.exceptions: the root every package's errors share)
    └── IngestError
        ├── TopicError      a message arrived on a topic outside the kit topic layout
        └── BrokerError     the broker refused us or could not be reached (wraps paho's codes)

Bad frames are not exceptions that escape ingest: each becomes a reject with a
:class:`ingest.validation.Reject` reason and is stored, never raised to the caller.
"""

from bikesense.exceptions import BikesenseError


class IngestError(BikesenseError):
    """Base of the errors raised by ``ingest``."""


class TopicError(IngestError):
    """The topic does not follow ``<root>/kits/<kit_id>/<up|status>``."""


class BrokerError(IngestError):
    """The MQTT broker could not be reached or refused the connection or subscription."""
