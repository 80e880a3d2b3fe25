"""The OpenAPI 3.1 documents of the API, built from the route tables and their pydantic types.

Every function serves its own at `GET /openapi.json` (`serve_document`, which both adapters
call): its routes from its own root, so the document's relative server URL makes it work
wherever the function is mounted. It is built by the first request for it and kept for the
process; importing this module builds no model and loads no module a function does not load
anyway, so serving it adds nothing to cold start. The dev gateway and `make openapi` combine
every function's routes under `/<function>` (the gateway's mount, and OpenFaaS's
`/function/<function>` minus its prefix), tagged with the function's name.
"""

import re
import typing
from collections.abc import Mapping
from functools import cache
from importlib.metadata import version
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from shared.access.policy import PUBLIC
from shared.http.messages import Response
from shared.http.routing import ErrorFormat, PathRest, Route, Router

OPENAPI_VERSION = "3.1.0"
DOCUMENT_PATH = "/openapi.json"
_REF = "#/components/schemas/{model}"
_WORDS = re.compile(r"[A-Za-z0-9]+")
# A path below a created record: its id, then nothing or more fixed segments.
_BELOW_RECORD = re.compile(r"/\{\w+\}(/[^{}]*)?")
_SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A project API key (`ba_...`), the admin key, or a user's access token "
        "from the OpenID Connect provider.",
    },
    "signedEvent": {
        "type": "apiKey",
        "in": "header",
        "name": "ce-signature",
        "description": "Queue-triggered functions: the event's HMAC-SHA256 signature, keyed by "
        "EVENT_SIGNING_KEY (`python -m devtools.sign_event` makes one); a structured CloudEvent "
        "carries it in its `signature` attribute instead.",
    },
}
_FUNCTION_SERVER = {
    "url": ".",
    "description": "The function's root, where this document was fetched from: "
    "`<gateway>/function/<name>/` on OpenFaaS, its Knative URL, `/<name>/` on the dev gateway.",
}


_ERRORS = {
    400: "The body is missing or is not valid JSON.",
    401: "No credentials, or a key or token that is unknown, expired or revoked (queue-triggered "
    "functions: an unsigned or wrongly signed event).",
    402: "`budget_exceeded`: the project's monthly budget is spent (`details`: budget_usd, "
    "spent_usd, month); nothing was called or stored.",
    403: "Your role in the project does not allow this.",
    404: "No such resource (unknown or malformed id).",
    409: "The request conflicts with the current state (a duplicate name, dependents).",
    413: "The body is larger than MAX_BODY_BYTES.",
    415: "The body is not application/json.",
    422: "Validation failed: `details` lists every failing field as {loc, msg, type}.",
    429: "`rate_limited`: over the project's requests_per_minute for this key or user; retry "
    "after the `Retry-After` seconds.",
    500: "Unexpected failure; `details.request_id` identifies it in the logs.",
    503: "`database_unavailable`: MongoDB cannot serve now (unreachable, electing a primary); "
    "retry after the `Retry-After` seconds. Other codes name another dependency that is down.",
}
_RETRY_AFTER = {
    429: {
        "description": "Seconds until the caller's window has room again.",
        "schema": {"type": "integer"},
    },
    503: {
        "description": "Seconds to wait before trying again (sent with `database_unavailable`).",
        "schema": {"type": "integer"},
    },
}
_REQUEST_ID = {
    "description": "The request id: yours when you sent a sane X-Request-Id, else a fresh one.",
    "schema": {"type": "string"},
}


def _is_streamed(route: Route) -> bool:
    return route.events is not None


def _hand_made(response: Any) -> bool:
    """A handler returning a ready `Response` (or an `EventStream`): no JSON schema to give."""
    return isinstance(response, type) and issubclass(response, Response)


def _documented_response(route: Route) -> Any:
    """The type of the route's JSON answer: its return annotation, or for a handler making its
    own `Response` what it declares it `returns`; None when there is no JSON to describe."""
    if route.response is type(None):
        return None
    if _hand_made(route.response):
        return route.returns
    return route.response


def _is_conditional(route: Route) -> bool:
    """A GET whose handler reads the request to compare entity tags (`If-None-Match` -> 304)."""
    return route.method == "GET" and route.wants_request


