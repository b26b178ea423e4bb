"""Review in a real Label Studio (the PyPI server, started once for these tests on its own data
folder), against the native stack: `audiary review setup` makes the project and the webhook,
a flag in the API becomes a task with the machine's prediction, an annotator's submission
(posted exactly as Label Studio's page posts it) comes back through the webhook as a
correction, a new transcript version, the userfeedback copy and a new note version; with the
receiver down, the sync brings the next one, once. Bad input: an empty text, a deleted job, a
replayed webhook, a wrong secret, a skipped task.
"""

from __future__ import annotations

import contextvars
import io
import json
import os
import shutil
import signal
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from audiary.domain.jobs import TERMINAL, JobStatus
from audiary.domain.review import FROM_TEXT, ReviewStatus
from audiary.entrypoints.cli.main import cli
from audiary.local.label_studio import OWNER_EMAIL, OWNER_PASSWORD, LabelStudioServer
from audiary.local.stack import NativeStack, settings_env
from audiary.ports import Stores
from audiary.services.jobs import create_upload
from tests.e2e.conftest import LABEL_STUDIO_TOKEN, REVIEW_SECRET, poll, wait_for_status
from tests.media import DEMO_SAMPLE, decode, encode

pytestmark = pytest.mark.e2e
LabelStudio = pytest.importorskip("label_studio_sdk").LabelStudio

REPO = Path(__file__).resolve().parents[2]
ANNOTATOR = ("reviewer@audiary.local", "reviewer-pass-123")


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory,
                 label_studio_port: int) -> Iterator[LabelStudioServer]:
    server = LabelStudioServer(tmp_path_factory.mktemp("label-studio"), port=label_studio_port,
                               token=LABEL_STUDIO_TOKEN, project_dir=REPO)
    with server:
        yield server


def page_session(base: str, email: str, password: str, *, signup: bool) -> httpx.Client:
    """Signed in through Label Studio's own form, as a browser is: the session cookie and
    the CSRF token its page sends with every API call."""
    session = httpx.Client(base_url=base, timeout=30)
    path = "/user/signup/" if signup else "/user/login/"
    session.get(path)
    answer = session.post(path, data={"email": email, "password": password,
                                      "csrfmiddlewaretoken": session.cookies["csrftoken"]},
                          headers={"Referer": base + path})
    assert answer.status_code == 302, answer.text[:300]
    session.headers.update({"X-CSRFToken": session.cookies["csrftoken"], "Referer": base + "/"})
    return session


@pytest.fixture(scope="module")
def annotator(label_studio: LabelStudioServer) -> Iterator[httpx.Client]:
    session = page_session(label_studio.url, *ANNOTATOR, signup=True)
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="module")
def desk(label_studio: LabelStudioServer) -> Any:
    return LabelStudio(base_url=label_studio.url, api_key=LABEL_STUDIO_TOKEN)


def run_cli(stack: NativeStack, *args: str) -> str:
    """`audiary ...` configured like the stack's own processes (Label Studio included)."""
    runner = CliRunner(env={**settings_env(stack.settings), **stack.env,
                            "AUDIARY_STATE_DIR": str(stack.state_dir)})
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def project_id(stack: NativeStack, label_studio: LabelStudioServer, desk: Any) -> int:
    output = run_cli(stack, "review", "setup")
    url = output.strip().splitlines()[-1]
    assert url.startswith(f"{label_studio.url}/projects/")
    assert url.endswith("/data")
    project = int(url.split("/")[-2])
    again = run_cli(stack, "review", "setup")  # idempotent: the same project, no second hook
    assert again.strip().splitlines()[-1] == url
    (hook,) = [h for h in desk.webhooks.list(project=str(project))]
    assert hook.url == f"{stack.settings.review_url}/label-studio"
    assert hook.headers == {"X-Audiary-Review-Secret": REVIEW_SECRET}
    assert set(hook.actions) == {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "TASKS_DELETED"}
    return project


@pytest.fixture(scope="module")
def api(stack: NativeStack) -> Iterator[tuple[httpx.Client, str]]:
    key = run_cli(stack, "keys", "create", "review").strip().splitlines()[-1]
    base = f"http://{stack.settings.host}:{stack.settings.api_port}"
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as client:
        yield client, key


