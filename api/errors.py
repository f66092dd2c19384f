"""Errors of the API and the one place they become HTTP.

    bikesense.exceptions.BikesenseError
    └── ApiError                   a request the API refuses; names the parameter and why
        ├── BadParameterError      422: a parameter is malformed or out of range
        ├── UnauthorizedError      401: a key is required, or the key given is not valid
        ├── ForbiddenError         403: the role of the key may not see this
        ├── NotFoundError          404
        ├── RateLimitedError       429: the public role's bucket is empty
        └── ServiceUnavailableError 503: the database or a server secret is out of reach

Every refusal answers with the same body, :class:`api.models.ErrorResponse`:
``{"error": "bad_parameter", "detail": [{"parameter": "bbox", "in": "query",
"message": "west must be less than east"}]}``.

Route handlers and dependencies raise; they never build an error response or
catch a lower layer's error to re-raise it. :func:`install_error_handlers`,
called by the app factory, translates at the edge: the API's own errors by
their class, FastAPI's validation errors into the same shape,
``storage.QueryError`` into 422, and a pool that hands out no connection or a
connection that fails (``psycopg_pool.PoolTimeout``, ``psycopg.OperationalError``)
into 503 with ``Retry-After``. Nothing a client sends should ever produce a 500.
"""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from bikesense.exceptions import BikesenseError
from storage.exceptions import QueryError

#: Seconds a client is asked to wait before retrying when the database is out of reach.
RETRY_AFTER_S = 5


class ApiError(BikesenseError):
    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None = None,
        location: str = "query",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter
        self.location = location
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {
            "error": self.code,
            "detail": [{"parameter": self.parameter, "in": self.location, "message": self.message}],
        }


class BadParameterError(ApiError):
    status_code = 422
    code = "bad_parameter"


class UnauthorizedError(ApiError):
    status_code = 401
    code = "unauthorized"


class ForbiddenError(ApiError):
    status_code = 403
    code = "forbidden"


class NotFoundError(ApiError):
    status_code = 404
    code = "not_found"


class RateLimitedError(ApiError):
    status_code = 429
    code = "rate_limited"


class ServiceUnavailableError(ApiError):
    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int | None = RETRY_AFTER_S) -> None:
        super().__init__(
            message,
            parameter=None,
            location="server",
            headers=None if retry_after_s is None else {"Retry-After": str(retry_after_s)},
        )


def _validation_detail(err: dict[str, Any]) -> dict[str, Any]:
    loc = [str(p) for p in err.get("loc", ())]
    location = loc[0] if loc else "request"
    parameter = loc[1] if len(loc) > 1 else None
    message = str(err.get("msg", "invalid value"))
    if len(loc) > 2:  # an item of a repeated parameter
        message = f"item {'.'.join(loc[2:])}: {message}"
    if "input" in err and isinstance(err["input"], str | int | float) and err["input"] != "":
        message = f"{message} (got {err['input']!r})"
    return {"parameter": parameter, "in": location, "message": message}


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map every refusal onto the one error body."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [_validation_detail(dict(e)) for e in exc.errors()]
        return JSONResponse({"error": "bad_parameter", "detail": detail}, status_code=422)

    @app.exception_handler(QueryError)
    async def _query(_: Request, exc: QueryError) -> JSONResponse:
        # Routes check their parameters first; this is the safety net for what storage
        # refuses, still a 4xx naming why rather than a 500.
        return error_response(BadParameterError(str(exc)))

    @app.exception_handler(PoolTimeout)
    async def _no_connection(_: Request, exc: PoolTimeout) -> JSONResponse:
        # The pool had no working connection to hand out within database_timeout_s.
        return error_response(
            ServiceUnavailableError("the database is not reachable; try again shortly")
        )

    @app.exception_handler(psycopg.OperationalError)
    async def _connection_failed(_: Request, exc: psycopg.OperationalError) -> JSONResponse:
        return error_response(ServiceUnavailableError(f"the database connection failed: {exc}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {
                "error": code,
                "detail": [{"parameter": None, "in": "path", "message": str(exc.detail)}],
            },
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
