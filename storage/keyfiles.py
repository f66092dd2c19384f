"""Server-side secrets (the kit master key, the pseudonym key), read at the edge.

Both follow one rule: the environment variable holding the key text, else the
file named by ``<VAR>_FILE``, else a file in the state folder, created with
mode 0600 on first use (the embedded demo). A deployment passes its keys in
from a secret store.
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


def key_text_from_environment(env_var: str, default_path: Path,
                              generate: Callable[[], str]) -> str:
    """``$env_var``, else the file named by ``$<env_var>_FILE``, else ``default_path``."""
    text = os.environ.get(env_var)
    if text:
        return text
    path = os.environ.get(f"{env_var}_FILE")
    if path:
        return Path(path).read_text()
    return read_or_create_key_text(default_path, generate)
