"""Spoken diary entries full of names and places the packaged model gets wrong, for the
learning loop's tests, benchmark and demo (`make demo-learning`).

Eight speakers read three entries each; the same few Welsh, Irish and Scottish names and
places recur across speakers, so what a model learns from some speakers' corrections shows on
the others' (a dataset splits by speaker). The speech is synthesized with espeak-ng, each
speaker with a voice variant and a rate of their own, so it is made by the project and the
same on every machine.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from audiary.ports import Stores, Transcriber

__all__ = ["ENTRIES", "TERMS", "Entry", "correct_in_memory", "synthesize"]


@dataclass(frozen=True)
class Entry:
    speaker: str
    text: str

    @property
    def voice(self) -> tuple[str, int]:
        """(espeak-ng voice, words per minute) of this speaker."""
        number = int(self.speaker.rsplit("-", 1)[1])
        variants = ("", "+m3", "+f2", "+m5", "+f4", "+m7", "+f1", "+m2")
        return f"en-us{variants[number % len(variants)]}", 140 + 5 * (number % 4)


# The terms the corrections will keep fixing.
TERMS = ("Siobhan", "Tadhg", "Niamh", "Ruairi", "Eilidh", "Machynlleth", "Llandudno",
         "Aberystwyth", "Holyhead")

ENTRIES = tuple(Entry(f"speaker-{i // 3}", text) for i, text in enumerate((
    "This morning Siobhan drove me to Machynlleth for the market.",
    "I called Tadhg about the boat trip to Llandudno next week.",
    "Niamh and Ruairi are staying in Aberystwyth until Friday.",
    "We had lunch with Siobhan at the harbour in Llandudno.",
    "Tadhg says the ferry from Holyhead leaves at nine.",
    "Ruairi lost his keys somewhere in Machynlleth again.",
    "Niamh sent photos of the castle in Aberystwyth.",
    "After work I met Eilidh and Tadhg at the station in Holyhead.",
    "Siobhan wants to walk the coast path from Aberystwyth.",
    "Eilidh found a cheap room above the pub in Machynlleth.",
    "Ruairi and Niamh cooked dinner for everyone in Llandudno.",
    "The train to Holyhead was late, so Eilidh waited with me.",
    "Tomorrow Siobhan and Ruairi take the bus to Machynlleth.",
    "Niamh phoned from Holyhead to say the ferry was cancelled.",
    "Tadhg painted the old chapel near Aberystwyth all weekend.",
    "Eilidh booked a table in Llandudno for Saturday night.",
    "Siobhan and Tadhg argued about the road to Holyhead.",
    "I wrote to Niamh about the concert in Machynlleth.",
    "Ruairi swam in the sea at Llandudno before breakfast.",
    "Eilidh and Siobhan walked up the hill behind Aberystwyth.",
    "Tadhg fixed the bike outside the library in Machynlleth.",
    "We drove Niamh to the ferry at Holyhead in the rain.",
    "Ruairi and Eilidh bought fish and chips in Aberystwyth.",
    "Siobhan says the light in Llandudno is best in winter.",
)))


def synthesize(entry: Entry, path: Path) -> Path:
    """Speak `entry` into a 16 kHz mono WAV at `path`, with a short pause on either side."""
    voice, rate = entry.voice
    return speak(entry.text, path, voice=voice, rate=rate)


def speak(text: str, path: Path, *, voice: str = "en-us", rate: int = 150) -> Path:
    """`text` spoken by an espeak-ng `voice` (any language it has: de, es, fr, ...) into a
    16 kHz mono WAV at `path`, with a short pause on either side; the same bytes every run."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (apt-get install espeak-ng sox)")
    with tempfile.TemporaryDirectory(prefix="audiary-speech-") as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(raw), text],
                       check=True, capture_output=True)
        # -R -D: no dither (sox dithers with fresh noise each run), so the audio is the same
        # on every run and so is every WER measured on it.
        subprocess.run(["sox", "-R", "-D", str(raw), "-r", "16000", "-c", "1", str(path),
                        "pad", "0.4", "0.4"], check=True, capture_output=True)
    return path


def correct_in_memory(svc: Stores, engine: Transcriber, entries: Sequence[Entry],
                      folder: Path) -> list[str]:
    """Each entry through the pipeline's own services: dropped into the inbox, ingested,
    transcribed by `engine`, and its first segment corrected to what was said (as the API's
    feedback does), on the in-memory adapters. The job ids."""
    from audiary.adapters.memory import MemoryPublisher
    from audiary.services import jobs as use_cases
    from audiary.services.ingest import ingest
    from audiary.services.transcription import handle_chunk
    from audiary.wire import messages
    from audiary.wire.storage_events import ObjectEvent

    s = svc.settings
    publisher = svc.publisher
    if not isinstance(publisher, MemoryPublisher):
        raise TypeError("correct_in_memory reads the chunk tasks the memory publisher keeps")
    for bucket in (s.uploads_bucket, s.work_bucket, s.transcripts_bucket, s.feedback_bucket,
                   s.datasets_bucket, s.models_bucket):
        svc.blobs.ensure_bucket(bucket)
    job_ids = []
    for i, entry in enumerate(entries):
        path = synthesize(entry, folder / f"{entry.speaker}-{i}.wav")
        key = f"{s.inbox_prefix}{path.name}"
        svc.blobs.upload_file(s.uploads_bucket, key, path)
        info = svc.blobs.stat(s.uploads_bucket, key)
        assert info is not None
        job_id = ingest(svc, ObjectEvent(info.bucket, info.key, info.generation,
                                         info.size)).job_id
        assert job_id is not None
        svc.jobs.update_job(job_id, {"speaker": entry.speaker})
        for message in publisher.messages(s.topic_transcribe_chunk):
            task = messages.parse_chunk_task(message.data)
            if task.job_id == job_id:
                handle_chunk(svc, engine, task)
        job = svc.jobs.get_job(job_id)
        assert job is not None
        use_cases.store_feedback(svc, job, "bench", corrected_transcript=None, flagged=False,
                                 comment=None, segment_edits={0: entry.text})
        job_ids.append(job_id)
    return job_ids
