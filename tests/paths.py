"""Where the tests find the checkout they belong to."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
