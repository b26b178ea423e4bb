"""`audiary`: drop audio into the pipeline and read what comes out.

Talks to whatever the settings point at: the native local stack that `make up` starts
(the defaults), or a Google Cloud project.
"""

from __future__ import annotations

import mimetypes
import os
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from audiary.domain.jobs import TERMINAL, Job, JobStatus, job_id_for
from audiary.domain.transcript import Transcript, TranscriptFormat, render
from audiary.errors import AudiaryError, NotFoundError
from audiary.notes.render import to_markdown
from audiary.ports import BlobInfo
from audiary.services.transcription import transcript_key
from audiary.settings import load_settings
from audiary.wiring import Services, services

AUDIO_SUFFIXES = frozenset({
    ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".webm", ".mp4", ".mov",
    ".mkv", ".wma", ".aiff", ".aif",
})
# A job has left the pipeline once it reaches one of these.
FINISHED = TERMINAL

console = Console(stderr=True)


def _use_local_stack() -> None:
    """Point this process at the native stack `audiary stack up` started, if one is running.

    Variables already set (e.g. to reach Google Cloud or another emulator) win.
    """
    from audiary.local.stack import read_state

    state = read_state(load_settings().state_dir)
    if state is not None:
        for key, value in dict(state["env"]).items():  # type: ignore[call-overload]
            os.environ.setdefault(key, value)


def _svc() -> Services:
    _use_local_stack()
    return services(load_settings())


def upload(svc: Services, path: Path) -> tuple[str, BlobInfo]:
    """Upload one file into the inbox; returns the id of the job it becomes, and the object."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    key = f"{svc.settings.inbox_prefix}{stamp}-{path.name}"
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    # The file's modification time is the best guess of when it was recorded: the note's date.
    recorded = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()
    info = svc.blobs.upload_file(
        svc.settings.uploads_bucket, key, path, content_type=content_type,
        metadata={"recorded-at": recorded},
    )
    return job_id_for(info.bucket, info.key, info.generation), info


def wait_for(svc: Services, job_ids: list[str], timeout_s: float) -> dict[str, Job | None]:
    """Show a progress bar per job until every job has left the pipeline or time runs out."""
    deadline = time.monotonic() + timeout_s
    latest: dict[str, Job | None] = dict.fromkeys(job_ids)
    with Progress(
        TextColumn("{task.fields[job]}"),
        BarColumn(),
        TextColumn("{task.fields[chunks]}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: dict[str, TaskID] = {
            j: progress.add_task("", total=None, job=j[:12], status="uploaded", chunks="")
            for j in job_ids
        }
        while time.monotonic() < deadline:
            for job_id, task in tasks.items():
                job = svc.jobs.get_job(job_id)
                latest[job_id] = job
                if job is not None:
                    progress.update(
                        task,
                        total=job.chunks_total or None,
                        completed=job.chunks_done,
                        status=job.status.value,
                        chunks=f"{job.chunks_done}/{job.chunks_total} chunks",
                    )
            if all(j is not None and j.status in FINISHED for j in latest.values()):
                break
            time.sleep(0.5)  # polling a remote store at a human pace
    return latest


@click.group()
@click.version_option(package_name="audiary")
def cli() -> None:
    """Audio in, transcript and diary note out."""


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--wait", is_flag=True, help="Show progress until each job leaves the pipeline.")
@click.option("--watch", is_flag=True, help="Treat PATH as a hot folder: upload new audio files.")
@click.option("--timeout", default=1800.0, show_default=True, help="Seconds --wait waits.")
def drop(paths: tuple[Path, ...], wait: bool, watch: bool, timeout: float) -> None:
    """Upload audio files into the inbox and print one job id per file."""
    svc = _svc()
    if watch:
        if len(paths) != 1 or not paths[0].is_dir():
            raise click.UsageError("--watch takes exactly one folder")
        watch_folder(svc, paths[0])
        return
    files = [p for p in paths if p.is_file()]
    if dirs := [p for p in paths if not p.is_file()]:
        raise click.UsageError(f"not a file: {dirs[0]} (use --watch for a folder)")
    job_ids = []
    for path in files:
        job_id, _ = upload(svc, path)
        job_ids.append(job_id)
        click.echo(job_id)
    if wait:
        jobs = wait_for(svc, job_ids, timeout)
        failed = [j for j, job in jobs.items() if job is None or job.status not in FINISHED
                  or job.status in {JobStatus.FAILED, JobStatus.REJECTED}]
        for job_id in failed:
            job = jobs[job_id]
            why = (f"{job.status}: {job.error.message}" if job and job.error
                   else "did not finish in time")
            console.print(f"[red]{job_id}[/red] {why}")
        if failed:
            sys.exit(1)


def stable_audio_files(folder: Path, sizes: dict[Path, int]) -> Iterable[Path]:
    """Audio files whose size has not changed since the last look (so copying has finished)."""
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        size = path.stat().st_size
        if sizes.get(path) == size and size > 0:
            yield path
        sizes[path] = size


def watch_folder(svc: Services, folder: Path, *, interval_s: float = 1.0,
                 stop_after: int | None = None) -> list[str]:
    """Upload every audio file that appears in `folder` until interrupted."""
    console.print(f"watching {folder} for audio files; Ctrl-C to stop")
    done: set[Path] = set()
    sizes: dict[Path, int] = {}
    job_ids: list[str] = []
    try:
        while stop_after is None or len(job_ids) < stop_after:
            for path in stable_audio_files(folder, sizes):
                if path not in done:
                    done.add(path)
                    job_ids.append(upload(svc, path)[0])
                    click.echo(f"{job_ids[-1]}  {path}")
            time.sleep(interval_s)
    except KeyboardInterrupt:
        console.print(f"stopped; {len(job_ids)} files uploaded")
    return job_ids


def _job(svc: Services, job_id: str) -> Job:
    job = svc.jobs.get_job(job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    return job


@cli.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Show a job's state, progress, stage timings and error."""
    job = _job(_svc(), job_id)
    table = Table(show_header=False, box=None)
    table.add_row("job", job.job_id)
    table.add_row("source", f"gs://{job.source.bucket}/{job.source.name}")
    table.add_row("status", job.status.value)
    table.add_row("chunks", f"{job.chunks_done}/{job.chunks_total}")
    if job.duration_s is not None:
        table.add_row("duration", f"{job.duration_s:.1f} s")
    for stage, seconds in job.stage_seconds().items():
        table.add_row(f"  {stage}", f"{seconds:.2f} s")
    if job.error:
        table.add_row("error", f"{job.error.code} ({job.error.stage}): {job.error.message}")
    if job.quarantine_uri:
        table.add_row("quarantine", job.quarantine_uri)
    Console().print(table)


