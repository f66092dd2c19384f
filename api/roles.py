"""Roles and what each may see (docs/design.md decision 4)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    PUBLIC = "public"  # anonymous: k-anonymous cells, windows of at least an hour
    OFFICER = "officer"  # environment officers: finer windows, fleet health
    RESEARCHER = "researcher"  # officers' view plus raw readings (exports)
    ADMIN = "admin"  # everything

    @property
    def is_public(self) -> bool:
        return self is Role.PUBLIC

    @property
    def may_export_raw(self) -> bool:
        return self in {Role.RESEARCHER, Role.ADMIN}

    @property
    def may_see_fleet(self) -> bool:
        return self in {Role.OFFICER, Role.ADMIN}


#: Roles an API key can carry (the public role needs no key).
KEY_ROLES = (Role.OFFICER, Role.RESEARCHER, Role.ADMIN)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a role, and the key id when a key was given."""

    role: Role
    key_id: str | None = None
