"""The web page in a real headless Chromium (Debian's, driven by Selenium and its driver),
against the native stack: sign in, the job list, a job's player and transcript, a correction
and a flag saved through the feedback route, checked in the stores; a wrong key's message.

Screenshots of the pages are written to the test's folder, and with AUDIARY_SCREENSHOTS=<dir>
also there (that is how docs/web-*.png were made).
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from audiary.domain.jobs import TERMINAL, JobStatus
from audiary.entrypoints.cli.main import cli
from audiary.local.stack import NativeStack
from audiary.ports import Stores
from audiary.services.jobs import create_upload
from tests.e2e.conftest import WEB_CLIENT_ID, WEB_USER, poll, wait_for_status
from tests.fakes.google_identity import GoogleIdentity
from tests.media import DEMO_SAMPLE, decode, encode

pytestmark = pytest.mark.e2e

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# What the browser's microphone hears: the first seconds of the demo diary, on a loop.
MICROPHONE_S = 10.0


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.fail("Chromium is not installed: apt-get install chromium chromium-driver")
    microphone = encode(decode(DEMO_SAMPLE, seconds=MICROPHONE_S),
                        tmp_path_factory.mktemp("microphone") / "speech.wav", stereo=False)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required",
                # A microphone that plays a speech file, allowed without asking.
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="module")
def key(stack: NativeStack) -> str:
    runner = CliRunner(env={**stack.env, "AUDIARY_STATE_DIR": str(stack.state_dir)})
    created = runner.invoke(cli, ["keys", "create", "web"], catch_exceptions=False)
    assert created.exit_code == 0, created.output
    return created.stdout.strip().splitlines()[-1]


def owner_of(svc: Stores, key: str) -> str:
    stored = svc.keys.get_key(key.split("_")[1])
    assert stored is not None
    return stored.owner


def text_of(chrome, selector: str) -> str | None:
    """The text of the element `selector` names now, read in one step: the job list is
    redrawn every 2 s while a job runs, so a found element may be replaced a moment later."""
    return chrome.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        selector)


def screenshot(chrome, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    chrome.save_screenshot(str(path))
    if folder := os.environ.get("AUDIARY_SCREENSHOTS"):
        shutil.copy(path, Path(folder) / f"{name}.png")


def sign_in(chrome, base: str, key: str) -> None:
    """Open the page afresh (no key left from an earlier test) and sign in with `key`."""
    chrome.get(f"{base}/")
    chrome.execute_script("sessionStorage.clear()")
    chrome.get(f"{base}/")
    wait = WebDriverWait(chrome, 20)
    field = wait.until(ec.visibility_of_element_located((By.ID, "api-key")))
    field.send_keys(key)
    chrome.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()


PAGE_STATE = """return {url: location.href, signed_in: !!sessionStorage.getItem("audiary.key"),
  shown: ["sign-in", "jobs", "job", "message"].filter((id) => !document.getElementById(id).hidden),
  message: document.getElementById("message").textContent}"""


def visible(chrome, element_id: str, timeout_s: float = 30):
    """The element once it is visible; if it never is, a failure that says what the page shows
    instead (sections, message, whether a key is kept)."""
    try:
        return WebDriverWait(chrome, timeout_s).until(
            ec.visibility_of_element_located((By.ID, element_id)))
    except TimeoutException as exc:
        raise AssertionError(f"#{element_id} not visible after {timeout_s} s; the page: "
                             f"{chrome.execute_script(PAGE_STATE)}") from exc


def test_a_wrong_key_is_told_so(browser, stack: NativeStack):
    base = f"http://{stack.settings.host}:{stack.settings.api_port}"
    sign_in(browser, base, "ak_nosuchkey_0000")
    message = visible(browser, "message", 20)
    assert "Signing in failed" in message.text
    assert message.text == "Signing in failed: the API key is malformed"  # the API's words
    assert browser.find_element(By.ID, "sign-in").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('audiary.key')") is None


def test_sign_in_play_seek_correct_and_flag(browser, stack: NativeStack, svc: Stores, key: str,
                                            tmp_path: Path):
    s = stack.settings
    base = f"http://{s.host}:{s.api_port}"
    owner = owner_of(svc, key)
    path = encode(decode(DEMO_SAMPLE, seconds=30.0), tmp_path / "walk.flac")
    upload = contextvars.copy_context().run(
        create_upload, svc, owner, path.name, "audio/flac", path.stat().st_size)
    svc.blobs.upload_file(s.uploads_bucket, upload.job.source.name, path)
    job_id = upload.job.job_id
    job = wait_for_status(svc, job_id, TERMINAL, timeout_s=300)
    assert job.status is JobStatus.DONE, job.error

    sign_in(browser, base, key)
    wait = WebDriverWait(browser, 30)
    row = f'tr[data-job-id="{job_id}"]'
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, row)))
    assert "DONE" in text_of(browser, f"{row} .state")
    assert text_of(browser, f"{row} a") == "walk.flac"
    screenshot(browser, tmp_path, "web-jobs")

    browser.get(f"{base}/#/jobs/{job_id}")  # where the row's link goes
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#segments li")))
    segments = browser.find_elements(By.CSS_SELECTOR, "#segments li")
    transcript = svc.blobs.get(s.transcripts_bucket, f"{job_id}.json")
    assert len(segments) >= 2
    # The audio arrives as a blob; once it is loaded, clicking a line's time seeks there.
    poll(lambda: browser.execute_script("return document.getElementById('player').readyState"),
         lambda state: state >= 1, 30)
    target = segments[1]
    start = float(json.loads(transcript)["segments"][1]["start"])
    target.find_element(By.CLASS_NAME, "time").click()
    position = poll(lambda: browser.execute_script(
        "return document.getElementById('player').currentTime"),
        lambda t: t >= start - 0.05, 10)
    assert start - 0.05 <= position < start + 5
    # The note is rendered beside the transcript.
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#note h3")))
    assert browser.find_element(By.CSS_SELECTOR, "#note h3").text == svc.notes.get_note(
        job_id).note.title

    # Correct one word of the first line, flag the recording, comment, save.
    first = segments[0].find_element(By.CLASS_NAME, "text")
    original = first.text
    corrected = original.replace(original.split()[0], "Tuesday", 1)
    browser.execute_script(
        "arguments[0].textContent = arguments[1];"
        "arguments[0].dispatchEvent(new Event('input'));", first, corrected)
    browser.find_element(By.ID, "flagged").click()
    flag = segments[1].find_element(By.CLASS_NAME, "flag")  # and one line, for review
    flag.click()
    assert flag.get_attribute("aria-pressed") == "true"
    browser.find_element(By.ID, "comment").send_keys("the day is wrong")
    screenshot(browser, tmp_path, "web-job")
    browser.find_element(By.CSS_SELECTOR, "#feedback-form button").click()
    saved = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#message.ok")))
    assert "Saved" in saved.text

    assert "transcript version 2" in saved.text
    assert "2 sent to review" in saved.text
    queued = {i.item_id: i for i in svc.notes.list_review_items(job_id=job_id)}
    assert {f"{job_id}.flagged.all", f"{job_id}.flagged.s1"} <= set(queued)
    assert queued[f"{job_id}.flagged.s1"].transcript_version == 2  # what the reviewer sees

    # Checked in the stores, not on the page.
    (feedback,) = svc.notes.list_feedback(job_id)
    assert feedback.flagged
    assert feedback.flagged_segments == [1]
    assert feedback.comment == "the day is wrong"
    assert feedback.corrected_transcript.startswith(corrected)
    (correction,) = feedback.corrections
    machine = json.loads(transcript)["segments"][0]
    assert (correction.index, correction.start, correction.end) == (
        0, machine["start"], machine["end"])
    assert (correction.before, correction.after) == (machine["text"], corrected)
    assert feedback.transcript_version == 2
    assert svc.jobs.get_job(job_id).transcript_version == 2
    version_2 = json.loads(svc.blobs.get(s.transcripts_bucket, f"{job_id}/v2.json"))
    assert version_2["segments"][0]["text"] == corrected
    assert version_2["segments"][1:] == json.loads(transcript)["segments"][1:]
    assert json.loads(svc.blobs.get(s.transcripts_bucket, f"{job_id}.json")) == json.loads(
        transcript)  # version 1, the machine's, untouched

    # Write the note again from version 2: a new note version, the first one kept.
    first_note = svc.notes.get_note(job_id)
    again = wait.until(ec.element_to_be_clickable((By.ID, "summarize-again")))
    again.click()
    written = WebDriverWait(browser, 120).until(ec.text_to_be_present_in_element(
        (By.ID, "message"), "Note version 2"))
    assert written
    note = svc.notes.get_note(job_id)
    assert (note.version, note.transcript_version) == (2, 2)
    assert note.history == [first_note.model_copy(update={"history": []})]
    assert note.note.summary.startswith("Tuesday")  # the fake model reads the first line
    assert svc.jobs.get_job(job_id).status is JobStatus.DONE
    assert not browser.find_element(By.ID, "summarize-again").is_displayed()
    copy = svc.blobs.stat(s.feedback_bucket, f"{job_id}/{upload.job.source.name.split('/')[-1]}")
    assert copy is not None
    assert copy.metadata["corrected_transcript"].startswith(corrected)
    original_object = svc.blobs.stat(s.uploads_bucket, upload.job.source.name)
    assert original_object.metadata["flagged"] == "true"
    assert original_object.metadata["transcript"].startswith(original.split()[0])


def test_upload_from_the_page_reaches_done_and_a_non_audio_file_is_refused(
        browser, stack: NativeStack, svc: Stores, key: str, tmp_path: Path):
    s = stack.settings
    base = f"http://{s.host}:{s.api_port}"
    sign_in(browser, base, key)
    wait = WebDriverWait(browser, 30)
    wait.until(ec.visibility_of_element_located((By.ID, "drop-zone")))
    speech = encode(decode(DEMO_SAMPLE, seconds=12.0), tmp_path / "from-the-page.mp3")
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    browser.find_element(By.ID, "files").send_keys(f"{speech}\n{text}")
    statuses = upload_statuses(browser, 2)
    assert any("not an audio file" in status for status in statuses), statuses
    assert any(status.startswith("uploaded") for status in statuses), statuses
    bars = browser.find_elements(By.CSS_SELECTOR, "#uploads progress")
    assert max(float(b.get_attribute("value")) for b in bars) == 100
    screenshot(browser, tmp_path, "web-upload")
    owned = [j for j in svc.jobs.list_jobs(50, owner=owner_of(svc, key))
             if j.source.name.endswith("/from-the-page.mp3")]
    assert len(owned) == 1
    assert not [j for j in svc.jobs.list_jobs(50, owner=owner_of(svc, key))
                if j.source.name.endswith("/notes.txt")]  # refused before any upload
    row = f'tr[data-job-id="{owned[0].job_id}"] .state'
    poll(lambda: text_of(browser, row), lambda t: t == "DONE", 300)


def upload_statuses(browser, count: int) -> list[str]:
    return poll(lambda: browser.execute_script(
        "return [...document.querySelectorAll('.upload-status')].map(e => e.textContent)"),
        lambda found: len(found) >= count and all(found[:count]), 60)


def test_an_oversized_file_and_a_failed_transfer_say_what_happened(
        browser, stack: NativeStack, svc: Stores, key: str, tmp_path: Path):
    s = stack.settings
    base = f"http://{s.host}:{s.api_port}"
    sign_in(browser, base, key)
    visible(browser, "drop-zone")
    big = tmp_path / "too-big.wav"
    with big.open("wb") as out:  # sparse: the size is what matters
        out.truncate(s.max_upload_bytes + 1)
    browser.find_element(By.ID, "files").send_keys(str(big))
    (refused,) = upload_statuses(browser, 1)
    assert refused.startswith("not uploaded:"), refused
    assert "above the limit" in refused, refused

    # The bucket cannot be reached during the transfer: the page says so, nothing is stored.
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": [f"*:{s.gcs_port}/*"]})
    try:
        speech = encode(decode(DEMO_SAMPLE, seconds=5.0), tmp_path / "cut-off.mp3")
        files = browser.find_element(By.ID, "files")
        browser.execute_script("arguments[0].value = ''", files)  # a new pick, not one more
        files.send_keys(str(speech))
        failed = upload_statuses(browser, 2)[1]
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    assert failed == "not uploaded: the connection failed during the upload"
    assert not [o for o in svc.blobs.list(s.uploads_bucket, s.inbox_prefix)
                if o.key.endswith("/cut-off.mp3")]


def test_a_key_revoked_while_signed_in_sends_the_page_back_to_sign_in(
        browser, stack: NativeStack):
    s = stack.settings
    base = f"http://{s.host}:{s.api_port}"
    runner = CliRunner(env={**stack.env, "AUDIARY_STATE_DIR": str(stack.state_dir)})
    short_lived = runner.invoke(cli, ["keys", "create", "short-lived"]).stdout.strip()
    short_lived = short_lived.splitlines()[-1]
    sign_in(browser, base, short_lived)
    visible(browser, "jobs")
    assert runner.invoke(cli, ["keys", "revoke", short_lived.split("_")[1]]).exit_code == 0
    browser.refresh()
    message = visible(browser, "message")
    assert "Signing in failed" in message.text
    assert "revoked" in message.text
    assert browser.find_element(By.ID, "sign-in").is_displayed()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_record_from_the_microphone_signed_in_with_google(
        browser, stack: NativeStack, svc: Stores, google: GoogleIdentity):
    s = stack.settings
    base = f"http://{s.host}:{s.api_port}"
    browser.get(f"{base}/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{base}/")
    wait = WebDriverWait(browser, 30)
    wait.until(ec.element_to_be_clickable((By.ID, "google-test-button"))).click()
    wait.until(ec.visibility_of_element_located((By.ID, "jobs")))
    token = browser.execute_script("return sessionStorage.getItem('audiary.key')")
    assert token.count(".") == 2  # the ID token, used like a key

    browser.find_element(By.ID, "record").click()
    # Record about 8 s of what the microphone hears, then stop: the page uploads it.
    poll(lambda: text_of(browser, "#recording-time"), lambda t: bool(t) and "0:08" in t, 30)
    browser.find_element(By.ID, "stop-recording").click()
    (status,) = upload_statuses(browser, 1)
    assert status.startswith("uploaded"), status
    (job,) = svc.jobs.list_jobs(10, owner=f"user:{WEB_USER}")  # owned by the Google account
    assert re.fullmatch(r"recording-\d{8}-\d{6}\.webm", job.source.name.split("/")[-1])
    job = wait_for_status(svc, job.job_id, TERMINAL, timeout_s=300)
    assert job.status is JobStatus.DONE, job.error
    segments = json.loads(svc.blobs.get(s.transcripts_bucket, f"{job.job_id}.json"))["segments"]
    heard = words(" ".join(segment["text"] for segment in segments))
    said = set(words(DEMO_SAMPLE.with_suffix(".txt").read_text()))
    assert len(heard) >= 10, heard
    assert sum(w in said for w in heard) >= 0.8 * len(heard), heard

    # An hour later the same sign-in has expired: the page says so and asks again.
    now = int(time.time())
    expired = google.token(aud=WEB_CLIENT_ID, iat=now - 7200, exp=now - 3600)
    browser.execute_script("sessionStorage.setItem('audiary.key', arguments[0])", expired)
    browser.refresh()
    message = wait.until(ec.visibility_of_element_located((By.ID, "message")))
    assert message.text.startswith("Signing in failed: the ID token expired at ")
    assert message.text.endswith("; sign in again")
    assert browser.find_element(By.ID, "google-test-button").is_displayed()


def tab_to(browser, selector: str, presses: int = 60) -> None:
    """Press Tab until the focus is on `selector`: it can be reached from the keyboard."""
    for _ in range(presses):
        if browser.execute_script(
                "return document.activeElement.matches(arguments[0])", selector):
            return
        ActionChains(browser).send_keys(Keys.TAB).perform()
    raise AssertionError(f"{selector} was not reached with {presses} presses of Tab")


def keys(browser, *sequence: str) -> None:
    ActionChains(browser).send_keys(*sequence).perform()


def ctrl(browser, key: str) -> None:
    ActionChains(browser).key_down(Keys.CONTROL).send_keys(key).key_up(Keys.CONTROL).perform()


def player(browser, prop: str) -> object:
    return browser.execute_script(f"return document.getElementById('player').{prop}")


UNLABELLED = """
return [...document.querySelectorAll('input, textarea, button, audio, [role=textbox]')]
  .filter(e => e.offsetParent !== null || e.tagName === 'AUDIO')
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !e.textContent.trim())
  .map(e => e.outerHTML.slice(0, 80));