def _request_media(route: Route) -> Mapping[str, Any]:
    """Each media type the route's body may be sent as, and the type the body is in it."""
    if route.body is not None:
        return {"application/json": route.body}
    return route.body_doc.media if route.body_doc is not None else {}


def _security(route: Route) -> list[dict[str, list[str]]]:
    """The scheme the route's access asks for: a signed event, else a bearer credential for any
    access that names a caller; public routes ask for none."""
    if route.access.kind == "signed_event":
        return [{"signedEvent": []}]
    return [{"bearer": []}] if route.access.needs_caller else []


def _error_statuses(route: Route, errors: ErrorFormat) -> list[int]:
    """The statuses of ours the route may answer, as the function's error format answers them."""
    answered = {errors.statuses.get(status, status) for status in _our_statuses(route)}
    if route.metered:
        answered |= errors.metered
    return sorted(status for status in answered if status is not None)


def _our_statuses(route: Route) -> set[int]:
    """What may go wrong: any id a request names may be unknown, any input invalid."""
    if route.path in ("/healthz", DOCUMENT_PATH):
        return {500}
    if route.path == "/readyz":
        return {500, 503}
    statuses = {404, 422, 500, 503}
    if route.access.kind != "public":
        statuses.add(401)
    if route.access.needs_caller:
        statuses.add(403)
    if _request_media(route):
        statuses |= {400, 413, 415}
    if route.method in {"POST", "PUT", "DELETE"}:
        statuses.add(409)
    if route.metered:
        statuses |= {402, 429}
    return statuses


def _event_types(route: Route) -> tuple[Any, ...]:
    """The event models of a streamed route's (discriminated) union."""
    union = (
        typing.get_args(route.events)[0]
        if typing.get_origin(route.events) is typing.Annotated
        else route.events
    )
    return typing.get_args(union) or (union,)


def _as_sent(event: dict[str, Any]) -> dict[str, Any]:
    """An event as a stream carries it: `data` is a line of JSON text (RFC 8895 `data:` field,
    OpenAPI's `text/event-stream` items), whose content is what the model describes."""
    data = event["properties"]["data"]
    if "contentSchema" in data or data.get("type") == "string":
        # Rewritten already (an event shared by two streams), or text sent as it is.
        return event
    text = {"type": "string", "contentMediaType": "application/json", "contentSchema": data}
    return {**event, "properties": {**event["properties"], "data": text}}


def _camel(*parts: str) -> str:
    return "".join(word[:1].upper() + word[1:] for part in parts for word in _WORDS.findall(part))


def _operation_id(function: str, route: Route) -> str:
    return f"{function}_{route.handler.__name__.strip('_')}".replace("-", "_")


def _gateway_path(function: str, route: Route) -> str:
    return f"/{function}{route.path.rstrip('/')}"


def _own_path(function: str, route: Route) -> str:
    return route.path.rstrip("/") or "/"


class _Schemas:
    """Collects every type the routes use and turns them into one set of named components."""

    def __init__(self) -> None:
        self.adapters: dict[tuple[int, JsonSchemaMode], tuple[TypeAdapter[Any], str | None]] = {}

    def add(self, annotation: Any, mode: JsonSchemaMode, title: str | None = None) -> None:
        key = (id(annotation), mode)
        if key not in self.adapters:
            self.adapters[key] = (TypeAdapter(annotation), title)

    def build(self) -> tuple[dict[tuple[int, JsonSchemaMode], dict[str, Any]], dict[str, Any]]:
        inputs = [(key, key[1], adapter) for key, (adapter, _) in self.adapters.items()]
        schemas, definitions = TypeAdapter.json_schemas(inputs, ref_template=_REF)
        refs = {key: schemas[key, key[1]] for key in self.adapters}
        named = definitions.get("$defs", {})
        for key, (_, title) in self.adapters.items():
            schema = refs[key]
            if title is not None and "$ref" not in schema:
                # An unnamed type (an Annotated union of events) becomes a component of its own.
                named[title] = schema
                refs[key] = {"$ref": _REF.format(model=title)}
        return refs, named


