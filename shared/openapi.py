"""An OpenAPI 3.1 document per service, built from its URL map, the access rules of its views and
the pydantic models that validate their bodies and query strings (``documented``), so there is
no second, hand-written schema to drift. Served at ``/openapi.json``, with Swagger UI at
``/docs`` from the swagger-ui-bundle package (no CDN).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flask import Flask, Response, abort, current_app, jsonify
from pydantic import BaseModel

from shared.auth import PUBLIC, SCOPES, public, rule_of

View = TypeVar("View", bound=Callable[..., Any])

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
        }
    },
}
# What any guarded operation may answer besides its own successes; each is JSON in ERROR_SCHEMA.
COMMON_ERRORS = {
    "400": "invalid request (the details name each field)",
    "401": "no or bad credentials",
    "403": "the credentials lack the scope",
    "404": "not found",
    "413": "body too large",
    "415": "body is not application/json",
    "429": "rate limited (see Retry-After)",
    "503": "a dependency is unavailable or the service is shedding load (see Retry-After)",
}
PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def documented(
    summary: str,
    *,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    responses: dict[int, str] | None = None,
    media: str = "application/json",
    body_required: bool = True,
) -> Callable[[View], View]:
    """Describe a view for the OpenAPI document: the models it validates its body and query
    string with, and its own answers (``{201: "created"}``, of type ``media``) beside the
    common errors."""

    def mark(view: View) -> View:
        view.openapi = {  # type: ignore[attr-defined]
            "summary": summary,
            "body": body,
            "query": query,
            "responses": responses or {200: "ok"},
            "media": media,
            "body_required": body_required,
        }
        return view

    return mark


def document(app: Flask, title: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``."""
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        meta = getattr(view, "openapi", None)
        if meta is None:
            continue
        path = PARAMETER.sub(r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(
                rule.endpoint, rule.arguments, meta, rule_of(view), components
            )
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A customer's JWT, or an API key (ek_...). Scopes: "
                    + ", ".join(f"{name} ({what})" for name, what in SCOPES.items()),
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _operation(
    endpoint: str, arguments: set[str], meta: dict[str, Any], rule: frozenset[str] | None, components: dict[str, Any]
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": endpoint.replace(".", "_"), "summary": meta["summary"]}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in sorted(arguments)
    ]
    if meta["query"] is not None:
        schema = _schema(meta["query"], components)
        required = set(schema.get("required", []))
        parameters += [
            {"name": name, "in": "query", "required": name in required, "schema": field}
            for name, field in schema.get("properties", {}).items()
        ]
    if parameters:
        operation["parameters"] = parameters
    if meta["body"] is not None:
        operation["requestBody"] = {
            "required": meta["body_required"],
            "content": {"application/json": {"schema": _schema(meta["body"], components)}},
        }
    responses: dict[str, Any] = {
        str(status): {"description": what, "content": {meta["media"]: {"schema": {}}}}
        for status, what in meta["responses"].items()
    }
    for status, what in COMMON_ERRORS.items():
        if rule is PUBLIC and status in ("401", "403", "429"):
            continue
        responses.setdefault(
            status,
            {"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        )
    operation["responses"] = responses
    if rule is PUBLIC:
        operation["security"] = []
    elif rule:
        operation["security"] = [{"bearer": []}, {"apiKey": []}]
        operation["x-scopes"] = sorted(rule)  # any one of them (admin holds all)
    return operation


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """``model``'s JSON schema with its nested models moved to the components."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    return schema


SWAGGER_FILES = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}
DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script><script src="/docs/init.js"></script></body></html>
"""
DOCS_INIT = 'window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});\n'
# Swagger UI sets style attributes, so its page allows inline styles (never inline script).
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def install(app: Flask, title: str) -> None:
    """Serve the document and Swagger UI (both public: they describe the API, they hold no data)."""

    @public
    @documented("This service's OpenAPI document")
    def openapi_json() -> Response:
        return jsonify(document(current_app, title))

    @public
    def docs() -> Response:
        return _docs_response(DOCS_PAGE.format(title=title), "text/html")

    @public
    def docs_file(name: str) -> Response:
        if name == "init.js":
            return _docs_response(DOCS_INIT, "text/javascript")
        if name not in SWAGGER_FILES:
            abort(404)
        return _docs_response((_swagger_dir() / name).read_text(encoding="utf-8"), SWAGGER_FILES[name])

    app.add_url_rule("/openapi.json", "openapi_json", openapi_json)
    app.add_url_rule("/docs", "docs", docs)
    app.add_url_rule("/docs/<name>", "docs_file", docs_file)


def _swagger_dir() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def _docs_response(text: str, mimetype: str) -> Response:
    response = Response(text, mimetype=mimetype)
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response
