"""Compute v1 discovery document: routes and strict JSON validation for the GCE fake.

The fake (``tests/fakes/gce.py``) refuses what the real API refuses, and the
authority on what a well-formed request looks like is the discovery document
that google-api-python-client ships
(``googleapiclient/discovery_cache/documents/compute.v1.json``). This module
loads it once and offers:

* ``Route``/``routes()``: every method of the document as (HTTP verb, path
  regex, method id, parameters), so the fake can tell "not a Compute URL" (404)
  from "a real method the fake does not implement" (501);
* ``Validator.request()``: a request body checked against the method's schema:
  unknown fields, wrong JSON types, out-of-range integers and bad enum values
  are refused with the messages and reasons the real API uses (proto3 JSON
  rules: ``null`` means unset, 64-bit integers may be strings, the original
  snake_case field name is accepted as well as the camelCase JSON name);
* ``Validator.response()``: the same check on what the fake answers, so a
  response the real client could not parse is a bug in the fake (HTTP 500)
  rather than a silent divergence;
* ``ApiError``: an error with the real error body shape
  ``{"error": {"code", "message", "errors": [{"message", "domain", "reason"}]}}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


class ApiError(Exception):
    """An HTTP error answered in the shape Compute Engine uses."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        headers: Mapping[str, str] | None = None,
        details: list[dict] | None = None,
        with_status: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.domain = domain
        self.headers = dict(headers or {})
        self.details = details
        self.with_status = with_status

    def body(self) -> dict:
        err: dict[str, Any] = {
            "code": self.status,
            "message": self.message,
            "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}],
        }
        if self.with_status and self.status in _STATUS_NAMES:
            err["status"] = _STATUS_NAMES[self.status]
        if self.details:
            err["details"] = self.details
        return {"error": err}


def invalid(field_name: str, value: Any, why: str) -> ApiError:
    return ApiError(400, "invalid", f"Invalid value for field '{field_name}': '{value}'. {why}")


def required(field_name: str) -> ApiError:
    return ApiError(400, "required", f"Required field '{field_name}' not specified")


def not_found(path: str) -> ApiError:
    return ApiError(404, "notFound", f"The resource '{path}' was not found")


def already_exists(path: str) -> ApiError:
    return ApiError(409, "alreadyExists", f"The resource '{path}' already exists")


def not_ready(path: str) -> ApiError:
    return ApiError(400, "resourceNotReady", f"The resource '{path}' is not ready")


def _json_error(path: str, message: str) -> ApiError:
    """A payload the JSON-to-proto layer cannot bind (unknown name, wrong type)."""
    return ApiError(
        400,
        "invalid",
        message,
        with_status=True,
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": path, "description": message}],
            }
        ],
    )


def discovery_path() -> Path:
    import googleapiclient

    return Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "compute.v1.json"


