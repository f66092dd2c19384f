"""Temporary staging tables: where the writer's binary COPY lands before an upsert.

A staging table is laid out from the same :class:`~storage.copybin.Column` list
as the binary COPY that fills it, so the two cannot drift apart. Statements are
composed with :mod:`psycopg.sql` from those names and rendered once
(:func:`render`): they run on every batch, and psycopg renders a composed
statement again at each execute (4.5 ms for the cell-window upsert alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from storage.copybin import Column

#: The SQL name of each wire type :mod:`storage.copybin` encodes.
_SQL_TYPES: dict[str, sql.SQL] = {
    "smallint": sql.SQL("smallint"),
    "integer": sql.SQL("integer"),
    "bigint": sql.SQL("bigint"),
    "real": sql.SQL("real"),
    "double precision": sql.SQL("double precision"),
    "timestamptz": sql.SQL("timestamptz"),
    "integer[]": sql.SQL("integer[]"),
}


def column_list(columns: tuple[Column, ...]) -> sql.Composed:
    """``a, b, c``: the columns' names, quoted."""
    return sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)


def copy_in(table: str, columns: tuple[Column, ...]) -> sql.Composed:
    """``COPY table (columns) FROM STDIN (FORMAT BINARY)``."""
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), column_list(columns)
    )


@dataclass(frozen=True, slots=True)
class StagingTable:
    """A temporary table of ``columns``, emptied at commit."""

    name: str
    columns: tuple[Column, ...]

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.name)

    def create(self) -> sql.Composed:
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), _SQL_TYPES[c.sql_type])
            for c in self.columns
        )
        return sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
            self.identifier, columns
        )

    def empty(self) -> sql.Composed:
        return sql.SQL("DELETE FROM {}").format(self.identifier)

    def copy_in(self) -> sql.Composed:
        return copy_in(self.name, self.columns)


def prepare(tables: tuple[StagingTable, ...]) -> sql.Composed:
    """Create the tables if this session has not, and empty them: ON COMMIT DELETE ROWS
    empties them at commit, but a caller may write several batches in one transaction
    of its own."""
    return sql.SQL(";\n").join([t.create() for t in tables] + [t.empty() for t in tables])


def render(statement: sql.Composable) -> bytes:
    """``statement`` as the bytes psycopg would send, rendered once for a statement run on
    every batch. Only names and literals of this package go into it, quoted by psycopg."""
    return statement.as_bytes(None)


def copy(conn: psycopg.Connection[Any], statement: bytes, payload: bytes) -> None:
    """Run a ``COPY ... FROM STDIN`` with ``payload`` as its whole binary stream."""
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(payload)
