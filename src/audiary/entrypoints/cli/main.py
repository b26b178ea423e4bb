"""`audiary`: drop audio into the pipeline and read what comes out.

Talks to the native local stack that `make up` started (found through its state file), to a
Google Cloud project through the standard variables, or with `--api URL --key KEY` (or
AUDIARY_API_URL / AUDIARY_API_KEY) to the HTTPS API.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from audiary.domain.datasets import Split
from audiary.domain.jobs import TERMINAL, Job, JobStatus
from audiary.domain.keys import ApiKey, new_key
from audiary.domain.models import ModelRecord
from audiary.domain.transcript import TranscriptFormat, render
from audiary.entrypoints.cli.backends import ApiBackend, Backend, LocalBackend
from audiary.errors import AudiaryError, ConflictError, ReviewDeskError
from audiary.ports import ReviewDesk, Stores
from audiary.services.notes.render import to_markdown
from audiary.settings import load_settings
from audiary.wiring import review_desk, stores

AUDIO_SUFFIXES = frozenset({
    ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".webm", ".mp4", ".mov",
    ".mkv", ".wma", ".aiff", ".aif",
})
DEMO_SAMPLE = Path("samples/diary-demo.ogg")  # below the checkout (AUDIARY_PROJECT_DIR)

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


def _svc() -> Stores:
    _use_local_stack()
    return stores(load_settings())


def _backend(ctx: click.Context) -> Backend:
    api, key = ctx.obj["api"], ctx.obj["key"]
    if api:
        if not key:
            raise click.UsageError("--api needs --key (or AUDIARY_API_KEY)")
        return ApiBackend(api, key)
    return LocalBackend(_svc())


def wait_for(backend: Backend, job_ids: list[str], timeout_s: float) -> dict[str, Job | None]:
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
                job = backend.get_job(job_id)
                latest[job_id] = job
                if job is not None:
                    progress.update(
                        task, total=job.chunks_total or None, completed=job.chunks_done,
                        status=job.status.value,
                        chunks=f"{job.chunks_done}/{job.chunks_total} chunks",
                    )
            if all(j is not None and j.status in TERMINAL for j in latest.values()):
                break
            time.sleep(0.5)  # polling a remote store at a human pace
    return latest


class _Group(click.Group):
    """Project errors end the command with their message and exit code 1, no traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except AudiaryError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group)
@click.version_option(package_name="audiary")
@click.option("--api", envvar="AUDIARY_API_URL", help="Use the HTTPS API at this URL.")
@click.option("--key", envvar="AUDIARY_API_KEY", help="API key for --api.")
@click.pass_context
def cli(ctx: click.Context, api: str | None, key: str | None) -> None:
    """Audio in, transcript and diary note out."""
    ctx.obj = {"api": api, "key": key}


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--wait", is_flag=True, help="Show progress until each job is DONE (or fails).")
@click.option("--watch", is_flag=True, help="Treat PATH as a hot folder: upload new audio files.")
@click.option("--timeout", default=1800.0, show_default=True, help="Seconds --wait waits.")
@click.pass_context
def drop(ctx: click.Context, paths: tuple[Path, ...], wait: bool, watch: bool,
         timeout: float) -> None:
    """Upload audio files into the inbox and print one job id per file."""
    backend = _backend(ctx)
    if watch:
        if len(paths) != 1 or not paths[0].is_dir():
            raise click.UsageError("--watch takes exactly one folder")
        watch_folder(backend.upload, paths[0])
        return
    if dirs := [p for p in paths if not p.is_file()]:
        raise click.UsageError(f"not a file: {dirs[0]} (use --watch for a folder)")
    job_ids = []
    for path in paths:
        job_ids.append(backend.upload(path))
        click.echo(job_ids[-1])
    if wait:
        jobs = wait_for(backend, job_ids, timeout)
        failed = [j for j, job in jobs.items() if job is None or job.status is not JobStatus.DONE]
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