@lru_cache(maxsize=1)
def discovery() -> dict:
    """The Compute v1 discovery document (parsed once per process)."""
    return json.loads(discovery_path().read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Route:
    http_method: str
    regex: re.Pattern
    method_id: str  # e.g. "compute.instances.insert"
    path_params: Mapping[str, dict]
    query_params: Mapping[str, dict]
    request_ref: str | None
    response_ref: str | None
    literal_segments: int = field(default=0)


@lru_cache(maxsize=1)
def routes() -> tuple[Route, ...]:
    """Every method of the document, most specific path first."""
    doc = discovery()
    out: list[Route] = []

    def walk(resources: Mapping[str, Any]) -> None:
        for res in resources.values():
            for method in res.get("methods", {}).values():
                path = method.get("flatPath") or method["path"]
                parts = path.split("/")
                pieces, literal = [], 0
                for part in parts:
                    if part.startswith("{") and part.endswith("}"):
                        pieces.append(f"(?P<{part[1:-1].lstrip('+')}>[^/]+)")
                    else:
                        pieces.append(re.escape(part))
                        literal += 1
                params = method.get("parameters", {})
                out.append(
                    Route(
                        http_method=method["httpMethod"],
                        regex=re.compile("/".join(pieces) + r"\Z"),
                        method_id=method["id"],
                        path_params={k: v for k, v in params.items() if v.get("location") == "path"},
                        query_params={k: v for k, v in params.items() if v.get("location") == "query"},
                        request_ref=(method.get("request") or {}).get("$ref"),
                        response_ref=(method.get("response") or {}).get("$ref"),
                        literal_segments=literal,
                    )
                )
            walk(res.get("resources", {}))

    walk(doc["resources"])
    out.sort(key=lambda r: -r.literal_segments)
    return tuple(out)


def global_query_params() -> Mapping[str, dict]:
    """Parameters every method accepts (alt, fields, prettyPrint, quotaUser …)."""
    params = dict(discovery().get("parameters", {}))
    params.setdefault("$alt", {"type": "string"})
    params.setdefault("$.xgafv", {"type": "string"})
    return params


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_PROTO_TYPES = {
    ("string", None): "TYPE_STRING",
    ("string", "byte"): "TYPE_BYTES",
    ("string", "int64"): "TYPE_INT64",
    ("string", "uint64"): "TYPE_UINT64",
    ("integer", "int32"): "TYPE_INT32",
    ("integer", "uint32"): "TYPE_UINT32",
    ("number", "double"): "TYPE_DOUBLE",
    ("number", "float"): "TYPE_FLOAT",
    ("boolean", None): "TYPE_BOOL",
}


class Validator:
    """Checks JSON values against the document's schemas, as proto3 JSON parsing would."""

    def __init__(self, doc: Mapping[str, Any] | None = None) -> None:
        self.schemas: Mapping[str, Any] = (doc or discovery())["schemas"]
        self._aliases: dict[int, dict[str, str]] = {}

    # -- public ------------------------------------------------------------------
    def request(self, ref: str, body: Any, root: str = "resource") -> dict:
        """The body normalized (camelCase names, ints for 64-bit integers, nulls dropped)."""
        if not isinstance(body, dict):
            raise _json_error(root, f"Invalid JSON payload received. Expected an object at '{root}'.")
        return self._check({"$ref": ref}, body, root, strict=True)

    def response(self, ref: str, body: Any) -> None:
        """Raise AssertionError when the fake's own answer strays from the schema."""
        try:
            self._check({"$ref": ref}, body, ref, strict=True, response=True)
        except ApiError as exc:
            raise AssertionError(f"fake answered a {ref} the real client would not accept: {exc.message}") from None

    # -- internals ---------------------------------------------------------------
    def _aliases_for(self, props: Mapping[str, Any]) -> dict[str, str]:
        key = id(props)
        if key not in self._aliases:
            self._aliases[key] = {_snake(name): name for name in props if _snake(name) != name}
        return self._aliases[key]

    def _check(self, schema: Mapping[str, Any], value: Any, path: str, *, strict: bool, response: bool = False) -> Any:
        if "$ref" in schema:
            return self._check(self.schemas[schema["$ref"]], value, path, strict=strict, response=response)
        if value is None:
            return None  # proto3 JSON: null leaves the field unset
        typ, fmt = schema.get("type"), schema.get("format")
        if typ == "object" or (typ is None and "properties" in schema):
            if fmt == "google.protobuf.Any" or ("properties" not in schema and "additionalProperties" not in schema):
                if not isinstance(value, dict):
                    raise self._type_error(path, "TYPE_MESSAGE", value)
                return value
            if not isinstance(value, dict):
                raise self._type_error(path, "TYPE_MESSAGE", value)
            if "properties" in schema:
                props = schema["properties"]
                aliases = self._aliases_for(props)
                out: dict[str, Any] = {}
                for key, item in value.items():
                    name = key if key in props else aliases.get(key)
                    if name is None:
                        raise _json_error(
                            path,
                            f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}': Cannot find field.",
                        )
                    if name in out:
                        raise _json_error(
                            path, f"Invalid JSON payload received. Duplicate field \"{key}\" at '{path}'."
                        )
                    checked = self._check(props[name], item, f"{path}.{name}", strict=strict, response=response)
                    if checked is not None:
                        out[name] = checked
                return out
            inner = schema["additionalProperties"]
            return {
                str(k): self._check(inner, v, f"{path}[{k!r}]", strict=strict, response=response)
                for k, v in value.items()
            }
        if typ == "array":
            if not isinstance(value, list):
                raise self._type_error(path, "TYPE_MESSAGE (repeated)", value)
            items = schema.get("items", {})
            return [
                self._check(items, v, f"{path}[{i}]", strict=strict, response=response) for i, v in enumerate(value)
            ]
        if typ == "any":
            return value
        if typ == "boolean":
            if not isinstance(value, bool):
                raise self._type_error(path, "TYPE_BOOL", value)
            return value
        if typ == "integer" or (typ == "string" and fmt in ("int64", "uint64")):
            return self._integer(path, typ, fmt, value)
        if typ == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise self._type_error(path, _PROTO_TYPES.get((typ, fmt), "TYPE_DOUBLE"), value)
            if isinstance(value, str):
                if value not in ("NaN", "Infinity", "-Infinity"):
                    try:
                        return float(value)
                    except ValueError:
                        raise self._type_error(path, "TYPE_DOUBLE", value) from None
            return value
        if typ == "string":
            if not isinstance(value, str):
                raise self._type_error(path, _PROTO_TYPES.get((typ, fmt), "TYPE_STRING"), value)
            enum = schema.get("enum")
            if enum and value not in enum:
                raise _json_error(
                    path,
                    f"Invalid value at '{path}' (TYPE_ENUM), \"{value}\". Must be one of [{', '.join(enum)}].",
                )
            return value
        return value  # untyped: accept

    def _integer(self, path: str, typ: str, fmt: str | None, value: Any) -> int:
        ptype = _PROTO_TYPES.get((typ, fmt), "TYPE_INT32")
        if isinstance(value, bool):
            raise self._type_error(path, ptype, value)
        if isinstance(value, float):
            if not value.is_integer():
                raise self._type_error(path, ptype, value)
            value = int(value)
        elif isinstance(value, str):
            if not re.fullmatch(r"-?[0-9]+", value):
                raise self._type_error(path, ptype, value)
            value = int(value)
        elif not isinstance(value, int):
            raise self._type_error(path, ptype, value)
        low, high = _INT_RANGES.get(fmt or "int32", _INT_RANGES["int64"])
        if not low <= value <= high:
            raise self._type_error(path, ptype, value)
        return value

    @staticmethod
    def _type_error(path: str, ptype: str, value: Any) -> ApiError:
        return _json_error(path, f"Invalid value at '{path}' ({ptype}), {json.dumps(value)}")
