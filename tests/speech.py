"""The real-speech set the quality tests read (never copied into the project)."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiary.evaluation.longform import speech_dir


def require_speech() -> Path:
    """The speech folder, or skip the test with the setting that names it."""
    folder = speech_dir()
    if not (folder / "manifest.jsonl").is_file():
        pytest.skip(f"no real speech at {folder} (no manifest.jsonl): set AUDIARY_SPEECH_DIR "
                    "to the folder (default ../shared/speech)")
    return folder