def watch_folder(upload: Callable[[Path], str], folder: Path, *, interval_s: float = 1.0,
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
                    job_ids.append(upload(path))
                    click.echo(f"{job_ids[-1]}  {path}")
            time.sleep(interval_s)
    except KeyboardInterrupt:
        console.print(f"stopped; {len(job_ids)} files uploaded")
    return job_ids


def _job(backend: Backend, job_id: str) -> Job:
    job = backend.get_job(job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    return job


@cli.command()
@click.argument("job_id")
@click.pass_context
def status(ctx: click.Context, job_id: str) -> None:
    """Show a job's state, progress, stage timings and error."""
    job = _job(_backend(ctx), job_id)
    table = Table(show_header=False, box=None)
    table.add_row("job", job.job_id)
    table.add_row("source", f"gs://{job.source.bucket}/{job.source.name}")
    table.add_row("status", job.status.value)
    table.add_row("chunks", f"{job.chunks_done}/{job.chunks_total}")
    if job.duration_s is not None:
        table.add_row("duration", f"{job.duration_s:.1f} s")
    for stage, seconds in job.stage_seconds().items():
        table.add_row(f"  {stage}", f"{seconds:.2f} s")
    if job.cost_usd is not None:
        table.add_row("note cost", f"${job.cost_usd:.4f}")
    if job.error:
        table.add_row("error", f"{job.error.code} ({job.error.stage}): {job.error.message}")
    if job.quarantine_uri:
        table.add_row("quarantine", job.quarantine_uri)
    Console().print(table)


@cli.command()
@click.argument("job_id")
@click.option("--format", "fmt", type=click.Choice(["txt", "json", "srt", "vtt"]),
              default="txt", show_default=True)
@click.pass_context
def transcript(ctx: click.Context, job_id: str, fmt: str) -> None:
    """Print a job's transcript."""
    result = _backend(ctx).transcript(job_id)
    click.echo(render(result, cast(TranscriptFormat, fmt)), nl=False)


@cli.command()
@click.argument("job_id")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md",
              show_default=True)
@click.pass_context
def notes(ctx: click.Context, job_id: str, fmt: str) -> None:
    """Print a job's diary note."""
    record = _backend(ctx).note(job_id)
    click.echo(record.model_dump_json(indent=2) if fmt == "json" else to_markdown(record),
               nl=fmt == "json")


@cli.group()
def keys() -> None:
    """Create, list and revoke API keys (needs access to the project's Firestore)."""


@keys.command("create")
@click.argument("name")
def keys_create(name: str) -> None:
    """Create a key; it is printed once and only its hash is kept."""
    full, key_id, digest = new_key()
    _svc().keys.put_key(ApiKey(key_id=key_id, name=name, secret_hash=digest,
                               created_at=datetime.now(UTC)))
    console.print(f"key {key_id} ({name}) created; store it now, it is not shown again:")
    click.echo(full)


@keys.command("list")
def keys_list() -> None:
    """List keys (ids and names; secrets are never stored)."""
    table = Table("key id", "name", "created", "revoked")
    for key in _svc().keys.list_keys():
        table.add_row(key.key_id, key.name, f"{key.created_at:%Y-%m-%d %H:%M}",
                      f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "")
    Console().print(table)


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key: requests with it are refused from now on."""
    if not _svc().keys.revoke_key(key_id, datetime.now(UTC)):
        raise click.ClickException(f"no key {key_id}")
    console.print(f"key {key_id} revoked")


@cli.group()
def review() -> None:
    """Review in Label Studio: set the project up, sync, and see what came back."""


def _desk(svc: Stores) -> ReviewDesk:
    try:
        return review_desk(svc.settings)
    except ReviewDeskError as exc:
        raise click.ClickException(str(exc)) from exc


@review.command("setup")
def review_setup() -> None:
    """Create or update the Label Studio project (labeling config) and register the webhook
    to the receiver (AUDIARY_REVIEW_URL); print the project's URL."""
    from audiary.services.review import setup

    svc = _svc()
    desk = _desk(svc)
    try:
        project_id, created, hook = setup(svc, desk)
    except (ReviewDeskError, ConflictError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"project {project_id} {'created' if created else 'up to date'}")
    if hook is None:
        console.print("no webhook: set AUDIARY_REVIEW_URL (and AUDIARY_REVIEW_SECRET) to have "
                      "corrections sent back at once; until then the sync pulls them")
    else:
        console.print(f"webhook to {svc.settings.review_url}/label-studio "
                      f"{'registered' if hook else 'up to date'}")
    click.echo(desk.project_url(project_id))


@review.command("sync")
def review_sync() -> None:
    """Send queued items to Label Studio and apply annotations the webhook missed (what the
    schedule runs every minute)."""
    from audiary.services.review import sync

    svc = _svc()
    try:
        report = sync(svc, _desk(svc))
    except ReviewDeskError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"{len(report.sent)} tasks created, annotations: {report.outcomes or 'none'}, "
                  f"{len(report.dropped)} dropped, {report.resigned} audio URLs signed again; "
                  f"{report.queue_depth} items waiting")


