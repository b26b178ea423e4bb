"""Topics, push subscriptions and dead-letter topics of the pipeline, as Pulumi makes them on GCP.

The compose profile (emulators/docker-compose.yml) provisions its Pub/Sub emulator with this
module, pushing to the compose services; the native stack (`NativeStack._provision`) makes the
same topics and subscriptions pushing to `http://127.0.0.1:<port>/`, and
tests/unit/test_compose.py holds the two equal, call for call. The compose init job runs

    python -m audiary.local.provision --wait-s 120 \
        --endpoint ingest=http://ingest:8091/ --endpoint transcriber=http://transcriber:8092/ \
        --endpoint summarize=http://summarize:8093/ --endpoint webhooks=http://webhooks:8095/ \
        --endpoint webhook-delivery=http://webhooks:8095/ \
        --endpoint deadletters=http://deadletters:8096/

against the emulator named by PUBSUB_EMULATOR_HOST; every other value comes from the settings.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from audiary import names
from audiary.errors import AudiaryError
from audiary.observability.logs import setup_logging
from audiary.settings import Settings, load_settings

log = logging.getLogger(__name__)

DEAD_LETTER_ACK_DEADLINE_S = 60  # failing a job is a few document writes
# Locally a failed delivery is retried within seconds, not minutes.
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


class ProvisionError(AudiaryError):
    """The local messaging could not be set up as asked."""


@dataclass(frozen=True)
class PushRoute:
    """A push subscription: which topic it reads and the native stack's port it pushes to."""

    subscription: str
    topic: str
    port: int

    @property
    def dead_letter_topic(self) -> str:
        return names.dead_letter_topic(self.subscription)


def push_routes(settings: Settings) -> tuple[PushRoute, ...]:
    """Every push subscription of the pipeline, in the order the stacks create them."""
    s = settings
    return (
        PushRoute(names.SUBSCRIPTION_INGEST, s.topic_audio_uploaded, s.ingest_port),
        PushRoute(names.SUBSCRIPTION_TRANSCRIBER, s.topic_transcribe_chunk, s.transcriber_port),
        PushRoute(names.SUBSCRIPTION_SUMMARIZE, s.topic_transcript_ready, s.summarize_port),
        PushRoute(names.SUBSCRIPTION_WEBHOOKS, s.topic_job_finished, s.webhooks_port),
        PushRoute(names.SUBSCRIPTION_WEBHOOK_DELIVERY, s.topic_webhook_delivery,
                  s.webhooks_port),
        PushRoute(names.SUBSCRIPTION_DATASETS, s.topic_transcript_corrected, s.learning_port),
        PushRoute(names.SUBSCRIPTION_TRAINING, s.topic_dataset_ready, s.learning_port),
    )


def dead_letter_routes(settings: Settings) -> tuple[PushRoute, ...]:
    """The push subscriptions that feed each dead-letter topic to the `deadletters` function
    (endpoint key `deadletters`); they have no dead-letter topics of their own."""
    return tuple(
        PushRoute(names.dead_letter_consumer(r.subscription), r.dead_letter_topic,
                  settings.deadletters_port)
        for r in push_routes(settings)
    )


def pipeline_topics(settings: Settings) -> tuple[str, ...]:
    s = settings
    return (s.topic_audio_uploaded, s.topic_transcribe_chunk, s.topic_transcript_ready,
            s.topic_job_finished, s.topic_webhook_delivery, s.topic_dataset_ready,
            s.topic_transcript_corrected)


def pipeline_buckets(settings: Settings) -> tuple[str, ...]:
    s = settings
    return (s.uploads_bucket, s.work_bucket, s.transcripts_bucket, s.feedback_bucket,
            s.datasets_bucket, s.models_bucket)


def native_endpoints(settings: Settings) -> dict[str, str]:
    """Push endpoints of the native stack: every service on `settings.host`."""
    endpoints = {r.subscription: f"http://{settings.host}:{r.port}/"
                 for r in push_routes(settings)}
    endpoints[names.DEADLETTERS] = f"http://{settings.host}:{settings.deadletters_port}/"
    return endpoints


