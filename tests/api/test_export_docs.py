"""docs/api.md's tables of qa_flags and status bits say what the code does, and its
recipes read real exports (pandas, pyarrow, and R where Rscript is installed) and
refuse files cut short."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from api.render.columns import ADMIN_COLUMNS, RESEARCHER_COLUMNS
from api.roles import Role
from firmware_protocol.frames import StatusBits
from stream.core.partials import Metric
from stream.core.policy import EXCLUDING_FLAGS
from stream.core.qa import QaFlag
from tests.api.api_factories import day_range

DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
SECTION = DOC[DOC.index("### Reading the columns of an export") : DOC.index("## Live updates")]


def _table(after: str) -> list[list[str]]:
    """Rows of the first markdown table after ``after`` in the section, cells stripped."""
    rest = SECTION[SECTION.index(after) :]
    lines = [ln for ln in rest.splitlines() if ln.startswith("|")]
    rows, started = [], False
    for ln in rest.splitlines():
        if ln.startswith("|"):
            started = True
            rows.append([c.strip() for c in ln.strip("|").split("|")])
        elif started:
            break
    assert lines
    return rows[2:]  # header and rule


def test_the_qa_flag_table_is_the_code() -> None:
    rows = _table("**`qa_flags`**")
    single = [f for f in QaFlag if f.name and f.value.bit_count() == 1]
    assert [r[2].strip("`") for r in rows] == [f.name for f in single]
    for row, flag in zip(rows, single, strict=True):
        bit = flag.value.bit_length() - 1
        assert (int(row[0]), int(row[1])) == (bit, int(flag))
        kept_out = [m.api_name for m in Metric if EXCLUDING_FLAGS[m] & flag]
        expected = (
            "all"
            if len(kept_out) == len(Metric)
            else ", ".join(kept_out)
            if kept_out
            else "annotation"
        )
        assert row[4] == expected, flag.name


def test_the_stated_masks_are_the_policy() -> None:
    stated = {m: int(v, 16) for m, v in re.findall(r"(\w+)\s+`(0x[0-9a-f]+)`", SECTION)}
    assert stated == {m.api_name: int(EXCLUDING_FLAGS[m]) for m in Metric}


def test_the_status_table_is_the_protocol() -> None:
    rows = _table("**`status`**")
    bits = [b for b in StatusBits if b.name and b.value]
    assert [(int(r[0]), int(r[1]), r[2].strip("`")) for r in rows] == [
        (b.value.bit_length() - 1, int(b), b.name) for b in bits
    ]


def _blocks(language: str) -> list[str]:
    """The code blocks in ``language`` of the section, in order."""
    fence = f"```{language}\n"
    parts = SECTION.split(fence)[1:]
    return [part[: part.index("```")] for part in parts]


def _recipes() -> dict[str, Any]:
    """The section's Python recipes, run: their functions by name."""
    namespace: dict[str, Any] = {}
    for code in _blocks("python"):
        if "def " in code:
            exec(compile(code, "docs/api.md recipe", "exec"), namespace)
    return namespace


def _export(client: httpx.Client, key: str, fmt: str, path: Path, **params: str) -> Path:
    response = client.get(
        "/v1/exports/readings",
        params={**day_range(), "format": fmt, **params},
        headers={"X-API-Key": key},
    )
    assert response.status_code == 200, response.text
    path.write_bytes(response.content)
    return path


def _provenance(header: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in header.split("; "))


def test_the_pandas_recipe_reads_a_real_export(
    client: httpx.Client, keys: dict[Role, str], tmp_path: Path
) -> None:
    read_csv_export = _recipes()["read_csv_export"]
    for role, rows in ((Role.RESEARCHER, 729), (Role.ADMIN, 729)):
        path = _export(client, keys[role], "csv", tmp_path / f"{role}.csv")
        comments, readings = read_csv_export(path)
        header = client.get(
            "/v1/exports/readings",
            params={**day_range(), "format": "csv"},
            headers={"X-API-Key": keys[role]},
        ).headers["X-Bikesense-Provenance"]
        # The provenance in the file is the one the header carries, the units each column's;
        # the corrections used are known at the end (none stored here).
        columns = RESEARCHER_COLUMNS if role is Role.RESEARCHER else ADMIN_COLUMNS
        assert comments == {
            "about": comments["about"],
            **_provenance(header),
            **{f"column {c.name}": c.unit for c in columns},
            "corrections": '{"no2": [], "pm1": [], "pm10": [], "pm25": []}',
        }
        assert list(readings.columns) == [c.name for c in columns]
        assert len(readings) == rows
        assert str(readings["ts"].dtype).endswith(", UTC]")
        assert readings["pm25_on_map"].dtype == bool
        assert readings["pm25_on_map"].all()
        assert (readings["qa_flag_names"] == "").all()
    usage = next(code for code in _blocks("python") if "= read_csv_export(path)" in code)
    namespace = {"read_csv_export": read_csv_export, "path": path}
    exec(compile(usage, "docs/api.md usage", "exec"), namespace)
    assert namespace["unit"] == "µg/m³"
    assert len(namespace["counted"]) == rows
    assert len(namespace["humid"]) == 0


