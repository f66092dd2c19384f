"""bikesense HTTP API: heat-map tiles, cells, time series, exports, live updates, the map.

Build the app with :func:`api.app.create_app`; ``docs/api.md`` describes the
routes, roles and privacy rules, the colour bands and the interval of the mean.

    app.py            the factory and its lifespan (pool, LISTEN task)
    routes/           one APIRouter per topic
    deps.py           Annotated dependencies: settings, connection, caller, time range
    aggregates.py     privacy thresholds and window choice, in one place
    tiles.py          tile maths and the PNG renderer (pure)
    bands.py          colour bands, loaded from data/bands.json
    export.py         streaming CSV / Parquet / GeoJSON encoders
    live.py           NOTIFY payload, bounded SSE fan-out
    keys.py, roles.py API keys (hashed) and what each role may see
"""