@cli.command()
@click.argument("job_id")
@click.option("--format", "fmt", type=click.Choice(["txt", "json", "srt", "vtt"]),
              default="txt", show_default=True)
def transcript(job_id: str, fmt: str) -> None:
    """Print a job's transcript."""
    svc = _svc()
    job = _job(svc, job_id)
    if job.transcript_uri is None:
        raise click.ClickException(f"job {job_id} has no transcript yet (status {job.status})")
    try:
        raw = svc.blobs.get(svc.settings.transcripts_bucket, transcript_key(job_id))
    except NotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(render(Transcript.model_validate_json(raw), cast(TranscriptFormat, fmt)), nl=False)


@cli.group()
def stack() -> None:
    """Start and stop the native local stack (emulators, ingest, transcriber, watcher)."""


@stack.command("up")
def stack_up() -> None:
    """Start the stack in the background and return once every part answers."""
    from audiary.local.stack import NativeStack, read_state

    settings = load_settings()
    if read_state(settings.state_dir) is not None:
        raise click.ClickException(
            f"a stack is already running (state in {settings.state_dir}); run `make down` first"
        )
    with console.status("starting emulators, ingest, transcriber and watcher"):
        started = NativeStack(settings).up()
    for key, value in started.env.items():
        click.echo(f"export {key}={value}")
    console.print(f"[green]stack up[/green]; logs in {started.state_dir}")


@stack.command("down")
def stack_down() -> None:
    """Stop everything `audiary stack up` started."""
    from audiary.local.stack import stop_recorded

    stopped = stop_recorded(load_settings().state_dir)
    console.print(f"stopped {stopped} process groups" if stopped else "no stack was running")


@cli.command()
@click.option("--sample", type=click.Path(exists=True, path_type=Path),
              default=Path(__file__).resolve().parents[2] / "samples" / "diary-demo.ogg",
              show_default=True)
@click.option("--timeout", default=900.0, show_default=True)
def demo(sample: Path, timeout: float) -> None:
    """Start the local stack, drop a sample, print its transcript and note, stop the stack."""
    from audiary.local.stack import NativeStack

    settings = load_settings()
    with console.status("starting the local stack"):
        running = NativeStack(settings).up()
    try:
        os.environ.update(running.env)
        svc = services(load_settings())
        console.print(f"dropping {sample.name} into gs://{settings.uploads_bucket}/"
                      f"{settings.inbox_prefix}")
        job_id, _ = upload(svc, sample)
        job = wait_for(svc, [job_id], timeout)[job_id]
        if job is None or job.status is not JobStatus.DONE:
            why = job.error.message if job and job.error else "timed out"
            raise click.ClickException(f"job {job_id} did not finish ({why})")
        raw = svc.blobs.get(settings.transcripts_bucket, transcript_key(job_id))
        result = Transcript.model_validate_json(raw)
        console.rule(f"transcript of {sample.name} ({job.chunks_total} chunks)")
        click.echo(render(result, "txt"))
        record = svc.notes.get_note(job_id)
        if record is not None:
            console.rule("diary note")
            click.echo(to_markdown(record))
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in job.stage_seconds().items())
        console.print(f"job {job_id}: {timings}")
    finally:
        with console.status("stopping the local stack"):
            running.down()


@cli.command()
@click.argument("job_id")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md",
              show_default=True)
def notes(job_id: str, fmt: str) -> None:
    """Print a job's diary note."""
    svc = _svc()
    job = _job(svc, job_id)
    record = svc.notes.get_note(job_id)
    if record is None:
        why = f"{job.status}: {job.error.message}" if job.error else f"status {job.status}"
        raise click.ClickException(f"job {job_id} has no diary note yet ({why})")
    if fmt == "json":
        click.echo(record.model_dump_json(indent=2))
    else:
        click.echo(to_markdown(record), nl=False)


def main() -> None:
    try:
        cli()
    except AudiaryError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