@review.command("stats")
def review_stats() -> None:
    """The review queue by state, and the machine's WER against corrections per model."""
    from audiary.services.review import stats

    svc = _svc()
    result = stats(svc)
    Console().print(
        f"queued {result.queued} · sent {result.sent} · corrected {result.corrected} · "
        f"skipped {result.skipped} · dropped {result.dropped}")
    table = Table("model", "corrected words", "WER of the machine")
    for model, words in sorted(result.words_by_model.items()):
        table.add_row(model, str(words), f"{result.wer_by_model[model]:.3f}")
    Console().print(table)


@cli.group()
def dataset() -> None:
    """Training data from corrections."""


@dataset.command("build")
def dataset_build() -> None:
    """Build the next dataset version from every correction so far: clips, a manifest per
    split, the record with hours and rejections; `dataset-ready` when train is big enough."""
    _build_and_show(_svc())


def _build_and_show(svc: Stores) -> None:
    from audiary.services.datasets import build

    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} recordings"),
                  console=console) as bar:
        task = bar.add_task("building", total=None)
        record = build(svc, progress=lambda done, total: bar.update(task, completed=done,
                                                                    total=total))
    table = Table("split", "clips", "hours", "manifest")
    for split, rows in record.rows.items():
        table.add_row(split, str(rows), f"{record.hours[split]:.4f}",
                      f"gs://{record.bucket}/{record.manifests[split]}")
    Console().print(table)
    rejected = ", ".join(f"{why} {n}" for why, n in sorted(record.rejected.items())) or "none"
    console.print(f"dataset v{record.version}; rejected: {rejected}")
    train = record.hours[Split.TRAIN]
    console.print(f"ready for training ({train:.2f} h of train)" if record.ready
                  else f"not ready: train has {train:.2f} h of the {record.ready_hours:g} h "
                       "needed")


@cli.command("eval")
@click.option("--dataset", "version", type=int, default=None,
              help="Dataset version (default: the newest).")
@click.option("--model", default=None,
              help="A registry model (name@version) or a model directory (default: the one "
                   "the transcriber serves).")
@click.option("--split", "splits", type=click.Choice([s.value for s in Split]), multiple=True,
              help="Splits to score (default: all).")
