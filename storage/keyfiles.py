"""Server-side secrets (the kit master key, the pseudonym key): where their text comes from.

Both follow one rule: the key text if there is one, else the file named, else a
file in the state folder, created with mode 0600 on first use (the embedded
demo). The edge that starts a process reads the text and the file name from
its environment (``<VAR>`` and ``<VAR>_FILE``: storage/cli.py, the API) and
passes them in; a deployment fills them from a secret store. Nothing here reads
the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def read_or_create_key_text(path: Path, generate: Callable[[], str]) -> str:
    """The key text in ``path``; if there is no such file, ``generate()`` is written there first."""
    try:
        return path.read_text()
    except FileNotFoundError:
        pass
    text = generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return text


def key_text(
    text: str | None, file: str | Path | None, default_path: Path, generate: Callable[[], str]
) -> str:
    """``text`` if not empty, else the contents of ``file`` if named, else those of
    ``default_path`` (created with ``generate()`` on first use)."""
    if text:
        return text
    if file:
        return Path(file).read_text()
    return read_or_create_key_text(default_path, generate)