def finished_job(svc: Stores, stack: NativeStack, key: str, tmp_path: Path, name: str) -> str:
    stored = svc.keys.get_key(key.split("_")[1])
    assert stored is not None
    path = encode(decode(DEMO_SAMPLE, seconds=30.0), tmp_path / name)
    upload = contextvars.copy_context().run(
        create_upload, svc, stored.owner, path.name, "audio/flac", path.stat().st_size)
    svc.blobs.upload_file(stack.settings.uploads_bucket, upload.job.source.name, path)
    job = wait_for_status(svc, upload.job.job_id, TERMINAL, timeout_s=300)
    assert job.status is JobStatus.DONE, job.error
    return job.job_id


def segments_of(svc: Stores, stack: NativeStack, job_id: str, version: int = 1) -> list[dict]:
    key = f"{job_id}.json" if version == 1 else f"{job_id}/v{version}.json"
    return json.loads(svc.blobs.get(stack.settings.transcripts_bucket, key))["segments"]


def task_of(desk: Any, project: int, item_id: str) -> dict[str, Any]:
    """The item's task as Label Studio's API returns it (JSON)."""
    (task,) = [t.model_dump(mode="json") for t in desk.tasks.list(project=project, fields="all")
               if t.data.get("item_id") == item_id]
    return task


def edited(result: list[dict], text: str) -> list[dict]:
    """The prediction's result with the text of its (first) region replaced."""
    out = json.loads(json.dumps(result))
    for entry in out:
        if entry["from_name"] == FROM_TEXT:
            entry["value"]["text"] = [text]
            break
    return out


def submit(annotator: httpx.Client, project: int, task: dict[str, Any], result: list[dict],
           *, skip: bool = False) -> dict:
    """What Label Studio's page posts when the annotator presses Submit (or Skip)."""
    answer = annotator.post(f"/api/tasks/{task['id']}/annotations/?project={project}", json={
        "result": [] if skip else result, "lead_time": 9.5, "was_cancelled": skip,
        "ground_truth": False, "project": str(project),
        "started_at": datetime.now(UTC).isoformat(),
        "parent_prediction": task["predictions"][0]["id"] if task["predictions"] else None})
    assert answer.status_code == 201, answer.text[:300]
    return dict(answer.json())


def label_studio_feedback(svc: Stores, job_id: str) -> list:
    return [f for f in svc.notes.list_feedback(job_id) if f.source == "label-studio"]


def review_process(stack: NativeStack):
    return next(p for p in stack.processes if p.name == "review")


