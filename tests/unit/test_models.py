"""The model registry (services.models), the promotion gate and the vocabulary terms
(domain.models), and the loop's refusals (learning.loop.dataset_for), on in-memory stores."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from audiary.domain.datasets import DatasetRecord, Filters, Split
from audiary.domain.models import (
    ModelOrigin,
    ModelState,
    OriginKind,
    correction_terms,
    gate,
    parse_model_id,
)
from audiary.errors import ConfigError, NotFoundError, StateError
from audiary.ports import Stores
from audiary.services import models
from audiary.settings import Settings
from tests.fakes.stores import memory_stores

HUB = ModelOrigin(kind=OriginKind.HUB, source="large-v3")


@pytest.fixture
def svc() -> Stores:
    s = Settings(blob_backend="memory")
    stores = memory_stores(s)
    stores.blobs.ensure_bucket(s.models_bucket)
    return stores


def ct2_dir(tmp_path: Path, name: str = "m") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "model.bin").write_bytes(b"weights of " + name.encode())
    (directory / "config.json").write_text("{}")
    (directory / "tokenizer.json").write_text("{}")
    (directory / "notes.txt").write_text("not a model file")
    return directory


def test_gate_promotes_only_a_candidate_better_by_the_margin():
    better = gate(0.10, 0.12, 0.01, words=100, min_words=50)
    assert better.promote
    assert "better by 2.00%" in better.reason
    assert gate(0.115, 0.12, 0.005, words=100, min_words=50).promote  # exactly the margin
    within = gate(0.115, 0.12, 0.01, words=100, min_words=50)
    assert not within.promote
    assert "not better by the margin" in within.reason
    worse = gate(0.20, 0.12, 0.0, words=100, min_words=50)
    assert not worse.promote
    assert "worse" in worse.reason
    # Better on the test split, but worse on ordinary speech (the guard set): refused.
    forgot = gate(0.10, 0.12, 0.01, words=100, min_words=50, guard=(0.09, 0.05),
                  guard_tolerance=0.005)
    assert not forgot.promote
    assert "guard set WER 9.00% against 5.00%: worse by more than 0.50%" in forgot.reason
    kept = gate(0.10, 0.12, 0.01, words=100, min_words=50, guard=(0.054, 0.05),
                guard_tolerance=0.005)
    assert kept.promote
    assert "guard set 5.40% against 5.00%" in kept.reason
    few = gate(0.0, 0.5, 0.01, words=10, min_words=50)
    assert not few.promote
    assert "10 reference words, fewer than the 50" in few.reason


def test_correction_terms_are_what_corrections_keep_putting_in():
    pairs = [
        ("I met Shivon in slender", "I met Siobhan in Llandudno."),
        ("Shivong came to the country", "Siobhan came to Machynlleth"),
        ("back in Slender, no", "back in Llandudno now"),
        ("the country fair", "the Machynlleth fair"),
        ("Ted went home", "Tadhg went home"),  # once only: below min_count
    ]
    assert correction_terms(pairs, min_count=2) == ["Llandudno", "Machynlleth", "Siobhan"]
    assert correction_terms(pairs[::-1], min_count=2) == ["Llandudno", "Machynlleth", "Siobhan"]
    assert correction_terms([*pairs, ("Shivon", "Siobhan")], max_terms=1) == ["Siobhan"]
    assert "Tadhg" in correction_terms(pairs, min_count=1)
    assert "now" not in correction_terms(pairs, min_count=1)  # not a name
    # A word the model already heard in that clip is no correction.
    assert correction_terms([("Siobhan was here", "Siobhan was here.")] * 3) == []


def test_a_model_id_is_name_at_version():
    assert parse_model_id("tiny.en-ft@12") == ("tiny.en-ft", 12)
    for bad in ("tiny.en", "tiny@x", "Tiny@1", "@1"):
        with pytest.raises(ConfigError, match="not a model id"):
            parse_model_id(bad)


def test_register_copies_the_model_files_as_the_next_version(svc: Stores, tmp_path: Path):
    s = svc.settings
    first = models.register_directory(svc, ct2_dir(tmp_path, "a"), name="mine",
                                      origin=models.packaged_origin("pkg"))
    second = models.register_directory(svc, ct2_dir(tmp_path, "b"), name="mine",
                                       origin=models.packaged_origin("pkg"))
    assert (first.model_id, second.model_id) == ("mine@1", "mine@2")
    assert second.location == f"gs://{s.models_bucket}/mine@2/"
    assert second.state is ModelState.CANDIDATE
    keys = sorted(o.key for o in svc.blobs.list(s.models_bucket, "mine@2/"))
    assert keys == ["mine@2/config.json", "mine@2/model.bin", "mine@2/tokenizer.json"]
    assert svc.blobs.get(s.models_bucket, "mine@2/model.bin") == b"weights of b"
    with pytest.raises(ConfigError, match=r"no model\.bin"):
        models.register_directory(svc, tmp_path, name="mine", origin=HUB)
    with pytest.raises(ConfigError, match="not a model name"):
        models.register_reference(svc, "x", name="Bad Name", origin=HUB)


def test_promotion_retires_the_model_it_replaces(svc: Stores, tmp_path: Path):
    a = models.register_directory(svc, ct2_dir(tmp_path), name="a", origin=HUB)
    b = models.register_reference(svc, "large-v3", name="b", origin=HUB, hotwords="Niamh")
    assert models.promoted(svc) is None
    models.promote(svc, a.model_id, reason="first")
    models.promote(svc, b.model_id, reason="better")
    states = {r.model_id: (r.state, r.decision) for r in svc.notes.list_models()}
    assert states == {"a@1": (ModelState.RETIRED, "replaced by b@1"),
                      "b@1": (ModelState.PROMOTED, "better")}
    assert models.promoted(svc).model_id == "b@1"
    with pytest.raises(StateError, match="retired"):
        models.promote(svc, "a@1", reason="again")
    with pytest.raises(NotFoundError, match=r"no model c@1 in the registry \(registered: a@1, b@1"):
        models.promote(svc, "c@1", reason="?")


def test_the_transcriber_serves_the_setting_else_the_promoted_else_the_default(
        svc: Stores, tmp_path: Path):
    default = svc.settings.resolved_model_path()
    assert models.serving_model(svc).location == default
    b = models.register_reference(svc, "large-v3", name="b", origin=HUB, hotwords="Niamh")
    assert models.serving_model(svc).location == default  # a candidate is not served
    models.promote(svc, b.model_id, reason="by hand")
    serving = models.serving_model(svc)
    assert (serving.location, serving.name, serving.hotwords) == ("large-v3", "b@1", "Niamh")
    pinned = memory_stores(svc.settings.model_copy(update={"model_path": str(tmp_path)}))
    pinned.notes.put_model(svc.notes.get_model("b@1"))
    assert models.serving_model(pinned).location == str(tmp_path)


def dataset(*, ready: bool, test_rows: int = 3) -> DatasetRecord:
    return DatasetRecord(
        version=4, created_at=datetime(2026, 12, 1, tzinfo=UTC), bucket="ds",
        manifests={s: f"v4/{s.value}.jsonl" for s in Split},
        rows={Split.TRAIN: 10, Split.VAL: 0, Split.TEST: test_rows},
        hours={Split.TRAIN: 1.25, Split.VAL: 0.0, Split.TEST: 0.1}, rejected={},
        filters=Filters(), ready=ready, ready_hours=5.0)


def test_training_refuses_a_dataset_it_cannot_learn_from_or_judge(svc: Stores):
    from audiary.learning.loop import dataset_for

    with pytest.raises(NotFoundError, match="no dataset yet"):
        dataset_for(svc, None)
    svc.notes.put_dataset(dataset(ready=False))
    with pytest.raises(ConfigError, match=r"1.25 h of train audio, below the 5 h .*--force"):
        dataset_for(svc, None)
    assert dataset_for(svc, 4, force=True).version == 4
    with pytest.raises(NotFoundError, match=r"no dataset v7 \(built: v4\)"):
        dataset_for(svc, 7)
    svc.notes.put_dataset(dataset(ready=True, test_rows=0))
    with pytest.raises(ConfigError, match="no test clips"):
        dataset_for(svc, 4)
