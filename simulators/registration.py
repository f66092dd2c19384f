"""The simulated fleet in the kit registry, so ingest and the broker take it for real kits.

Ingest accepts frames only from registered kits whose MAC verifies with the
registered secret, and the brokers bikesense starts let in only registered,
active kits (docs/deployment.md, "Broker accounts and ACLs"). A simulated kit
signs with its own key (drawn from the seed, or given with ``--kits``), so it
is registered with that key, as the demo registers its fleet. A kit already
registered with another secret, or revoked, is an error: its frames would be
refused and its login too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from simulators.exceptions import KitRegistryError
from storage.kits import MasterKey, kit_secrets, register_kit
from storage.migrate import migrate


@dataclass(frozen=True, slots=True)
class Registered:
    """What :func:`register_fleet` did."""

    added: int
    already: int


def register_fleet(
    conn: psycopg.Connection[Any], master: MasterKey, kits: Iterable[tuple[int, bytes]]
) -> Registered:
    """Register the fleet's kits that are not registered yet, each with its own key."""
    migrate(conn)
    known = kit_secrets(conn, master)
    added = already = 0
    for kit_id, key in kits:
        have = known.get(kit_id)
        if have is None:
            register_kit(conn, master, kit_id, secret=key)
            added += 1
        elif have.secret != key:
            raise KitRegistryError(
                f"kit {kit_id} is registered with another secret than the simulated kit's "
                "key: its frames and its login would be refused (another --seed, or --kits)"
            )
        elif not have.active:
            raise KitRegistryError(
                f"kit {kit_id} is revoked in the registry: the broker refuses its login"
            )
        else:
            already += 1
    return Registered(added, already)