def test_a_flagged_segment_goes_to_label_studio_and_its_correction_comes_back(
        stack: NativeStack, svc: Stores, api, desk: Any, project_id: int,
        annotator: httpx.Client, label_studio: LabelStudioServer, tmp_path: Path):
    client, key = api
    s = stack.settings
    job_id = finished_job(svc, stack, key, tmp_path, "reviewed.flac")
    machine = segments_of(svc, stack, job_id)
    flagged = client.post(f"/v1/jobs/{job_id}/feedback",
                          json={"flagged_segments": [1], "comment": "a name is wrong"})
    assert flagged.status_code == 201, flagged.text
    item_id = f"{job_id}.flagged.s1"
    assert flagged.json()["review_items"] == [item_id]
    again = client.post(f"/v1/jobs/{job_id}/feedback", json={"flagged_segments": [1]})
    assert again.json()["review_items"] == []  # one item per flagged thing
    assert svc.notes.get_review_item(item_id).status is ReviewStatus.QUEUED

    run_cli(stack, "review", "sync")
    task = task_of(desk, project_id, item_id)
    assert (task["data"]["job_id"], task["data"]["first"], task["data"]["last"]) == (job_id, 1, 1)
    assert task["data"]["model"] == svc.jobs.get_job(job_id).model
    (prediction,) = task["predictions"]
    texts = [e["value"]["text"] for e in prediction["result"] if e["from_name"] == FROM_TEXT]
    assert texts == [[machine[1]["text"].strip()]]
    region = prediction["result"][0]["value"]
    offset = task["data"]["offset_s"]
    assert region["start"] == pytest.approx(machine[1]["start"] - offset, abs=1e-3)
    # The task's audio is the segment's own clip, kept with the job's feedback, fetched
    # without credentials.
    assert svc.blobs.stat(s.feedback_bucket, f"{job_id}/review/{item_id}.wav") is not None
    clip = httpx.get(task["data"]["audio"], timeout=30)
    assert clip.status_code == 200
    with wave.open(io.BytesIO(clip.content)) as audio:
        seconds = audio.getnframes() / audio.getframerate()
    span = machine[1]["end"] - machine[1]["start"]
    assert span < seconds <= span + 2 * s.review_clip_pad_s + 0.01
    assert svc.notes.get_review_item(item_id).task_id == task["id"]
    screenshot_task(label_studio, project_id, task["id"], tmp_path)

    # The annotator corrects the line in Label Studio: the webhook brings it back.
    corrected = f"Sarah {machine[1]['text'].strip()}"
    annotation = submit(annotator, project_id, task, edited(prediction["result"], corrected))
    (feedback,) = poll(lambda: label_studio_feedback(svc, job_id), bool, 60)
    (correction,) = feedback.corrections
    assert (correction.index, correction.before.strip(), correction.after) == (
        1, machine[1]["text"].strip(), corrected)
    assert (correction.start, correction.end) == (machine[1]["start"], machine[1]["end"])
    assert feedback.transcript_version == 2
    assert svc.jobs.get_job(job_id).transcript_version == 2
    assert segments_of(svc, stack, job_id, 2)[1]["text"] == corrected
    copy = svc.blobs.stat(s.feedback_bucket, f"{job_id}/reviewed.flac")
    assert corrected in copy.metadata["corrected_transcript"]
    note = poll(lambda: svc.notes.get_note(job_id), lambda n: n and n.version == 2, 120)
    assert note.transcript_version == 2
    item = svc.notes.get_review_item(item_id)
    assert item.status is ReviewStatus.CORRECTED
    assert (item.errors, item.reference_words) == (1, len(corrected.split()))

    # The receiver is down when the annotator edits the annotation again: the webhook is lost;
    # the sync brings the edit, once.
    receiver = review_process(stack)
    receiver.kill(signal.SIGKILL)
    try:
        recorrected = f"Sarah said {machine[1]['text'].strip()}"
        patched = annotator.patch(
            f"/api/annotations/{annotation['id']}/?taskID={task['id']}&project={project_id}",
            json={"result": edited(prediction["result"], recorrected), "lead_time": 12.0,
                  "was_cancelled": False})
        assert patched.status_code == 200, patched.text[:300]
        assert len(label_studio_feedback(svc, job_id)) == 1
    finally:
        receiver.start().wait_ready(60)
    run_cli(stack, "review", "sync")
    assert len(label_studio_feedback(svc, job_id)) == 2
    assert svc.jobs.get_job(job_id).transcript_version == 3
    assert segments_of(svc, stack, job_id, 3)[1]["text"] == recorrected
    run_cli(stack, "review", "sync")  # and again: nothing new
    assert len(label_studio_feedback(svc, job_id)) == 2
    assert svc.jobs.get_job(job_id).transcript_version == 3
    stats = run_cli(stack, "review", "stats")
    assert "corrected 1" in stats


