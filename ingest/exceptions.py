"""Errors of the ingest stage.

    IngestError
    ├── TopicError          a message arrived on a topic outside the kit topic layout
    └── BrokerError         the broker refused us or could not be reached (wraps paho's codes)

Bad frames are not exceptions that escape ingest: each becomes a reject with a
:class:`ingest.validation.Reject` reason and is stored, never raised to the caller.
"""


class IngestError(Exception):
    """Base of the errors raised by ``ingest``."""


class TopicError(IngestError):
    """The topic does not follow ``<root>/kits/<kit_id>/<up|status>``."""


class BrokerError(IngestError):
    """The MQTT broker could not be reached or refused the connection or subscription."""
