"""Decode threads: the cores shared out among the decode workers unless set."""

from __future__ import annotations

import os

import pytest

from audiary.adapters.whisper.engine import cpu_threads_per_worker


@pytest.mark.parametrize(("cores", "workers", "threads"), [
    (2, 2, 1),  # these machines: one thread per worker, not CTranslate2's default of more
    (8, 2, 4),
    (3, 2, 1),
    (1, 2, 1),  # never none
    (4, 1, 4),
])
def test_unset_threads_share_the_cores_among_the_workers(cores: int, workers: int,
                                                         threads: int) -> None:
    assert cpu_threads_per_worker(0, workers, "cpu", cores=cores) == threads


def test_set_threads_are_kept_and_a_gpu_leaves_them_to_ctranslate2() -> None:
    assert cpu_threads_per_worker(3, 2, "cpu", cores=2) == 3
    assert cpu_threads_per_worker(0, 2, "cuda", cores=8) == 0


def test_the_machine_cores_are_used_when_none_are_given() -> None:
    assert cpu_threads_per_worker(0, 1, "cpu") == len(os.sched_getaffinity(0))
