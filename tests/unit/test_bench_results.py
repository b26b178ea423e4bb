"""Benchmark results name the CPU they were measured on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import results

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
"""


def test_the_machine_names_the_cpu_and_its_int8_instruction_sets(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    assert results.machine(cpuinfo)["cpu"] == "AMD EPYC 7B13"
    assert results.machine(cpuinfo)["features"] == ["avx2"]
    cpuinfo.write_text(CPUINFO.replace("fma", "fma avx512f avx512_vnni amx_tile amx_int8"))
    assert results.machine(cpuinfo)["features"] == ["avx2", "avx512f", "avx512_vnni", "amx_int8"]


def test_a_result_records_the_machine_and_the_table_shows_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(results, "machine", lambda: {"cpu": "Test CPU", "cores": 2,
                                                     "features": ["avx2"]})
    path = results.write_result("probe", 1.5, "x", ">= 1", {"target_met": True})
    record = json.loads(path.read_text())
    assert record["machine"] == {"cpu": "Test CPU", "cores": 2, "features": ["avx2"]}
    results.print_results(tmp_path)
    row = next(line for line in capsys.readouterr().out.splitlines() if "probe" in line)
    assert "yes" in row
    assert "Test CPU avx2" in row
