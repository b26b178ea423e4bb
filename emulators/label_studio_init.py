"""Label Studio for the compose profile: a transcript-review project on the feedback audio in MinIO.

Runs as the `label-studio-sync` service of emulators/docker-compose.yml, in the Label Studio
image, whose bundled label-studio-sdk (2.x) matches the server:

1. waits for Label Studio, then creates the project "Audiary transcript review" (audio player
   and a text area for the corrected transcript) unless it exists;
2. connects MinIO as S3 source storage on the userfeedback bucket (where
   `POST /v1/jobs/{id}/feedback` copies the audio, as `<job_id>/<file>`) and as S3 target
   storage for the annotations (the `userfeedback` bucket, as `annotations/<id>`);
3. syncs the source storage and pre-fills each task with predictions: the machine transcript
   (the job's transcript in the transcripts bucket) and the user's correction (the
   `corrected_transcript` metadata of the copy), so a reviewer edits instead of typing;
4. with `--watch-s N`, repeats step 3 every N seconds until SIGTERM.

Every step is idempotent: a restart finds the project, storages and predictions it made.
Configuration comes from the environment (see `Config.from_env`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("audiary.label_studio")

PROJECT_TITLE = "Audiary transcript review"
MACHINE_MODEL_VERSION = "audiary-machine-transcript"
USER_MODEL_VERSION = "audiary-user-correction"
# `$audio` is the task field that S3 source storage fills with each object's s3:// URL.
LABEL_CONFIG = """<View>
  <Header value="Listen, then correct the transcript"/>
  <Audio name="audio" value="$audio" hotkey="space" sync="transcription"/>
  <TextArea name="transcription" toName="audio" editable="true" rows="8"
            maxSubmissions="1" showSubmitButton="false" placeholder="The corrected transcript"/>
</View>
"""


@dataclass(frozen=True)
class Config:
    label_studio_url: str
    api_key: str
    s3_endpoint_url: str
    s3_access_key_id: str
    s3_secret_access_key: str
    s3_region: str
    feedback_bucket: str
    transcripts_bucket: str
    export_bucket: str
    export_prefix: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        """Settings from `env`; the AUDIARY_* names and defaults are the app's own settings."""
        missing = [k for k in ("LABEL_STUDIO_API_KEY", "AUDIARY_S3_ENDPOINT_URL",
                               "AUDIARY_S3_ACCESS_KEY_ID", "AUDIARY_S3_SECRET_ACCESS_KEY")
                   if not env.get(k)]
        if missing:
            raise SystemExit(f"label_studio_init: set {', '.join(missing)}")
        return cls(
            label_studio_url=env.get("LABEL_STUDIO_URL", "http://label-studio:8080").rstrip("/"),
            api_key=env["LABEL_STUDIO_API_KEY"],
            s3_endpoint_url=env["AUDIARY_S3_ENDPOINT_URL"],
            s3_access_key_id=env["AUDIARY_S3_ACCESS_KEY_ID"],
            s3_secret_access_key=env["AUDIARY_S3_SECRET_ACCESS_KEY"],
            s3_region=env.get("AUDIARY_S3_REGION", "us-east-1"),
            feedback_bucket=env.get("AUDIARY_FEEDBACK_BUCKET", "audiary-userfeedback"),
            transcripts_bucket=env.get("AUDIARY_TRANSCRIPTS_BUCKET", "audiary-transcripts"),
            export_bucket=env.get("LABEL_STUDIO_EXPORT_BUCKET", "userfeedback"),
            export_prefix=env.get("LABEL_STUDIO_EXPORT_PREFIX", "annotations"),
        )


def textarea_result(text: str) -> list[dict[str, Any]]:
    """A prediction result that fills the `transcription` text area."""
    return [{"from_name": "transcription", "to_name": "audio", "type": "textarea",
             "value": {"text": [text]}}]