"""


def test_keyboard_only_from_sign_in_to_a_saved_correction_and_a_phone_width(
        browser, stack: NativeStack, svc: Stores, tmp_path: Path):
    s = stack.settings
    base = f"http://{s.host}:{s.api_port}"
    runner = CliRunner(env={**stack.env, "AUDIARY_STATE_DIR": str(stack.state_dir)})
    own_key = runner.invoke(cli, ["keys", "create", "keyboard"]).stdout.strip().splitlines()[-1]
    path = encode(decode(DEMO_SAMPLE, seconds=30.0), tmp_path / "keyboard.flac")
    upload = contextvars.copy_context().run(
        create_upload, svc, owner_of(svc, own_key), path.name, "audio/flac", path.stat().st_size)
    svc.blobs.upload_file(s.uploads_bucket, upload.job.source.name, path)
    job_id = upload.job.job_id
    assert wait_for_status(svc, job_id, TERMINAL, timeout_s=300).status is JobStatus.DONE
    machine = json.loads(svc.blobs.get(s.transcripts_bucket, f"{job_id}.json"))["segments"]

    browser.get(f"{base}/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{base}/")
    wait = WebDriverWait(browser, 30)
    wait.until(ec.visibility_of_element_located((By.ID, "api-key")))
    tab_to(browser, "#api-key")
    keys(browser, own_key, Keys.ENTER)
    link = f'tr[data-job-id="{job_id}"] a'
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, link)))
    assert browser.execute_script(UNLABELLED) == []
    tab_to(browser, link)
    keys(browser, Keys.ENTER)
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#segments li")))
    poll(lambda: player(browser, "readyState"), lambda state: state >= 1, 30)
    assert browser.execute_script(UNLABELLED) == []

    # A line's time button plays from that line.
    tab_to(browser, "#segments li:nth-child(2) .time")
    keys(browser, Keys.ENTER)
    poll(lambda: player(browser, "currentTime"), lambda t: t >= machine[1]["start"] - 0.05, 10)
    assert player(browser, "paused") is False
    # In the first line: type, undo with Esc, type again, Enter moves to the next line.
    tab_to(browser, "#segments li:nth-child(1) .text")
    keys(browser, Keys.HOME, "Really ")
    assert text_of(browser, "#segments li:nth-child(1) .text").startswith("Really ")
    keys(browser, Keys.ESCAPE)
    assert text_of(browser, "#segments li:nth-child(1) .text") == machine[0]["text"]
    keys(browser, Keys.HOME, "Really ", Keys.ENTER)
    assert browser.execute_script("return document.activeElement === "
                                  "document.querySelector('#segments li:nth-child(2) .text')")
    # Ctrl+Space pauses, and plays again from within the line.
    ctrl(browser, Keys.SPACE)
    assert poll(lambda: player(browser, "paused"), bool, 5)
    ctrl(browser, Keys.SPACE)
    assert not poll(lambda: player(browser, "paused"), lambda paused: not paused, 5)
    assert machine[1]["start"] - 0.05 <= player(browser, "currentTime")
    ctrl(browser, Keys.ENTER)  # saves
    saved = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#message.ok")))
    assert "transcript version 2" in saved.text
    (feedback,) = svc.notes.list_feedback(job_id)
    (correction,) = feedback.corrections
    assert (correction.index, correction.after) == (0, f"Really {machine[0]['text'].strip()}")

    # A phone's width: one column, nothing wider than the screen.
    browser.set_window_size(390, 844)
    try:
        browser.refresh()
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#segments li")))
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#note h3")))
        width = "return [document.documentElement.scrollWidth, window.innerWidth]"
        scroll, inner = browser.execute_script(width)
        assert scroll <= inner, (scroll, inner)
        screenshot(browser, tmp_path, "web-phone")
        browser.get(f"{base}/#/")
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, link)))
        scroll, inner = browser.execute_script(width)
        assert scroll <= inner, (scroll, inner)
    finally:
        browser.set_window_size(1280, 900)
