"""The KRaft cluster id bikesense formats Kafka's log folder with.

CI once failed every Kafka test because the random id began with "-" and
``kafka.tools.StorageTool format --cluster-id -…`` took it for an option
("argument --cluster-id/-t: expected one argument"): one start in 64.
"""

from __future__ import annotations

import base64
import uuid

from bikesense.kafka.broker import new_cluster_id


def test_an_id_that_would_start_with_a_dash_is_drawn_again() -> None:
    dashed = bytes([0xF8]) + bytes(15)  # 111110 first: "-" in URL-safe base64
    assert base64.urlsafe_b64encode(dashed).decode().startswith("-")
    draws = iter([dashed, dashed, uuid.UUID(int=7).bytes])
    got = new_cluster_id(lambda: next(draws))
    assert got == base64.urlsafe_b64encode(uuid.UUID(int=7).bytes).decode().rstrip("=")


def test_ids_are_22_url_safe_characters_and_never_start_with_a_dash() -> None:
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert all(uuid.UUID(bytes=base64.urlsafe_b64decode(i + "==")) for i in ids)