def _query_parameters(model: type[BaseModel], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    """One query parameter per field: absent means default, so `null` is never sent."""
    schema = model.model_json_schema(ref_template=_REF, mode="validation")
    for name, definition in schema.get("$defs", {}).items():
        schemas.setdefault(name, definition)
    required = set(schema.get("required", []))
    parameters = []
    for name, field_schema in schema["properties"].items():
        field_schema = dict(field_schema)
        options = [option for option in field_schema.pop("anyOf", []) if option != {"type": "null"}]
        if len(options) == 1:
            field_schema.update(options[0])
        elif options:
            field_schema["anyOf"] = options
        if field_schema.get("default", 0) is None:
            del field_schema["default"]
        field_schema.pop("title", None)
        parameter = {"name": name, "in": "query", "required": name in required}
        if "description" in field_schema:
            parameter["description"] = field_schema.pop("description")
        parameters.append({**parameter, "schema": field_schema})
    return parameters


def _path_parameters(route: Route) -> list[dict[str, Any]]:
    parameters = []
    for name, kind in route.path_types.items():
        # The same shapes the route's pattern accepts (routing._compile).
        if kind is int:
            schema: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 999_999_999}
        elif kind is PathRest:
            schema = {"type": "string", "minLength": 1}
        else:
            schema = {"type": "string", "pattern": "^[^/]+$"}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    return parameters


