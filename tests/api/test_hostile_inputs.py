"""Hostile values for every parameter of every route: a 4xx with the uniform error body,
never a 5xx and never a connection ended without a response (issue 22, item 5).

The routes and their parameters are read from the app's own OpenAPI schema, so a new
route or parameter is covered without touching this file. Each parameter gets values a
careless or hostile client sends: digits of other scripts (which ``int()`` and
``float()`` take), CR/LF and NUL, very long text, huge and negative integers, NaN and
infinities, empty values, repetitions, and percent-encodings that are malformed or do not
decode to UTF-8; the other parameters keep valid values (the schema's examples). Two
ways: every value of a fixed list, one request each, by the role that gets the parameter
through to its handler (deterministic: the regression examples live in the list), and
hypothesis drawing more (generated text, numbers, bytes), repeated, beside other optional
parameters, as any role. Beside them: any method on every route, odd paths under every
prefix (the static folders included), hostile keys and headers, garbage query strings.

Requests go out as raw bytes on a fresh connection each (``httpcore``), so the test sees
exactly what the server answered, or that it answered nothing. Checked for every answer:
the status is below 500; a 4xx has the uniform body of :class:`api.models.ErrorResponse`;
every response header is printable ASCII (request text copied into a header is how the
issue's reset and ``UnicodeEncodeError`` came about); and a parameter value that is not
printable ASCII once decoded is never taken as valid: every parameter of the API is a
name, number, time or list of them, so such a value is a mistake to refuse, not to read
as something else.

Not covered here: a request head beyond what uvicorn reads (about 64 KiB arriving at
once, or over 16 KiB arriving in pieces) never reaches the app; uvicorn answers it with
its own plain-text 400 and closes the connection, which the client may see as a reset
while it is still sending (uvicorn does not drain the rest). Requests here stay under
:data:`MAX_TARGET`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import httpcore
import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount

from api.app import create_app
from api.models import ErrorResponse
from api.roles import Role
from bikesense.settings import load_settings
from tests.api.api_server import ServerThread

#: Few examples per test, always the same ones (derandomized, no example database), so
#: that CI sends the same requests every time and the file runs in well under a minute.
HOSTILE = settings(
    max_examples=8,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Longest request target sent: well inside what uvicorn reads (see the module docstring).
MAX_TARGET = 12_000

#: Values as text; they are percent-encoded whole (UTF-8) into the request.
TEXT_VALUES = [
    "",
    " ",
    "\u0664",  # ARABIC-INDIC DIGIT FOUR: int() and float() take it
    "\u0664.6,52.1,4.7,52.2",
    "\uff18\uff19",  # fullwidth digits
    "4.6\r\n,52.1,4.7,52.2",
    "\r\n",
    "1\x00",
    "-1",
    "0",
    "+1",
    "1_0",
    "0x10",
    "10000000000000000",
    str(2**63),
    "-" + "9" * 40,
    "9" * 5000,  # past int()'s 4,300-digit limit
    "1e309",
    "-1e309",
    "nan",
    "-inf",
    "Infinity",
    "null",
    "[]",
    "'",
    "<script>",
    "../../../etc/passwd",
    "\ufeff1",
    "\u202e1",
    "\U0001f6b2",
    "x" * 3000,
    ",,,",
    "-180,-90,180,90",
    "4.6,52.1,4.7",
    "2026-02-30T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59+23:59",
    "2026-11-21T00:00:00\u0664Z",
]
#: Values put into the request as they are: percent-encodings that are odd or malformed.
RAW_VALUES = [
    b"%",
    b"%zz",
    b"%FF",
    b"%C0%AF",  # overlong UTF-8
    b"%ED%A0%80",  # a UTF-16 surrogate in UTF-8
    b"%00",
    b"%0D%0A",
    b"4.6%0D%0A,52.1,4.7,52.2",
    b"%D9%A4.6,52.1,4.7,52.2",
    b"+",
    b"%2525",
    b"&",
    b"%26x%3D1",
]


def _quoted(text: str) -> bytes:
    return quote(text, safe="", encoding="utf-8", errors="surrogatepass").encode("ascii")


def _printable(value: bytes) -> bool:
    """Whether a value, as the server decodes it, is printable ASCII."""
    return all(0x20 <= b <= 0x7E for b in unquote_to_bytes(value.replace(b"+", b" ")))


def _percent_bytes(data: bytes) -> bytes:
    return "".join(f"%{b:02X}" for b in data).encode("ascii")


no_surrogates = st.characters(exclude_categories=["Cs"])
hostile_values = st.one_of(
    st.sampled_from(TEXT_VALUES).map(_quoted),
    st.sampled_from(RAW_VALUES),
    st.text(no_surrogates, max_size=40).map(_quoted),
    st.integers(-(2**130), 2**130).map(lambda n: str(n).encode()),
    st.floats().map(lambda f: _quoted(repr(f))),
    st.binary(max_size=24).map(_percent_bytes),
)


@dataclass(frozen=True)
class Param:
    name: str
    location: str  # path, query or header
    required: bool
    example: tuple[str, ...] | None  # None: the schema gives no valid value


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    params: tuple[Param, ...]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _example(param: dict[str, Any], spec: dict[str, Any]) -> tuple[str, ...] | None:
    """A valid value of ``param`` from the schema: its example, enum or default."""
    schema = param.get("schema", {})
    found: Any = None
    for source in (param, schema):
        if source.get("examples"):
            found = source["examples"][0]
            break
    else:
        options = [schema, *schema.get("anyOf", [])]
        for option in options:
            ref = option.get("$ref") or option.get("items", {}).get("$ref")
            if ref:
                target = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
                if target.get("enum"):
                    found = target["enum"][0]
                    break
        else:
            found = schema.get("default")
    if found is None:
        return None
    return tuple(str(v) for v in found) if isinstance(found, list) else (str(found),)


def operations(app: FastAPI) -> list[Operation]:
    """Every operation in ``app``'s OpenAPI schema, with its parameters."""
    spec = app.openapi()
    found = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            params = tuple(
                Param(p["name"], p["in"], bool(p.get("required")), _example(p, spec))
                for p in op.get("parameters", [])
            )
            found.append(Operation(method.upper(), path, params))
    return found


