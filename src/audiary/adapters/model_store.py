"""Where the speech model comes from: a local directory, a hub name, or a `gs://` prefix.

A `gs://bucket/path` location is copied once into the local cache (`<state_dir>/models/`),
so a Cloud Run instance reads its weights from the project's own bucket and nothing is fetched
from a public hub at run time.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from audiary.errors import ConfigError
from audiary.ports import BlobStore

log = logging.getLogger(__name__)

_COMPLETE = ".complete"


def materialize(location: str, blobs: BlobStore, cache_dir: Path) -> str:
    """A location faster-whisper can load: `gs://` prefixes become a local directory."""
    if not location.startswith("gs://"):
        return location
    bucket, _, prefix = location.removeprefix("gs://").partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    canonical = f"gs://{bucket}/{prefix}"  # with or without a trailing slash: one cache entry
    dest = cache_dir / "models" / hashlib.sha256(canonical.encode()).hexdigest()[:16]
    if (dest / _COMPLETE).exists():
        return str(dest)
    objects = [o for o in blobs.list(bucket, prefix) if not o.key.endswith("/")]
    if not objects:
        raise ConfigError(
            f"no model files under {location}; upload a CTranslate2 model directory "
            "(model.bin, config.json, tokenizer.json, vocabulary.*) there"
        )
    for info in objects:
        target = dest / info.key.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        blobs.download_file(bucket, info.key, target)
    (dest / _COMPLETE).touch()
    log.info("model %s copied to %s (%d files)", location, dest, len(objects))
    return str(dest)