def _summary(route: Route) -> str:
    doc = (route.handler.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else route.handler.__name__.strip("_").replace("_", " ")


def _success(route: Route, refs: dict[tuple[int, JsonSchemaMode], Any]) -> dict[str, Any]:
    """The documented success responses of a route, by status."""
    response = route.response
    headers = {"X-Request-Id": _REQUEST_ID}
    if response is type(None):
        return {"204": {"description": "Done; no body.", "headers": headers}}
    success: dict[str, Any] = {"description": _summary(route), "headers": headers}
    documented = _documented_response(route)
    if documented is not None:
        success["content"] = {
            "application/json": {"schema": refs[(id(documented), "serialization")]}
        }
    responses = {str(route.status): success}
    if _is_streamed(route):
        # A stream always starts 200; each event's `event` and `data` follow the union's schema.
        stream = responses.setdefault("200", {"description": "A stream of server-sent events."})
        stream.setdefault("headers", headers)
        stream.setdefault("content", {})["text/event-stream"] = {
            "schema": refs[(id(route.events), "serialization")]
        }
    if _is_conditional(route):
        etag = {"description": "The representation's entity tag.", "schema": {"type": "string"}}
        success["headers"] = {**headers, "ETag": etag}
        responses["304"] = {
            "description": "Not modified: `If-None-Match` matched the current ETag.",
            "headers": {**headers, "ETag": etag},
        }
    return responses


def _links(function: str, route: Route, router: Router) -> dict[str, Any]:
    """What a client may do next with the record a POST creates: every operation of the same
    function addressed by that record's id alone (`/{dataset_id}`, `/{dataset_id}/cases`)."""
    response = route.response
    creates = isinstance(response, type) and issubclass(response, BaseModel)
    if route.method != "POST" or not creates or "id" not in response.model_fields:
        return {}
    base = route.path.rstrip("/")
    links = {}
    for target in router.routes:
        names = list(target.path_types)
        below = target.path.startswith(base) and _BELOW_RECORD.fullmatch(target.path[len(base) :])
        if len(names) != 1 or not below:
            continue
        links[_camel(target.handler.__name__)] = {
            "operationId": _operation_id(function, target),
            "parameters": {names[0]: "$response.body#/id"},
        }
    return links


def _operation(
    router: Router, route: Route, refs: dict[tuple[int, JsonSchemaMode], Any], schemas: dict
) -> dict[str, Any]:
    function = router.name
    parameters = _path_parameters(route)
    if route.query is not None:
        parameters += _query_parameters(route.query, schemas)
    if _is_conditional(route):
        parameters.append(
            {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": "An ETag from an earlier response; a match answers 304.",
                "schema": {"type": "string"},
            }
        )
    operation: dict[str, Any] = {
        "tags": [function],
        "summary": _summary(route),
        "operationId": _operation_id(function, route),
    }
    if parameters:
        operation["parameters"] = parameters
    operation["security"] = _security(route)
    media = _request_media(route)
    if media:
        operation["requestBody"] = {
            "required": True,
            "content": {
                media_type: {"schema": refs[(id(annotation), "validation")]}
                for media_type, annotation in media.items()
            },
        }
        if route.body_doc is not None and route.body_doc.description:
            operation["requestBody"]["description"] = route.body_doc.description
    errors = router.errors
    body = refs[(id(errors.body), "serialization")]
    operation["responses"] = _success(route, refs) | {
        str(status): _error_response(status, errors, body)
        for status in _error_statuses(route, errors)
    }
    return operation


def _error_response(status: int, errors: ErrorFormat, body: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": errors.descriptions.get(status) or _ERRORS[status],
        "content": {"application/json": {"schema": body}},
    }
    if status in _RETRY_AFTER:
        response["headers"] = {"Retry-After": _RETRY_AFTER[status]}
    return response


def _check_annotations(function: str, route: Route) -> None:
    if route.response is None:
        raise TypeError(
            f"{function}: handler {route.handler.__name__} ({route.method} {route.path}) has no "
            "return annotation; annotate it with a model, None (204) or Response."
        )


def openapi_document(
    routers: Mapping[str, Router],
    *,
    title: str,
    version: str,
    description: str = "",
    servers: list[dict[str, Any]],
    mounted: bool = True,
) -> dict[str, Any]:
    """The document describing every route of the given functions (name -> router), each under
    `/<function>` when `mounted`, else from the function's own root."""
    collector = _Schemas()
    for function, router in routers.items():
        collector.add(router.errors.body, "serialization")
        for route in router.routes:
            _check_annotations(function, route)
            for annotation in _request_media(route).values():
                collector.add(annotation, "validation")
            documented = _documented_response(route)
            if documented is not None:
                collector.add(documented, "serialization")
            if _is_streamed(route):
                events_name = _camel(route.handler.__name__, "events")
                collector.add(route.events, "serialization", title=events_name)
                for event in _event_types(route):
                    collector.add(event, "serialization")
    refs, schemas = collector.build()
    for router in routers.values():
        for route in filter(_is_streamed, router.routes):
            for event in _event_types(route):
                name = refs[(id(event), "serialization")]["$ref"].rsplit("/", 1)[1]
                schemas[name] = _as_sent(schemas[name])
    paths: dict[str, dict[str, Any]] = {}
    path_of = _gateway_path if mounted else _own_path
    for function, router in routers.items():
        for route in router.routes:
            operation = _operation(router, route, refs, schemas)
            links = _links(function, route, router)
            if links:
                operation["responses"][str(route.status)]["links"] = links
            paths.setdefault(path_of(function, route), {})[route.method.lower()] = operation
    used = {
        scheme
        for item in paths.values()
        for op in item.values()
        for need in op["security"]
        for scheme in need
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "servers": servers,
        "tags": [
            {"name": name, "description": _function_description(router)}
            for name, router in routers.items()
        ],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                name: scheme for name, scheme in _SECURITY_SCHEMES.items() if name in used
            },
        },
    }


def function_document(router: Router) -> dict[str, Any]:
    """The document of one function: its own routes, from its root, wherever that is mounted."""
    return openapi_document(
        {router.name: router},
        title=f"Better-Assistant: {router.name}",
        version=version("better-assistant"),
        description=_function_description(router),
        servers=[_FUNCTION_SERVER],
        mounted=False,
    )


def serve_document(router: Router) -> None:
    """Answer `GET /openapi.json` with the function's own document, built by the first request
    for it and kept for the process. First in the table, so no `/{id}` route takes the path."""
    if any(route.path == DOCUMENT_PATH for route in router.routes):
        return

    @cache
    def openapi_json() -> dict[str, Any]:
        """This function's OpenAPI document: its operations, from its own root."""
        return function_document(router)

    router.routes.insert(0, Route("GET", DOCUMENT_PATH, openapi_json, PUBLIC))


def _function_description(router: Router) -> str:
    """The docstring of the function's module, read through one of its own handlers."""
    for route in router.routes:
        if route.handler.__module__ not in (Route.__module__, __name__):
            return (route.handler.__globals__.get("__doc__") or "").strip()
    return ""