def evaluate_model(version: int | None, model: str | None, splits: tuple[str, ...]) -> None:
    """WER of a model on a dataset, per split and per source; stored as an evaluation."""
    try:
        from audiary.evaluation.datasets import evaluate
    except ImportError as exc:
        raise click.ClickException(f"audiary eval needs the learning extra ({exc.name} is "
                                   "missing): pip install 'audiary[learning,transcriber]'"
                                   ) from exc
    from audiary.wiring import transcriber

    svc = _svc()
    built = svc.notes.list_datasets()
    if not built:
        raise click.ClickException("no dataset yet: run `audiary dataset build` first")
    version = version or built[-1].version
    from audiary.services import models

    record = models.get(svc, model) if model and "@" in model else None
    settings = svc.settings if model is None or record else svc.settings.model_copy(
        update={"model_path": model})
    engine = transcriber(settings, None if record is None else models.serving_of(record))
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} clips"), console=console) as bar:
        task = bar.add_task(f"dataset v{version}", total=None)
        try:
            evaluation = evaluate(svc, engine, version,
                                  splits=[Split(s) for s in splits] or tuple(Split),
                                  progress=lambda done, total: bar.update(
                                      task, completed=done, total=total))
        except AudiaryError as exc:
            raise click.ClickException(str(exc)) from exc
    if record is not None:
        models.add_evaluation(svc, record, evaluation)
    table = Table("split", "clips", "words", "WER")
    for split, summary in evaluation.splits.items():
        table.add_row(split, str(summary.clips), str(summary.words), f"{summary.wer:.3f}")
    Console().print(table)
    missing = (f"; {evaluation.missing_clips} clips missing" if evaluation.missing_clips
               else "")
    console.print(f"evaluation {evaluation.evaluation_id} of {evaluation.model}{missing}")


@cli.group()
def model() -> None:
    """The model registry: what the transcriber serves, and the candidates."""


def _show_models(records: Iterable[ModelRecord]) -> None:
    """The registry as a table (WER on each dataset's test split and on the guard set), and
    each model's last decision below it."""
    records = list(records)
    table = Table("model", "state", "origin", "test WER", "guard WER", "hotwords")
    for r in records:
        origin = r.origin.kind.value
        if r.origin.base:
            origin += f" from {r.origin.base}"
        if r.origin.dataset_version:
            origin += f" on v{r.origin.dataset_version}"
        tests = ", ".join(f"{e.wer['test']:.1%} (v{e.dataset_version})" for e in r.evaluations
                          if "test" in e.wer)
        guards = ", ".join(f"{e.wer['guard']:.1%}" for e in r.evaluations if "guard" in e.wer)
        hot = (r.hotwords or "")[:32] + ("…" if len(r.hotwords or "") > 32 else "")
        table.add_row(Text(r.model_id, no_wrap=True), r.state.value, origin, tests, guards, hot)
    out = Console()
    out.print(table)
    for r in records:
        if r.decision:
            out.print(f"[bold]{r.model_id}[/bold]: {r.decision}")


@model.command("list")
def model_list() -> None:
    """Every registered model, oldest first."""
    from audiary.services.models import serving_model

    svc = _svc()
    _show_models(svc.notes.list_models())
    serving = serving_model(svc)
    console.print(f"the transcriber serves {serving.name} (on its next start, if it runs)")


@model.command("register")
@click.argument("source")
@click.option("--name", default=None, help="Registry name (default: from the source).")
def model_register(source: str, name: str | None) -> None:
    """Register SOURCE as a candidate: a packaged model (tiny.en, base), a CTranslate2
    directory (copied into the models bucket), or a hub name (used where a network exists)."""
    from audiary.adapters.model_store import PACKAGED, package_names, packaged
    from audiary.domain.models import ModelOrigin, OriginKind
    from audiary.services import models

    svc = _svc()
    if source in PACKAGED:
        directory = packaged(source, svc.settings.state_dir)
        record = models.register_directory(svc, directory, name=name or source,
                                           origin=models.packaged_origin(package_names(source)))
    elif Path(source).is_dir():
        record = models.register_directory(
            svc, Path(source), name=name or Path(source).resolve().name.lower(),
            origin=ModelOrigin(kind=OriginKind.LOCAL, source=str(Path(source).resolve())))
    elif Path(source).exists():
        raise click.ClickException(f"{source} is a file; register a CTranslate2 directory")
    else:
        record = models.register_reference(
            svc, source, name=name or source.rsplit("/", 1)[-1].lower(),
            origin=ModelOrigin(kind=OriginKind.HUB, source=source))
    console.print(f"registered {record.model_id} as a candidate at {record.location}")