#: The app as the server builds it; building it opens nothing (no database needed).
APP = create_app(load_settings(database_url="postgresql://unused@127.0.0.1:9/unused"), listen=False)
OPERATIONS = operations(APP)
TARGETS = [(op, p) for op in OPERATIONS for p in op.params]


def _target(op: Operation, values: dict[Param, list[bytes]]) -> bytes:
    path = op.path.encode()
    query: list[bytes] = []
    for param, items in values.items():
        if param.location == "path":
            path = path.replace(b"{" + param.name.encode() + b"}", items[0])
        elif param.location == "query":
            query += [_quoted(param.name) + b"=" + item for item in items]
    return path + (b"?" + b"&".join(query) if query else b"")


def _baseline(op: Operation, *, skip: Param | None, optional: set[str]) -> dict[Param, list[bytes]]:
    """Valid values for the required parameters (and the ``optional`` ones named)."""
    values = {}
    for p in op.params:
        if p == skip or not (p.required or p.name in optional) or p.example is None:
            continue
        values[p] = [_quoted(v) for v in p.example]
    missing = [p.name for p in op.params if p.required and p.example is None and p != skip]
    assert not missing, f"{op}: the schema gives no example of {missing}"
    return values


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def exchange(port: int, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> Answer:
    """One request on a connection of its own; a connection that ends without a whole
    response fails the test, with the request that did it."""
    url = httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=port, target=target)
    timeout = {"connect": 10.0, "read": 30.0, "write": 10.0, "pool": 10.0}
    try:
        with httpcore.stream(
            method, url, headers=[(b"Host", b"test"), *headers], extensions={"timeout": timeout}
        ) as response:
            streamed = any(
                k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                for k, v in response.headers
            )
            # An endless stream (/v1/live): its head is what this test is about.
            body = b"" if streamed else response.read()
    except (httpcore.NetworkError, httpcore.RemoteProtocolError, httpcore.TimeoutException) as exc:
        pytest.fail(f"{method.decode()} {target[:300]!r}: no whole response ({exc!r})")
    return Answer(response.status, list(response.headers), body)


