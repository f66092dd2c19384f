"""bikesense: mobile environmental sensing on delivery bikes.

This package holds the glue that every stage shares: the settings read at the
edge, the local service harness (PostgreSQL and Mosquitto on loopback) and the
``bikesense`` command line. The pipeline stages are the top-level packages
``firmware_protocol``, ``ingest``, ``stream``, ``storage``, ``api`` and
``simulators``.
"""

__version__ = "0.1.0"
