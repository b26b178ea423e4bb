import os

import pytest


@pytest.fixture(autouse=True)
def _restore_environ():
    """Tests may set variables freely; each starts from the same environment."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
