"""`make bench`: run every benchmark, write bench/results/<name>.json, print the table."""

from __future__ import annotations

import sys

from bench import (
    api_load,
    control_plane,
    learning,
    long_form,
    models,
    notes,
    overhead,
    throughput,
)
from bench.results import print_results


def main() -> int:
    models.main([])
    long_form.main([])
    long_form.main(["--model", "base", "--repeats", "1"])
    long_form.main(["--busy", "1"])  # the same on a busy machine: a core taken by another process
    long_form.main(["--model", "base", "--repeats", "1", "--busy", "1"])
    long_form.main(["--hour"])
    long_form.main(["--hour", "--model", "base"])
    throughput.main([])
    control_plane.main([])
    overhead.main([])
    notes.main([])
    api_load.main([])
    learning.main([])
    print_results()
    return 0


if __name__ == "__main__":
    sys.exit(main())
