"""Renderers: from what storage returns to the bytes of a response, with no I/O of their own.

columns.py    the columns of a raw-reading export, per role, with units
csv_text.py   CSV of exports (passed through) and of time series
geojson.py    GeoJSON FeatureCollection of exports, streamed
parquet.py    Parquet of exports, streamed in row groups
tile_png.py   heat-map tiles: tile maths and the 256 px palette PNG
"""
