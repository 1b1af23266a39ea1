"""What a request carries is checked here, once: ids, query parameters, headers and JSON bodies.

Every check answers a 4xx with a message that says what was wrong and what would be valid:

* ids in paths, queries and bodies follow :data:`llamactl.server.ids.ID_RULE` (400, or 422 in a body);
* integers are plain decimal digits up to :data:`MAX_SEQ`; seconds are finite, 0 to
  :data:`MAX_WAIT_SECONDS`; booleans are true/false (also 1/0, yes/no, on/off);
* JSON bodies need ``Content-Type: application/json`` (415), are strict UTF-8 JSON without NaN,
  Infinity or lone surrogates, nest at most :data:`MAX_JSON_DEPTH` levels (400), and must match
  the route's model (422, FastAPI's ``[{"type", "loc", "msg", "input"}]``, as Llama Deploy answers).

The body size limit is enforced while the body is read, by
:class:`~llamactl.server.apiserver.guard.RequestGuard`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, TypeVar

import pydantic_core
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictStr, ValidationError
from starlette.requests import Request

from llamactl.server.apiserver.errors import UnprocessableBody, UnsupportedMediaType
from llamactl.server.errors import InvalidRequest
from llamactl.server.ids import check_id, id_problem
from llamactl.server.types import EventDefinition, TaskDefinition

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_SEQ",
    "MAX_WAIT_SECONDS",
    "PAGE_DEFAULT",
    "PAGE_MAX",
    "event_definition",
    "id_field",
    "json_body",
    "model_body",
    "page_params",
    "parse_json",
    "path_id",
    "query_bool",
    "query_id",
    "query_int",
    "query_param",
    "query_seconds",
    "resume_seq",
    "task_definition",
]

M = TypeVar("M", bound=BaseModel)

MAX_SEQ = 2**53 - 1
"""The largest sequence number a client may name (the largest integer JSON carries exactly)."""
MAX_WAIT_SECONDS = 86_400.0
"""The longest wait a client may ask for (one day)."""
MAX_JSON_DEPTH = 64
"""How deeply arrays and objects may nest in a JSON body or a task input."""

_DIGITS = re.compile(r"\+?[0-9]{1,20}")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


# --- ids -------------------------------------------------------------------------------------


def path_id(request: Request, key: str, what: str) -> str:
    """The path parameter ``key``, checked as an id (400 if it is not one)."""
    return check_id(request.path_params[key], what)


def query_id(request: Request, key: str, what: str) -> str | None:
    """The query parameter ``key`` as an id, or None when it is absent or empty."""
    raw = query_param(request, key)
    if not raw:
        return None
    problem = id_problem(raw, what)
    if problem is not None:
        raise InvalidRequest(f"query parameter '{key}': {problem}")
    return raw


# --- query parameters and headers --------------------------------------------------------------


def query_param(request: Request, key: str) -> str | None:
    """The query parameter ``key`` (the last when repeated, as Starlette reads it), None when
    absent. A request without a query string is answered without parsing one: most requests have
    none, and Starlette's parse of an empty one (``QueryParams``, ``parse_qsl``) costs ~3 us per
    request in place, for nothing."""
    if not request.scope.get("query_string"):
        return None
    return request.query_params.get(key)


def _shown(raw: str) -> str:
    return repr(raw) if len(raw) <= 40 and raw.isprintable() else f"a value of {len(raw)} characters"


def query_bool(request: Request, key: str, default: bool = False) -> bool:
    """The query parameter ``key`` as a boolean (true/false, 1/0, yes/no, on/off)."""
    raw = query_param(request, key)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidRequest(f"query parameter '{key}' must be true or false, got {_shown(raw)}")


def _whole(raw: str, what: str, maximum: int) -> int:
    if not _DIGITS.fullmatch(raw.strip()):
        raise InvalidRequest(f"{what} must be a whole number from 0 to {maximum}, got {_shown(raw)}")
    value = int(raw.strip())
    if value > maximum:
        raise InvalidRequest(f"{what} must be a whole number from 0 to {maximum}, got {value}")
    return value


def query_int(request: Request, key: str, default: int | None = None, maximum: int = MAX_SEQ) -> int | None:
    """The query parameter ``key`` as a whole number from 0 to ``maximum`` (``default`` if absent)."""
    raw = query_param(request, key)
    if raw is None or raw == "":
        return default
    return _whole(raw, f"query parameter '{key}'", maximum)


PAGE_DEFAULT = 1000
"""Items a listing returns when ``limit`` is not given (Llama Deploy's listings had no pages)."""
PAGE_MAX = 10_000


def page_params(request: Request) -> tuple[int, str | None, bool]:
    """``limit`` (1 to PAGE_MAX, default PAGE_DEFAULT), ``cursor`` (from ``X-Next-Cursor``) and
    ``order`` (``asc``, the default, or ``desc``: newest first)."""
    limit = query_int(request, "limit", PAGE_DEFAULT, maximum=PAGE_MAX)
    assert limit is not None
    if limit < 1:
        raise InvalidRequest(f"query parameter 'limit' must be between 1 and {PAGE_MAX}, got {limit}")
    order = (query_param(request, "order") or "asc").lower()
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"query parameter 'order' must be asc or desc, got {_shown(order)}")
    cursor = query_param(request, "cursor") or None
    if cursor is not None and (len(cursor) > 300 or not cursor.isprintable()):
        raise InvalidRequest("query parameter 'cursor' must be the X-Next-Cursor of the previous page")
    return limit, cursor, order == "desc"


