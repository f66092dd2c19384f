"""Property-based fuzzing of every operation in the OpenAPI schema: never a server error."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from api.roles import Role
from tests.api.api_server import ServerThread

FUZZ = settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def _fuzz(base_url: str, headers: dict[str, str] | None) -> list[str]:
    """Fuzz every operation (but /v1/live, an endless stream with its own tests)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/v1/live":
            continue
        operations += 1

        @given(case=operation.as_strategy())
        @FUZZ
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert operations >= 8
    return failures


# schemathesis' pytest plugin (from_fixture) does not run under pytest 9, so the
# operations are driven from their hypothesis strategies directly.
def test_no_server_errors_for_the_public(shared_server: ServerThread) -> None:
    assert _fuzz(shared_server.url, None) == []


def test_no_server_errors_for_an_admin(shared_server: ServerThread, keys: dict[Role, str]) -> None:
    assert _fuzz(shared_server.url, {"X-API-Key": keys[Role.ADMIN]}) == []


def test_every_error_names_its_parameter_in_json(shared_server: ServerThread) -> None:
    with httpx.Client(base_url=shared_server.url) as client:
        for url in (
            "/v1/cells?metric=pm25&bbox=x",
            "/v1/tiles/x/1/0/0.png",
            "/v1/timeseries?metric=pm25",
            "/v1/cells?metric=pm25&bbox=1,2,3,4&from=x",
        ):
            response = client.get(url)
            assert 400 <= response.status_code < 500
            body = response.json()
            assert body["detail"]
            assert all(d["parameter"] and d["message"] for d in body["detail"])


def test_the_schema_documents_every_route_with_examples(shared_server: ServerThread) -> None:
    spec = httpx.get(f"{shared_server.url}/openapi.json").json()
    paths = set(spec["paths"])
    assert {
        "/v1/tiles/{metric}/{z}/{x}/{y}.png",
        "/v1/cells",
        "/v1/timeseries",
        "/v1/exports/readings",
        "/v1/live",
        "/v1/kits",
        "/healthz",
        "/metrics",
        "/",
    } <= paths
    cells = spec["paths"]["/v1/cells"]["get"]
    bbox = next(p for p in cells["parameters"] if p["name"] == "bbox")
    assert bbox.get("examples") or bbox["schema"].get("examples")
    assert {"ApiKey", "Bearer"} <= set(spec["components"]["securitySchemes"])
