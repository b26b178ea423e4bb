"""`audiary demo-learning` (`make demo-learning`): the learning loop on the native stack.

The spoken diaries of evaluation.diaries (eight speakers; names and places the packaged
tiny.en gets wrong) go in through the HTTPS API with their speakers and are transcribed by
the stack; each transcript is corrected through the API to what was said. The corrections
stream reaches the learning function; `audiary dataset build` makes the dataset, whose
`dataset-ready` makes the learning function start `audiary train` as a process; the demo waits
for its candidates and prints the registry: WER per candidate and each promotion decision.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click
import httpx
from rich.console import Console

from audiary.domain.datasets import Split
from audiary.domain.jobs import JobStatus
from audiary.domain.keys import ApiKey, new_key
from audiary.domain.models import ModelRecord, OriginKind
from audiary.evaluation.diaries import ENTRIES, synthesize
from audiary.ports import Stores
from audiary.settings import Settings, load_settings
from audiary.wiring import stores

__all__ = ["run"]


def _ok(response: httpx.Response) -> httpx.Response:
    """The response, or the API's own error message as the command's."""
    if response.is_error:
        raise click.ClickException(f"{response.request.method} {response.request.url.path} "
                                   f"answered {response.status_code}: {response.text[:300]}")
    return response


def _upload(api: str, headers: dict[str, str], folder: Path) -> dict[str, int]:
    """Every diary entry through POST /v1/uploads and its signed URL; job id -> entry."""
    jobs = {}
    for i, entry in enumerate(ENTRIES):
        path = synthesize(entry, folder / f"{entry.speaker}-{i}.wav")
        body = _ok(httpx.post(f"{api}/v1/uploads", headers=headers, timeout=30, json={
            "filename": path.name, "content_type": "audio/wav",
            "size_bytes": path.stat().st_size, "speaker": entry.speaker})).json()
        _ok(httpx.put(body["upload_url"], content=path.read_bytes(), headers=body["headers"],
                      timeout=60))
        jobs[body["job_id"]] = i
    return jobs


def _wait(what: str, check: Callable[[], bool], timeout_s: float, console: Console) -> None:
    deadline = time.monotonic() + timeout_s
    with console.status(what):
        while not check():
            if time.monotonic() > deadline:
                raise click.ClickException(f"{what}: not done in {timeout_s:.0f} s")
            time.sleep(1.0)  # polling the stack's stores at a human pace


def run(settings: Settings, console: Console, build_dataset: Callable[[Stores], None],
        print_models: Callable[[list[ModelRecord]], None], timeout_s: float) -> None:
    from audiary.local.stack import NativeStack

    with console.status("starting the local stack"):
        running = NativeStack(settings).up()
    try:
        os.environ.update(running.env)
        svc = stores(load_settings())  # the stack's emulators, as the CLI sees them
        full, key_id, digest = new_key()
        svc.keys.put_key(ApiKey(key_id=key_id, name="demo-learning", secret_hash=digest,
                                created_at=datetime.now(UTC)))
        api, headers = f"http://{settings.host}:{settings.api_port}", {
            "Authorization": f"Bearer {full}"}
        with tempfile.TemporaryDirectory(prefix="audiary-demo-") as tmp:
            with console.status(f"speaking and uploading {len(ENTRIES)} diary entries"):
                jobs = _upload(api, headers, Path(tmp))

            def finished() -> bool:
                found = [svc.jobs.get_job(j) for j in jobs]
                return all(j is not None and j.status in (JobStatus.DONE, JobStatus.FAILED)
                           for j in found)

            _wait(f"transcribing {len(jobs)} recordings", finished, timeout_s, console)
        console.rule("what tiny.en heard, corrected through the API")
        for job_id, i in jobs.items():
            heard = _ok(httpx.get(f"{api}/v1/jobs/{job_id}/transcript", headers=headers,
                                  timeout=30)).json()["segments"][0]["text"].strip()
            _ok(httpx.post(f"{api}/v1/jobs/{job_id}/feedback", headers=headers, timeout=30,
                           json={"segments": [{"index": 0, "text": ENTRIES[i].text}]}))
            console.print(f"[dim]{ENTRIES[i].speaker}[/dim] {heard}\n"
                          f"  [green]-> {ENTRIES[i].text}[/green]")
        console.rule("the dataset")
        build_dataset(svc)
        dataset = svc.notes.list_datasets()[-1]
        if not dataset.ready or dataset.rows[Split.TEST] == 0:
            raise click.ClickException(f"dataset v{dataset.version} is not ready to train on")
        log_path = settings.state_dir / f"training-v{dataset.version}.log"
        console.print(f"dataset-ready: the learning function starts `audiary train --dataset "
                      f"{dataset.version}` (log: {log_path})")

        def judged() -> bool:
            return any(r.origin.kind is OriginKind.TRAINED and r.decision
                       and r.origin.dataset_version == dataset.version
                       for r in svc.notes.list_models())

        _wait("training the candidates and judging them", judged, timeout_s, console)
        console.rule("the model registry")
        print_models(svc.notes.list_models())
        promoted = [r for r in svc.notes.list_models() if r.state.value == "promoted"]
        console.print(f"transcribers serve {promoted[0].model_id} from their next start")
    finally:
        with console.status("stopping the local stack"):
            running.down()
