"""The fleet as kits on a broker with accounts: each kit logs in as itself, and what it
publishes reaches ingest's listener; a kit without an account is refused by name."""

from __future__ import annotations

import time

import pytest

from simulators.exceptions import LoginRefusedError
from simulators.faults import FaultPlan
from simulators.fleet import Fleet, Kind, SimulationConfig
from simulators.kitpublishers import KitPublishers, kit_passwords
from simulators.runner import pump
from tests.security.conftest import Client, SecuredBroker, ingest_login, wait_for

pytestmark = [pytest.mark.mqtt]


def _fleet(broker: SecuredBroker, faults: FaultPlan | None = None) -> Fleet:
    kits = tuple(sorted(broker.secrets.items()))
    return Fleet(
        SimulationConfig(
            n_bikes=len(kits), duration_s=600, seed=3, kits=kits, faults=faults or FaultPlan()
        )
    )


def test_each_kit_logs_in_as_itself_and_ingest_receives_everything(
    secured_broker: SecuredBroker,
) -> None:
    fleet = _fleet(secured_broker, FaultPlan(unknown_kit=0.2))
    assert {k for k, _ in fleet.kits} == set(secured_broker.secrets)
    run = fleet.run()
    pubs = list(run)
    ours = [p for p in pubs if p.kit_id in secured_broker.secrets]
    root = secured_broker.layout.root
    ingest = Client(secured_broker.service_port, ingest_login())
    try:
        assert ingest.accepted
        ingest.subscribe(secured_broker.layout.up_filter(), secured_broker.layout.status_filter())
        kits_url = f"mqtt://127.0.0.1:{secured_broker.kit_port}"
        with KitPublishers(
            kits_url, kit_passwords(fleet.kits), topic_root=root, max_inflight=20
        ) as publisher:
            pump(pubs, [publisher], speed=None)
        assert publisher.skipped == len(pubs) - len(ours) > 0  # the strangers have no login
        assert publisher.published == len(ours)
        wait_for(lambda: len(ingest.messages) >= len(ours), what="every kit's publications")
        time.sleep(0.3)
    finally:
        ingest.close()
    got = sorted(ingest.messages)
    assert got == sorted((p.topic(root), p.payload) for p in ours)
    assert any(p.kind == Kind.STATUS for p in ours)


def test_a_kit_without_an_account_is_refused_by_name(secured_broker: SecuredBroker) -> None:
    fleet = _fleet(secured_broker)
    passwords = kit_passwords(fleet.kits)
    passwords[9] = "not-an-account"
    kits_url = f"mqtt://127.0.0.1:{secured_broker.kit_port}"
    publisher = KitPublishers(kits_url, passwords, topic_root=secured_broker.layout.root)
    with pytest.raises(LoginRefusedError, match=r"refused kit 9's login") as refused:
        publisher.connect()
    assert "not-an-account" not in str(refused.value)
    assert all(p._closed for p in publisher.publishers.values())
