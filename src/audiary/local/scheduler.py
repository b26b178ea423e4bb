"""The native stack's stand-in for Cloud Scheduler: POST to the sweeper function on a timer.

On Google Cloud a Cloud Scheduler job calls the `sweeper` function every 10 minutes (see
infra/program.py); locally this process calls `http://<host>:<sweeper_port>/` every
`AUDIARY_SWEEP_INTERVAL_S`. A failed call is logged and tried again at the next tick, as
Cloud Scheduler would.

Run: python -m audiary.local.scheduler
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

import httpx

from audiary.observability.logs import setup_logging
from audiary.settings import Settings, load_settings

# Named, not __name__: run with -m this module is __main__, outside the `audiary` loggers.
log = logging.getLogger("audiary.local.scheduler")


def sweeper_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.sweeper_port}/"


def tick(url: str, timeout_s: float) -> bool:
    """One scheduled call; whether it was answered 2xx."""
    try:
        response = httpx.post(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        log.warning("sweeper call to %s failed: %s", url, exc)
        return False
    if response.is_success:
        log.info("sweep: %s", response.text.strip())
    else:
        log.warning("sweeper answered %d: %s", response.status_code, response.text[:200])
    return response.is_success


def run(url: str, interval: float, stop: threading.Event) -> None:
    log.info("calling %s every %g s", url, interval)
    while not stop.wait(interval):
        tick(url, timeout_s=max(interval, 60.0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m audiary.local.scheduler",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="the sweeper's URL (default: the native stack's)")
    args = parser.parse_args(argv)
    setup_logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings = load_settings()
    run(args.url or sweeper_url(settings), settings.sweep_interval_s, stop)


if __name__ == "__main__":
    main()
