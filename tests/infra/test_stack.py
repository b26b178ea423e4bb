"""The Pulumi program under mocks: every resource, its wiring, IAM, scaling and secrets."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest

from tests.infra.mocks import (
    PROJECT,
    PUBSUB_AGENT,
    STORAGE_AGENT,
    Binding,
    Deployment,
    activate,
    deploy,
    run_uri,
    strings,
)

activate()  # before the program modules are imported

from audiary import names  # noqa: E402
from audiary.local import stack as local_stack  # noqa: E402
from audiary.settings import Settings  # noqa: E402
from infra.config import ACK_DEADLINE_S  # noqa: E402
from tests.infra.conftest import (  # noqa: E402
    ANTHROPIC_KEY,
    LABEL_STUDIO_TOKEN,
    OPENAI_KEY,
    REVIEW_SECRET,
    stack_config,
)

pytestmark = pytest.mark.infra

REGION = "europe-west4"
BUCKETS = {
    "uploads": f"{names.BUCKET_UPLOADS}-{PROJECT}",
    "work": f"{names.BUCKET_WORK}-{PROJECT}",
    "transcripts": f"{names.BUCKET_TRANSCRIPTS}-{PROJECT}",
    "feedback": f"{names.BUCKET_USERFEEDBACK}-{PROJECT}",
    "datasets": f"{names.BUCKET_DATASETS}-{PROJECT}",
    "models": f"{names.BUCKET_MODELS}-{PROJECT}",
    "sources": f"audiary-sources-{PROJECT}",
}
PUSH = {  # subscription -> (topic, receiving service)
    names.SUBSCRIPTION_INGEST: (names.TOPIC_AUDIO_UPLOADED, "ingest"),
    names.SUBSCRIPTION_TRANSCRIBER: (names.TOPIC_TRANSCRIBE_CHUNK, "transcriber"),
    names.SUBSCRIPTION_SUMMARIZE: (names.TOPIC_TRANSCRIPT_READY, "summarize"),
    names.SUBSCRIPTION_WEBHOOKS: (names.TOPIC_JOB_FINISHED, "webhooks"),
    names.SUBSCRIPTION_WEBHOOK_DELIVERY: (names.TOPIC_WEBHOOK_DELIVERY, "webhooks"),
    names.SUBSCRIPTION_DATASETS: (names.TOPIC_TRANSCRIPT_CORRECTED, "learning"),
    names.SUBSCRIPTION_TRAINING: (names.TOPIC_DATASET_READY, "learning"),
}
FUNCTIONS = ("ingest", "summarize", "webhooks", "deadletters", "sweeper", "api", "review",
             "learning")
FUNCTION = "gcp:cloudfunctionsv2/function:Function"
JOB = "gcp:cloudscheduler/job:Job"
REVIEW_URL = f"https://{REGION}-{PROJECT}.cloudfunctions.net/review"
# Every dead-letter topic is pushed to the deadletters function by a subscription of its own.
CONSUMERS = {names.dead_letter_consumer(s): names.dead_letter_topic(s) for s in PUSH}
PUBLIC = {"allUsers", "allAuthenticatedUsers"}


def topic_id(topic: str) -> str:
    return f"projects/{PROJECT}/topics/{topic}"


def sa(key: str) -> str:
    return f"serviceAccount:audiary-{key}@{PROJECT}.iam.gserviceaccount.com"


# --- inventory --------------------------------------------------------------------------------


def test_every_resource_exists(gpu: Deployment) -> None:
    counts = {
        "gcp:projects/service:Service": 13,
        "gcp:artifactregistry/repository:Repository": 1,
        "gcp:storage/bucket:Bucket": 7,
        "gcp:storage/notification:Notification": 1,
        # 7 pipeline topics + 7 dead-letter
        "gcp:pubsub/topic:Topic": 14,
        # 7 push + 7 dead-letter pull + 7 dead-letter push (to deadletters)
        "gcp:pubsub/subscription:Subscription": 21,
        "gcp:cloudrunv2/service:Service": 1,
        "gcp:cloudrunv2/job:Job": 1,  # training
        "gcp:cloudrunv2/jobIamMember:JobIamMember": 1,  # learning may start it
        "gcp:cloudfunctionsv2/function:Function": 8,
        "gcp:storage/bucketObject:BucketObject": 8,
        # the sweeper's and the learning schedule; the review sync's needs Label Studio
        "gcp:cloudscheduler/job:Job": 2,
        "gcp:firestore/database:Database": 1,
        "gcp:firestore/index:Index": 1,
        "gcp:firestore/field:Field": 1,
        "gcp:secretmanager/secret:Secret": 4,  # 2 LLM keys, Label Studio token, review secret
        "gcp:secretmanager/secretVersion:SecretVersion": 2,
        "gcp:serviceaccount/account:Account": 12,
        "gcp:monitoring/alertPolicy:AlertPolicy": 7 + 9,  # dead letters + error rates
    }
    for typ, count in counts.items():
        assert len(gpu.of_type(typ)) == count, typ
    apis = {r.inputs["service"] for r in gpu.of_type("gcp:projects/service:Service")}
    assert {"run.googleapis.com", "cloudfunctions.googleapis.com", "pubsub.googleapis.com",
            "firestore.googleapis.com", "secretmanager.googleapis.com",
            "cloudscheduler.googleapis.com", "cloudtrace.googleapis.com"} <= apis
    assert all(r.inputs["disableOnDestroy"] is False
               for r in gpu.of_type("gcp:projects/service:Service"))


def test_everything_waits_for_the_apis(gpu: Deployment) -> None:
    apis = set(gpu.stack.apis.services)
    for (typ, name), depends_on in gpu.depends_on.items():
        if typ.startswith("gcp:") and typ != "gcp:projects/service:Service":
            assert apis <= set(depends_on), f"{typ} {name} may be created before its API"


def test_components_follow_the_type_token_convention(gpu: Deployment) -> None:
    components = {r.typ for r in gpu.resources if not r.typ.startswith(("gcp:", "pulumi:"))}
    assert components, "the program declares no components"
    assert all(re.fullmatch(r"audiary:[a-z]+:[A-Z][A-Za-z]+", t) for t in components), components


# --- names: audiary.names and the native local stack ------------------------------------------


@dataclass
class Recorder:
    """Stands in for the Pub/Sub and GCS helpers audiary.local.stack provisions through."""

    topics: list[str] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)
    pulls: dict[str, str] = field(default_factory=dict)
    pushes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ensure_topic(self, _project: str, topic: str, **_: object) -> None:
        self.topics.append(topic)

    def ensure_pull_subscription(self, _project: str, name: str, topic: str, **_: object) -> None:
        self.pulls[name] = topic

    def ensure_push_subscription(self, _project: str, name: str, topic: str, _endpoint: str,
                                 **kwargs: Any) -> None:
        self.pushes[name] = {"topic": topic, **kwargs}


@pytest.fixture(scope="module")
def local() -> Recorder:
    """What NativeStack._provision creates, recorded without starting any emulator."""
    from audiary.adapters import gcs, pubsub

    recorder = Recorder()

    class Blobs:
        def __init__(self, *_: object, **__: object) -> None: ...

        def ensure_bucket(self, bucket: str) -> None:
            recorder.buckets.append(bucket)

    class Emulator:
        def __init__(self) -> None:
            self.env = {"PUBSUB_EMULATOR_HOST": "pubsub", "STORAGE_EMULATOR_HOST": "http://gcs"}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pubsub, "ensure_topic", recorder.ensure_topic)
        patch.setattr(pubsub, "ensure_pull_subscription", recorder.ensure_pull_subscription)
        patch.setattr(pubsub, "ensure_push_subscription", recorder.ensure_push_subscription)
        patch.setattr(gcs, "GcsBlobStore", Blobs)
        native = local_stack.NativeStack(Settings())
        native.emulators = [Emulator()]  # type: ignore[list-item]
        native._provision()
    return recorder


def test_topics_and_subscriptions_match_the_local_stack(gpu: Deployment, local: Recorder) -> None:
    topics = {r.inputs["name"] for r in gpu.of_type("gcp:pubsub/topic:Topic")}
    assert topics == set(local.topics)
    assert set(names.PIPELINE_TOPICS) | {names.dead_letter_topic(s) for s in PUSH} == topics

    subscriptions = gpu.of_type("gcp:pubsub/subscription:Subscription")
    pushes = {r.inputs["name"]: r for r in subscriptions if "pushConfig" in r.inputs}
    pulls = {r.inputs["name"]: r for r in subscriptions if "pushConfig" not in r.inputs}
    assert set(pushes) == set(local.pushes) == set(PUSH) | set(CONSUMERS)
    for name, recorded in local.pushes.items():
        if name in CONSUMERS:
            cloud = pushes[name].inputs
            assert cloud["topic"] == topic_id(recorded["topic"]) == topic_id(CONSUMERS[name])
            assert "deadLetterPolicy" not in cloud
            assert not recorded.get("dead_letter_topic")
            assert cloud["ackDeadlineSeconds"] == recorded["ack_deadline_s"] == 60
            continue
        cloud = pushes[name].inputs
        assert cloud["topic"] == topic_id(recorded["topic"]), name
        # The Pub/Sub maximum, in both stacks.
        assert cloud["ackDeadlineSeconds"] == recorded["ack_deadline_s"] == ACK_DEADLINE_S == 600
        assert Settings().ack_deadline_s == ACK_DEADLINE_S
        assert cloud["deadLetterPolicy"]["deadLetterTopic"] == topic_id(
            recorded["dead_letter_topic"])
        assert cloud["deadLetterPolicy"]["maxDeliveryAttempts"] == recorded[
            "max_delivery_attempts"]
    assert {n: r.inputs["topic"] for n, r in pulls.items()} == {
        n: topic_id(t) for n, t in local.pulls.items()}


def test_bucket_names_are_the_shared_names_plus_the_project_suffix(
        gpu: Deployment, local: Recorder) -> None:
    buckets = {r.inputs["name"] for r in gpu.of_type("gcp:storage/bucket:Bucket")}
    assert buckets == set(BUCKETS.values())
    assert {f"{b}-{PROJECT}" for b in local.buckets} == buckets - {BUCKETS["sources"]}


# --- storage and notification -----------------------------------------------------------------


def test_buckets_are_private_and_work_expires(gpu: Deployment) -> None:
    for bucket in gpu.of_type("gcp:storage/bucket:Bucket"):
        assert bucket.inputs["uniformBucketLevelAccess"] is True, bucket.name
        assert bucket.inputs["publicAccessPrevention"] == "enforced", bucket.name
    work = gpu.one("gcp:storage/bucket:Bucket", name=BUCKETS["work"])
    assert work.inputs["lifecycleRules"] == [
        {"action": {"type": "Delete"}, "condition": {"age": 7}}]
    for role in ("uploads", "transcripts", "feedback", "datasets", "sources"):
        bucket = gpu.one("gcp:storage/bucket:Bucket", name=BUCKETS[role])
        assert not bucket.inputs.get("lifecycleRules"), role


def test_inbox_notification_publishes_to_audio_uploaded(gpu: Deployment) -> None:
    notification = gpu.one("gcp:storage/notification:Notification")
    assert notification.inputs == {
        "bucket": BUCKETS["uploads"],
        "topic": topic_id(names.TOPIC_AUDIO_UPLOADED),
        "payloadFormat": "JSON_API_V1",
        "eventTypes": ["OBJECT_FINALIZE"],
        "objectNamePrefix": names.PREFIX_INBOX,
    }
    assert Binding(f"serviceAccount:{STORAGE_AGENT}", "roles/pubsub.publisher", "topic",
                   topic_id(names.TOPIC_AUDIO_UPLOADED)) in gpu.bindings()


# --- Pub/Sub delivery -------------------------------------------------------------------------


def test_push_subscriptions_use_oidc_bounded_retries_and_dead_letters(gpu: Deployment) -> None:
    for subscription, (topic, receiver) in PUSH.items():
        sub = gpu.one("gcp:pubsub/subscription:Subscription", name=subscription).inputs
        endpoint = run_uri(receiver)
        assert sub["topic"] == topic_id(topic)
        assert sub["pushConfig"] == {
            "pushEndpoint": endpoint,
            "oidcToken": {"serviceAccountEmail": sa("pusher").removeprefix("serviceAccount:"),
                          "audience": endpoint},
        }
        assert sub["ackDeadlineSeconds"] == 600
        assert sub["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
        dead_letter = names.dead_letter_topic(subscription)
        assert sub["deadLetterPolicy"] == {"deadLetterTopic": topic_id(dead_letter),
                                           "maxDeliveryAttempts": 5}
        assert sub["expirationPolicy"] == {"ttl": ""}
        pull = gpu.one("gcp:pubsub/subscription:Subscription", name=dead_letter).inputs
        assert pull["topic"] == topic_id(dead_letter)
        assert "deadLetterPolicy" not in pull


def test_every_dead_letter_topic_has_a_push_consumer_that_ends_its_jobs(gpu: Deployment) -> None:
    endpoint = run_uri("deadletters")
    for consumer, dead_letter in CONSUMERS.items():
        sub = gpu.one("gcp:pubsub/subscription:Subscription", name=consumer).inputs
        assert sub["topic"] == topic_id(dead_letter)
        assert sub["pushConfig"] == {
            "pushEndpoint": endpoint,
            "oidcToken": {"serviceAccountEmail": sa("pusher").removeprefix("serviceAccount:"),
                          "audience": endpoint},
        }
        assert sub["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
        assert "deadLetterPolicy" not in sub
        assert sub["expirationPolicy"] == {"ttl": ""}


def test_the_training_job_runs_audiary_train_on_one_l4_as_its_own_account(
        gpu: Deployment) -> None:
    job = gpu.one("gcp:cloudrunv2/job:Job").inputs
    assert job["name"] == "audiary-train"
    assert (job["template"]["taskCount"], job["template"]["parallelism"]) == (1, 1)
    task = job["template"]["template"]
    assert task["serviceAccount"] == sa("trainer").removeprefix("serviceAccount:")
    assert task["nodeSelector"] == {"accelerator": "nvidia-l4"}
    assert task["maxRetries"] == 0  # a failed run leaves the promoted model; no retry
    (container,) = task["containers"]
    assert container["image"].endswith("/audiary/trainer:test")
    assert container["args"] == ["train"]  # each execution overrides: train --dataset N
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "32Gi",
                                                "nvidia.com/gpu": "1"}
    env = env_of(container)
    assert env["AUDIARY_DEVICE"] == "cuda"
    assert env["AUDIARY_MODELS_BUCKET"] == BUCKETS["models"]
    assert env["AUDIARY_DATASETS_BUCKET"] == BUCKETS["datasets"]
    learning = gpu.one("gcp:cloudfunctionsv2/function:Function", name="learning").inputs
    learning_env = learning["serviceConfig"]["environmentVariables"]
    assert learning_env["AUDIARY_TRAIN_JOB"] == (
        f"projects/{PROJECT}/locations/{REGION}/jobs/audiary-train")
    assert "AUDIARY_TRAINING_ENABLED" not in learning_env
    (launcher,) = [b for b in gpu.bindings() if b.scope == "run_job"]
    assert launcher == Binding(sa("learning"), "roles/run.developer", "run_job",
                               "audiary-train")


def test_the_learning_schedule_runs_hourly_and_without_a_trainer_nothing_trains(
        gpu: Deployment, build_dir: Path) -> None:
    job = gpu.one(JOB, name="audiary-learning").inputs
    endpoint = run_uri("learning")
    assert job["schedule"] == "17 * * * *"
    assert job["httpTarget"] == {
        "uri": f"{endpoint}/schedule", "httpMethod": "POST",
        "oidcToken": {"serviceAccountEmail": sa("pusher").removeprefix("serviceAccount:"),
                      "audience": endpoint},
    }
    untrained = deploy(stack_config(build_dir, trainer_image=None))
    assert untrained.of_type("gcp:cloudrunv2/job:Job") == []
    assert not [b for b in untrained.bindings() if b.scope == "run_job"]
    env = untrained.one("gcp:cloudfunctionsv2/function:Function", name="learning").inputs[
        "serviceConfig"]["environmentVariables"]
    assert env["AUDIARY_TRAINING_ENABLED"] == "false"
    assert "AUDIARY_TRAIN_JOB" not in env


def test_cloud_scheduler_runs_the_sweeper_every_ten_minutes(gpu: Deployment) -> None:
    job = gpu.one(JOB, name="audiary-sweeper").inputs
    endpoint = run_uri("sweeper")
    assert job["schedule"] == "*/10 * * * *"
    assert job["timeZone"] == "Etc/UTC"
    assert job["httpTarget"] == {
        "uri": endpoint, "httpMethod": "POST",
        "oidcToken": {"serviceAccountEmail": sa("pusher").removeprefix("serviceAccount:"),
                      "audience": endpoint},
    }
    assert job["attemptDeadline"] == "300s"  # the function's timeout
    assert job["retryConfig"] == {"retryCount": 0}
    sweeper = gpu.one("gcp:cloudfunctionsv2/function:Function", name="sweeper").inputs
    env = sweeper["serviceConfig"]["environmentVariables"]
    assert env["AUDIARY_STALL_AFTER_S"] == "3600"


def test_pubsub_agent_can_forward_dead_letters(gpu: Deployment) -> None:
    agent = f"serviceAccount:{PUBSUB_AGENT}"
    held = {(b.role, b.target) for b in gpu.bindings() if b.member == agent}
    assert held == {
        *(("roles/pubsub.publisher", topic_id(names.dead_letter_topic(s))) for s in PUSH),
        *(("roles/pubsub.subscriber", f"projects/{PROJECT}/subscriptions/{s}") for s in PUSH),
    }


# --- IAM: least privilege, nothing public -----------------------------------------------------


def expected_roles() -> dict[str, set[tuple[str, str, str]]]:
    bucket = {role: ("bucket", name) for role, name in BUCKETS.items()}
    project = ("project", PROJECT)
    user, viewer = "roles/storage.objectUser", "roles/storage.objectViewer"
    publisher, datastore = "roles/pubsub.publisher", "roles/datastore.user"
    invoker = "roles/run.invoker"

    def topic(name: str) -> tuple[str, str, str]:
        return (publisher, "topic", topic_id(name))

    roles = {
        sa("ingest"): {
            (user, *bucket["uploads"]), (user, *bucket["work"]),
            topic(names.TOPIC_TRANSCRIBE_CHUNK), (datastore, *project)},
        sa("transcriber"): {
            (user, *bucket["work"]), (user, *bucket["transcripts"]), (viewer, *bucket["models"]),
            topic(names.TOPIC_TRANSCRIPT_READY), (datastore, *project)},
        # Datasets from the corrections; starting training is a binding on the job alone.
        sa("learning"): {
            (viewer, *bucket["work"]), (viewer, *bucket["transcripts"]),
            (user, *bucket["datasets"]), topic(names.TOPIC_DATASET_READY),
            (datastore, *project), ("roles/run.developer", "run_job", "audiary-train")},
        sa("trainer"): {
            (viewer, *bucket["datasets"]), (user, *bucket["models"]), (datastore, *project)},
        sa("summarize"): {
            (viewer, *bucket["transcripts"]), topic(names.TOPIC_JOB_FINISHED),
            (datastore, *project),
            ("roles/secretmanager.secretAccessor", "secret",
             f"projects/{PROJECT}/secrets/audiary-openai-api-key"),
            ("roles/secretmanager.secretAccessor", "secret",
             f"projects/{PROJECT}/secrets/audiary-anthropic-api-key")},
        sa("webhooks"): {
            topic(names.TOPIC_WEBHOOK_DELIVERY),
            topic(names.dead_letter_topic(names.SUBSCRIPTION_WEBHOOKS)), (datastore, *project)},
        sa("deadletters"): {topic(names.TOPIC_JOB_FINISHED), (datastore, *project)},
        sa("sweeper"): {
            topic(names.TOPIC_AUDIO_UPLOADED), topic(names.TOPIC_TRANSCRIBE_CHUNK),
            topic(names.TOPIC_TRANSCRIPT_READY), topic(names.TOPIC_JOB_FINISHED),
            (datastore, *project)},
        sa("api"): {
            (user, *bucket["uploads"]), (user, *bucket["work"]),
            (user, *bucket["transcripts"]), (user, *bucket["feedback"]),
            topic(names.TOPIC_AUDIO_UPLOADED), topic(names.TOPIC_TRANSCRIPT_READY),
            topic(names.TOPIC_TRANSCRIPT_CORRECTED), (datastore, *project),
            ("roles/iam.serviceAccountTokenCreator", "service_account",
             f"projects/{PROJECT}/serviceAccounts/audiary-api@{PROJECT}.iam.gserviceaccount.com")},
        # Label Studio's webhook cannot carry a Google identity, so review checks its callers
        # itself (tests below); the API has invokers of its own.
        sa("review"): {
            (user, *bucket["uploads"]), (user, *bucket["work"]),
            (user, *bucket["transcripts"]), (user, *bucket["feedback"]),
            topic(names.TOPIC_TRANSCRIPT_READY), topic(names.TOPIC_TRANSCRIPT_CORRECTED),
            (datastore, *project),
            ("roles/secretmanager.secretAccessor", "secret",
             f"projects/{PROJECT}/secrets/audiary-label-studio-token"),
            ("roles/secretmanager.secretAccessor", "secret",
             f"projects/{PROJECT}/secrets/audiary-review-secret"),
            ("roles/iam.serviceAccountTokenCreator", "service_account",
             f"projects/{PROJECT}/serviceAccounts/"
             f"audiary-review@{PROJECT}.iam.gserviceaccount.com")},
        sa("pusher"): {(invoker, "run_service", s) for s in ("transcriber", *FUNCTIONS)
                       if s not in ("api", "review")},
        sa("builder"): {
            ("roles/logging.logWriter", *project),
            ("roles/artifactregistry.writer", "repository", "audiary"),
            (viewer, *project)},
    }
    # Every account that runs Audiary's code writes spans; the pusher and the builder do not.
    for member, held in roles.items():
        if member not in (sa("pusher"), sa("builder")):
            held.add(("roles/cloudtrace.agent", *project))
    return roles


def test_each_service_account_holds_exactly_its_roles(gpu: Deployment,
                                                      review: Deployment) -> None:
    # Configuring Label Studio adds no role: the scheduler's token is checked by the function.
    for deployment in (gpu, review):
        held: dict[str, set[tuple[str, str, str]]] = {}
        for b in deployment.bindings():
            if b.member.startswith("serviceAccount:audiary-"):
                held.setdefault(b.member, set()).add((b.role, b.scope, b.target))
        assert held == expected_roles()


def test_broad_roles_are_never_granted(gpu: Deployment) -> None:
    broad = re.compile(r"roles/(owner|editor|viewer|.*\.admin|iam\.serviceAccountUser)$")
    assert not [b for b in gpu.bindings() if broad.match(b.role)]


def test_only_the_builder_reads_storage_project_wide_and_only_function_sources(
        gpu: Deployment) -> None:
    (grant,) = [b for b in gpu.bindings()
                if b.scope == "project" and b.role == "roles/storage.objectViewer"]
    assert grant.member == sa("builder")
    assert grant.condition is not None
    allowed = set(re.findall(r'startsWith\("projects/_/buckets/([^"]+)"\)', grant.condition))
    assert allowed == {"gcf-v2-sources-", "gcf-v2-uploads-", BUCKETS["sources"]}


def test_no_public_member_anywhere_by_default(gpu: Deployment, cpu: Deployment) -> None:
    for deployment in (gpu, cpu):
        for resource in deployment.resources:
            assert not PUBLIC.intersection(strings(resource.inputs)), resource.name


def test_api_public_flag_grants_all_users_the_api_invoker_only(public_api: Deployment) -> None:
    public = [b for b in public_api.bindings() if b.member in PUBLIC]
    assert public == [Binding("allUsers", "roles/run.invoker", "run_service", "api")]
    api_invokers = {b.member for b in public_api.bindings()
                    if b.scope == "run_service" and b.target == "api"}
    assert api_invokers == {"allUsers", "user:alice@example.com"}
    for resource in public_api.resources:
        if "IamMember" not in resource.typ and "IAMMember" not in resource.typ:
            assert not PUBLIC.intersection(strings(resource.inputs)), resource.name


def test_the_page_google_sign_in_reaches_the_api_only_when_configured(
        public_api: Deployment, gpu: Deployment) -> None:
    env = public_api.one("gcp:cloudfunctionsv2/function:Function",
                         name="api").inputs["serviceConfig"]["environmentVariables"]
    assert env["AUDIARY_WEB_GOOGLE_CLIENT_ID"] == "1234-web.apps.googleusercontent.com"
    assert json.loads(env["AUDIARY_WEB_USERS"]) == ["alice@example.com", "@example.org"]
    for fn in gpu.of_type("gcp:cloudfunctionsv2/function:Function"):
        assert "AUDIARY_WEB_GOOGLE_CLIENT_ID" not in fn.inputs["serviceConfig"].get(
            "environmentVariables", {})


def test_api_takes_all_traffic_and_the_push_targets_internal_only(gpu: Deployment) -> None:
    for function in FUNCTIONS:
        config = gpu.one("gcp:cloudfunctionsv2/function:Function", name=function).inputs[
            "serviceConfig"]
        expected = "ALLOW_ALL" if function == "api" else "ALLOW_INTERNAL_ONLY"
        assert config["ingressSettings"] == expected, function
    service = gpu.one("gcp:cloudrunv2/service:Service")
    assert service.inputs["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"


# --- the transcriber: GPU, probes, scaling, and the CPU variant ------------------------------


def transcriber(deployment: Deployment) -> tuple[dict[str, Any], dict[str, Any]]:
    service = deployment.one("gcp:cloudrunv2/service:Service", name="transcriber").inputs
    return service["template"], service["template"]["containers"][0]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["envs"]}


def test_gpu_transcriber(gpu: Deployment) -> None:
    template, container = transcriber(gpu)
    assert container["image"].endswith("/audiary/transcriber:test")
    assert container["resources"] == {
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
        "cpuIdle": False,
        "startupCpuBoost": True,
    }
    assert template["nodeSelector"] == {"accelerator": "nvidia-l4"}
    assert template["gpuZonalRedundancyDisabled"] is True
    assert template["scaling"] == {"minInstanceCount": 0, "maxInstanceCount": 3}
    assert template["maxInstanceRequestConcurrency"] == 4
    assert template["timeout"] == "600s"
    assert template["serviceAccount"] == sa("transcriber").removeprefix("serviceAccount:")
    probe = container["startupProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": 8080}
    assert container["ports"] == {"containerPort": 8080}
    env = env_of(container)
    assert env["AUDIARY_DEVICE"] == "cuda"
    assert env["AUDIARY_COMPUTE_TYPE"] == "float16"


def test_cpu_variant_has_no_gpu(cpu: Deployment) -> None:
    template, container = transcriber(cpu)
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "8Gi"}
    assert container["resources"]["cpuIdle"] is False
    assert "nodeSelector" not in template
    assert "gpuZonalRedundancyDisabled" not in template
    assert template["scaling"] == {"minInstanceCount": 0, "maxInstanceCount": 50}
    assert template["maxInstanceRequestConcurrency"] == 1
    env = env_of(container)
    assert (env["AUDIARY_DEVICE"], env["AUDIARY_COMPUTE_TYPE"]) == ("cpu", "int8")
    assert env["AUDIARY_CPU_THREADS"] == "4"  # 8 CPUs shared by the 2 decode workers
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_gpu_zonal_redundancy_is_configurable(build_dir: Path) -> None:
    deployment = deploy(stack_config(build_dir, gpu_zonal_redundancy_disabled=False))
    template, _ = transcriber(deployment)
    assert template["gpuZonalRedundancyDisabled"] is False


def test_without_an_image_the_transcriber_waits(build_dir: Path) -> None:
    deployment = deploy(stack_config(build_dir, transcriber_image=None))
    assert not deployment.of_type("gcp:cloudrunv2/service:Service")
    subscriptions = {r.inputs["name"] for r in
                     deployment.of_type("gcp:pubsub/subscription:Subscription")}
    assert names.SUBSCRIPTION_TRANSCRIBER not in subscriptions
    assert names.SUBSCRIPTION_INGEST in subscriptions
    assert deployment.outputs["transcriberUrl"] == ""


# --- functions ---------------------------------------------------------------------------------


def test_functions_are_gen2_with_their_own_account_and_packaged_source(gpu: Deployment) -> None:
    objects = {r.inputs["name"]: r for r in gpu.of_type("gcp:storage/bucketObject:BucketObject")}
    for function in FUNCTIONS:
        fn = gpu.one("gcp:cloudfunctionsv2/function:Function", name=function).inputs
        build, service = fn["buildConfig"], fn["serviceConfig"]
        assert fn["location"] == REGION
        assert build["runtime"] == "python312"
        assert build["entryPoint"] == function
        assert build["serviceAccount"] == (
            f"projects/{PROJECT}/serviceAccounts/audiary-builder@{PROJECT}.iam.gserviceaccount.com")
        assert build["dockerRepository"] == (
            f"projects/{PROJECT}/locations/{REGION}/repositories/audiary")
        source = build["source"]["storageSource"]
        assert source["bucket"] == BUCKETS["sources"]
        assert re.fullmatch(rf"functions/{function}-[0-9a-f]{{16}}\.zip", source["object"])
        assert objects[source["object"]].inputs["bucket"] == BUCKETS["sources"]
        assert service["serviceAccountEmail"] == sa(function).removeprefix("serviceAccount:")
        assert service["minInstanceCount"] == 0
        assert "eventTrigger" not in fn  # fed by push subscriptions with dead letters


def test_environment_names_are_real_settings(gpu: Deployment, review: Deployment) -> None:
    env_names: set[str] = set()
    for fn in [*gpu.of_type(FUNCTION), *review.of_type(FUNCTION)]:
        env_names |= set(fn.inputs["serviceConfig"]["environmentVariables"])
        env_names |= {s["key"] for s in fn.inputs["serviceConfig"].get(
            "secretEnvironmentVariables", []) if s["key"].startswith("AUDIARY_")}
        env = fn.inputs["serviceConfig"]["environmentVariables"]
        assert env["AUDIARY_UPLOADS_BUCKET"] == BUCKETS["uploads"]
        assert env["AUDIARY_WORK_BUCKET"] == BUCKETS["work"]
        assert env["AUDIARY_TRANSCRIPTS_BUCKET"] == BUCKETS["transcripts"]
        assert env["AUDIARY_FEEDBACK_BUCKET"] == BUCKETS["feedback"]
        assert env["AUDIARY_PROJECT_ID"] == PROJECT
        assert env["AUDIARY_MAX_ATTEMPTS"] == "5"
    env_names |= set(env_of(transcriber(gpu)[1]))
    fields = {f"AUDIARY_{name.upper()}" for name in Settings.model_fields}
    assert env_names <= fields, env_names - fields


def test_every_function_service_and_job_sends_spans_to_cloud_trace(
        gpu: Deployment, cpu: Deployment, review: Deployment) -> None:
    seen = 0
    for deployment in (gpu, cpu, review):
        envs = [fn.inputs["serviceConfig"]["environmentVariables"]
                for fn in deployment.of_type(FUNCTION)]
        envs.append(env_of(transcriber(deployment)[1]))
        envs += [env_of(job.inputs["template"]["template"]["containers"][0])
                 for job in deployment.of_type("gcp:cloudrunv2/job:Job")]
        assert len(envs) == len(FUNCTIONS) + 2  # the functions, the transcriber, training
        for env in envs:
            # What audiary.settings reads: Settings.otel_exporter and Settings.project_id.
            assert env["AUDIARY_OTEL_EXPORTER"] == "gcp"
            assert env["AUDIARY_PROJECT_ID"] == PROJECT
            assert Settings(otel_exporter=env["AUDIARY_OTEL_EXPORTER"],
                            project_id=env["AUDIARY_PROJECT_ID"]).otel_exporter == "gcp"
            seen += 1
    assert seen == 3 * (len(FUNCTIONS) + 2)


def test_summarize_reads_the_llm_keys_as_secret_environment(gpu: Deployment) -> None:
    fn = gpu.one("gcp:cloudfunctionsv2/function:Function", name="summarize").inputs
    secrets = fn["serviceConfig"]["secretEnvironmentVariables"]
    assert {(s["key"], s["secret"], s["version"]) for s in secrets} == {
        ("ANTHROPIC_API_KEY", "audiary-anthropic-api-key", "latest"),
        ("OPENAI_API_KEY", "audiary-openai-api-key", "latest"),
    }
    for other in ("ingest", "webhooks", "api", "review"):
        config = gpu.one("gcp:cloudfunctionsv2/function:Function", name=other).inputs[
            "serviceConfig"]
        assert not config.get("secretEnvironmentVariables"), other
    # Settings reads exactly these names.
    assert {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"} <= {
        alias for f in Settings.model_fields.values() if f.validation_alias
        for alias in getattr(f.validation_alias, "choices", [])}


def test_no_key_configured_means_no_version_and_no_secret_env(build_dir: Path) -> None:
    deployment = deploy(stack_config(build_dir, openai_api_key=None, anthropic_api_key=None))
    # The secrets exist (so a key can be added later): the LLM keys and the review desk's.
    assert len(deployment.of_type("gcp:secretmanager/secret:Secret")) == 4
    assert not deployment.of_type("gcp:secretmanager/secretVersion:SecretVersion")
    fn = deployment.one("gcp:cloudfunctionsv2/function:Function", name="summarize").inputs
    assert not fn["serviceConfig"].get("secretEnvironmentVariables")


def test_api_knows_its_audience(gpu: Deployment) -> None:
    fn = gpu.one("gcp:cloudfunctionsv2/function:Function", name="api").inputs
    env = fn["serviceConfig"]["environmentVariables"]
    assert env["AUDIARY_API_AUDIENCE"] == f"https://{REGION}-{PROJECT}.cloudfunctions.net/api"
    assert gpu.outputs["apiUrl"] == env["AUDIARY_API_AUDIENCE"]


# --- secrets never leak ------------------------------------------------------------------------


def test_key_values_appear_in_no_output(gpu: Deployment) -> None:
    rendered = list(strings(gpu.outputs))
    for key in (OPENAI_KEY, ANTHROPIC_KEY):
        assert not any(key in value for value in rendered)
    for resource in gpu.resources:
        if resource.typ != "gcp:secretmanager/secretVersion:SecretVersion":
            assert not any(key in value for key in (OPENAI_KEY, ANTHROPIC_KEY)
                           for value in strings(resource.inputs)), resource.name


@pulumi.runtime.test
def test_secret_versions_hold_secret_outputs(gpu: Deployment) -> pulumi.Output[Any]:
    versions = gpu.stack.llm_keys.versions

    async def check() -> None:
        for env, version in versions.items():
            assert await version.secret_data.is_secret(), env

    return pulumi.Output.from_input(check())


@pulumi.runtime.test
def test_stack_outputs_are_plain_names_and_commands(gpu: Deployment) -> pulumi.Output[Any]:
    stack = gpu.stack

    def check(values: list[Any]) -> None:
        outputs = dict(zip(stack.outputs, values, strict=True))
        assert outputs["uploadsBucket"] == BUCKETS["uploads"]
        assert outputs["transcriptsBucket"] == BUCKETS["transcripts"]
        assert outputs["dropCommand"] == (
            f"gcloud storage cp <audio-file> gs://{BUCKETS['uploads']}/inbox/")
        assert outputs["transcriberUrl"] == run_uri("transcriber")
        assert outputs["reviewUrl"] == ""  # no Label Studio to send webhooks
        assert outputs["imageRepository"] == f"{REGION}-docker.pkg.dev/{PROJECT}/audiary"
        assert f"AUDIARY_UPLOADS_BUCKET={BUCKETS['uploads']}" in outputs["cliEnv"]
        # The CLI on a laptop sends no spans to Cloud Trace (it may not have the gcp extra).
        assert "AUDIARY_OTEL_EXPORTER" not in outputs["cliEnv"]

    return pulumi.Output.all(*stack.outputs.values()).apply(check)


# --- Firestore -------------------------------------------------------------------------------


def test_firestore_indexes_and_ttl(gpu: Deployment) -> None:
    database = gpu.one("gcp:firestore/database:Database").inputs
    assert (database["name"], database["type"]) == ("(default)", "FIRESTORE_NATIVE")
    index = gpu.one("gcp:firestore/index:Index").inputs
    assert index["collection"] == names.COLLECTION_JOBS
    assert index["fields"] == [
        {"fieldPath": "owner", "order": "ASCENDING"},
        {"fieldPath": "timestamps.RECEIVED", "order": "DESCENDING"},
    ]
    ttl = gpu.one("gcp:firestore/field:Field").inputs
    assert (ttl["collection"], ttl["field"]) == (names.COLLECTION_LLM_CACHE, "expires_at")
    assert ttl["ttlConfig"] == {}


# --- alerting ----------------------------------------------------------------------------------


def test_alerts_watch_dead_letters_and_error_rates(gpu: Deployment) -> None:
    filters = [c["conditionThreshold"] for p in gpu.of_type(
        "gcp:monitoring/alertPolicy:AlertPolicy") for c in p.inputs["conditions"]]
    dead = [f for f in filters if "num_undelivered_messages" in f["filter"]]
    watched = {re.findall(r'subscription_id = "([^"]+)"', f["filter"])[0] for f in dead}
    assert watched == {names.dead_letter_topic(s) for s in PUSH}
    assert all(f["comparison"] == "COMPARISON_GT" and f["thresholdValue"] == 0 for f in dead)
    rates = [f for f in filters if "request_count" in f["filter"]]
    services = {re.findall(r'service_name = "([^"]+)"', f["filter"])[0] for f in rates}
    assert services == {"transcriber", *FUNCTIONS}
    for rate in rates:
        assert 'response_code_class = "5xx"' in rate["filter"]
        assert "5xx" not in rate["denominatorFilter"]
        assert rate["thresholdValue"] == 0.05


def test_the_uploads_bucket_lets_the_web_page_put_from_the_api_origin(gpu: Deployment) -> None:
    uploads = gpu.one("gcp:storage/bucket:Bucket", name=BUCKETS["uploads"]).inputs
    assert uploads["cors"] == [{
        "origins": [f"https://europe-west4-{PROJECT}.cloudfunctions.net"],
        "methods": ["PUT"], "responseHeaders": ["Content-Type", "ETag", "x-goog-generation"],
        "maxAgeSeconds": 3600}]
    for role in ("work", "transcripts", "feedback", "sources"):
        bucket = gpu.one("gcp:storage/bucket:Bucket", name=BUCKETS[role]).inputs
        assert not bucket.get("cors"), role


# --- review in Label Studio --------------------------------------------------------------------


def review_function(deployment: Deployment) -> dict[str, Any]:
    config: dict[str, Any] = deployment.one(FUNCTION, name="review").inputs["serviceConfig"]
    return config


def test_without_label_studio_the_review_function_is_private_and_unscheduled(
        gpu: Deployment) -> None:
    config = review_function(gpu)
    assert config["ingressSettings"] == "ALLOW_INTERNAL_ONLY"
    assert not [b for b in gpu.bindings() if b.scope == "run_service" and b.target == "review"]
    assert {j.inputs["name"] for j in gpu.of_type(JOB)} == {"audiary-sweeper",
                                                             "audiary-learning"}
    env = config["environmentVariables"]
    assert env["AUDIARY_REVIEW_URL"] == REVIEW_URL
    assert env["AUDIARY_REVIEW_AUDIT_PERCENT"] == "5"
    assert "AUDIARY_LABEL_STUDIO_URL" not in env
    assert "AUDIARY_REVIEW_SYNC_ACCOUNTS" not in env
    assert not config.get("secretEnvironmentVariables")
    feedback = gpu.one("gcp:storage/bucket:Bucket", name=BUCKETS["feedback"]).inputs
    assert not feedback.get("cors")


def test_with_label_studio_the_review_function_gets_its_settings_and_secrets(
        review: Deployment) -> None:
    config = review_function(review)
    env = config["environmentVariables"]
    assert env["AUDIARY_LABEL_STUDIO_URL"] == "https://review.example.org:8443/"
    assert env["AUDIARY_REVIEW_URL"] == REVIEW_URL
    assert json.loads(env["AUDIARY_REVIEW_SYNC_ACCOUNTS"]) == [
        sa("pusher").removeprefix("serviceAccount:")]
    assert env["AUDIARY_REVIEW_AUDIT_PERCENT"] == "12.5"
    assert {(s["key"], s["secret"], s["version"]) for s in config["secretEnvironmentVariables"]} \
        == {("AUDIARY_LABEL_STUDIO_TOKEN", "audiary-label-studio-token", "latest"),
            ("AUDIARY_REVIEW_SECRET", "audiary-review-secret", "latest")}
    # Summarize queues finished jobs for review: it draws the same audit share.
    summarize = review.one(FUNCTION, name="summarize").inputs["serviceConfig"]
    assert summarize["environmentVariables"]["AUDIARY_REVIEW_AUDIT_PERCENT"] == "12.5"
    for other in review.of_type(FUNCTION):
        if other.inputs["name"] != "review":
            keys = {s["key"] for s in other.inputs["serviceConfig"].get(
                "secretEnvironmentVariables", [])}
            assert not keys & {"AUDIARY_LABEL_STUDIO_TOKEN", "AUDIARY_REVIEW_SECRET"}
    # The deploy waits until the review account can read the versions it mounts.
    waits_for = set(review.depends_on[(FUNCTION, "review")])
    secrets = review.stack.review_secrets
    assert {*secrets.accessors, *secrets.versions.values()} <= waits_for


def test_only_a_configured_review_function_is_public(review: Deployment) -> None:
    assert review_function(review)["ingressSettings"] == "ALLOW_ALL"
    public = [b for b in review.bindings() if b.member in PUBLIC]
    assert public == [Binding("allUsers", "roles/run.invoker", "run_service", "review")]
    assert {b.member for b in review.bindings()
            if b.scope == "run_service" and b.target == "review"} == {"allUsers"}
    for resource in review.resources:
        if "IamMember" not in resource.typ and "IAMMember" not in resource.typ:
            assert not PUBLIC.intersection(strings(resource.inputs)), resource.name


def test_cloud_scheduler_calls_the_review_sync_every_minute_for_the_functions_audience(
        review: Deployment) -> None:
    job = review.one(JOB, name="audiary-review-sync").inputs
    assert job["schedule"] == "* * * * *"
    assert job["timeZone"] == "Etc/UTC"
    pusher = sa("pusher").removeprefix("serviceAccount:")
    assert job["httpTarget"] == {
        "uri": f"{REVIEW_URL}/sync", "httpMethod": "POST",
        "oidcToken": {"serviceAccountEmail": pusher, "audience": REVIEW_URL},
    }
    assert job["attemptDeadline"] == "300s"
    assert job["retryConfig"] == {"retryCount": 0}
    # The function accepts exactly this token: its audience and its account.
    env = review_function(review)["environmentVariables"]
    assert job["httpTarget"]["oidcToken"]["audience"] == env["AUDIARY_REVIEW_URL"]
    assert pusher in json.loads(env["AUDIARY_REVIEW_SYNC_ACCOUNTS"])
    assert review.outputs["reviewUrl"] == f"{REVIEW_URL}/label-studio"


def test_the_feedback_bucket_lets_label_studio_play_the_clips(review: Deployment) -> None:
    feedback = review.one("gcp:storage/bucket:Bucket", name=BUCKETS["feedback"]).inputs
    assert feedback["cors"] == [{
        "origins": ["https://review.example.org:8443"],
        "methods": ["GET"],
        "responseHeaders": ["Accept-Ranges", "Content-Length", "Content-Range", "Content-Type",
                            "Range"],
        "maxAgeSeconds": 3600}]
    uploads = review.one("gcp:storage/bucket:Bucket", name=BUCKETS["uploads"]).inputs
    assert [rule["origins"] for rule in uploads["cors"]] == [
        [f"https://{REGION}-{PROJECT}.cloudfunctions.net"]]
    work = review.one("gcp:storage/bucket:Bucket", name=BUCKETS["work"]).inputs
    assert not work.get("cors")


@pulumi.runtime.test
def test_the_review_secrets_stay_secret(review: Deployment) -> pulumi.Output[Any]:
    values = (LABEL_STUDIO_TOKEN, REVIEW_SECRET)
    assert not any(v in rendered for v in values for rendered in strings(review.outputs))
    for resource in review.resources:
        if resource.typ != "gcp:secretmanager/secretVersion:SecretVersion":
            assert not any(v in rendered for v in values
                           for rendered in strings(resource.inputs)), resource.name
    versions = review.stack.review_secrets.versions
    assert set(versions) == {"AUDIARY_LABEL_STUDIO_TOKEN", "AUDIARY_REVIEW_SECRET"}

    async def check() -> None:
        for env, version in versions.items():
            assert await version.secret_data.is_secret(), env

    return pulumi.Output.from_input(check())
