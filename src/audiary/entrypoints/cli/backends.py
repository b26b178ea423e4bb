"""Where the CLI sends its requests: the stores directly (local stack or a project the
caller has credentials for), or the HTTPS API with a key. Both give the same answers."""

from __future__ import annotations

import mimetypes
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx

from audiary.domain.jobs import Job, JobError, SourceObject, job_id_for
from audiary.domain.layout import transcript_key
from audiary.domain.notes import NoteRecord
from audiary.domain.transcript import Transcript
from audiary.errors import AudiaryError, NotFoundError
from audiary.ports import BlobInfo, Stores


class ClientError(AudiaryError):
    """A request the user made cannot be answered (unknown job, not ready, refused)."""


class Backend(Protocol):
    def upload(self, path: Path) -> str: ...
    def get_job(self, job_id: str) -> Job | None: ...
    def transcript(self, job_id: str) -> Transcript: ...
    def note(self, job_id: str) -> NoteRecord: ...


def _content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class LocalBackend:
    def __init__(self, svc: Stores) -> None:
        self.svc = svc

    def upload(self, path: Path) -> str:
        info = self.upload_object(path)
        return job_id_for(info.bucket, info.key, info.generation)

    def upload_object(self, path: Path) -> BlobInfo:
        """Put the file into the inbox under a unique name; the notification starts the job."""
        s = self.svc.settings
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        # The file's modification time is the best guess of when it was recorded.
        recorded = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()
        return self.svc.blobs.upload_file(
            s.uploads_bucket, f"{s.inbox_prefix}{stamp}-{path.name}", path,
            content_type=_content_type(path), metadata={"recorded-at": recorded},
        )

    def get_job(self, job_id: str) -> Job | None:
        return self.svc.jobs.get_job(job_id)

    def _job(self, job_id: str) -> Job:
        job = self.get_job(job_id)
        if job is None:
            raise ClientError(f"no job {job_id}")
        return job

    def transcript(self, job_id: str) -> Transcript:
        job = self._job(job_id)
        if job.transcript_uri is None:
            raise ClientError(f"job {job_id} has no transcript yet (status {job.status})")
        try:
            raw = self.svc.blobs.get(self.svc.settings.transcripts_bucket, transcript_key(job_id))
        except NotFoundError as exc:
            raise ClientError(str(exc)) from exc
        return Transcript.model_validate_json(raw)

    def note(self, job_id: str) -> NoteRecord:
        job = self._job(job_id)
        record = self.svc.notes.get_note(job_id)
        if record is None:
            why = f"{job.status}: {job.error.message}" if job.error else f"status {job.status}"
            raise ClientError(f"job {job_id} has no diary note yet ({why})")
        return record


class ApiBackend:
    def __init__(self, url: str, key: str, *, timeout_s: float = 60.0) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {key}"})

    def _call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return _raise_for(self.http.request(method, path, **kwargs))  # type: ignore[arg-type]

    def upload(self, path: Path) -> str:
        size = path.stat().st_size
        grant = self._call("POST", "/v1/uploads", json={
            "filename": path.name, "content_type": _content_type(path), "size_bytes": size,
        }).json()
        with path.open("rb") as fh:
            put = httpx.put(grant["upload_url"], content=fh, headers=grant["headers"],
                            timeout=httpx.Timeout(60.0, write=3600.0))
        if put.status_code >= 300:
            raise ClientError(f"upload of {path.name} refused: {put.status_code} {put.text[:200]}")
        return str(grant["job_id"])

    def get_job(self, job_id: str) -> Job | None:
        response = self.http.get(f"/v1/jobs/{job_id}")
        if response.status_code == 404:
            return None
        view = _raise_for(response).json()
        bucket, _, name = view["source"].removeprefix("gs://").partition("/")
        return Job(
            job_id=view["job_id"], status=view["status"], duration_s=view["duration_s"],
            source=SourceObject(bucket=bucket, name=name, generation=""),
            chunks_done=view["progress"]["chunks_done"],
            chunks_total=view["progress"]["chunks_total"],
            timestamps=view["timestamps"], cost_usd=view["cost_usd"],
            error=JobError(**{"stage": "", **view["error"]}) if view["error"] else None,
        )

    def transcript(self, job_id: str) -> Transcript:
        raw = self._call("GET", f"/v1/jobs/{job_id}/transcript", params={"format": "json"})
        return Transcript.model_validate_json(raw.content)

    def note(self, job_id: str) -> NoteRecord:
        return NoteRecord.model_validate_json(self._call("GET", f"/v1/jobs/{job_id}/notes").content)


def _raise_for(response: httpx.Response) -> httpx.Response:
    """The response, or `ClientError` with the API's own explanation."""
    if response.status_code < 400:
        return response
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    request = response.request
    raise ClientError(f"{request.method} {request.url.path}: {response.status_code} {message}")
