"""The LLM router with the real `openai` and `anthropic` SDKs against the local fake server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from audiary.adapters.extractive import ExtractiveNoteWriter
from audiary.adapters.llm_anthropic import AnthropicClient
from audiary.adapters.llm_openai import OpenAiClient
from audiary.adapters.memory import MemoryNoteStore
from audiary.domain.transcript import Segment, Transcript
from audiary.ports import LlmClient
from audiary.services.notes.breaker import BreakerState, CircuitBreaker
from audiary.services.notes.llm_writer import LlmNoteWriter
from audiary.services.notes.router import AllProvidersFailedError, NoteRouter, Provider
from tests.fakes.llm_server import (
    FakeLlmServer,
    answer_with,
    hang,
    malformed,
    off_schema,
    ok,
    overloaded,
    rate_limited,
    server_error,
)

pytestmark = pytest.mark.integration

PRICES = {"gpt-4o-mini": (0.15, 0.60), "claude-haiku-4-5": (1.0, 5.0)}
RECORDED = datetime(2026, 11, 3, 20, 0, tzinfo=UTC)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def llm_server() -> Iterator[FakeLlmServer]:
    with FakeLlmServer() as server:
        yield server


def good_note(title: str = "Garden plans", **fields: object) -> dict[str, object]:
    note: dict[str, object] = {
        "schema_version": "1", "title": title, "date": "2026-11-03",
        "summary": "I met Sarah and we planned the garden.", "mood": "calm",
        "highlights": [{"text": "Met Sarah", "source": {"start": 0.0, "end": 4.0}}],
        "people": ["Sarah"], "places": ["Elm Street"],
        "action_items": [{"text": "Order the seeds", "due": "2026-11-07",
                          "source": {"start": 9.0, "end": 12.0}}],
        "tags": ["garden"],
    }
    return {**note, **fields}


def transcript(text: str = "I met Sarah on Elm Street. I need to order the seeds by Friday."
               ) -> Transcript:
    sentences = [s.strip() + "." for s in text.split(".") if s.strip()]
    return Transcript(job_id="t", segments=[
        Segment(start=i * 4.0, end=i * 4.0 + 3.5, text=" " + s) for i, s in enumerate(sentences)
    ])


def make_router(server: FakeLlmServer, *, failures_to_open: int = 3, clock: Clock | None = None,
                retries: int = 0, budget: int = 12_000, group: int = 6_000,
                extractive: bool = False) -> NoteRouter:
    def breaker() -> CircuitBreaker:
        return CircuitBreaker(failures_to_open, 30.0, clock=clock or Clock())

    def llm(client: LlmClient) -> Provider:
        return Provider(LlmNoteWriter(client, token_budget=budget, group_tokens=group),
                        breaker())

    providers = [
        llm(OpenAiClient("sk-test-openai", "gpt-4o-mini", base_url=server.openai_base_url,
                         timeout_s=1.0, max_retries=retries)),
        llm(AnthropicClient("sk-ant-test", "claude-haiku-4-5",
                            base_url=server.anthropic_base_url, timeout_s=1.0,
                            max_retries=retries)),
    ]
    if extractive:
        providers.append(Provider(ExtractiveNoteWriter(), breaker()))
    return NoteRouter(providers, MemoryNoteStore(), prices=PRICES)


def protocols(server: FakeLlmServer) -> list[str | None]:
    return [r.protocol for r in server.requests]


def test_first_provider_writes_the_note_and_records_tokens_and_cost(llm_server):
    llm_server.enqueue(ok(good_note(), input_tokens=1000, output_tokens=200), protocol="openai")
    record = make_router(llm_server).write("job-1", transcript(), recorded_at=RECORDED)
    assert (record.provider, record.model, record.extractive) == ("openai", "gpt-4o-mini", False)
    assert record.note.people == ["Sarah"]
    assert (record.input_tokens, record.output_tokens, record.calls) == (1000, 200, 1)
    assert record.cost_usd == pytest.approx((1000 * 0.15 + 200 * 0.60) / 1e6)
    sent = llm_server.requests[0].body
    assert "[0.0-3.5] I met Sarah on Elm Street." in json.dumps(sent)
    assert "2026-11-03" in json.dumps(sent)  # the recording date goes into the prompt


@pytest.mark.parametrize("failure", [server_error, overloaded, malformed, lambda: hang(5)],
                         ids=["500", "529", "malformed", "timeout"])
def test_a_failing_provider_falls_back_to_the_next_in_order(llm_server, failure):
    llm_server.enqueue(failure(), protocol="openai")
    llm_server.enqueue(ok(good_note(title="From Claude")), protocol="anthropic")
    record = make_router(llm_server).write("job-1", transcript())
    assert record.provider == "anthropic"
    assert record.note.title == "From Claude"
    assert protocols(llm_server) == ["openai", "anthropic"]


def test_retry_after_is_honoured_before_the_provider_answers(llm_server):
    llm_server.enqueue(rate_limited(1.0), ok(good_note()), protocol="openai")
    record = make_router(llm_server, retries=2).write("job-1", transcript())
    assert record.provider == "openai"
    first, second = llm_server.requests
    assert second.at - first.at >= 1.0


def test_breaker_opens_after_consecutive_failures_and_closes_after_a_good_trial(llm_server):
    clock = Clock()
    router = make_router(llm_server, failures_to_open=2, clock=clock)
    openai_breaker = router.providers[0].breaker
    for i in range(2):  # two failures in a row open the breaker
        llm_server.enqueue(server_error(), protocol="openai")
        llm_server.enqueue(ok(good_note()), protocol="anthropic")
        assert router.write(f"job-{i}", transcript(f"Day {i} was fine.")).provider == "anthropic"
    assert openai_breaker.state is BreakerState.OPEN

    llm_server.enqueue(ok(good_note()), protocol="anthropic")
    assert router.write("job-2", transcript("Day 2 was fine.")).provider == "anthropic"
    assert protocols(llm_server)[-1:] == ["anthropic"]
    assert len(llm_server.requests_for("openai")) == 2  # not called while open

    clock.now = 30.0  # cool-down over: one trial call goes to openai
    llm_server.enqueue(ok(good_note(title="Back")), protocol="openai")
    assert router.write("job-3", transcript("Day 3 was fine.")).provider == "openai"
    assert openai_breaker.state is BreakerState.CLOSED


def test_invalid_answer_gets_one_repair_attempt(llm_server):
    llm_server.enqueue(off_schema(), ok(good_note()), protocol="openai")
    record = make_router(llm_server).write("job-1", transcript())
    assert (record.provider, record.calls) == ("openai", 2)
    repair = json.dumps(llm_server.requests[1].body)
    assert "Your previous answer was" in repair
    assert "title" in repair  # the validation problem is named


def test_invalid_twice_goes_to_the_next_provider(llm_server):
    llm_server.enqueue(off_schema(), ok({"title": "still wrong"}), protocol="openai")
    llm_server.enqueue(ok(good_note()), protocol="anthropic")
    record = make_router(llm_server).write("job-1", transcript())
    assert record.provider == "anthropic"
    assert protocols(llm_server) == ["openai", "openai", "anthropic"]


def test_a_cache_hit_makes_zero_calls(llm_server):
    router = make_router(llm_server)
    llm_server.enqueue(ok(good_note(), input_tokens=500, output_tokens=100), protocol="openai")
    first = router.write("job-1", transcript())
    second = router.write("job-2", transcript())
    assert len(llm_server.requests) == 1
    assert (second.cached, second.calls, second.job_id) == (True, 0, "job-2")
    assert second.note == first.note
    assert second.cache_key == first.cache_key
    llm_server.enqueue(ok(good_note(title="Other")), protocol="openai")
    assert router.write("job-3", transcript("Something else happened.")).cached is False
    llm_server.enqueue(ok(good_note(title="Another day")), protocol="openai")
    later = router.write("job-4", transcript(), recorded_at=RECORDED)  # same words, a known day
    assert later.cached is False
    assert len(llm_server.requests) == 3


def test_every_provider_failing_says_why(llm_server):
    llm_server.enqueue(server_error(), protocol="openai")
    llm_server.enqueue(overloaded(), protocol="anthropic")
    with pytest.raises(AllProvidersFailedError) as failed:
        make_router(llm_server).write("job-1", transcript())
    assert len(failed.value.reasons) == 2
    assert "openai" in failed.value.reasons[0]
    assert "anthropic" in failed.value.reasons[1]


def test_the_extractive_writer_is_the_last_resort(llm_server):
    llm_server.enqueue(server_error(), protocol="openai")
    llm_server.enqueue(server_error(), protocol="anthropic")
    record = make_router(llm_server, extractive=True).write("job-1", transcript(),
                                                         recorded_at=RECORDED)
    assert (record.provider, record.extractive, record.cost_usd) == ("extractive", True, 0.0)
    assert "Sarah" in record.note.people


FACT = re.compile(r"I visited (\w+)")


def long_transcript(n: int = 90) -> Transcript:
    return Transcript(job_id="t", segments=[
        Segment(start=i * 10.0, end=i * 10.0 + 9.0,
                text=f" On stop {i} I visited Town{i} and talked about the weather for a while.")
        for i in range(n)
    ])


def map_reduce_model(body):
    """A stand-in model: a part note lists the towns in its transcript lines; the merge keeps
    every town of every part note."""
    prompt = body["messages"][-1]["content"]
    if "Part notes:" in prompt:
        parts = json.loads(prompt.split("Part notes:\n", 1)[1])
        places = [p for part in parts for p in part["places"]]
    else:
        places = FACT.findall(prompt)
    return good_note(title="Trip", places=places)


def test_long_transcripts_are_map_reduced_without_losing_the_middle(llm_server):
    llm_server.default = answer_with(map_reduce_model)
    router = make_router(llm_server, budget=600, group=400)
    record = router.write("job-1", long_transcript())
    prompts = [r.body["messages"][-1]["content"] for r in llm_server.requests]
    parts, merges = prompts[:-1], prompts[-1:]
    assert len(parts) >= 3
    assert "Part notes:" in merges[0]
    # Every segment went to exactly one part: nothing truncated, nothing twice.
    seen = [town for p in parts for town in FACT.findall(p)]
    assert seen == [f"Town{i}" for i in range(90)]
    assert {"Town0", "Town45", "Town89"} <= set(record.note.places)
    assert record.calls == len(parts) + 1


def test_metrics_count_tokens_cost_failures_and_breaker_state(llm_server):
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    names = [("audiary_llm_tokens_total", {"provider": "anthropic", "model": "claude-haiku-4-5",
                                            "direction": d}) for d in ("input", "output")]
    names += [("audiary_llm_cost_usd_total", {"provider": "anthropic",
                                              "model": "claude-haiku-4-5"})]
    names += [("audiary_llm_failures_total", {"provider": "openai", "reason": r})
              for r in ("server_error", "invalid_output")]
    before = {name + repr(labels): value(name, **labels) for name, labels in names}
    clock = Clock()
    router = make_router(llm_server, failures_to_open=2, clock=clock)
    assert value("audiary_breaker_state", provider="openai") == 0  # closed

    llm_server.enqueue(server_error(), protocol="openai")
    llm_server.enqueue(ok(good_note(), input_tokens=1000, output_tokens=200),
                       protocol="anthropic")
    router.write("job-1", transcript("Day one."))
    llm_server.enqueue(off_schema(), ok({"title": "still wrong"}), protocol="openai")
    llm_server.enqueue(ok(good_note(), input_tokens=10, output_tokens=5), protocol="anthropic")
    router.write("job-2", transcript("Day two."))

    after = {name + repr(labels): value(name, **labels) for name, labels in names}
    grown = [after[key] - before[key] for key in after]
    assert grown == pytest.approx([1010, 205, (1010 * 1.0 + 205 * 5.0) / 1e6, 1, 1])
    assert value("audiary_breaker_state", provider="openai") == 2  # open after two failures
    clock.now = 30.0
    assert value("audiary_breaker_state", provider="openai") == 1  # half-open: read at scrape
