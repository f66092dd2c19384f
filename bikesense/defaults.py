"""Defaults of the domain that both the operator's settings and the pure core use.

A foundation module, imported by ``bikesense.settings`` (what an operator may
change) and by ``stream.core.process`` (what the core assumes when nobody says),
so that each default is written once.
"""

from __future__ import annotations

#: H3 resolutions aggregated by default: res 7 (~5 km²) for a region down to
#: res 10 (~15,000 m², about a street block). Source: h3geo.org cell statistics.
H3_RESOLUTIONS = (7, 8, 9, 10)
#: Window sizes in seconds: 1 min, 15 min, 1 h, 1 day.
WINDOW_SIZES_S = (60, 900, 3600, 86400)
#: IANA time zone of the fleet's local days (rides' days, k-anonymity's days, Lden).
DAY_TZ = "Europe/Amsterdam"
#: Seconds a batch's aggregates may wait to be merged with later batches' in the
#: embedded runtime (stream.embedded; 0: each batch merges its own): what the map's
#: aggregates may trail the raw readings by, plus a merge.
AGGREGATE_DELAY_S = 2.0
