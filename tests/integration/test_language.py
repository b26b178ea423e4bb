"""Language detection with the packaged multilingual base, on speech in German and Spanish
(espeak-ng) and English (the demo recording): the model hears the language of each recording,
and a job dropped with no language set is decoded and recorded as the language spoken."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiary.adapters.whisper.engine import WhisperTranscriber
from audiary.domain.jobs import JobStatus
from audiary.domain.transcript import Transcript
from audiary.evaluation.diaries import speak
from audiary.evaluation.wer import wer
from audiary.services.ingest import ingest
from audiary.services.transcription import handle_chunk
from audiary.settings import Settings
from audiary.wire import messages
from tests.fakes.stores import memory_stores
from tests.media import DEMO_SAMPLE, decode, encode
from tests.unit.test_ingest import drop

pytestmark = pytest.mark.integration

SPOKEN = {
    "de": "Heute war ich mit meiner Schwester auf dem Markt. Wir haben Äpfel und frisches Brot "
          "gekauft, und am Abend haben wir zusammen gekocht.",
    "es": "Hoy fui al mercado con mi hermana. Compramos manzanas y pan fresco, y por la noche "
          "cocinamos juntas en casa de mis padres.",
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> WhisperTranscriber:
    return WhisperTranscriber("base", device="cpu", cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("spoken")
    made = {language: speak(text, folder / f"{language}.wav", voice=language, rate=140)
            for language, text in SPOKEN.items()}
    made["en"] = encode(decode(DEMO_SAMPLE, seconds=20.0), folder / "en.flac")
    return made


def test_the_multilingual_model_hears_each_language(base, recordings):
    assert base.multilingual
    for language, path in recordings.items():
        heard, probability = base.detect_language(decode(path))
        assert heard == language, (path.name, heard, probability)


def test_an_english_only_model_says_english_without_listening():
    tiny = WhisperTranscriber("tiny.en", device="cpu")
    assert not tiny.multilingual
    assert tiny.detect_language(decode(DEMO_SAMPLE, seconds=5.0)) == ("en", 1.0)


@pytest.mark.parametrize("language", sorted(SPOKEN))
def test_a_job_with_no_language_set_is_decoded_and_recorded_in_the_one_spoken(
        base, recordings, tmp_path, language):
    settings = Settings(blob_backend="memory", job_backend="memory", publisher_backend="memory",
                        state_dir=tmp_path, model="base")
    assert settings.language is None
    svc = memory_stores(settings)
    for bucket in (settings.uploads_bucket, settings.work_bucket, settings.transcripts_bucket):
        svc.blobs.ensure_bucket(bucket)
    ingest(svc, drop(svc, recordings[language]))
    (task,) = [messages.parse_chunk_task(m.data)
               for m in svc.publisher.messages(settings.topic_transcribe_chunk)]
    handle_chunk(svc, base, task)
    job = svc.jobs.get_job(task.job_id)
    assert job.status is JobStatus.TRANSCRIBED
    assert job.language == language
    assert svc.jobs.get_chunks(task.job_id)[0].language == language
    transcript = Transcript.model_validate_json(
        svc.blobs.get(settings.transcripts_bucket, job.transcript_uri.split("/", 1)[1]))
    assert transcript.language == language
    # Decoded as that language, not translated or transliterated into English.
    assert wer([SPOKEN[language]], [transcript.text]).wer < 0.5


def test_detecting_the_language_costs_no_encoder_pass_of_its_own(base, recordings,
                                                                 monkeypatch):
    samples = decode(recordings["es"])
    assert len(base.plan(samples)) == 1
    encoded: list[int] = []
    encode = base.model.encode

    def counting(features):
        encoded.append(len(features) if features.ndim == 3 else 1)
        return encode(features)

    monkeypatch.setattr(base.model, "encode", counting)
    alone = base.transcribe(samples, language="es")
    windows_alone = sum(encoded)
    encoded.clear()
    hits = base._encoded.hits
    language, _ = base.detect_language(samples)
    detected = base.transcribe(samples, language=language)
    assert language == "es"
    assert base._encoded.hits == hits + 1
    assert sum(encoded) == windows_alone  # the detection's pass is the first window's
    assert detected == alone  # the same encoder output, so the same decoding