def provision_pubsub(
    settings: Settings, endpoints: Mapping[str, str], *, emulator_host: str | None
) -> list[str]:
    """Create topics, dead-letter topics (each with a pull subscription) and push subscriptions.

    `endpoints` maps every subscription of `push_routes`, and `deadletters`, to its push URL.
    Idempotent: an existing subscription keeps its settings and gets the endpoint. Returns the
    push subscriptions' paths.
    """
    # Looked up at call time so that a test can stand in for the client calls.
    from audiary.adapters import pubsub

    s = settings
    routes = push_routes(s)
    wanted = {r.subscription for r in routes} | {names.DEADLETTERS}
    missing = sorted(wanted - set(endpoints))
    unknown = sorted(set(endpoints) - wanted)
    if missing or unknown:
        raise ProvisionError(
            f"push endpoints must name exactly {sorted(wanted)}; missing {missing}, "
            f"unknown {unknown}"
        )
    for topic in pipeline_topics(s):
        pubsub.ensure_topic(s.project_id, topic, emulator_host=emulator_host)
    created = []
    for route in routes:
        dead_letter = route.dead_letter_topic
        pubsub.ensure_topic(s.project_id, dead_letter, emulator_host=emulator_host)
        # Dead letters are kept on a pull subscription, for inspection and alerting; no retry
        # policy, so that they can be counted by pulling and handing them back.
        pubsub.ensure_pull_subscription(
            s.project_id, dead_letter, dead_letter, retry_policy=False,
            emulator_host=emulator_host,
        )
        created.append(pubsub.ensure_push_subscription(
            s.project_id,
            route.subscription,
            route.topic,
            endpoints[route.subscription],
            ack_deadline_s=s.ack_deadline_s,
            dead_letter_topic=dead_letter,
            max_delivery_attempts=s.max_attempts,
            min_backoff_s=MIN_BACKOFF_S,
            max_backoff_s=MAX_BACKOFF_S,
            emulator_host=emulator_host,
        ))
    for route in dead_letter_routes(s):
        created.append(pubsub.ensure_push_subscription(
            s.project_id,
            route.subscription,
            route.topic,
            endpoints[names.DEADLETTERS],
            ack_deadline_s=DEAD_LETTER_ACK_DEADLINE_S,
            min_backoff_s=MIN_BACKOFF_S,
            max_backoff_s=MAX_BACKOFF_S,
            emulator_host=emulator_host,
        ))
    return created


def wait_for_emulator(host: str, timeout_s: float, poll_s: float = 0.5) -> None:
    """Poll `http://<host>/` until the emulator answers "Ok", or raise at the deadline."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}/", timeout=2.0) as response:
                if b"Ok" in response.read():
                    return
                last = "unexpected answer"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise ProvisionError(
                f"the Pub/Sub emulator at {host} did not answer within {timeout_s:.0f} s ({last})"
            )
        time.sleep(poll_s)  # a command-line wait between polls of another process


def _endpoint(value: str) -> tuple[str, str]:
    name, sep, url = value.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected SUBSCRIPTION=URL, got {value!r}")
    return name, url


def main(argv: Sequence[str] | None = None) -> int:
    """Provision the emulator that PUBSUB_EMULATOR_HOST names; exit status 0 on success."""
    parser = argparse.ArgumentParser(prog="python -m audiary.local.provision",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--endpoint", action="append", type=_endpoint, default=[],
                        metavar="SUBSCRIPTION=URL",
                        help="push endpoint of one subscription (repeat for each); "
                             "default: the native stack's 127.0.0.1 ports")
    parser.add_argument("--wait-s", type=float, default=0.0,
                        help="wait this long for the emulator to answer first")
    args = parser.parse_args(argv)
    setup_logging()
    settings = load_settings()
    host = settings.pubsub_emulator_host
    if not host:
        print("PUBSUB_EMULATOR_HOST is not set: this command only provisions an emulator",
              file=sys.stderr)
        return 2
    endpoints = dict(args.endpoint) or native_endpoints(settings)
    try:
        if args.wait_s > 0:
            wait_for_emulator(host, args.wait_s)
        for path in provision_pubsub(settings, endpoints, emulator_host=host):
            log.info("subscription %s ready", path)
    except AudiaryError as exc:
        print(f"provisioning failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
