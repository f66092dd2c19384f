"""Publishing over real MQTT: paho-mqtt 2, QoS 1, a bounded window of unacknowledged messages.

One :class:`MqttPublisher` is one connection: the whole fleet's publications
on a broker without accounts, or one kit's, logged in as that kit
(:class:`simulators.kitpublishers.KitPublishers` holds one per kit).
:meth:`MqttPublisher.send` blocks while ``max_inflight`` messages
wait for their PUBACK, so publishing runs at the broker's pace without either
waiting for each message in turn or queueing without limit: that window is the
back-pressure. :meth:`MqttPublisher.close` waits for every acknowledgement
before disconnecting.

paho runs its network loop in its own thread (``loop_start``); the callbacks
only count and notify.
"""

from __future__ import annotations

import ssl
import threading
import uuid
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from simulators.exceptions import LoginRefusedError, PublishError, SimulatorConfigError
from simulators.fleet import Publication

DEFAULT_TOPIC_ROOT = "bikesense/v1"


class MqttPublisher:
    """QoS 1 publisher with at most ``max_inflight`` messages awaiting their PUBACK."""

    def __init__(
        self,
        url: str,
        *,
        topic_root: str = DEFAULT_TOPIC_ROOT,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        max_inflight: int = 200,
        ack_timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
            raise SimulatorConfigError(f"MQTT URL must look like mqtt://host:1883 (got {url!r})")
        if max_inflight < 1:
            raise SimulatorConfigError(f"max_inflight must be ≥ 1 (got {max_inflight})")
        #: The URL without its password: what messages and errors show.
        self.url = redacted_url(url)
        self.topic_root = topic_root.rstrip("/")
        self.max_inflight = max_inflight
        self.ack_timeout_s = ack_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.published = 0
        self.acknowledged = 0
        self._host = parts.hostname
        self._port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self._cond = threading.Condition()
        self._connected = False
        self._refused: str | None = None
        self._closed = False
        #: A waiting thread's threshold: PUBACKs wake it once no more than this many
        #: messages are unacknowledged (None: nobody waits for acknowledgements).
        self._wake_at: int | None = None
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"bikesense-sim-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv311,
        )
        # paho sends at most this many QoS 1 messages before PUBACKs come back; our
        # window below is the same, so paho's own queue never grows past it.
        self._client.max_inflight_messages_set(max_inflight)
        if username is None and parts.username:
            username = unquote(parts.username)
            password = unquote(parts.password) if parts.password else None
        self.username = username
        if username is not None:
            self._client.username_pw_set(username, password)
        if parts.scheme == "mqtts":
            self._client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # -- paho callbacks (network thread): count and notify, nothing else -------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        with self._cond:
            if reason.is_failure:
                self._refused = str(reason)
            else:
                self._connected = True
            self._cond.notify_all()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        with self._cond:
            self._connected = False
            self._cond.notify_all()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        # Only this thread writes ``acknowledged`` and only the publishing thread
        # ``published``; the lock is taken just to wake a publisher that waits, once
        # enough has been acknowledged for it.
        self.acknowledged += 1
        wake_at = self._wake_at
        if wake_at is not None and self.published - self.acknowledged <= wake_at:
            with self._cond:
                self._cond.notify_all()

    # -- use ------------------------------------------------------------------

    def connect(self) -> None:
        """Connect and wait for the broker's CONNACK."""
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except OSError as exc:
            self._client.loop_stop()
            raise PublishError(f"cannot reach the MQTT broker at {self.url}: {exc}") from exc
        self._client.loop_start()
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._connected or self._refused is not None, self.connect_timeout_s
            )
        if self._refused is not None:
            self._stop()
            login = f"the login {self.username!r}" if self.username else "an anonymous client"
            raise LoginRefusedError(
                f"the MQTT broker at {self.url} refused {login}: {self._refused}"
            )
        if not ok:
            self._stop()
            raise PublishError(
                f"the MQTT broker at {self.url} did not answer within {self.connect_timeout_s:g} s"
            )

    def send(self, pub: Publication) -> None:
        """Publish one simulated publication under this publisher's topic root."""
        self.publish(pub.topic(self.topic_root), pub.payload, retain=pub.retain)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """QoS 1 publish; once the window of unacknowledged messages is full, blocks until
        half of it is acknowledged (a wake-up per PUBACK cost the publishing process more
        CPU than the publishing)."""
        if self._closed:
            raise PublishError("publisher is closed")
        if self.published - self.acknowledged >= self.max_inflight and not self._wait(
            self.max_inflight // 2, self.ack_timeout_s
        ):
            raise PublishError(
                f"{self.published - self.acknowledged} messages unacknowledged for "
                f"{self.ack_timeout_s:g} s by {self.url}"
            )
        self.published += 1
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        # NO_CONN is fine: paho keeps the message and sends it after reconnecting.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self.published -= 1
            raise PublishError(f"paho refused to publish to {topic}: {mqtt.error_string(info.rc)}")

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every message published so far is acknowledged."""
        wait = self.ack_timeout_s if timeout_s is None else timeout_s
        if not self._wait(0, wait):
            raise PublishError(
                f"{self.published - self.acknowledged} of {self.published} "
                f"messages still unacknowledged after {wait:g} s"
            )

    def _wait(self, unacknowledged: int, timeout_s: float) -> bool:
        """Block until at most ``unacknowledged`` messages are unacknowledged (woken by
        acknowledgements) or the time is up."""
        with self._cond:
            self._wake_at = unacknowledged
            try:
                return self._cond.wait_for(
                    lambda: self.published - self.acknowledged <= unacknowledged, timeout_s
                )
            finally:
                self._wake_at = None

    def close(self) -> None:
        """Wait for outstanding acknowledgements, then disconnect cleanly."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._stop()

    def abort(self) -> None:
        """Disconnect now, without waiting for acknowledgements (idempotent)."""
        if not self._closed:
            self._stop()

    def _stop(self) -> None:
        self._closed = True
        self._client.disconnect()
        self._client.loop_stop()
        # paho leaves its socket and the wake-up socket pair loop_start made to the
        # garbage collector (its __del__), which may finalise the sockets of a reference
        # cycle first: a ResourceWarning, now and then. Close them here, as ingest does.
        self._client._reset_sockets()

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
            self._stop()


def redacted_url(url: str) -> str:
    """``url`` with its password, if any, left out (it ends up in messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}@{host}").geturl()
