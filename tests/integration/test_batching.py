"""Windows of concurrent calls share model calls, each answer goes back to its own caller, and
a bad chunk fails only itself: the real tiny.en, several threads at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from audiary.adapters.whisper.engine import WhisperTranscriber
from audiary.evaluation.wer import wer
from audiary.observability import metrics
from tests.media import DEMO_SAMPLE, decode

pytestmark = pytest.mark.integration

# Parts of the demo recording, each saying something else, of different lengths.
SPANS = [(0.0, 14.0), (14.0, 31.0), (31.0, 52.0), (52.0, 66.0), (66.0, 89.0)]


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    samples = decode(DEMO_SAMPLE)
    return [samples[int(a * 16000):int(b * 16000)] for a, b in SPANS]


def text(segments) -> str:
    return " ".join(s.text for s in segments)


def engine(across_requests: bool) -> WhisperTranscriber:
    # A wait long enough that the threads below always meet in the batcher.
    return WhisperTranscriber("tiny.en", device="cpu", batch_wait_ms=500,
                              batch_across_requests=across_requests)


def requests_per_call() -> tuple[float, float]:
    """(model calls so far, of which with windows of one request only)."""
    calls = alone = 0.0
    for metric in metrics.DECODE_BATCH_REQUESTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                calls = sample.value
            elif sample.name.endswith("_bucket") and sample.labels["le"] == "1.0":
                alone = sample.value
    return calls, alone


def at_once(model: WhisperTranscriber, inputs: list[tuple[np.ndarray, str | None]]):
    """Every input transcribed by its own thread, all released together; results or errors."""
    start = threading.Barrier(len(inputs))

    def run(item: tuple[np.ndarray, str | None]):
        samples, language = item
        start.wait()
        try:
            return model.transcribe(samples, language=language)
        except Exception as exc:  # the test looks at which failed, and how
            return exc

    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(run, inputs))


def test_concurrent_chunks_share_model_calls_and_each_gets_its_own_text(clips):
    model = engine(across_requests=True)
    alone = [text(model.transcribe(clip)) for clip in clips]
    assert len(set(alone)) == len(clips)
    poisoned = clips[2].copy()
    poisoned[1000:1100] = np.nan
    calls_before, single_before = requests_per_call()
    results = at_once(model, [*((c, None) for c in clips), (poisoned, None), (clips[0], "xx")])
    calls, single = requests_per_call()
    assert calls - calls_before > single - single_before  # some calls held several chunks

    *answers, bad_audio, bad_language = results
    assert isinstance(bad_audio, ValueError)
    assert "NaN or infinite samples" in str(bad_audio)
    assert isinstance(bad_language, ValueError)
    assert "does not know the language 'xx'" in str(bad_language)
    for i, answer in enumerate(answers):
        assert not isinstance(answer, Exception), answer
        heard = text(answer)
        # Its own clip's words, not another's: routing by window, whatever shared the call.
        assert wer([alone[i]], [heard]).wer <= 0.05, (i, heard)
        assert all(wer([alone[j]], [heard]).wer > 0.6 for j in range(len(clips)) if j != i)
        assert all(0 <= s.start <= s.end <= len(clips[i]) / 16000 for s in answer)
    # The instance keeps serving after the bad ones.
    assert wer([alone[3]], [text(model.transcribe(clips[3]))]).wer <= 0.05


def test_with_batching_across_requests_off_a_model_call_holds_one_chunk(clips):
    model = engine(across_requests=False)
    calls_before, single_before = requests_per_call()
    results = at_once(model, [(c, None) for c in clips[:3]])
    calls, single = requests_per_call()
    assert calls - calls_before == single - single_before > 0
    assert all(text(r) for r in results)


# Single sentences of the demo recording, 3.5 to 6 s each, cut in its pauses, and what they
# say (samples/diary-demo.txt): several fit in one Whisper window.
SENTENCES = [
    ((11.86, 17.22), "She thinks we should plant the tomatoes in March, which sounds right to me."),
    ((20.26, 24.82), "At the office, the quarterly review went better than I expected."),
    ((44.66, 48.76), "She is doing well, although her knee still hurts when it rains."),
    ((52.6, 58.34), "On the way home I stopped at the library and borrowed two books about bird "
                    "watching."),
    ((74.12, 77.9), "Third, call Daniel about the budget numbers."),
    ((79.0, 82.46), "Overall, a calm and productive day."),
]


def shared_windows() -> float:
    return metrics.DECODE_SHARED_WINDOWS._value.get()


def test_short_chunks_share_whisper_windows_and_each_gets_its_own_words():
    samples = decode(DEMO_SAMPLE)
    shorts = [samples[int(a * 16000):int(b * 16000)] for (a, b), _ in SENTENCES]
    said = [sentence for _, sentence in SENTENCES]
    # One worker: all six meet in one model call, packed the same way every run.
    model = WhisperTranscriber("tiny.en", device="cpu", batch_wait_ms=500, workers=1,
                               batch_merge_windows=True)
    alone = [text(model.transcribe(clip, language="en")) for clip in shorts]
    before = shared_windows()
    results = at_once(model, [(clip, "en") for clip in shorts])
    # 27 s of sentences in two Whisper windows (five in one) instead of six.
    assert shared_windows() - before == 5
    assert not [r for r in results if isinstance(r, Exception)]
    heard = [text(answer) for answer in results]
    # At least as accurate as each alone: the other sentences in a window are context
    # tiny.en uses (30 % WER alone, 9 % so).
    assert wer(said, heard).wer <= wer(said, alone).wer
    for i, answer in enumerate(results):
        # Its own sentence, none of another's.
        assert wer([said[i]], [heard[i]]).wer <= 0.5, heard[i]
        assert all(wer([said[j]], [heard[i]]).wer > 0.6 for j in range(len(said)) if j != i)
        assert all(0 <= s.start <= s.end <= len(shorts[i]) / 16000 for s in answer)
        # Word times were the batcher's need, not the caller's: none come back.
        assert all(s.words is None for s in answer)
