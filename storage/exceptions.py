"""Errors of the storage layer.

    BikesenseError (bikesense.exceptions)
    └── StorageError
        ├── MigrationError      the schema cannot be brought up to date (edited or unknown
        │                       migration)
        ├── BatchError          a batch handed to the writer has the wrong shape
        ├── KitError
        │   ├── KitExistsError      registering a kit id or pseudonym that is taken
        │   └── UnknownKitError     the kit id is not registered
        ├── SecretError         a kit secret cannot be decrypted (wrong or rotated master key)
        └── QueryError          query parameters that cannot be answered (bad bbox, time
                                range)

psycopg's own errors (connection lost, deadlock) are not wrapped: callers that
retry need to see them as they are.
"""

from __future__ import annotations

from bikesense.exceptions import BikesenseError


class StorageError(BikesenseError):
    """Base of the errors raised by ``storage``."""


class MigrationError(StorageError):
    """The database schema cannot be migrated; the message names the migration."""


class BatchError(StorageError):
    """A batch given to the writer is not an array of ``ENRICHED_DTYPE`` readings."""


class KitError(StorageError):
    """A kit operation was refused."""


class KitExistsError(KitError):
    """The kit id or the pseudonym is already registered."""


class UnknownKitError(KitError):
    """No kit with that id is registered."""


class SecretError(StorageError):
    """A kit secret could not be decrypted with the master key given."""


class QueryError(StorageError, ValueError):
    """Query parameters that cannot be answered: the message says which and why."""


class ReferenceDataError(StorageError, ValueError):
    """A reference file that cannot be imported: the message says where (line, and for
    JSON the column and the path of the value), which field and what is wrong."""

    def __init__(
        self, message: str, *, line: int, column: int | None = None, field: str | None = None
    ) -> None:
        self.reason = message
        self.line = line
        self.column = column
        self.field = field
        where = f"line {line}" if column is None else f"line {line} column {column}"
        super().__init__(f"{where}, {field}: {message}" if field else f"{where}: {message}")
