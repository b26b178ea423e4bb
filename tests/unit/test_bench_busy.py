"""`long_form --busy`: other processes load the cores during the measurement, then stop."""

from __future__ import annotations

import multiprocessing

import psutil

from bench.long_form import busy
from tests.e2e.conftest import poll


def test_busy_processes_use_the_cpu_while_the_block_runs_and_are_gone_after() -> None:
    with busy(2):
        children = multiprocessing.active_children()
        assert len(children) == 2
        processes = [psutil.Process(child.pid) for child in children]
        # Each spins on its own: together they use a core-second long before the time is up.
        poll(lambda: sum(p.cpu_times().user for p in processes), lambda used: used >= 1.0, 30)
    assert not any(child.is_alive() for child in children)


def test_no_busy_processes_start_none() -> None:
    with busy(0):
        assert multiprocessing.active_children() == []
