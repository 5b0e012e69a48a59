"""The OpenAPI description of the HTTP API, built from the same pydantic models that validate it."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from pydantic import BaseModel, TypeAdapter

from .models import (
    Announcement,
    AnnouncementIn,
    Job,
    JobCreate,
    JobUpdate,
    LogsIn,
    RevokeIn,
    TokenIn,
)

REF = "#/components/schemas/{model}"
ERRORS = {
    "400": "invalid_json or invalid_payload (the message names the field)",
    "401": "unauthorized",
    "403": "forbidden",
    "413": "payload_too_large",
    "503": "unavailable",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*extra: str) -> dict[str, Any]:
    answers = {status: _json(_ref("Error"), text) for status, text in ERRORS.items()}
    for status in extra:
        answers[status] = _json(_ref("Error"), {"404": "not_found", "409": "conflict"}[status])
    return answers


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model.__name__)}}}


NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": NAME, "maxLength": 128},
}


def _query(name: str, low: int, high: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": low}
    if high is not None:
        schema["maximum"] = high
    return {"name": name, "in": "query", "required": False, "schema": schema}


def build_openapi() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (JobCreate, JobUpdate, LogsIn, AnnouncementIn, TokenIn, RevokeIn):
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["Job"] = TypeAdapter(Job).json_schema(ref_template=REF)
    schemas["Announcement"] = TypeAdapter(Announcement).json_schema(ref_template=REF)
    schemas["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    }
    job = _json(_ref("Job"), "the job's full state")
    event = _json(_ref("Job"), "the job's new state as its event (tags_removed: tags it took away)")
    idempotency = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    }
    status = {
        "name": "status",
        "in": "query",
        "required": False,
        "schema": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
    }
    listed = {"type": "object", "properties": {"jobs": {"type": "array", "items": _ref("Job")}}}
    name = {"type": "string", "pattern": NAME, "maxLength": 64}
    tag = {"name": "tag", "in": "query", "required": False, "schema": name}
    parent = {"name": "parent", "in": "query", "required": False,
              "schema": {**name, "maxLength": 128}}  # fmt: skip
    summary = {
        "type": "object",
        "properties": {
            "job_id": {"type": "string"},
            "total": {"type": "integer"},
            "by_status": {"type": "object", "additionalProperties": {"type": "integer"}},
            "progress": {"type": ["number", "null"]},
            "updated_at": {"type": "string"},
        },
    }
    events = {
        "type": "object",
        "properties": {
            "events": {"type": "array", "items": _ref("Job")},
            "reset": {"type": "boolean"},
        },
    }
    appended = {
        "type": "object",
        "properties": {
            "job_id": {"type": "string"},
            "offsets": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        },
    }
    lines_body = {"oneOf": [_ref("LogsIn"), _ref("LogLineIn")]}  # many lines, or one
    announcements = {
        "type": "object",
        "properties": {"announcements": {"type": "array", "items": _ref("Announcement")}},
    }
    token = {
        "type": "object",
        "properties": {name: {"type": "string"} for name in ("token", "expires_at", "jti")},
    }
    revoked = {
        "type": "object",
        "properties": {"revoked": {"type": "object"}, "disconnected_here": {"type": "integer"}},
    }
    webhooks = {
        "type": "object",
        "properties": {
            "signed": {"type": "boolean"},
            "webhooks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "url": {"type": "string", "description": "without credentials or query"},
                        "filters": {"type": "object"},
                        "pending": {"type": "integer"},
                        "delivered": {"type": "integer"},
                        "dead": {"type": "integer"},
                        "in_flight": {"type": "integer"},
                        "last_success": {"type": ["string", "null"]},
                        "last_failure": {"type": ["string", "null"]},
                        "last_error": {"type": ["string", "null"]},
                    },
                },
            },
        },
    }
    plain = {"200": {"description": "ok"}, "503": _json(_ref("Error"), "unavailable")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchboard", "version": version("switchboard")},
        "security": [{"admin": []}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/jobs": {
                "post": {
                    "summary": "Create a job",
                    "parameters": [idempotency],
                    "requestBody": _body(JobCreate),
                    "responses": {"201": job, **_errors("409")},
                },
                "get": {
                    "summary": "Recent jobs, newest first (with a tag, or children of a parent)",
                    "parameters": [status, _query("limit", 1, 1000), tag, parent],
                    "responses": {"200": _json(listed, "jobs"), **_errors()},
                },
            },
            "/api/jobs/{job_id}/children": {
                "get": {
                    "summary": "A parent's children: counts by status, mean progress",
                    "parameters": [JOB_ID],
                    "responses": {"200": _json(summary, "the summary"), **_errors("404")},
                },
            },
            "/api/jobs/{job_id}": {
                "get": {
                    "summary": "A job's current state",
                    "parameters": [JOB_ID],
                    "responses": {"200": job, **_errors("404")},
                },
                "delete": {
                    "summary": "Forget a job and its history",
                    "parameters": [JOB_ID],
                    "responses": {"204": {"description": "forgotten"}, **_errors("404")},
                },
            },
            "/api/jobs/{job_id}/updates": {
                "post": {
                    "summary": "Apply an update (creates the job if unknown)",
                    "parameters": [JOB_ID, idempotency],
                    "requestBody": _body(JobUpdate),
                    "responses": {"200": event, "201": event, **_errors("409")},
                },
            },
            "/api/jobs/{job_id}/logs": {
                "post": {
                    "summary": "Append log lines (the job must exist; finished is fine)",
                    "parameters": [JOB_ID, idempotency],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": lines_body}},
                    },
                    "responses": {
                        "201": _json(appended, "the offsets given, in order"),
                        **_errors("404"),
                    },
                },
            },
            "/api/jobs/{job_id}/cancel": {
                "post": {
                    "summary": "Ask the job's worker to stop (sets cancel_requested, one event)",
                    "parameters": [JOB_ID],
                    "responses": {"200": job, **_errors("404", "409")},
                },
            },
            "/api/jobs/{job_id}/events": {
                "get": {
                    "summary": "Kept events with seq > since, oldest first",
                    "parameters": [JOB_ID, _query("since", 0), _query("limit", 1, 1000)],
                    "responses": {"200": _json(events, "events"), **_errors("404")},
                },
            },
            "/api/jobs/{job_id}/stream": {
                "get": {
                    "summary": "Server-Sent Events: one job:update per event, id = seq",
                    "description": "Admin or client token, in Authorization or ?token=. With"
                    " log_since (empty: from now on), job:log batches too, and every id is"
                    " <seq>:<offset>.",
                    "security": [{"admin": []}, {}],
                    "parameters": [
                        JOB_ID,
                        _query("since", 0),
                        _query("log_since", 0),
                        {"name": "token", "in": "query", "schema": {"type": "string"}},
                        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "the event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(),
                    },
                },
            },
            "/api/announcements": {
                "post": {
                    "summary": "Announce on /info",
                    "parameters": [idempotency],
                    "requestBody": _body(AnnouncementIn),
                    "responses": {
                        "201": _json(_ref("Announcement"), "the announcement"),
                        **_errors(),
                    },
                },
                "get": {
                    "summary": "Recent announcements, newest first",
                    "parameters": [_query("limit", 1, 1000)],
                    "responses": {"200": _json(announcements, "announcements"), **_errors()},
                },
            },
            "/api/tokens": {
                "post": {
                    "summary": "Mint a client token (needs a client secret)",
                    "parameters": [idempotency],
                    "requestBody": _body(TokenIn),
                    "responses": {"201": _json(token, "the token"), **_errors()},
                },
            },
            "/api/tokens/revoke": {
                "post": {
                    "summary": "Revoke a token (jti) or a user's tokens (sub) on every node",
                    "requestBody": _body(RevokeIn),
                    "responses": {"200": _json(revoked, "what is revoked"), **_errors()},
                },
            },
            "/api/webhooks/status": {
                "get": {
                    "summary": "Each webhook (redacted) with its pending, delivered and dead"
                    " deliveries and its last success and failure",
                    "responses": {"200": _json(webhooks, "the webhooks"), **_errors()},
                },
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This description",
                    "security": [{}],
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                },
            },
            "/healthz": {"get": {"summary": "Alive", "security": [{}], "responses": plain}},
            "/readyz": {
                "get": {
                    "summary": "Store and queue reachable",
                    "security": [{}],
                    "responses": plain,
                }
            },
            "/metrics": {
                "get": {"summary": "Prometheus text", "security": [{}], "responses": plain}
            },
        },
    }
