"""The `audiary` CLI against the running native stack."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from click.testing import CliRunner

from audiary.domain.jobs import JobStatus
from audiary.domain.transcript import Segment
from audiary.entrypoints.cli.backends import LocalBackend
from audiary.entrypoints.cli.main import cli, watch_folder
from tests.e2e.conftest import wait_for_status
from tests.media import DEMO_SAMPLE, bad_inputs, decode, encode
from tests.unit.test_subtitles import expected_cues, read_srt, read_vtt

pytestmark = pytest.mark.e2e


@pytest.fixture
def run(svc):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_drop_wait_status_and_every_transcript_format(run, tmp_path):
    path = encode(decode(DEMO_SAMPLE, seconds=30.0), tmp_path / "talk.mp3")
    dropped = run("drop", str(path), "--wait", "--timeout", "300")
    assert dropped.exit_code == 0, dropped.output
    job_id = dropped.stdout.strip().splitlines()[0]
    assert len(job_id) == 24

    status = run("status", job_id)
    assert "DONE" in status.output
    assert "TRANSCRIBING" in status.output  # a stage timing row

    as_json = json.loads(run("transcript", job_id, "--format", "json").output)
    text = run("transcript", job_id).output.strip()
    srt = run("transcript", job_id, "--format", "srt").output
    vtt = run("transcript", job_id, "--format", "vtt").output
    segments = as_json["segments"]
    assert text == " ".join(s["text"].strip() for s in segments)
    assert "sarah" in text.lower()
    # Independent parsers read back one cue per segment with text, with its times and text.
    cues = expected_cues([Segment.model_validate(s) for s in segments])
    assert cues
    assert read_srt(srt) == cues
    assert read_vtt(vtt) == cues

    note = json.loads(run("notes", job_id, "--format", "json").output)
    assert (note["provider"], note["model"], note["extractive"]) == ("openai", "gpt-4o-mini", False)
    assert note["input_tokens"] > 0
    assert note["note"]["summary"] == segments[0]["text"].strip()
    markdown = run("notes", job_id).output
    assert markdown.startswith("# A day")
    assert "Written by openai gpt-4o-mini" in markdown


def test_unknown_job_and_bad_file_give_clear_errors(run, tmp_path):
    missing = run("status", "0" * 24)
    assert missing.exit_code == 1
    assert "no job 000000000000000000000000" in missing.output

    path, _ = bad_inputs(tmp_path)["text renamed .wav"]
    dropped = run("drop", str(path), "--wait", "--timeout", "60")
    assert dropped.exit_code == 1
    assert "REJECTED" in dropped.output
    assert "not a recognisable audio" in dropped.output


def test_hot_folder_uploads_audio_files_that_appear(svc, tmp_path):
    folder = tmp_path / "hot"
    folder.mkdir()
    job_ids: list[str] = []
    watcher = threading.Thread(
        target=lambda: job_ids.extend(
            watch_folder(LocalBackend(svc).upload, folder, interval_s=0.2, stop_after=2))
    )
    watcher.start()
    (folder / "shopping.txt").write_text("not audio, not uploaded")
    encode(decode(DEMO_SAMPLE, seconds=6.0), tmp_path / "one.flac")
    shutil.copy(tmp_path / "one.flac", folder / "one.flac")
    (folder / "sub").mkdir()
    encode(decode(DEMO_SAMPLE, seconds=5.0), folder / "sub" / "two.opus")
    watcher.join(timeout=60)
    assert not watcher.is_alive()
    assert len(job_ids) == 2
    for job_id in job_ids:
        assert wait_for_status(svc, job_id, {JobStatus.DONE}).status is JobStatus.DONE
    names = sorted(svc.jobs.get_job(j).source.name.rsplit("-", 1)[-1] for j in job_ids)
    assert names == ["one.flac", "two.opus"]