def screenshot_task(label_studio: LabelStudioServer, project: int, task: int,
                    tmp_path: Path) -> None:
    """The task's page in Label Studio, as the owner sees it (docs/review-task.png)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--mute-audio"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(
        shutil.which("chromedriver")))
    try:
        wait = WebDriverWait(chrome, 60)
        chrome.get(f"{label_studio.url}/user/login/")
        wait.until(ec.presence_of_element_located((By.ID, "email"))).send_keys(OWNER_EMAIL)
        chrome.find_element(By.ID, "password").send_keys(OWNER_PASSWORD)
        chrome.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
        wait.until(lambda d: "/user/login" not in d.current_url)
        chrome.get(f"{label_studio.url}/projects/{project}/data?task={task}")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".lsf-audio-tag")))
        regions = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".lsf-outliner-item"))
        assert len(regions) == 1  # the one flagged segment
        regions[0].click()
        wait.until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, "[data-testid=textarea-input], textarea")))
        path = tmp_path / "review-task.png"
        chrome.save_screenshot(str(path))
        if folder := os.environ.get("AUDIARY_SCREENSHOTS"):
            shutil.copy(path, Path(folder) / path.name)
    finally:
        chrome.quit()


def post_webhook(stack: NativeStack, payload: dict, secret: str = REVIEW_SECRET
                 ) -> httpx.Response:
    url = f"{stack.settings.review_url}/label-studio"
    return httpx.post(url, json=payload, headers={"X-Audiary-Review-Secret": secret},
                      timeout=30)


def test_bad_annotations_are_refused_or_dropped_and_nothing_is_applied_twice(
        stack: NativeStack, svc: Stores, api, desk: Any, project_id: int,
        annotator: httpx.Client, tmp_path: Path):
    client, key = api
    kept = finished_job(svc, stack, key, tmp_path, "kept.flac")
    gone = finished_job(svc, stack, key, tmp_path, "gone.flac")
    for job_id, segments in ((kept, [0, 2]), (gone, [0])):
        answer = client.post(f"/v1/jobs/{job_id}/feedback", json={"flagged_segments": segments})
        assert answer.status_code == 201, answer.text
    out_of_range = client.post(f"/v1/jobs/{kept}/feedback", json={"flagged_segments": [999]})
    assert out_of_range.status_code == 422
    assert "no segment 999" in out_of_range.json()["error"]["message"]
    run_cli(stack, "review", "sync")

    # An empty text: refused by the receiver, nothing saved, the item still open.
    empty_task = task_of(desk, project_id, f"{kept}.flagged.s0")
    result = empty_task["predictions"][0]["result"]
    submit(annotator, project_id, empty_task, edited(result, "  "))
    replayed = {"action": "ANNOTATION_CREATED", "project": {"id": project_id},
                "task": {"id": empty_task["id"], "data": empty_task["data"]},
                "annotation": desk.annotations.list(id=empty_task["id"])[0].model_dump(
                    mode="json")}
    refused = post_webhook(stack, replayed)
    assert refused.status_code == 422
    assert "is empty" in refused.json()["detail"]
    assert label_studio_feedback(svc, kept) == []
    assert svc.notes.get_review_item(f"{kept}.flagged.s0").status is ReviewStatus.SENT

    # A skipped task: recorded as skipped, no correction.
    skipped_task = task_of(desk, project_id, f"{kept}.flagged.s2")
    submit(annotator, project_id, skipped_task, [], skip=True)
    poll(lambda: svc.notes.get_review_item(f"{kept}.flagged.s2").status,
         lambda status: status is ReviewStatus.SKIPPED, 60)
    assert label_studio_feedback(svc, kept) == []

    # A wrong secret, and none: refused before anything is read.
    for secret in ("not-the-secret", ""):
        assert post_webhook(stack, replayed, secret=secret).status_code == 401

    # The job is deleted before its annotation arrives: dropped with a log line, no error.
    assert client.delete(f"/v1/jobs/{gone}").status_code == 204
    gone_task = task_of(desk, project_id, f"{gone}.flagged.s0")
    annotation = submit(annotator, project_id, gone_task,
                        edited(gone_task["predictions"][0]["result"], "too late"))
    poll(lambda: svc.notes.get_review_item(f"{gone}.flagged.s0"),
         lambda item: item is None or item.status is ReviewStatus.DROPPED, 60)
    assert [o.key for o in svc.blobs.list(stack.settings.feedback_bucket, f"{gone}/")] == []
    late = post_webhook(stack, {
        "action": "ANNOTATION_CREATED",
        "task": {"id": gone_task["id"], "data": gone_task["data"]},
        "annotation": annotation})
    assert (late.status_code, late.json()["outcome"]) == (200, "dropped")

    # A correct annotation, then the very same webhook again: applied once.
    fixed = submit(annotator, project_id, empty_task, edited(result, "Monday morning"))
    (feedback,) = poll(lambda: label_studio_feedback(svc, kept), bool, 60)
    replay = post_webhook(stack, {**replayed, "annotation": fixed})
    assert (replay.status_code, replay.json()["outcome"]) == (200, "duplicate")
    run_cli(stack, "review", "sync")
    assert len(label_studio_feedback(svc, kept)) == 1
    assert svc.jobs.get_job(kept).transcript_version == 2
    assert feedback.corrections[0].after == "Monday morning"
