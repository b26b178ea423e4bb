"""Benchmark results: one JSON file per benchmark under bench/results/, and a table of them."""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["RESULTS_DIR", "load_results", "machine", "print_results", "write_result"]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# The instruction sets that decide CTranslate2's int8 speed and arithmetic on a CPU.
_CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "amx_int8")


def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU a result was measured on: model name, cores, and which of `_CPU_FEATURES` it
    has. Speed ratios depend on it: an int8 encoder on AMX or AVX-512 VNNI is several times
    faster against beam search than on AVX2 alone."""
    model, flags = platform.processor() or platform.machine(), set()
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return {"cpu": model, "cores": os.cpu_count(),
            "features": [feature for feature in _CPU_FEATURES if feature in flags]}


def write_result(name: str, value: float, unit: str, target: str, details: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json with keys name, value, unit, target, machine, details."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    record = {"name": name, "value": value, "unit": unit, "target": target,
              "machine": machine(), "details": details}
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s", path)
    return path


def load_results(directory: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Every result file in `directory`, by name."""
    return [
        json.loads(path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.json"))
    ]


def print_results(directory: Path = RESULTS_DIR, console: Console | None = None) -> None:
    """Print a table of all results in `directory`."""
    table = Table(title="Benchmark results")
    table.add_column("benchmark")
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("target")
    table.add_column("met")
    table.add_column("cpu")
    for result in load_results(directory):
        met = result.get("details", {}).get("target_met")
        cpu = result.get("machine", {})
        table.add_row(
            str(result["name"]),
            f"{result['value']:.3g}" if isinstance(result["value"], int | float) else "?",
            str(result["unit"]),
            str(result["target"]),
            "" if met is None else ("yes" if met else "NO"),
            " ".join([str(cpu.get("cpu", "?")), *cpu.get("features", [])]) if cpu else "?",
        )
    (console or Console()).print(table)
