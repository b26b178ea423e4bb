"""`make bench`: run every benchmark, write bench/results/<name>.json, print the table."""

from __future__ import annotations

import sys

from bench import api_load, learning, long_form, notes, overhead
from bench.results import print_results


def main() -> int:
    overhead.main([])
    long_form.main([])
    notes.main([])
    api_load.main([])
    learning.main([])
    print_results()
    return 0


if __name__ == "__main__":
    sys.exit(main())
