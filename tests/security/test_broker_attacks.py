"""The broker bikesense starts, attacked as a local network user and as a kit's owner would.

A local user has no login; a kit's owner has that kit's user name and password
(they can read them out of the kit's flash). Neither may read what kits send,
speak for another kit, or take ingest's session.
"""

from __future__ import annotations

import time

import pytest

from tests.security.conftest import Client, SecuredBroker, ingest_login, wait_for

pytestmark = [pytest.mark.mqtt]

INGEST_ID = "bikesense-demo-ingest"


def _settle() -> None:
    """Long enough for the broker to route what it was going to route."""
    time.sleep(0.7)


def test_anonymous_clients_are_refused_on_every_listener(secured_broker: SecuredBroker) -> None:
    for port in (secured_broker.kit_port, secured_broker.service_port):
        snoop = Client(port, None)
        try:
            assert snoop.connack not in (None, 0), f"anonymous login accepted on port {port}"
        finally:
            snoop.close()
    wrong = Client(secured_broker.kit_port, ("7", "not-the-password"))
    try:
        assert not wrong.accepted
    finally:
        wrong.close()


def test_a_kit_reads_no_other_kit_and_no_retained_status(secured_broker: SecuredBroker) -> None:
    layout = secured_broker.layout
    victim = Client(secured_broker.kit_port, secured_broker.kit_login(8))
    assert victim.accepted
    victim.publish(layout.status(8), b'{"battery_pct": 80}', retain=True)
    spy = Client(secured_broker.kit_port, secured_broker.kit_login(7))
    try:
        assert spy.accepted
        spy.subscribe("#", layout.up(8), layout.status_filter(), f"$share/g/{layout.up_filter()}")
        victim.publish(layout.up(8), b"position of kit 8")
        victim.publish(layout.status(8), b'{"battery_pct": 79}', retain=True)
        _settle()
        assert spy.messages == []
    finally:
        spy.close()
        victim.close()
    # Nor can it log in where ingest does.
    elsewhere = Client(secured_broker.service_port, secured_broker.kit_login(7))
    try:
        assert not elsewhere.accepted
    finally:
        elsewhere.close()


def test_a_kit_cannot_publish_a_status_or_frame_for_another_kit(
    secured_broker: SecuredBroker,
) -> None:
    layout = secured_broker.layout
    ingest = Client(secured_broker.service_port, ingest_login())
    assert ingest.accepted
    ingest.subscribe(layout.up_filter(), layout.status_filter())
    # The forged status as a publication, retained, and as the last will of a kit that drops.
    forger = Client(
        secured_broker.kit_port, secured_broker.kit_login(7), will_topic=layout.status(8)
    )
    try:
        assert forger.accepted
        forger.publish(
            layout.status(8), b'{"battery_pct": 1, "firmware_version": "EVIL-0.0"}', retain=True
        )
        forger.publish(layout.up(8), b"forged frame")
        forger.publish(layout.status(7), b'{"battery_pct": 50}')
        wait_for(lambda: len(ingest.messages) >= 1, timeout_s=10, what="kit 7's own status")
        forger.drop()
        _settle()
        assert ingest.messages == [(layout.status(7), b'{"battery_pct": 50}')]
        # Nothing forged was retained for a later subscriber either.
        late = Client(secured_broker.service_port, ingest_login())
        try:
            late.subscribe(layout.status(8))
            _settle()
            assert late.messages == []
        finally:
            late.close()
    finally:
        ingest.close()


