"""The learning loop's cloud half (the `learning` function): datasets build themselves from the
corrections stream, and a dataset that is ready starts training once.

- On the corrections stream (`transcript-corrected`: every saved correction that made a
  transcript version, from the API, the page or Label Studio): build a new dataset version,
  at most once per `AUDIARY_DATASET_BUILD_INTERVAL_S`; what arrives in between waits for the
  schedule.
- On `dataset-ready`: start training on that version (a Cloud Run job execution, or a local
  process: ports.TrainingLauncher), once however often the message is delivered.
- On the schedule (Cloud Scheduler, hourly; the native stack's timer): build if corrections
  arrived since the newest dataset, then start training on the newest ready dataset that has
  none yet.

Two builds never make the same version: each claims `dataset-v<N>` first (KeyStore).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from audiary.domain.datasets import DatasetRecord
from audiary.domain.jobs import utcnow
from audiary.ports import DELIVERED, Stores, TrainingLauncher
from audiary.services.datasets import build_if_changed, ready_message
from audiary.wire.messages import DatasetReady, TranscriptCorrected

__all__ = ["Outcome", "on_correction", "on_dataset_ready", "on_schedule"]

log = logging.getLogger(__name__)

CLAIM_S = 3600.0  # a build or a launch that died keeps its claim this long at most


@dataclass(frozen=True)
class Outcome:
    # built, unchanged, waiting, busy, started, already-started, disabled
    action: str
    detail: str
    dataset_version: int | None = None


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _build(svc: Stores, now: datetime) -> Outcome:
    built = svc.notes.list_datasets()
    version = max((r.version for r in built), default=0) + 1
    claim = f"dataset-v{version}"
    if not svc.keys.claim_delivery(claim, _holder(), lease_s=CLAIM_S, now=now):
        return Outcome("busy", f"another build is making dataset v{version}", version)
    record = build_if_changed(svc)
    svc.keys.record_delivery(claim, utcnow())
    if record is None:
        return Outcome("unchanged", "no correction since the newest dataset",
                       built[-1].version if built else None)
    return Outcome("built", _summary(record), record.version)


def _summary(record: DatasetRecord) -> str:
    rows = ", ".join(f"{split.value} {n}" for split, n in record.rows.items())
    return f"dataset v{record.version}: {rows} clips" + (" (ready)" if record.ready else "")


def on_correction(svc: Stores, corrected: TranscriptCorrected, *,
                  now: datetime | None = None) -> Outcome:
    """A correction made a transcript version: build, unless a build happened less than
    the interval ago (the schedule picks it up then)."""
    log.info("correction of %s (v%d, segments %s, from %s)", corrected.job_id,
             corrected.transcript_version, corrected.segments, corrected.source)
    now = now or utcnow()
    built = svc.notes.list_datasets()
    interval = timedelta(seconds=svc.settings.dataset_build_interval_s)
    if built and now - built[-1].created_at < interval:
        return Outcome("waiting", f"dataset v{built[-1].version} is newer than "
                       f"{interval.total_seconds():g} s; the schedule builds the next",
                       built[-1].version)
    return _build(svc, now)


def on_dataset_ready(svc: Stores, launcher: TrainingLauncher, ready: DatasetReady, *,
                     now: datetime | None = None) -> Outcome:
    """Start training on the ready dataset, once per version."""
    if not svc.settings.training_enabled:
        return Outcome("disabled", "no training job is deployed (audiary:trainerImage); "
                       f"dataset v{ready.version} waits", ready.version)
    claim = f"train-v{ready.version}"
    if svc.keys.delivery_outcome(claim) is not None:
        return Outcome("already-started", f"training on dataset v{ready.version} was "
                       "started before", ready.version)
    if not svc.keys.claim_delivery(claim, _holder(), lease_s=CLAIM_S, now=now or utcnow()):
        return Outcome("busy", f"training on dataset v{ready.version} is being started",
                       ready.version)
    run = launcher.start(ready.version)  # raises: the claim lapses and a redelivery retries
    svc.keys.record_delivery(claim, utcnow(), DELIVERED)
    log.info("training on dataset v%d: %s", ready.version, run)
    return Outcome("started", run, ready.version)


def on_schedule(svc: Stores, launcher: TrainingLauncher, *, now: datetime | None = None
                ) -> list[Outcome]:
    """Build what the stream left waiting; train on the newest ready dataset, once."""
    now = now or utcnow()
    outcomes = [_build(svc, now)]
    ready = [r for r in svc.notes.list_datasets() if r.ready]
    if ready:
        outcomes.append(on_dataset_ready(svc, launcher, ready_message(ready[-1]), now=now))
    return outcomes
