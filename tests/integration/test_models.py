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
    packaged = Path(Settings().resolved_model_path())
    for f in sorted(packaged.iterdir()):
        blobs.upload_file("models", f"whisper/tiny.en/{f.name}", f)

    local = materialize("gs://models/whisper/tiny.en", blobs, tmp_path)
    assert sorted(p.name for p in Path(local).iterdir() if p.name != ".complete") == sorted(
        p.name for p in packaged.iterdir()
    )
    assert (Path(local) / "model.bin").read_bytes() == (packaged / "model.bin").read_bytes()

    blobs.delete("models", "whisper/tiny.en/model.bin")  # a second call must not download
    assert materialize("gs://models/whisper/tiny.en/", blobs, tmp_path) == local
    assert WhisperTranscriber(local).model_name


def test_empty_gs_prefix_says_what_to_upload(emulator_env, tmp_path):
    blobs = GcsBlobStore.from_settings(Settings())
    blobs.ensure_bucket("models")
    with pytest.raises(ConfigError, match="no model files under gs://models/nothing"):
        materialize("gs://models/nothing", blobs, tmp_path)


def test_local_paths_and_hub_names_pass_through(tmp_path):
    blobs = GcsBlobStore("p", endpoint="http://127.0.0.1:9")
    assert materialize("/opt/models/x", blobs, tmp_path) == "/opt/models/x"
    assert materialize("large-v3", blobs, tmp_path) == "large-v3"
