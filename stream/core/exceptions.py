"""Errors raised by the stream core.

    BikesenseError (bikesense.exceptions: the root every package's errors share)
    └── StreamCoreError
        ├── InvalidBatchError   the readings handed in are not what the core accepts
        └── InvalidConfigError  a resolution, window size or threshold makes no sense

Both derive from ``ValueError`` as well: they are always about a value the
caller passed, never about the environment.
"""

from __future__ import annotations

from bikesense.exceptions import BikesenseError


class StreamCoreError(BikesenseError):
    """Base of every error the stream core raises."""


class InvalidBatchError(StreamCoreError, ValueError):
    """An array of readings, enriched readings or partials has the wrong shape or content."""


class InvalidConfigError(StreamCoreError, ValueError):
    """A configuration value (resolution, window size, threshold, time zone) is unusable."""
