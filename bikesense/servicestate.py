"""Where the embedded services run, as ``bikesense services up`` recorded it.

A foundation module: settings resolution (``bikesense.settings``) reads the
recorded URLs from here without importing the services' supervisor
(``bikesense.services``), which starts servers and sits at the edge.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from bikesense.exceptions import ConfigurationError

#: The record of what runs where, in the state folder.
RECORD_FILE = "services.json"


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """What runs where; written to ``services.json`` so other commands find it."""

    name: str
    url: str
    pid: int
    port: int
    directory: str
    log_file: str
    #: Mosquitto's kit listener, when the broker keeps kits and services apart
    #: (``bikesense.brokerauth``); ``url`` is then the service listener, ingest's.
    kits_url: str = ""


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie of one of ours counts as gone)."""
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_answers(port: int, *, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout_s):
            return True
    except OSError:
        return False


def read_records(state_dir: Path) -> dict[str, ServiceRecord]:
    """The recorded services of ``state_dir``; none when nothing was ever started there."""
    path = state_dir.resolve() / RECORD_FILE
    try:
        raw = json.loads(path.read_text())
        return {name: ServiceRecord(**fields) for name, fields in raw.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError) as exc:
        msg = (
            f"cannot read the services' record {path} ({exc}); `bikesense services up` rewrites it"
        )
        raise ConfigurationError(msg) from exc


def write_records(state_dir: Path, records: dict[str, ServiceRecord]) -> None:
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / RECORD_FILE).write_text(
        json.dumps({n: asdict(r) for n, r in records.items()}, indent=2)
    )


def running_url(state_dir: Path, service: str) -> str | None:
    """The URL of ``service`` when its recorded process is alive and its port answers."""
    record = read_records(state_dir).get(service)
    if record is None or not pid_alive(record.pid) or not port_answers(record.port):
        return None
    return record.url
