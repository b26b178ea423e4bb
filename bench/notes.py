"""`notes`: what writing a diary note costs, per note and per audio hour.

- router overhead per note: `NoteRouter.write` (cache look-up, prompt, validation, record)
  minus the bare SDK call for the same prompt, both against the local fake LLM server;
- tokens and cost per audio hour with the configured price table, from real speech
  (a long-form file built from ../shared/speech; its transcript is the reference text);
- the offline extractive writer's time per audio hour.
"""

from __future__ import annotations

import argparse
import statistics
import time

from audiary.adapters.extractive import write_extractive
from audiary.adapters.llm_openai import OpenAiClient
from audiary.adapters.memory import MemoryNoteStore
from audiary.domain.transcript import Segment, Transcript
from audiary.evaluation.longform import build_longform
from audiary.services.notes import prompts
from audiary.services.notes.breaker import CircuitBreaker
from audiary.services.notes.llm_writer import LlmNoteWriter
from audiary.services.notes.router import NoteRouter, Provider
from audiary.settings import Settings
from bench.results import write_result
from tests.fakes.llm_server import FakeLlmServer, answer_with

NOTE: dict[str, object] = {
    "schema_version": "1", "title": "A day", "date": None, "summary": "It was a day.",
    "mood": None, "highlights": [], "people": [], "places": [], "action_items": [], "tags": [],
}


def speech_transcript(minutes: float, seed: int) -> tuple[Transcript, float]:
    longform = build_longform(minutes * 60, seed=seed)
    segments = [Segment(start=u.start_s, end=u.end_s, text=" " + u.text)
                for u in longform.utterances]
    return Transcript(job_id=f"bench-{seed}", segments=segments), longform.samples.size / 16000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--notes", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args(argv)
    settings = Settings()
    model = settings.openai_model
    price_in, price_out = settings.llm_prices[model]

    transcripts = [speech_transcript(args.minutes, seed) for seed in range(args.notes)]
    with FakeLlmServer(default=answer_with(lambda body: NOTE)) as server:
        client = OpenAiClient("sk-bench", model, base_url=server.openai_base_url, max_retries=0)
        writer = LlmNoteWriter(client, token_budget=settings.llm_token_budget,
                               group_tokens=settings.llm_group_tokens)
        router = NoteRouter([Provider(writer, CircuitBreaker(3, 60))], MemoryNoteStore(),
                            prices=settings.llm_prices)
        bare, routed, tokens = [], [], []
        for transcript, audio_s in transcripts:
            user = prompts.note_prompt(transcript.segments, None)
            start = time.perf_counter()
            client.complete_json(system=prompts.SYSTEM, user=user,
                                 schema_name=prompts.SCHEMA_NAME, schema=prompts.note_schema())
            bare.append(time.perf_counter() - start)
            start = time.perf_counter()
            record = router.write(transcript.job_id, transcript)
            routed.append(time.perf_counter() - start)
            tokens.append((record.input_tokens, record.output_tokens, record.calls, audio_s))

    hours = sum(t[3] for t in tokens) / 3600
    tokens_in = sum(t[0] for t in tokens)
    tokens_out = sum(t[1] for t in tokens)
    extractive_s = []
    for transcript, _ in transcripts:
        start = time.perf_counter()
        write_extractive(transcript)
        extractive_s.append(time.perf_counter() - start)
    overhead_ms = (statistics.median(routed) - statistics.median(bare)) * 1000
    write_result(
        "notes",
        value=round(overhead_ms, 2),
        unit="ms router overhead per note",
        target="small against an LLM call (seconds)",
        details={
            "notes": args.notes,
            "audio_minutes_per_note": args.minutes,
            "median_bare_sdk_call_ms": round(statistics.median(bare) * 1000, 2),
            "median_router_write_ms": round(statistics.median(routed) * 1000, 2),
            "calls_per_note": statistics.mean(t[2] for t in tokens),
            "model_priced": model,
            "price_usd_per_million_in_out": [price_in, price_out],
            "input_tokens_per_audio_hour": round(tokens_in / hours),
            "output_tokens_per_audio_hour": round(tokens_out / hours),
            "cost_usd_per_audio_hour": round(
                (tokens_in * price_in + tokens_out * price_out) / 1e6 / hours, 5),
            "cost_note": "output tokens are the fake server's short answer; a real note is "
                         "300-800 output tokens",
            "extractive_s_per_audio_hour": round(sum(extractive_s) / hours, 4),
        },
    )


if __name__ == "__main__":
    main()
