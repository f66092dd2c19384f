"""bikesense HTTP API: heat-map tiles, cells, time series, exports, live updates, the map.

Build the app with :func:`api.app.create_app`; ``docs/api.md`` describes the
routes, roles and privacy rules, the colour bands and the interval of the mean.

    app.py             the factory and its lifespan (pool, LISTEN task)
    routes/            one APIRouter per topic: parse the request, make one call, answer
    deps.py            Annotated dependencies: settings, pool and connection, now, time range
    database.py        the limits every database session of the API starts with
    auth.py            the caller's role from an API key; the gates of keyed routes
    privacy.py         what each role may see, in one place
    params.py          query parameters that need more than a type (bbox, cell, kits, place)
    errors.py          the API's error tree, translated to HTTP once (exception handlers)
    aggregates.py      window choice, statistics and bands over merged partials
    heatmap.py         a heat-map tile: its cells, their bands, its ETag
    export_stream.py   raw-reading exports: connections, rendering, closing, the response
    provenance.py      what an export records about how it was made
    pseudonym_key.py   the researchers' pseudonym key, cached until its source changes
    fleet_health.py    fleet health from storage's rows
    render/            pure renderers: CSV, GeoJSON, Parquet, the PNG heat-map tile
    bands.py           colour bands, loaded from data/bands.json
    live.py            NOTIFY payload, bounded SSE fan-out
    keys.py, roles.py  API keys (hashed) and the roles they carry
"""
