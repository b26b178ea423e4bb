"""CTranslate2's `model.bin`, read without CTranslate2: every variable as a NumPy array.

The learning loop rebuilds a float Whisper from it (audiary.learning.whisper); the model store
reads a model joined from two packages through it, to know the join is whole.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from audiary.errors import ConfigError

__all__ = ["read_ct2"]

# CTranslate2's DataType enum order (include/ctranslate2/types.h); bfloat16 is read as raw
# 16-bit words and widened below.
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def read_ct2(model_bin: Path) -> dict[str, NDArray[Any]]:
    """Every variable of a CTranslate2 `model.bin` (binary version 6), aliases resolved;
    `ConfigError` if the file is cut short or runs on past its last variable."""
    buf = model_bin.read_bytes()
    try:
        return _variables(buf, model_bin)
    except (struct.error, ValueError) as exc:  # a read past the end
        raise ConfigError(f"{model_bin} is cut short ({len(buf)} bytes): {exc}") from None


def _variables(buf: bytes, model_bin: Path) -> dict[str, NDArray[Any]]:
    offset = 0

    def take(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, buf, offset)
        offset += struct.calcsize(fmt)
        return int(value)

    def text() -> str:
        nonlocal offset
        size = take("H")
        value = buf[offset:offset + size - 1].decode()
        offset += size
        return value

    if (version := take("I")) < 5:
        raise ConfigError(f"{model_bin}: CTranslate2 binary version {version} is too old")
    spec = text()
    if spec != "WhisperSpec":
        raise ConfigError(f"{model_bin} holds a {spec}, not a Whisper model")
    take("I")  # spec revision
    variables: dict[str, NDArray[Any]] = {}
    for _ in range(take("I")):
        name = text()
        shape = [take("I") for _ in range(take("B"))]
        dtype = _DTYPES[take("B")]
        size = take("I")
        raw = np.frombuffer(buf, dtype="uint16" if dtype == "bfloat16" else dtype,
                            count=size // (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize),
                            offset=offset)
        if dtype == "bfloat16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        variables[name] = raw.reshape(shape)
        offset += size
    for _ in range(take("I")):
        alias, target = text(), text()
        variables[alias] = variables[target]
    if offset != len(buf):
        raise ConfigError(f"{model_bin} has {len(buf) - offset} bytes after its last variable")
    return variables