@model.command("promote")
@click.argument("model_id")
@click.option("--reason", default="promoted by hand", help="Kept on the record.")
def model_promote(model_id: str, reason: str) -> None:
    """Serve MODEL_ID (name@version) from the transcriber's next start, without the gate."""
    from audiary.services import models

    record = models.promote(_svc(), model_id, reason=reason)
    console.print(f"{record.model_id} is promoted; transcribers serve it from their next "
                  "start")


@cli.command()
@click.option("--dataset", "version", type=int, default=None,
              help="Dataset version (default: the newest).")
@click.option("--force", is_flag=True,
              help="Train on a dataset below AUDIARY_DATASET_READY_HOURS.")
@click.option("--vocabulary/--no-vocabulary", default=True,
              help="Make the vocabulary candidate (hotwords).")
@click.option("--fine-tune/--no-fine-tune", "tune", default=True,
              help="Make the fine-tuned candidate.")
@click.option("--steps", type=int, default=None, help="Optimizer steps (AUDIARY_TRAIN_STEPS).")
def train(version: int | None, force: bool, vocabulary: bool, tune: bool,
          steps: int | None) -> None:
    """One turn of the learning loop on a dataset: candidates, their WER on its test split
    against the promoted model, and a promotion only where WER improves by the margin."""
    try:
        from audiary.learning import loop
    except ImportError as exc:
        raise click.ClickException(f"audiary train needs the train extra ({exc.name} is "
                                   "missing): pip install 'audiary[train,learning,transcriber]'"
                                   ) from exc
    svc = _svc()
    if steps is not None:
        svc = stores(svc.settings.model_copy(update={"train_steps": steps}))
    if os.environ.get("CLOUD_RUN_JOB"):  # a Cloud Run job execution: Cloud Logging JSON lines
        _train_as_job(svc, loop, version, force=force, vocabulary=vocabulary, tune=tune)
        return
    dataset = loop.dataset_for(svc, version, force=force)
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} steps"),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("training", total=None, loss="-", visible=tune)
        outcomes = loop.run(
            svc, dataset, vocabulary=vocabulary, fine_tune=tune, say=bar.console.print,
            progress=lambda step, total, loss: bar.update(task, completed=step, total=total,
                                                          loss=f"{loss:.3f}"))
    records = [svc.notes.get_model(o.candidate.model_id) or o.candidate for o in outcomes]
    promoted = [r for r in svc.notes.list_models() if r.state.value == "promoted"]
    _show_models([*promoted, *(r for r in records if r not in promoted)])


def _train_as_job(svc: Stores, loop: Any, version: int | None, *, force: bool,
                  vocabulary: bool, tune: bool) -> None:
    """`audiary train` as the Cloud Run training job runs it: every line a JSON log line (no
    progress bar, which Cloud Logging would get as one text line per refresh), the run a trace
    of its own, progress logged at every tenth of the steps."""
    import logging

    from audiary.observability import telemetry

    telemetry.setup("trainer", svc.settings)
    log = logging.getLogger("audiary.train")
    logged: set[int] = set()

    def progress(step: int, total: int, loss: float) -> None:
        tenth = step * 10 // max(total, 1)
        if tenth not in logged:
            logged.add(tenth)
            log.info("training step %d/%d, loss %.3f", step, total, loss)

    try:
        with telemetry.tracer().start_as_current_span("train"):
            dataset = loop.dataset_for(svc, version, force=force)
            outcomes = loop.run(
                svc, dataset, vocabulary=vocabulary, fine_tune=tune, progress=progress,
                say=lambda message: log.info("%s", Text.from_markup(str(message))))
    except AudiaryError as exc:  # one JSON line with the reason, and the execution fails
        log.error("training failed: %s", exc)
        raise SystemExit(1) from exc
    except Exception as exc:
        log.exception("training failed: %s", exc)
        raise SystemExit(1) from exc
    for outcome in outcomes:
        record = svc.notes.get_model(outcome.candidate.model_id) or outcome.candidate
        log.info("candidate %s: %s", record.model_id, record.state.value)


@cli.group()
def stack() -> None:
    """Start and stop the native local stack (emulators, functions, transcriber, watcher)."""


