"""The native stack's stand-in for Cloud Scheduler: POST to the sweeper, the learning schedule
and the review sync on timers.

On Google Cloud, Cloud Scheduler jobs call the `sweeper` function every 10 minutes, the
`learning` function's `/schedule` every hour and the `review` function's `/sync` every minute
(see infra/schedule.py); locally this process calls `http://<host>:<sweeper_port>/` every
`AUDIARY_SWEEP_INTERVAL_S`, `http://<host>:<learning_port>/schedule` every
`AUDIARY_LEARNING_INTERVAL_S` and
`http://<host>:<review_port>/sync` (with the shared review secret) every
`AUDIARY_REVIEW_SYNC_INTERVAL_S`. A failed call is logged and tried again at the next tick,
as Cloud Scheduler would.

Run: python -m audiary.local.scheduler
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from dataclasses import dataclass, field

import httpx

from audiary.observability.logs import setup_logging
from audiary.services.review import SECRET_HEADER
from audiary.settings import Settings, load_settings

# Named, not __name__: run with -m this module is __main__, outside the `audiary` loggers.
log = logging.getLogger("audiary.local.scheduler")


def sweeper_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.sweeper_port}/"


@dataclass(frozen=True)
class Schedule:
    name: str
    url: str
    interval_s: float
    headers: dict[str, str] = field(default_factory=dict)


def schedules(settings: Settings) -> list[Schedule]:
    """What Cloud Scheduler calls on Google Cloud, pointed at the native stack."""
    found = [Schedule("sweep", sweeper_url(settings), settings.sweep_interval_s),
             Schedule("learning", f"http://{settings.host}:{settings.learning_port}/schedule",
                      settings.learning_interval_s)]
    if settings.review_secret is not None:
        found.append(Schedule(
            "review sync", f"http://{settings.host}:{settings.review_port}/sync",
            settings.review_sync_interval_s,
            {SECRET_HEADER: settings.review_secret.get_secret_value()}))
    return found


def tick(schedule: Schedule, timeout_s: float) -> bool:
    """One scheduled call; whether it was answered 2xx."""
    try:
        response = httpx.post(schedule.url, headers=schedule.headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        log.warning("%s call to %s failed: %s", schedule.name, schedule.url, exc)
        return False
    if response.is_success:
        log.info("%s: %s", schedule.name, response.text.strip())
    else:
        log.warning("%s answered %d: %s", schedule.name, response.status_code,
                    response.text[:200])
    return response.is_success


def run(schedule: Schedule, stop: threading.Event) -> None:
    log.info("calling %s every %g s", schedule.url, schedule.interval_s)
    while not stop.wait(schedule.interval_s):
        tick(schedule, timeout_s=max(schedule.interval_s, 60.0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m audiary.local.scheduler",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="the sweeper's URL (default: the native stack's)")
    parser.add_argument("--learning-url",
                        help="the learning schedule's URL (default: the native stack's)")
    parser.add_argument("--review-url",
                        help="the review sync's URL (default: the native stack's)")
    args = parser.parse_args(argv)
    setup_logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    found = schedules(load_settings())
    if args.url:
        found[0] = Schedule("sweep", args.url, found[0].interval_s)
    if args.learning_url:
        found[1] = Schedule("learning", args.learning_url, found[1].interval_s)
    if args.review_url and len(found) > 2:
        found[2] = Schedule(found[2].name, args.review_url, found[2].interval_s, found[2].headers)
    threads = [threading.Thread(target=run, args=(one, stop), name=one.name) for one in found]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