def split_s3_url(url: Any) -> tuple[str, str] | None:
    """(bucket, key) of an `s3://bucket/key` URL, else None."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        return None
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return (bucket, key) if bucket and key else None


def transcript_text(document: Mapping[str, Any]) -> str:
    """The plain text of a stored transcript (audiary.domain.transcript.Transcript as JSON)."""
    segments = document.get("segments") or []
    return " ".join(str(s.get("text", "")).strip() for s in segments
                    if isinstance(s, Mapping) and str(s.get("text", "")).strip())


def wait_until_ready(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        else:
            last = f"HTTP {response.status}"
        if time.monotonic() >= deadline:
            raise SystemExit(f"Label Studio at {url} did not answer within {timeout_s:.0f} s "
                             f"({last})")
        time.sleep(2)  # a start-up wait in a one-off job, not in a test


class Review:
    """The review project and its storages, reached through the Label Studio SDK."""

    def __init__(self, config: Config) -> None:
        import boto3
        from botocore.config import Config as BotoConfig
        from label_studio_sdk.client import LabelStudio

        self.config = config
        self.client = LabelStudio(base_url=config.label_studio_url, api_key=config.api_key)
        # Path-style addressing: MinIO serves buckets under the endpoint, not as subdomains.
        self.s3 = boto3.client(
            "s3", endpoint_url=config.s3_endpoint_url, region_name=config.s3_region,
            aws_access_key_id=config.s3_access_key_id,
            aws_secret_access_key=config.s3_secret_access_key,
            config=BotoConfig(s3={"addressing_style": "path"}),
        )
        self.project_id = self._project()
        self.import_storage_id = self._import_storage()
        self.export_storage_id = self._export_storage()

    def _project(self) -> int:
        for project in self.client.projects.list(title=PROJECT_TITLE):
            if project.title == PROJECT_TITLE and project.id is not None:
                log.info("project %s exists (id %s)", PROJECT_TITLE, project.id)
                return int(project.id)
        created = self.client.projects.create(
            title=PROJECT_TITLE,
            description="Audio that users sent feedback on, with the machine transcript "
                        "pre-filled: correct it and submit.",
            label_config=LABEL_CONFIG,
            show_collab_predictions=True,  # the pre-filled transcript appears in the editor
        )
        log.info("created project %s (id %s)", PROJECT_TITLE, created.id)
        return int(created.id)  # type: ignore[arg-type]

    def _storage_kwargs(self, bucket: str, prefix: str | None) -> dict[str, Any]:
        c = self.config
        return {
            "project": self.project_id, "bucket": bucket, "prefix": prefix,
            "s3endpoint": c.s3_endpoint_url, "region_name": c.s3_region,
            "aws_access_key_id": c.s3_access_key_id,
            "aws_secret_access_key": c.s3_secret_access_key,
        }

    def _import_storage(self) -> int:
        c = self.config
        for storage in self.client.import_storage.s3.list(project=self.project_id):
            if storage.bucket == c.feedback_bucket and storage.id is not None:
                return int(storage.id)
        storage = self.client.import_storage.s3.create(
            title=f"MinIO {c.feedback_bucket}",
            # Feedback copies sit at <job_id>/<file>: list below the top level too.
            recursive_scan=True,
            # One task per audio object, its s3:// URL in `$audio`.
            use_blob_urls=True,
            # The browser cannot reach minio:9000: Label Studio fetches the audio for it.
            presign=False,
            **self._storage_kwargs(c.feedback_bucket, None),
        )
        log.info("connected source storage s3://%s (id %s)", c.feedback_bucket, storage.id)
        return int(storage.id)  # type: ignore[arg-type]

    def _export_storage(self) -> int:
        c = self.config
        for storage in self.client.export_storage.s3.list(project=self.project_id):
            if storage.bucket == c.export_bucket and storage.id is not None:
                return int(storage.id)
        storage = self.client.export_storage.s3.create(
            title=f"MinIO {c.export_bucket}",
            can_delete_objects=False,
            **self._storage_kwargs(c.export_bucket, c.export_prefix),
        )
        log.info("connected target storage s3://%s/%s (id %s)",
                 c.export_bucket, c.export_prefix, storage.id)
        return int(storage.id)  # type: ignore[arg-type]

    def _tasks(self) -> Iterator[Any]:
        # Raw task data: resolved, `$audio` would be Label Studio's proxy URL, not s3://.
        yield from self.client.tasks.list(project=self.project_id, fields="all",
                                          resolve_uri=False)

    def _machine_transcript(self, key: str) -> str | None:
        job_id = key.split("/", 1)[0]
        try:
            body = self.s3.get_object(Bucket=self.config.transcripts_bucket,
                                      Key=f"{job_id}.json")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None  # the job has no transcript (yet): a later pass fills it in
        return transcript_text(json.loads(body)) or None

    def _user_correction(self, bucket: str, key: str) -> str | None:
        metadata = self.s3.head_object(Bucket=bucket, Key=key).get("Metadata", {})
        return str(metadata.get("corrected_transcript", "")).strip() or None

    def _prediction_text(self, version: str, bucket: str, key: str) -> str | None:
        if version == MACHINE_MODEL_VERSION:
            return self._machine_transcript(key)
        return self._user_correction(bucket, key)

    def sync(self) -> int:
        """Import new feedback audio and pre-fill what is missing; returns predictions made."""
        self.client.import_storage.s3.sync(id=self.import_storage_id)
        made = 0
        for task in self._tasks():
            location = split_s3_url((task.data or {}).get("audio"))
            if location is None or task.id is None:
                continue
            have = {p.get("model_version") if isinstance(p, Mapping)
                    else getattr(p, "model_version", None)
                    for p in (getattr(task, "predictions", None) or [])}
            for version in (MACHINE_MODEL_VERSION, USER_MODEL_VERSION):
                text = None if version in have else self._prediction_text(version, *location)
                if text:
                    self.client.predictions.create(task=int(task.id), model_version=version,
                                                   result=textarea_result(text))
                    made += 1
        if made:
            log.info("pre-filled %d predictions", made)
        # Annotations are exported as they are submitted; a sync also catches up after a restart.
        self.client.export_storage.s3.sync(id=self.export_storage_id)
        return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--watch-s", type=float, default=0.0,
                        help="keep importing and pre-filling every this many seconds")
    parser.add_argument("--ready-timeout-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = Config.from_env(os.environ)
    wait_until_ready(config.label_studio_url, args.ready_timeout_s)
    review = Review(config)
    review.sync()
    if args.watch_s <= 0:
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(args.watch_s):
        try:
            review.sync()
        except Exception:  # a restarting Label Studio or MinIO must not end the loop
            log.exception("sync failed; trying again in %.0f s", args.watch_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
