"""bikesense: mobile environmental sensing on delivery bikes.

This package holds the glue that every stage shares: the settings read at the
edge, the local service harness (PostgreSQL and Mosquitto on loopback) and the
``bikesense`` command line. The pipeline stages are the top-level packages
``firmware_protocol``, ``ingest``, ``stream``, ``storage``, ``api`` and
``simulators``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    # The version is set once, in pyproject.toml; the installed metadata carries it here.
    __version__ = version("bikesense")
except PackageNotFoundError:  # a source tree that was never installed (`pip install -e .`)
    __version__ = "0+unknown"
