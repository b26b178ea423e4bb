"""The OpenAPI 3.1 document of the API, generated from the route table and the pydantic
models, so it cannot drift from the code (a test compares it with the app's routes)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from audiary import __version__
from audiary.domain.notes import NoteRecord
from audiary.entrypoints.api import schemas


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    body: type[BaseModel] | None = None
    ok: tuple[int, type[BaseModel] | str | None] = (200, None)
    errors: tuple[int, ...] = ()
    query: tuple[tuple[str, dict[str, Any], str], ...] = ()
    public: bool = False
    path_params: tuple[str, ...] = field(default=())


JOB = ("job_id",)
OPERATIONS = (
    Operation("get", "/healthz", "Liveness", ok=(200, schemas.Health), public=True),
    Operation("get", "/metrics", "Prometheus metrics of this instance", ok=(200, "metrics"),
              public=True),
    Operation("get", "/v1/openapi.json", "This document", ok=(200, "object")),
    Operation("post", "/v1/uploads", "A signed URL to PUT one audio file into the inbox",
              body=schemas.UploadRequest, ok=(201, schemas.UploadResponse), errors=(413, 422)),
    Operation("post", "/v1/jobs", "Start a job from a public https URL or an inbox object",
              body=schemas.JobRequest, ok=(202, schemas.JobView), errors=(409, 422)),
    Operation("get", "/v1/jobs", "Your jobs, newest first", ok=(200, schemas.JobList),
              errors=(400,), query=(
                  ("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                   "Jobs per page"),
                  ("page_token", {"type": "string"}, "next_page_token of the previous page"),
              )),
    Operation("get", "/v1/jobs/{job_id}", "State, progress, stage timings and error",
              ok=(200, schemas.JobView), errors=(404,), path_params=JOB),
    Operation("get", "/v1/jobs/{job_id}/transcript", "The transcript",
              ok=(200, "transcript"), errors=(400, 404, 409, 422), path_params=JOB, query=(
                  ("format", {"type": "string", "enum": ["json", "txt", "srt", "vtt"],
                              "default": "json"}, "Rendering"),
                  ("version", {"type": "integer", "minimum": 1},
                   "Transcript version (1: the machine's; default: the latest correction)"),
              )),
    Operation("get", "/v1/jobs/{job_id}/audio", "The job's audio as 16 kHz mono WAV",
              ok=(200, "audio"), errors=(404, 409), path_params=JOB),
    Operation("get", "/v1/jobs/{job_id}/notes", "The diary note",
              ok=(200, NoteRecord), errors=(404, 409), path_params=JOB),
    Operation("post", "/v1/jobs/{job_id}/notes",
              "Write the note again from the latest corrected transcript (the old one is kept)",
              ok=(202, schemas.SummarizeAgain), errors=(404, 409), path_params=JOB),
    Operation("delete", "/v1/jobs/{job_id}", "Delete the job, its audio, transcript and note",
              ok=(204, None), errors=(404,), path_params=JOB),
    Operation("post", "/v1/jobs/{job_id}/feedback", "Correct or flag the transcript",
              body=schemas.FeedbackRequest, ok=(201, schemas.FeedbackResponse),
              errors=(404, 409, 422), path_params=JOB),
    Operation("post", "/v1/webhooks", "Register a URL to be told when your jobs finish",
              body=schemas.WebhookRequest, ok=(201, schemas.WebhookCreated), errors=(422,)),
    Operation("get", "/v1/webhooks", "Your webhooks", ok=(200, schemas.WebhookList)),
    Operation("delete", "/v1/webhooks/{webhook_id}", "Remove a webhook", ok=(204, None),
              errors=(404,), path_params=("webhook_id",)),
)

_DESCRIPTIONS = {
    400: "Bad query or body", 401: "No or bad credentials", 404: "Not found (or not yours)",
    409: "Not in a state for this", 413: "Too large", 422: "Invalid body",
    429: "Rate limited; see Retry-After",
}


def _ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _content(kind: type[BaseModel] | str, components: dict[str, Any]) -> dict[str, Any]:
    if kind == "object":
        return {"application/json": {"schema": {"type": "object"}}}
    if kind == "metrics":
        return {"text/plain": {"schema": {"type": "string"}}}
    if kind == "audio":
        return {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}
    if kind == "transcript":
        text = {"schema": {"type": "string"}}
        return {"application/json": {"schema": {"type": "object"}}, "text/plain": text,
                "application/x-subrip": text, "text/vtt": text}
    assert not isinstance(kind, str)
    return {"application/json": {"schema": _ref(kind, components)}}


def _header(name: str, description: str, *, deprecated: bool = False) -> dict[str, Any]:
    header = {"name": name, "in": "header", "required": not deprecated,
              "schema": {"type": "string"}, "description": description}
    return {**header, "deprecated": True} if deprecated else header


_WEBHOOK_HEADERS = [
    _header("webhook-id", "The same on every attempt of one event: drop repeats by it."),
    _header("webhook-timestamp", "Unix seconds when this attempt was signed."),
    _header("webhook-signature", "`v1,<base64>`: HMAC-SHA256 of `{webhook-id}.{webhook-"
            "timestamp}.{raw body}` keyed by the bytes the `whsec_` secret encodes."),
    _header("Audiary-Timestamp", "As webhook-timestamp. Dropped in the next version.",
            deprecated=True),
    _header("Audiary-Signature", "`v1=<hex>`: HMAC-SHA256 of `{timestamp}.{raw body}` keyed by "
            "the secret as given. Dropped in the next version.", deprecated=True),
    _header("Audiary-Delivery", "As webhook-id. Dropped in the next version.",
            deprecated=True),
]


def _webhooks(components: dict[str, Any]) -> dict[str, Any]:
    """What the API sends to registered URLs (OpenAPI 3.1 `webhooks`)."""
    return {"job.finished": {"post": {
        "summary": "One of your jobs ended (DONE, FAILED or REJECTED)",
        "description": "Signed as Standard Webhooks (https://www.standardwebhooks.com/) with "
                       "the secret returned at registration: any Standard Webhooks verifier "
                       "checks it, over the raw body. Retried with backoff on 429, 5xx and "
                       "timeouts, each attempt signed again with a fresh timestamp.",
        "operationId": "webhook_job.finished",
        "security": [],
        "parameters": _WEBHOOK_HEADERS,
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref(schemas.WebhookEvent, components)}}},
        "responses": {"2XX": {"description": "Received"}},
    }}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    components: dict[str, Any] = {}
    error = {"application/json": {"schema": _ref(schemas.Error, components)}}
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        status, kind = op.ok
        responses: dict[str, Any] = {str(status): {"description": "Success"}}
        if kind is not None:
            responses[str(status)]["content"] = _content(kind, components)
        codes = op.errors if op.public else (*op.errors, 401, 429)
        if op.body is not None:
            codes = (*codes, 400)  # a body that is not a JSON object
        for code in sorted(set(codes)):
            responses[str(code)] = {"description": _DESCRIPTIONS[code], "content": error}
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in op.path_params
        ] + [
            {"name": name, "in": "query", "required": False, "schema": schema,
             "description": text}
            for name, schema, text in op.query
        ]
        operation: dict[str, Any] = {"summary": op.summary, "responses": responses,
                                     "operationId": f"{op.method}_{op.path}"}
        if params:
            operation["parameters"] = params
        if op.body is not None:
            operation["requestBody"] = {"required": True,
                                        "content": _content(op.body, components)}
        if op.public:
            operation["security"] = []
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Audiary API", "version": __version__,
                 "description": "Audio in, transcript and diary note out."},
        "paths": paths,
        "webhooks": _webhooks(components),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "An Audiary API key (ak_...) or a Google ID token"},
            },
        },
        "security": [{"apiKey": []}],
    }
