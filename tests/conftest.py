import os

import pytest

# The suite runs the packaged tiny.en, the fastest model, wherever it does not name another:
# in this process and in every process the native stack starts. The stack and the demo
# default to the multilingual base (Settings.model).
os.environ.setdefault("AUDIARY_MODEL", "tiny.en")


@pytest.fixture(autouse=True)
def _restore_environ():
    """Tests may set variables freely; each starts from the same environment."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
