"""The pseudonym key of researchers' exports, read once and kept until its source changes.

Where the key comes from is in the settings' secrets: the text of
``BIKESENSE_PSEUDONYM_KEY``, else the file named by ``BIKESENSE_PSEUDONYM_KEY_FILE``,
else ``<state dir>/pseudonym.key`` (created on first use, for the demo); they are
handed to ``storage.pseudonyms.pseudonym_key``.

Reload rule: the key is read again only when its source is no longer the one
it was read from, that is when the file's path, inode, size or modification
time changes (a key rotated by replacing the
file, or by a secret store rewriting it, is picked up by the next export
without a restart). A request costs a ``stat``, not a read and a parse. A key
that cannot be read is not cached: every export asks again and gets a 503
naming the problem until it is fixed.
"""

from __future__ import annotations

from pathlib import Path

from api.errors import ServiceUnavailableError
from bikesense.settings import SecretSettings
from storage.exceptions import StorageError
from storage.pseudonyms import PseudonymKey, pseudonym_key

Source = tuple[str | int, ...]


class PseudonymKeys:
    """Hands out the current pseudonym key (see the module docstring)."""

    def __init__(self, secrets: SecretSettings, state_dir: Path) -> None:
        self._text = SecretSettings.text(secrets.pseudonym_key)
        self._file = secrets.pseudonym_key_file
        self._state_dir = state_dir
        self._source: Source | None = None
        self._key: PseudonymKey | None = None
        self.reads = 0  # how often the key was read and parsed

    def _current_source(self) -> Source:
        if self._text:
            return ("text",)
        path = self._file or self._state_dir / "pseudonym.key"
        try:
            st = path.stat()
        except OSError:
            return ("absent", str(path))
        return ("file", str(path), st.st_ino, st.st_size, st.st_mtime_ns)

    def get(self) -> PseudonymKey:
        """The key; :class:`api.errors.ServiceUnavailableError` when it cannot be read."""
        source = self._current_source()
        if self._key is not None and source == self._source:
            return self._key
        try:
            key = pseudonym_key(self._text, self._file, self._state_dir)
        except (StorageError, OSError) as exc:
            self._key = self._source = None
            raise ServiceUnavailableError(
                f"the pseudonym key cannot be read: {exc}", retry_after_s=None
            ) from exc
        self.reads += 1
        # Read again: a default key file is created by the first read.
        self._key, self._source = key, self._current_source()
        return key
