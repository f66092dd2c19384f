"""The fleet as kits: one MQTT connection per kit, logged in as that kit.

Every broker bikesense starts or ships refuses anonymous clients and lets kit N
write only its own topics (docs/deployment.md, "Broker accounts and ACLs"):
user name = decimal kit id, password derived from the kit's secret
(:func:`ingest.broker_auth.kit_mqtt_password`), the client id replaced by the
user name. :class:`KitPublishers` connects each simulated kit that way and
routes each publication to its kit's connection, so a simulated fleet goes
through the same door as real kits.

A publication of a kit without a login (the ``unknown_kit`` fault's strangers)
is not sent: the broker would refuse it, as it refuses a real kit that is not
registered. :attr:`KitPublishers.skipped` counts them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Self

from ingest.broker_auth import kit_mqtt_password
from simulators.exceptions import LoginRefusedError, SimulatorConfigError
from simulators.fleet import Publication
from simulators.publisher import DEFAULT_TOPIC_ROOT, MqttPublisher

#: Each connection is a socket and a paho network thread: past this many kits, write a
#: frame file and replay it over a broker without accounts instead.
MAX_KIT_CONNECTIONS = 1000


def kit_passwords(kits: Iterable[tuple[int, bytes]]) -> dict[int, str]:
    """Each kit's MQTT password, from its secret, as the broker's accounts have it."""
    return {kit_id: kit_mqtt_password(secret) for kit_id, secret in kits}


class KitPublishers:
    """One :class:`MqttPublisher` per kit on the broker at ``url``, logged in as that kit.

    ``max_inflight`` is each connection's window of unacknowledged messages, so at
    most ``len(passwords) × max_inflight`` messages wait for their PUBACK at once.
    """

    def __init__(
        self,
        url: str,
        passwords: Mapping[int, str],
        *,
        topic_root: str = DEFAULT_TOPIC_ROOT,
        max_inflight: int = 200,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not passwords:
            raise SimulatorConfigError("no kit to log in: the fleet is empty")
        if len(passwords) > MAX_KIT_CONNECTIONS:
            raise SimulatorConfigError(
                f"{len(passwords)} kits are {len(passwords)} connections; at most "
                f"{MAX_KIT_CONNECTIONS} log in one by one"
            )
        self.publishers = {
            kit_id: MqttPublisher(
                url,
                topic_root=topic_root,
                # The kits' listener replaces it by the user name; elsewhere, the same.
                client_id=str(kit_id),
                username=str(kit_id),
                password=password,
                max_inflight=max_inflight,
                connect_timeout_s=connect_timeout_s,
            )
            for kit_id, password in sorted(passwords.items())
        }
        self.skipped = 0

    @property
    def published(self) -> int:
        return sum(p.published for p in self.publishers.values())

    def connect(self) -> None:
        """Log every kit in; the first refusal disconnects the others and says which kit."""
        for kit_id, publisher in self.publishers.items():
            try:
                publisher.connect()
            except LoginRefusedError as exc:
                self.abort()
                raise LoginRefusedError(
                    f"the MQTT broker at {publisher.url} refused kit {kit_id}'s login: "
                    "its account is missing, or the kit is registered with another secret "
                    "or revoked"
                ) from exc
            except BaseException:
                self.abort()
                raise

    def send(self, pub: Publication) -> None:
        publisher = self.publishers.get(pub.kit_id)
        if publisher is None:
            self.skipped += 1
            return
        publisher.send(pub)

    def close(self) -> None:
        """Wait for every kit's outstanding acknowledgements, then disconnect them all."""
        try:
            for publisher in self.publishers.values():
                publisher.close()
        finally:
            self.abort()

    def abort(self) -> None:
        for publisher in self.publishers.values():
            publisher.abort()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
