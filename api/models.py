"""Public response models: what clients see, separate from internal types."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from stream.core.partials import Metric


class MetricName(StrEnum):
    """Metric names of the API (``stream.core.partials.Metric.api_name``)."""

    PM1 = "pm1"
    PM25 = "pm25"
    PM10 = "pm10"
    NO2 = "no2"
    NOISE = "noise"
    TEMPERATURE = "temperature"
    HUMIDITY = "humidity"

    @property
    def metric(self) -> Metric:
        return Metric.from_api_name(self.value)


class Values(StrEnum):
    """Which values a figure is made of (docs/calibration.md, "Corrected values")."""

    RAW = "raw"  # as the kits measured them
    CORRECTED = "corrected"  # each reading corrected by its kit's correction

    @property
    def corrected(self) -> bool:
        return self is Values.CORRECTED


VALUES_DOC = (
    "raw (the default): the kits' readings as measured; corrected: each reading "
    "corrected by its kit's correction against reference stations (PM1, PM2.5, PM10 "
    "and NO2 only), with the correction's uncertainty in the interval. A cell-window "
    "is shown corrected only where every reading in it was corrected "
    "(docs/calibration.md)"
)


class Corrections(BaseModel):
    """What corrected figures were made with."""

    values: Values = Field(description="raw or corrected, as asked")
    versions: list[str] = Field(
        default_factory=list,
        description="the versions of the corrections behind the corrected figures of the "
        "range (`bikesense calibration list`); empty for raw values",
    )


class ErrorDetail(BaseModel):
    parameter: str | None = Field(description="the parameter at fault, if one is")
    location: str = Field(alias="in", description="query, path, header or body")
    message: str

    model_config = ConfigDict(populate_by_name=True)


class ErrorResponse(BaseModel):
    error: str = Field(examples=["bad_parameter"])
    detail: list[ErrorDetail]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "bad_parameter",
                    "detail": [
                        {
                            "parameter": "bbox",
                            "in": "query",
                            "message": "west (5.2) must be less than east (4.8)",
                        }
                    ],
                }
            ]
        }
    )


#: Error responses every route may give, for the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "the API key is not valid"},
    403: {"model": ErrorResponse, "description": "the role may not see this"},
    422: {"model": ErrorResponse, "description": "a parameter is malformed or out of range"},
    429: {"model": ErrorResponse, "description": "rate limit of the public role"},
}


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unavailable"]
    live_clients: int


#: Why a statistics row has no interval (api.stats.REASONS).
IntervalReason = Literal["single_ride", "no_spread", "zero_mean"]


class CellStats(BaseModel):
    """Statistics of one metric in one H3 cell over the time range."""

    cell: str = Field(description="H3 index", examples=["891f1d48177ffff"])
    resolution: int
    metric: MetricName
    unit: str = Field(examples=["µg/m³"])
    status: Literal["ok", "insufficient"] = Field(
        description="insufficient: too few readings to colour; never read it as clean air"
    )
    n_readings: int
    rides: int = Field(description="distinct rides over the range")
    days: int = Field(description="distinct days with rides over the range")
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    p50: float | None = Field(description="median, from the fixed-bin histogram")
    p95: float | None
    p50_error_bound: float | None = Field(
        default=None,
        description="the sample median is within this of p50 (the histogram "
        "bins it was read from; docs/statistics.md)",
    )
    p95_error_bound: float | None = None
    laeq_db: float | None = Field(default=None, description="noise: energy average, dB(A)")
    lamax_db: float | None = Field(default=None, description="noise: max of LAmax, dB(A)")
    ci95_low: float | None = Field(
        description="95 % interval of the value shown (the mean; LAeq for noise), with "
        "within-ride correlation taken into account (docs/statistics.md) and, for "
        "corrected values, the correction's uncertainty (docs/calibration.md); "
        "null when interval_reason says why"
    )
    ci95_high: float | None
    interval_reason: IntervalReason | None = Field(
        default=None,
        description="why there is no interval: single_ride (one ride cannot "
        "tell its kit's error from the air), no_spread (fewer than two readings), "
        "zero_mean; null when there is one",
    )
    band: str | None = Field(description="colour band label of the mean (LAeq for noise)")
    colour: str | None = Field(examples=["#50CCAA"])


class Polygon(BaseModel):
    type: Literal["Polygon"] = "Polygon"
    coordinates: list[list[tuple[float, float]]]


class CellFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str
    geometry: Polygon
    properties: CellStats


class CellCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    metric: MetricName
    resolution: int
    window_s: int = Field(description="size of the windows merged over the range")
    time_from: datetime = Field(description="effective start, aligned to window_s")
    time_to: datetime
    role: str
    band_version: str
    note: str
    withheld: bool = Field(
        default=False,
        description=(
            "true when public data was held back for privacy around this view and period: "
            "a district (H3 resolution 7) on a UTC day that the view and the period touch "
            "holds units below k that together saw at least k rides of the metric. Judged "
            "per whole district-day, never per cell; always false with a key "
            '(docs/privacy.md, "Withheld")'
        ),
    )
    corrections: Corrections = Field(
        default_factory=lambda: Corrections(values=Values.RAW),
        description="raw or corrected values, and the corrections used",
    )
    features: list[CellFeature]


class TimeseriesPoint(BaseModel):
    start: datetime
    n_readings: int
    rides: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    p50: float | None
    p95: float | None
    p50_error_bound: float | None = None
    p95_error_bound: float | None = None
    laeq_db: float | None = None
    ci95_low: float | None
    ci95_high: float | None
    interval_reason: IntervalReason | None = None
    status: Literal["ok", "insufficient"]


class Timeseries(BaseModel):
    metric: MetricName
    unit: str
    resolution: int
    bucket_s: int
    cell: str | None
    bbox: tuple[float, float, float, float] | None
    time_from: datetime
    time_to: datetime
    role: str
    corrections: Corrections = Field(
        default_factory=lambda: Corrections(values=Values.RAW),
        description="raw or corrected values, and the corrections used",
    )
    points: list[TimeseriesPoint]


class RejectCount(BaseModel):
    reason: str
    count: int


class KitHealth(BaseModel):
    kit_id: int
    pseudonym: str
    status: str
    last_seen_at: datetime | None
    battery_pct: float | None
    firmware_version: str | None
    frames_accepted: int | None = Field(description="frames stored over the period, if known")
    readings_stored: int | None
    rejected: list[RejectCount]


class Fleet(BaseModel):
    since: datetime
    kits: list[KitHealth]
    rejected_unknown_kit: list[RejectCount] = Field(
        description="rejected frames that named no registered kit, by reason"
    )


class BandOut(BaseModel):
    label: str
    colour: str
    lower: float
    upper: float | None


class ScaleOut(BaseModel):
    metric: MetricName
    unit: str
    name: str
    source: str | None
    reference: str | None
    bands: list[BandOut]


class Meta(BaseModel):
    metrics: list[MetricName]
    band_version: str
    scales: list[ScaleOut]
    who_2021: dict[str, object]
    resolutions: list[int]
    window_sizes_s: list[int]
    role: str
    public_min_rides: int
    public_min_window_s: int
    basemap_url: str
    map_center: tuple[float, float] = Field(description="lon, lat")
    map_zoom: float
    edge_m: dict[int, float] = Field(description="average H3 edge length per resolution, m")
    min_edge_px: float = Field(
        description="tiles use the finest resolution whose edge spans at least this many pixels"
    )
    corrected_metrics: list[MetricName] = Field(
        default_factory=list,
        description="metrics with corrected values stored: the map shows these corrected "
        "by default (docs/map.md)",
    )
    note: str