def check(answer: Answer, what: str) -> None:
    assert answer.status < 500, f"{what}: {answer.status} {answer.body[:500]!r}"
    for name, value in answer.headers:
        assert all(0x20 <= b <= 0x7E for b in name + value), f"{what}: header {name!r}: {value!r}"
    if 400 <= answer.status < 500:
        kind = {k.lower(): v for k, v in answer.headers}.get(b"content-type", b"")
        assert kind.startswith(b"application/json"), f"{what}: {answer.status} as {kind!r}"
        if not answer.body and what.startswith("HEAD "):
            return  # the head of what a GET would answer, with no body (RFC 9110, 9.3.2)
        body = ErrorResponse.model_validate(json.loads(answer.body))
        assert body.detail, f"{what}: no detail in {answer.body!r}"


ROLES = [None, Role.OFFICER, Role.RESEARCHER, Role.ADMIN]


def _auth(role: Role | None, keys: dict[Role, str]) -> list[tuple[bytes, bytes]]:
    return [] if role is None else [(b"X-API-Key", keys[role].encode())]


def _with(
    op: Operation, param: Param, items: list[bytes]
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The request target and extra headers that give ``param`` the values ``items``."""
    values = _baseline(op, skip=param, optional=set())
    if param.location == "header":
        return _target(op, values), [(param.name.encode(), items[0])]
    values[param] = items
    return _target(op, values)[:MAX_TARGET], []


def _reaching_role(port: int, keys: dict[Role, str], op: Operation, param: Param) -> Role | None:
    """The first role (the public first) whose request with ``param``'s example is
    answered 2xx: one that gets the parameter through to the handler. Admins, say,
    filter exports by kit, researchers by kit pseudonym."""
    example = [_quoted(v) for v in param.example] if param.example else []
    target, headers = _with(op, param, example) if example else (_example_target(op), [])
    for role in ROLES:
        if exchange(port, op.method.encode(), target, headers + _auth(role, keys)).status < 300:
            return role
    return Role.ADMIN


FIXED_VALUES = [_quoted(v) for v in TEXT_VALUES] + RAW_VALUES


@pytest.mark.parametrize(("op", "param"), TARGETS, ids=[f"{o}:{p.name}" for o, p in TARGETS])
def test_every_hostile_value_of_every_parameter_is_refused_cleanly(
    shared_server: ServerThread, keys: dict[Role, str], op: Operation, param: Param
) -> None:
    """Each value of the lists above, as the one value of ``param``, by the role that gets
    ``param`` through to the handler; and all of them at once, repeated."""
    role = _reaching_role(shared_server.port, keys, op, param)
    repeated = [] if param.location == "path" else [FIXED_VALUES]
    for items in [[v] for v in FIXED_VALUES] + repeated:
        if param.location == "header" and not all(0x21 <= b <= 0x7E for b in items[0]):
            continue  # HTTP carries no such header value
        target, headers = _with(op, param, items)
        answer = exchange(
            shared_server.port, op.method.encode(), target, headers + _auth(role, keys)
        )
        what = f"{op.method} {target[:300]!r} {headers} as {role}"
        check(answer, what)
        # Every parameter of the API is a name, number, time or list of them, in ASCII:
        # a value with anything else in it (other scripts' digits, CR, LF, NUL, bytes that
        # are not UTF-8) is a mistake, refused rather than read as something else.
        if param.location != "header" and not all(_printable(v) for v in items):
            assert answer.status >= 400, f"{what}: taken as valid ({answer.status})"


@pytest.mark.parametrize(("op", "param"), TARGETS, ids=[f"{o}:{p.name}" for o, p in TARGETS])
@given(data=st.data())
@HOSTILE
def test_a_hostile_value_of_any_parameter_is_refused_cleanly(
    shared_server: ServerThread,
    keys: dict[Role, str],
    op: Operation,
    param: Param,
    data: st.DataObject,
) -> None:
    """Generated values, repeated up to three times, beside valid values of other
    optional parameters (``lat`` with ``lon``, say), as any role."""
    optional = sorted(p.name for p in op.params if not p.required and p.example is not None)
    companions = data.draw(st.sets(st.sampled_from(optional)), label="with") if optional else set()
    items = data.draw(st.lists(hostile_values, min_size=1, max_size=3), label="values")
    if param.location != "query":
        items = items[:1]
    role = data.draw(st.sampled_from(ROLES), label="role")
    values = _baseline(op, skip=param, optional=companions)
    headers = _auth(role, keys)
    if param.location == "header":
        headers.append((param.name.encode(), items[0]))
    else:
        values[param] = items
    target = _target(op, values)[:MAX_TARGET]
    answer = exchange(shared_server.port, op.method.encode(), target, headers)
    what = f"{op} {target[:300]!r} as {role}"
    check(answer, what)
    if param.location != "header" and not all(_printable(v) for v in items):
        assert answer.status >= 400, f"{what}: taken as valid ({answer.status})"


#: Routes outside the schema: the docs, the page's files and the static folders.
UNDOCUMENTED = ["/openapi.json", "/docs", "/docs/oauth2-redirect", "/app.js", "/style.css"]


def _example_target(op: Operation) -> bytes:
    return _target(op, _baseline(op, skip=None, optional=set()))


EXAMPLE_TARGETS = [_example_target(op) for op in OPERATIONS] + [p.encode() for p in UNDOCUMENTED]
PREFIXES = sorted(
    {b"/", b"/v1/", b"/v1/tiles/pm25/", b"/v1/tiles/pm25/13/4207/"}
    | {f"{r.path}/".encode() for r in APP.routes if isinstance(r, Mount)}
    | {t.split(b"?")[0].rsplit(b"/", 1)[0] + b"/" for t in EXAMPLE_TARGETS}
)

methods = st.one_of(
    st.sampled_from(
        ["HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "get", "Get"]
    ),
    st.from_regex(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]{1,40}", fullmatch=True),
    st.just("X" * 4000),
)


@given(method=methods, target=st.sampled_from(EXAMPLE_TARGETS), role=st.sampled_from(ROLES))
@HOSTILE
def test_any_method_on_any_route_is_answered_cleanly(
    shared_server: ServerThread,
    keys: dict[Role, str],
    method: str,
    target: bytes,
    role: Role | None,
) -> None:
    answer = exchange(shared_server.port, method.encode(), target, _auth(role, keys))
    check(answer, f"{method[:50]} {target!r}")


segments = st.one_of(
    hostile_values,
    st.sampled_from([b"..", b".", b"", b"%2e%2e", b"%2F", b"index.html", b"~", b"x" * 255]),
)


@given(
    prefix=st.sampled_from(PREFIXES),
    tail=st.lists(segments, min_size=1, max_size=6).map(b"/".join),
    long=st.integers(0, MAX_TARGET // 2),
)
@HOSTILE
@example(prefix=b"/static/page/", tail=b"%00", long=0)
@example(prefix=b"/static/page/", tail=b"x" * 300, long=0)
@example(prefix=b"/", tail=b"v1/cells", long=MAX_TARGET // 2)
def test_odd_paths_are_answered_cleanly(
    shared_server: ServerThread, prefix: bytes, tail: bytes, long: int
) -> None:
    target = (prefix + tail + b"/" + b"a" * long)[:MAX_TARGET]
    check(exchange(shared_server.port, b"GET", target, []), f"GET {target[:300]!r}")


#: Header values a client may send (HTTP allows no CR, LF or NUL in them).
header_values = st.one_of(
    hostile_values,
    st.binary(min_size=1, max_size=80).map(
        lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F).strip() or b"x"
    ),
    st.sampled_from([b"bsk_", b"bsk_0123456789ab_" + b"A" * 43, b"Bearer", b"Bearer ", b"\xff"]),
)


@given(
    target=st.sampled_from(EXAMPLE_TARGETS),
    name=st.sampled_from([b"X-API-Key", b"Authorization", b"If-None-Match"]),
    value=header_values,
    bearer=st.booleans(),
)
@HOSTILE
def test_hostile_keys_and_headers_are_refused_cleanly(
    shared_server: ServerThread, target: bytes, name: bytes, value: bytes, bearer: bool
) -> None:
    if name == b"Authorization" and bearer:
        value = b"Bearer " + value
    value = value.strip(b" \t")  # what a server would strip anyway (RFC 9110, 5.5)
    answer = exchange(shared_server.port, b"GET", target, [(name, value)])
    check(answer, f"GET {target!r} with {name!r}: {value[:100]!r}")


names = st.one_of(
    st.sampled_from(sorted({p.name.encode() for op in OPERATIONS for p in op.params})),
    hostile_values,
)
pairs = st.tuples(names, st.sampled_from([b"=", b"", b"=="]), hostile_values).map(b"".join)


@given(
    op=st.sampled_from(OPERATIONS),
    query=st.lists(pairs, max_size=8).flatmap(
        lambda items: st.sampled_from([b"&", b";", b"&&"]).map(lambda sep: sep.join(items))
    ),
    role=st.sampled_from(ROLES),
)
@HOSTILE
def test_garbage_query_strings_are_refused_cleanly(
    shared_server: ServerThread,
    keys: dict[Role, str],
    op: Operation,
    query: bytes,
    role: Role | None,
) -> None:
    target = (_example_target(op) + b"&" + query)[:MAX_TARGET]
    if b"?" not in target.split(b"&", 1)[0]:
        target = target.replace(b"&", b"?", 1)
    check(exchange(shared_server.port, b"GET", target, _auth(role, keys)), f"GET {target[:300]!r}")


CELL = "891f1d48177ffff"  # a valid index at resolution 9 (the schema's example)


@pytest.mark.parametrize(
    ("path", "params", "role", "parameter"),
    [
        # int(text, 16) took these as the cell they spell.
        ("/v1/timeseries", {"cell": "\u0668\u0669" + CELL[2:]}, None, "cell"),
        ("/v1/timeseries", {"cell": "0x" + CELL}, None, "cell"),
        ("/v1/timeseries", {"cell": " " + CELL}, None, "cell"),
        ("/v1/timeseries", {"cell": CELL[:4] + "_" + CELL[4:]}, None, "cell"),
        ("/v1/timeseries", {"cell": "-1"}, None, "cell"),  # issue 22: h3 OverflowError
        ("/v1/timeseries", {"cell": "10000000000000000"}, None, "cell"),
        # int() took other scripts' digits as a kit id; an empty filter selected every kit.
        ("/v1/exports/readings", {"kit": "\u0664"}, Role.ADMIN, "kit"),
        ("/v1/exports/readings", {"kit": "1_0"}, Role.ADMIN, "kit"),
        ("/v1/exports/readings", {"kit": ""}, Role.ADMIN, "kit"),
        ("/v1/exports/readings", {"kit": "\r\n"}, Role.ADMIN, "kit"),
        ("/v1/exports/readings", {"kit": ",,"}, Role.ADMIN, "kit"),
        ("/v1/exports/readings", {"kit_pseudonym": ""}, Role.RESEARCHER, "kit_pseudonym"),
        ("/v1/exports/readings", {"kit_pseudonym": " , "}, Role.RESEARCHER, "kit_pseudonym"),
        # issue 22: float() took these, and the text reached a header.
        ("/v1/exports/readings", {"bbox": "\u0664.6,52.1,4.7,52.2"}, Role.ADMIN, "bbox"),
        ("/v1/exports/readings", {"bbox": "4.6\r\n,52.1,4.7,52.2"}, Role.ADMIN, "bbox"),
    ],
)
def test_values_that_python_would_read_as_something_else_are_refused(
    shared_server: ServerThread,
    keys: dict[Role, str],
    path: str,
    params: dict[str, str],
    role: Role | None,
    parameter: str,
) -> None:
    headers = {} if role is None else {"X-API-Key": keys[role]}
    with httpx.Client(base_url=shared_server.url, timeout=30) as client:
        response = client.get(path, params={"metric": "pm25", **params}, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["parameter"] == parameter


def test_a_kit_filter_with_spaces_and_a_trailing_comma_still_works(
    shared_server: ServerThread, keys: dict[Role, str]
) -> None:
    with httpx.Client(base_url=shared_server.url, timeout=30) as client:
        response = client.get(
            "/v1/exports/readings",
            params={"kit": "1, 2,", "from": "2026-11-21T00:00:00Z", "to": "2026-11-22T00:00:00Z"},
            headers={"X-API-Key": keys[Role.ADMIN]},
        )
    assert response.status_code == 200, response.text
    assert "kits=1,2;" in response.headers["x-bikesense-provenance"]
