"""Per-kit broker credentials: each kit may publish only to its own topics.

A kit logs in to MQTT with its kit id (decimal) as user name and a password
derived from its secret, so nothing else needs provisioning:

    password = hex(HMAC-SHA256(secret, "bikesense mqtt password v1"))[:32]

The Mosquitto password file is written with ``mosquitto_passwd`` (Debian
package ``mosquitto``), so the hashes are in the broker's own format. The ACL
file uses Mosquitto's ``pattern`` lines, where ``%u`` is the user name.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ingest.exceptions import IngestError
from ingest.topics import TopicLayout

_PASSWORD_LABEL = b"bikesense mqtt password v1"


def kit_mqtt_password(secret: bytes) -> str:
    return hmac.new(secret, _PASSWORD_LABEL, hashlib.sha256).hexdigest()[:32]


def acl_text(layout: TopicLayout, service_users: Mapping[str, str]) -> str:
    """The ACL: kits write their own topics; service users read (ingest) or write (tests)."""
    lines = [
        "# Written by `bikesense kits broker-acl`. Kits log in as their decimal kit id.",
        f"pattern write {layout.root}/kits/%u/up",
        f"pattern write {layout.root}/kits/%u/status",
        "",
    ]
    for user, access in service_users.items():
        lines += [
            f"user {user}",
            f"topic {access} {layout.root}/kits/+/up",
            f"topic {access} {layout.root}/kits/+/status",
            "",
        ]
    return "\n".join(lines)


def write_password_file(path: Path, credentials: Mapping[str, str]) -> None:
    """Write ``user:password`` pairs hashed by ``mosquitto_passwd`` into ``path``."""
    tool = shutil.which("mosquitto_passwd", path="/usr/bin:/usr/sbin:/bin")
    if tool is None:
        raise IngestError("mosquitto_passwd not found; install it with: apt-get install mosquitto")
    plain = "".join(f"{user}:{password}\n" for user, password in credentials.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plain)
    path.chmod(0o600)
    # -U hashes a file of plain user:password lines in place.
    result = subprocess.run(  # noqa: S603
        [tool, "-U", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        path.unlink(missing_ok=True)
        raise IngestError(f"mosquitto_passwd failed: {result.stderr.strip()}")
