"""How big an MQTT message may be, derived from the wire format (docs/protocol.md).

The largest message a kit may send is a readings frame of ``MAX_READINGS_PER_FRAME``
readings (``MAX_FRAME_BYTES`` = 38,960 bytes, docs/protocol.md "Limits"); a status
message is smaller (``MAX_STATUS_BYTES``). Anything larger is not a frame of this
protocol, whatever it holds: the broker refuses the packet (``max_packet_size``,
bikesense/services.py and deploy/mosquitto.conf) and ingest refuses the payload
(reason ``too_large``), keeping only its first ``MAX_PAYLOAD_BYTES`` for the rejects
table, so that memory and storage per message stay bounded even behind a broker
configured without the limit.
"""

from __future__ import annotations

from typing import Final

from firmware_protocol import MAX_FRAME_BYTES, MAX_STATUS_BYTES

#: The largest payload the protocol allows on any kit topic.
MAX_PAYLOAD_BYTES: Final = max(MAX_FRAME_BYTES, MAX_STATUS_BYTES)

#: What a PUBLISH adds around its payload: fixed header (1 byte + up to 4 of remaining
#: length), topic (2-byte length + the topic, ``<root>/kits/<kit id>/status``: under
#: 200 bytes for any root we configure) and packet id (2). MQTT 3.1.1 §3.3.
PUBLISH_OVERHEAD_BYTES: Final = 1024

#: The broker's ``max_packet_size``: a client that sends a bigger packet is disconnected,
#: so a kit sees its oversized frame refused (never acknowledged). Mosquitto's
#: ``message_size_limit`` is not used: for an MQTT 3.1.1 client it acknowledges the
#: message and drops it (measured with Mosquitto 2.0.11), a loss the kit cannot see.
MAX_PACKET_BYTES: Final = MAX_PAYLOAD_BYTES + PUBLISH_OVERHEAD_BYTES
