"""Benchmark results: one JSON file per benchmark under bench/results/, and a table of them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["RESULTS_DIR", "load_results", "print_results", "write_result"]

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_result(name: str, value: float, unit: str, target: str, details: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json with keys name, value, unit, target, details."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    record = {"name": name, "value": value, "unit": unit, "target": target, "details": details}
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
    for result in load_results(directory):
        met = result.get("details", {}).get("target_met")
        table.add_row(
            str(result["name"]),
            f"{result['value']:.3g}" if isinstance(result["value"], int | float) else "?",
            str(result["unit"]),
            str(result["target"]),
            "" if met is None else ("yes" if met else "NO"),
        )
    (console or Console()).print(table)