@stack.command("up")
def stack_up() -> None:
    """Start the stack in the background and return once every part answers."""
    from audiary.local.stack import NativeStack, read_state

    settings = load_settings()
    if read_state(settings.state_dir) is not None:
        raise click.ClickException(
            f"a stack is already running (state in {settings.state_dir}); run `make down` first"
        )
    with console.status("starting emulators, functions, transcriber and watcher"):
        started = NativeStack(settings).up()
    for key, value in started.env.items():
        click.echo(f"export {key}={value}")
    for name, url in started.urls.items():
        console.print(f"{name:>20}  {url}", highlight=False)
    console.print(f"[green]stack up[/green]; logs in {started.state_dir}; "
                  "stop it with `make down` (or `audiary stack down`)", soft_wrap=True)


@stack.command("down")
def stack_down() -> None:
    """Stop everything `audiary stack up` started."""
    from audiary.local.stack import stop_recorded

    stopped = stop_recorded(load_settings().state_dir)
    console.print(f"stopped {stopped} process groups" if stopped else "no stack was running")


@cli.command()
@click.option("--sample", type=click.Path(exists=True, path_type=Path), default=None,
              help=f"audio to drop  [default: {DEMO_SAMPLE} in the checkout]")
@click.option("--timeout", default=900.0, show_default=True)
@click.option("--keep", is_flag=True,
              help="leave the stack running, with a key that shows the job in the web page")
def demo(sample: Path | None, timeout: float, keep: bool) -> None:
    """Start the local stack, drop a sample, print its transcript and note, stop the stack."""
    from audiary.local.stack import NativeStack

    settings = load_settings()
    sample = sample or settings.project_dir / DEMO_SAMPLE
    if not sample.is_file():
        raise click.ClickException(
            f"no demo sample at {sample}; run from the checkout or pass --sample")
    with console.status("starting the local stack"):
        running = NativeStack(settings).up()
    console.print(f"web page: {running.urls['web page']}")
    try:
        os.environ.update(running.env)
        backend = LocalBackend(stores(load_settings()))
        console.print(f"dropping {sample.name} into gs://{settings.uploads_bucket}/"
                      f"{settings.inbox_prefix}")
        job_id = backend.upload(sample)
        job = wait_for(backend, [job_id], timeout)[job_id]
        if job is None or job.status is not JobStatus.DONE:
            why = job.error.message if job and job.error else "timed out"
            raise click.ClickException(f"job {job_id} did not finish ({why})")
        console.rule(f"transcript of {sample.name} ({job.chunks_total} chunks, model "
                     f"{job.model}, language {job.language or 'not detected'})")
        click.echo(render(backend.transcript(job_id), "txt"))
        console.rule("diary note")
        click.echo(to_markdown(backend.note(job_id)))
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in job.stage_seconds().items())
        console.print(f"job {job_id}: {timings}")
        if keep:
            svc = stores(load_settings())
            full, key_id, digest = new_key()
            demo_key = ApiKey(key_id=key_id, name="demo", secret_hash=digest,
                              created_at=datetime.now(UTC))
            svc.keys.put_key(demo_key)
            svc.jobs.update_job(job_id, {"owner": demo_key.owner})  # the key's to see
            console.print(f"the stack keeps running: open {running.urls['web page']} and "
                          f"sign in with\n  {full}\nstop it with: AUDIARY_STATE_DIR="
                          f"{settings.state_dir} .venv/bin/audiary stack down")
    finally:
        if not keep:
            with console.status("stopping the local stack"):
                running.down()


@cli.command("demo-learning")
@click.option("--timeout", default=1800.0, show_default=True,
              help="seconds each stage (transcription, training) may take")
def demo_learning(timeout: float) -> None:
    """The learning loop on the local stack: diaries in, corrections, a dataset, candidates,
    their WER and the promotion decisions."""
    from audiary.entrypoints.cli import learning_demo

    learning_demo.run(load_settings(), console, _build_and_show,
                      _show_models, timeout)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