def query_seconds(request: Request, key: str) -> float | None:
    """The query parameter ``key`` as a number of seconds from 0 to :data:`MAX_WAIT_SECONDS`."""
    raw = query_param(request, key)
    if raw is None or raw == "":
        return None
    expected = f"query parameter '{key}' must be a number of seconds from 0 to {MAX_WAIT_SECONDS:g}"
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"{expected}, got {_shown(raw)}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_WAIT_SECONDS:
        raise InvalidRequest(f"{expected}, got {_shown(raw)}")
    return value


def resume_seq(request: Request, from_seq: int | None) -> int:
    """Where a stream starts: after ``Last-Event-ID`` if sent, else ``from_seq``, else 0."""
    last = request.headers.get("last-event-id")
    if last is not None and last.strip():
        return _whole(last, "Last-Event-ID (the id of the last event received)", MAX_SEQ - 1) + 1
    return from_seq or 0


# --- JSON bodies -----------------------------------------------------------------------------


_PLAIN_JSON = frozenset(
    {"application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"}
)


def _require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type in _PLAIN_JSON:
        return
    media, _, params = content_type.partition(";")
    charset = next(
        (
            v.strip().strip('"').lower()
            for k, _, v in (p.partition("=") for p in params.split(";"))
            if k.strip().lower() == "charset"
        ),
        "utf-8",
    )
    if media.strip().lower() != "application/json" or charset not in ("utf-8", "utf8"):
        got = _shown(content_type) if content_type else "none"
        raise UnsupportedMediaType(
            f"this route reads a JSON body: send it with `Content-Type: application/json` (got {got})"
        )


def _check_values(value: Any, what: str) -> None:
    """Refuse nesting beyond MAX_JSON_DEPTH and non-finite numbers (jiter reads 1e999 as inf)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            if isinstance(item, float) and not math.isfinite(item):
                raise InvalidRequest(f"{what} holds a number too large for JSON: use finite numbers")
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest(f"{what} nests arrays or objects more than {MAX_JSON_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | float))


def parse_json(raw: bytes | str, what: str) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no lone surrogates, bounded nesting (400 otherwise)."""
    try:
        value = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        message = str(exc)
        if "recursion limit" in message:
            message = f"it nests arrays or objects more than {MAX_JSON_DEPTH} levels deep"
        raise InvalidRequest(f"{what} is not valid JSON: {message}") from None
    except TypeError:  # a str holding a lone surrogate cannot even be encoded
        raise InvalidRequest(f"{what} is not valid JSON: it holds an unpaired surrogate") from None
    _check_values(value, what)
    return value


async def json_body(request: Request) -> Any:
    """The request's JSON body (415 without ``Content-Type: application/json``, 400 if empty or invalid)."""
    _require_json(request)
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("the request body is empty: send a JSON object")
    return parse_json(raw, "the request body")


def _unprocessable(exc: ValidationError) -> InvalidRequest:
    errors = exc.errors(include_url=False, include_context=False)
    if errors and errors[0]["type"] == "json_invalid":
        message = str(errors[0]["msg"]).removeprefix("Invalid JSON: ")
        if "recursion limit" in message:
            message = f"it nests arrays or objects more than {MAX_JSON_DEPTH} levels deep"
        return InvalidRequest(f"the request body is not valid JSON: {message}")
    return UnprocessableBody([{**e, "loc": ["body", *e["loc"]]} for e in errors])


async def model_body(request: Request, model: type[M]) -> M:
    """The JSON body validated as ``model`` (422 in FastAPI's shape when it does not match).

    Parsed straight into the model (the hot path): the parser refuses invalid UTF-8, unpaired
    surrogates and deep nesting itself, and fields the model does not read are dropped.
    """
    _require_json(request)
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("the request body is empty: send a JSON object")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _unprocessable(exc) from None


def id_field(what: str) -> AfterValidator:
    """A pydantic validator for a body field holding an id (a 422 that states the rule)."""

    def check(value: str) -> str:
        problem = id_problem(value, what)
        if problem is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


class _TaskRequest(BaseModel):
    """A TaskDefinition as a client sends it: ``input`` is required (Llama Deploy answers 422)."""

    model_config = ConfigDict(extra="ignore")

    input: StrictStr
    task_id: Annotated[StrictStr, id_field("task id")] | None = None
    session_id: Annotated[StrictStr, id_field("session id")] | None = None
    service_id: Annotated[StrictStr, id_field("service id")] | None = None


class _EventRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    service_id: Annotated[StrictStr, id_field("service id")]
    event_obj_str: StrictStr


def _check_task_input(raw: str) -> None:
    if not raw.strip():
        return  # Llama Deploy 0.9 runs a task with input "" without arguments
    expected = 'task input must be a JSON object of the workflow\'s arguments, e.g. \'{"message": "hi"}\''
    try:
        value = parse_json(raw, "it")
    except InvalidRequest as exc:
        raise InvalidRequest(f"{expected}: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{expected}, not {type(value).__name__}")


async def task_definition(request: Request, session_id: str | None = None) -> TaskDefinition:
    """The TaskDefinition of the body, its ids and input checked; ``session_id`` wins over the body's."""
    body = await model_body(request, _TaskRequest)
    _check_task_input(body.input)
    fields = {"input": body.input, "session_id": session_id or body.session_id, "service_id": body.service_id}
    if body.task_id is not None:
        fields["task_id"] = body.task_id  # a fresh uuid costs as much as the rest of the parse
    return TaskDefinition(**fields)


async def event_definition(request: Request) -> EventDefinition:
    """The EventDefinition of the body, with ``event_obj_str`` checked to be strict JSON."""
    body = await model_body(request, _EventRequest)
    parse_json(body.event_obj_str, "event_obj_str")
    return EventDefinition(service_id=body.service_id, event_obj_str=body.event_obj_str)