def test_a_kit_with_ingests_client_id_does_not_take_its_session(
    secured_broker: SecuredBroker,
) -> None:
    layout = secured_broker.layout
    ingest = Client(
        secured_broker.service_port, ingest_login(), client_id=INGEST_ID, persistent=True
    )
    assert ingest.accepted
    ingest.subscribe(layout.up_filter())
    ingest.close()  # offline: the broker queues for its persistent session
    kit = Client(secured_broker.kit_port, secured_broker.kit_login(8))
    for n in range(10):
        kit.publish(layout.up(8), f"frame {n}".encode())
    kit.close()
    # The attack: kit 7's login, ingest's client id, a persistent session, on both listeners.
    thieves = [
        Client(port, secured_broker.kit_login(7), client_id=INGEST_ID, persistent=True)
        for port in (secured_broker.kit_port, secured_broker.service_port)
    ]
    try:
        assert thieves[0].accepted  # as client "7": the broker replaced the id with the user
        assert not thieves[1].accepted  # no kit account on ingest's listener
        thieves[0].subscribe(layout.up_filter())
        _settle()
        assert thieves[0].messages == []
        back = Client(
            secured_broker.service_port, ingest_login(), client_id=INGEST_ID, persistent=True
        )
        try:
            wait_for(
                lambda: len(back.messages) == 10, timeout_s=10, what="ingest's 10 queued frames"
            )
            # A second hijack while ingest is online does not disconnect it.
            again = Client(
                secured_broker.kit_port,
                secured_broker.kit_login(7),
                client_id=INGEST_ID,
                persistent=True,
            )
            again.close()
            kit = Client(secured_broker.kit_port, secured_broker.kit_login(8))
            kit.publish(layout.up(8), b"frame 10")
            kit.close()
            wait_for(lambda: len(back.messages) == 11, timeout_s=10, what="the 11th frame")
            assert back.disconnects == 0
            assert [p for _, p in back.messages] == [f"frame {n}".encode() for n in range(11)]
        finally:
            back.close()
    finally:
        for thief in thieves:
            thief.close()


def test_ingest_processes_share_one_subscription(secured_broker: SecuredBroker) -> None:
    layout = secured_broker.layout
    members = [
        Client(
            secured_broker.service_port,
            ingest_login(),
            client_id=f"{INGEST_ID}-{n}",
            persistent=True,
        )
        for n in (1, 2)
    ]
    try:
        for member in members:
            assert member.accepted
            member.subscribe(f"$share/bikesense-ingest/{layout.up_filter()}")
        kit = Client(secured_broker.kit_port, secured_broker.kit_login(7))
        for n in range(20):
            kit.publish(layout.up(7), f"frame {n}".encode())
        kit.close()
        wait_for(
            lambda: sum(len(m.messages) for m in members) == 20,
            timeout_s=10,
            what="20 frames between the two",
        )
        assert all(m.messages for m in members)
        assert all(m.disconnects == 0 for m in members)
    finally:
        for member in members:
            member.close()


def test_adding_and_revoking_kits_takes_effect_without_a_restart(
    secured_broker: SecuredBroker,
) -> None:
    layout = secured_broker.layout
    pid = secured_broker.broker._process.pid if secured_broker.broker._process else 0
    ingest = Client(secured_broker.service_port, ingest_login())
    ingest.subscribe(layout.up_filter())
    newcomer_secret = b"n" * 32
    try:
        assert not Client(secured_broker.kit_port, ("9", "x")).accepted
        secured_broker.set_kits({**secured_broker.secrets, 9: newcomer_secret})
        secured_broker.secrets[9] = newcomer_secret
        newcomer = Client(secured_broker.kit_port, secured_broker.kit_login(9))
        assert newcomer.accepted
        newcomer.publish(layout.up(9), b"hello")
        wait_for(lambda: len(ingest.messages) == 1, timeout_s=10, what="the new kit's frame")
        # Revoke kit 9 while it is connected: the reload disconnects it (Mosquitto checks
        # connected clients against the new files), and it cannot log in again.
        secured_broker.set_kits({k: s for k, s in secured_broker.secrets.items() if k != 9})
        wait_for(
            lambda: newcomer.disconnects > 0, timeout_s=10, what="the revoked kit's disconnection"
        )
        newcomer.close()
        assert [p for _, p in ingest.messages] == [b"hello"]
        assert not Client(secured_broker.kit_port, secured_broker.kit_login(9)).accepted
    finally:
        ingest.close()
    assert secured_broker.broker._process is not None
    assert secured_broker.broker._process.pid == pid
    assert secured_broker.broker._process.poll() is None
