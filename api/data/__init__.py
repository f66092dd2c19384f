"""Data files of the API (colour bands)."""