def test_the_recipes_refuse_a_file_cut_short_or_damaged(
    client: httpx.Client, keys: dict[Role, str], tmp_path: Path
) -> None:
    recipes = _recipes()
    for fmt, reader in (
        ("csv", recipes["read_csv_export"]),
        ("geojson", recipes["read_geojson_export"]),
        ("parquet", recipes["read_parquet_export"]),
    ):
        whole = _export(client, keys[Role.RESEARCHER], fmt, tmp_path / f"whole.{fmt}")
        reader(whole)
        data = whole.read_bytes()
        # Cut on a line boundary (whole CSV rows: what pandas alone would take for a file),
        # in the middle of a line, and just before the statement's last byte.
        middle = data.index(b"\n", len(data) // 2) + 1
        for cut in (middle, middle + 7, len(data) - 2):
            short = tmp_path / f"short.{fmt}"
            short.write_bytes(data[:cut])
            with pytest.raises(ValueError):  # noqa: PT011 (each recipe says why in words)
                reader(short)
        if fmt != "parquet":
            damaged = tmp_path / f"damaged.{fmt}"
            damaged.write_bytes(data[:middle] + data[middle:].replace(b"52.1", b"52.2", 1))
            with pytest.raises(ValueError, match="damaged"):
                reader(damaged)


def _column_table() -> dict[str, tuple[str, str]]:
    """docs/api.md's "Every column of an export": each column's roles and Parquet type."""
    part = DOC[DOC.index("### Every column of an export") : DOC.index(SECTION[:40])]
    rows: dict[str, tuple[str, str]] = {}
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not line.startswith("| `") or len(cells) != 4:
            continue
        for name in re.findall(r"`([a-z0-9_]+)`", cells[0]):
            rows[name] = (cells[1], cells[2])
    return rows


def test_every_column_of_every_export_is_documented(
    client: httpx.Client, keys: dict[Role, str], tmp_path: Path
) -> None:
    documented = _column_table()
    admin = {c.name for c in ADMIN_COLUMNS}
    researcher = {c.name for c in RESEARCHER_COLUMNS}
    assert set(documented) == admin | researcher
    for name, (roles, _) in documented.items():
        expected = (
            "both" if name in admin & researcher else "admin" if name in admin else "researcher"
        )
        assert roles == expected, name
    # The Parquet types stated are the files' (CSV and GeoJSON carry the same columns:
    # test_the_pandas_recipe_reads_a_real_export, test_the_geojson_and_parquet_recipes_...).
    for role in (Role.RESEARCHER, Role.ADMIN):
        schema = pq.read_schema(_export(client, keys[role], "parquet", tmp_path / "x.parquet"))
        assert {f.name: str(f.type).replace("tz=", "") for f in schema} == {
            f.name: documented[f.name][1] for f in schema
        }
        geojson = _export(client, keys[role], "geojson", tmp_path / "x.geojson").read_text()
        properties = json.loads(geojson)["features"][0]["properties"]
        assert list(properties) == [f.name for f in schema]


def test_the_geojson_and_parquet_recipes_read_a_real_export(
    client: httpx.Client, keys: dict[Role, str], tmp_path: Path
) -> None:
    recipes = _recipes()
    key = keys[Role.RESEARCHER]
    header, features = recipes["read_geojson_export"](
        _export(client, key, "geojson", tmp_path / "x.geojson")
    )
    assert len(features) == 729
    assert header["identities"] == "daily pseudonyms, local days of Europe/Amsterdam"
    provenance, frame = recipes["read_parquet_export"](
        _export(client, key, "parquet", tmp_path / "x.parquet", metrics="noise")
    )
    assert provenance["metrics"] == "noise"
    assert len(frame) == 729
    assert list(frame.columns) == [
        c.name for c in RESEARCHER_COLUMNS if c.metric in (None, Metric.NOISE)
    ]


_R_DRIVER = """
args <- commandArgs(trailingOnly = TRUE)
export <- read_export(args[1])
r <- export$readings
cat("rows", nrow(r), "\\n")
cat("identities", export$comments[["identities"]], "\\n")
cat("unit", export$comments[["column pm25_ugm3"]], "\\n")
cat("on_map_class", class(r$pm25_on_map), "\\n")
cat("on_map_true", sum(r$pm25_on_map), "\\n")
cat("names_class", class(r$qa_flag_names), "\\n")
cat("ts_class", class(r$ts)[1], "\\n")
cat("first_ts", format(r$ts[1], "%Y-%m-%dT%H:%M:%SZ", tz = "UTC"), "\\n")
cat("humid", sum(bitwAnd(r$qa_flags, 32768L) != 0), "\\n")
"""


@pytest.mark.skipif(
    shutil.which("Rscript") is None,
    reason="Rscript is not installed (apt-get install r-base-core): the R recipe is unchecked",
)
def test_the_r_recipe_reads_a_real_export_and_refuses_one_cut_short(
    client: httpx.Client, keys: dict[Role, str], tmp_path: Path
) -> None:
    (recipe,) = _blocks("r")
    script = tmp_path / "recipe.R"
    script.write_text(recipe + _R_DRIVER)
    path = _export(client, keys[Role.RESEARCHER], "csv", tmp_path / "readings.csv")
    done = subprocess.run(
        ["Rscript", "--vanilla", str(script), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    said = dict(line.strip().split(" ", 1) for line in done.stdout.splitlines())
    assert said == {
        "rows": "729",
        "identities": "daily pseudonyms, local days of Europe/Amsterdam",
        "unit": "µg/m³",
        "on_map_class": "logical",
        "on_map_true": "729",
        "names_class": "character",
        "ts_class": "POSIXct",
        "first_ts": "2026-11-21T08:05:00Z",
        "humid": "0",
    }
    data = path.read_bytes()
    short = tmp_path / "short.csv"
    short.write_bytes(data[: data.index(b"\n", len(data) // 2) + 1])
    cut = subprocess.run(
        ["Rscript", "--vanilla", str(script), str(short)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cut.returncode != 0
    assert "is cut short" in cut.stderr
