"""The whole Audiary stack on Google Cloud: what `pulumi up` creates and how it is wired.

Flow (docs/DESIGN.md section 1): gs://<uploads>/inbox/ -> notification -> audio-uploaded ->
push -> ingest -> transcribe-chunk -> push -> transcriber (Cloud Run, GPU) -> transcript-ready
-> push -> summarize -> job-finished -> push -> webhooks. The API function serves HTTPS; the
review function takes Label Studio's webhooks and, called by Cloud Scheduler, syncs the review
queue with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
from pulumi_gcp import projects, pubsub, storage

from audiary import names
from audiary.adapters.whisper.engine import cpu_threads_per_worker
from audiary.settings import Settings
from infra.alerts import Alerts, AlertsArgs
from infra.apis import ProjectApis, ProjectApisArgs
from infra.buckets import Buckets, BucketsArgs
from infra.config import ACK_DEADLINE_S, REPO_ROOT, StackConfig, chunk_target_s
from infra.database import Firestore, FirestoreArgs
from infra.functions import CloudFunction, CloudFunctionArgs, SecretEnv
from infra.iam import Grant, Grants, GrantsArgs, ServiceAccounts, ServiceAccountsArgs
from infra.llm_keys import LlmKeys, MountedSecrets, ReviewSecrets, SecretsArgs
from infra.messaging import (
    PUBLISHER,
    PushSubscription,
    PushSubscriptionArgs,
    Topics,
    TopicsArgs,
    UploadNotification,
    UploadNotificationArgs,
)
from infra.registry import ImageRepository, ImageRepositoryArgs
from infra.schedule import LearningSchedule, ReviewSyncSchedule, ScheduleArgs, SweepSchedule
from infra.training import TrainingJob, TrainingJobArgs
from infra.transcriber import Transcriber, TranscriberArgs

OBJECT_USER = "roles/storage.objectUser"  # get, list, create, update, delete objects
OBJECT_VIEWER = "roles/storage.objectViewer"
DATASTORE_USER = "roles/datastore.user"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"  # noqa: S105 (a role name)
LOG_WRITER = "roles/logging.logWriter"
TRACE_AGENT = "roles/cloudtrace.agent"  # writes spans (Cloud Trace has no narrower scope)
REGISTRY_WRITER = "roles/artifactregistry.writer"
# Runtime settings the CLI environment (`cliEnv`) leaves out: a laptop neither counts delivery
# attempts nor sends its spans to Cloud Trace.
CLI_UNSET = frozenset({"AUDIARY_MAX_ATTEMPTS", "AUDIARY_OTEL_EXPORTER"})
# Cloud Scheduler runs the review sync every minute (the native stack's timer:
# AUDIARY_REVIEW_SYNC_INTERVAL_S, 60 s).
REVIEW_SYNC_SCHEDULE = "* * * * *"

# Service account key -> what it is for (account id `audiary-<key>`).
ACCOUNTS = {
    "ingest": "Runs the ingest function",
    "transcriber": "Runs the transcriber service",
    "summarize": "Runs the summarize function; the only reader of the LLM keys",
    "webhooks": "Runs the webhooks function",
    "deadletters": "Runs the deadletters function",
    "sweeper": "Runs the sweeper function",
    "api": "Runs the HTTPS API function",
    "review": "Runs the review function (Label Studio's webhooks and the review sync)",
    "learning": "Runs the learning function (datasets from corrections, starts training)",
    "trainer": "Runs the training job (fine-tunes, evaluates, promotes models)",
    "pusher": "Signs Pub/Sub push requests and Cloud Scheduler calls (OIDC) to the services",
    "builder": "Builds the function images (Cloud Build)",
}

# The accounts that run Audiary's code (not the pusher's signatures nor the builds).
TRACED = frozenset(ACCOUNTS) - {"pusher", "builder"}

# Push subscription -> (topic, receiver), exactly as audiary.local.stack creates them.
PUSH_ROUTES = (
    (names.SUBSCRIPTION_INGEST, names.TOPIC_AUDIO_UPLOADED, "ingest"),
    (names.SUBSCRIPTION_TRANSCRIBER, names.TOPIC_TRANSCRIBE_CHUNK, "transcriber"),
    (names.SUBSCRIPTION_SUMMARIZE, names.TOPIC_TRANSCRIPT_READY, "summarize"),
    (names.SUBSCRIPTION_WEBHOOKS, names.TOPIC_JOB_FINISHED, "webhooks"),
    (names.SUBSCRIPTION_WEBHOOK_DELIVERY, names.TOPIC_WEBHOOK_DELIVERY, "webhooks"),
    (names.SUBSCRIPTION_DATASETS, names.TOPIC_TRANSCRIPT_CORRECTED, "learning"),
    (names.SUBSCRIPTION_TRAINING, names.TOPIC_DATASET_READY, "learning"),
)


@dataclass(frozen=True)
class FunctionSpec:
    memory: str
    cpu: str
    timeout_s: int
    concurrency: int
    public_ingress: bool = False


FUNCTION_SPECS = {
    # Downloads an upload (up to 2 GB) and writes its 16 kHz WAV in /tmp, which is memory:
    # one request per instance.
    "ingest": FunctionSpec("4Gi", "2", ACK_DEADLINE_S, 1),
    # Mostly waits on LLM calls, so many share an instance.
    "summarize": FunctionSpec("1Gi", "1", ACK_DEADLINE_S, 8),
    "webhooks": FunctionSpec("512Mi", "1", ACK_DEADLINE_S, 16),
    # A few document writes per dead letter.
    "deadletters": FunctionSpec("512Mi", "1", 60, 16),
    # One sweep at a time: a query and a few writes and publishes per stalled job.
    "sweeper": FunctionSpec("512Mi", "1", 300, 1),
    # Streams audio URLs of up to 500 MB into the bucket, 8 MiB at a time (no /tmp copy):
    # about 10 MiB per request, so 20 at once stay far below the memory.
    "api": FunctionSpec("2Gi", "1", 300, 20, public_ingress=True),
    # A webhook is a few reads and writes and one object copy; a sync cuts each span it sends
    # to a WAV clip in memory (a minute of 16 kHz audio is 2 MB), so 8 at once fit easily.
    # Public ingress only with Label Studio configured (see Audiary._function).
    "review": FunctionSpec("1Gi", "1", 300, 8),
    # A dataset build cuts every corrected segment into a WAV clip in memory, one at a time;
    # one build per instance (two would race for the version anyway: they claim it).
    "learning": FunctionSpec("2Gi", "1", ACK_DEADLINE_S, 1),
}


def _member_key(member: str) -> str:
    """A stable resource-name fragment for an IAM member."""
    return re.sub(r"[^a-z0-9]+", "-", member.lower()).strip("-")


def api_invokers(cfg: StackConfig) -> dict[str, str]:
    """Who may call the API through Cloud Run IAM: allUsers only when apiPublic is set."""
    members = [*cfg.api_invokers, *(f"serviceAccount:{sa}" for sa in cfg.api_service_accounts)]
    if cfg.api_public:
        members.append("allUsers")
    return {_member_key(m): m for m in members}


class Audiary(pulumi.ComponentResource):
    """Every resource of one Audiary deployment; `outputs` are the stack outputs."""

    def __init__(self, name: str, cfg: StackConfig,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:stack:Audiary", name, None, opts)
        project, region = cfg.project, cfg.region
        self.apis = ProjectApis("apis", ProjectApisArgs(project),
                                pulumi.ResourceOptions(parent=self))
        after = pulumi.ResourceOptions(parent=self, depends_on=list(self.apis.services))

        self.accounts = ServiceAccounts("sa", ServiceAccountsArgs(project, ACCOUNTS), after)
        members = {key: sa.member for key, sa in self.accounts.accounts.items()}
        self.registry = ImageRepository("images", ImageRepositoryArgs(project, region), after)
        self.buckets = Buckets("buckets", BucketsArgs(
            project=project, location=cfg.bucket_location, uploads=cfg.uploads_bucket,
            work=cfg.work_bucket, transcripts=cfg.transcripts_bucket,
            feedback=cfg.feedback_bucket, datasets=cfg.datasets_bucket, models=cfg.models_bucket,
            sources=cfg.sources_bucket,
            work_ttl_days=cfg.work_ttl_days, force_destroy=cfg.force_destroy,
            web_origins=(cfg.api_origin,),
            review_origins=(cfg.label_studio_origin,) if cfg.label_studio_origin else (),
            labels=cfg.labels,
        ), after)
        self.topics = Topics("topics", TopicsArgs(project), after)
        self.notification = UploadNotification("inbox", UploadNotificationArgs(
            project, self.buckets.uploads.name, self.topics[names.TOPIC_AUDIO_UPLOADED]), after)
        self.firestore = Firestore("firestore", FirestoreArgs(
            project, cfg.firestore_location, delete_on_destroy=cfg.force_destroy), after)
        key_values = {env: value for env, value in (
            ("OPENAI_API_KEY", cfg.openai_api_key),
            ("ANTHROPIC_API_KEY", cfg.anthropic_api_key),
        ) if value is not None}
        self.llm_keys = LlmKeys("llm-keys", SecretsArgs(
            project, values=key_values, readers={"summarize": members["summarize"]},
            labels=cfg.labels), after)
        review_values = {env: value for env, value in (
            ("AUDIARY_LABEL_STUDIO_TOKEN", cfg.label_studio_token),
            ("AUDIARY_REVIEW_SECRET", cfg.review_secret),
        ) if value is not None}
        self.review_secrets = ReviewSecrets("review-secrets", SecretsArgs(
            project, values=review_values, readers={"review": members["review"]},
            labels=cfg.labels), after)
        # Created explicitly: the Pub/Sub service agent may not exist yet in a new project.
        pubsub_agent = projects.ServiceIdentity(
            "pubsub-agent", project=project, service="pubsub.googleapis.com", opts=after)

        common_env: dict[str, pulumi.Input[str]] = {
            "AUDIARY_PROJECT_ID": project,
            "AUDIARY_UPLOADS_BUCKET": self.buckets.uploads.name,
            "AUDIARY_WORK_BUCKET": self.buckets.work.name,
            "AUDIARY_TRANSCRIPTS_BUCKET": self.buckets.transcripts.name,
            "AUDIARY_FEEDBACK_BUCKET": self.buckets.feedback.name,
            "AUDIARY_DATASETS_BUCKET": self.buckets.datasets.name,
            "AUDIARY_MODELS_BUCKET": self.buckets.models.name,
            # A job fails after as many deliveries as Pub/Sub makes before dead-lettering.
            "AUDIARY_MAX_ATTEMPTS": str(cfg.max_delivery_attempts),
            # The model served when no promotion says otherwise (ingest sizes chunks for it).
            "AUDIARY_MODEL": cfg.served_model,
            # Spans go to Cloud Trace in AUDIARY_PROJECT_ID (the gcp extra: every function's
            # archive has it, and so must the transcriber and trainer images).
            "AUDIARY_OTEL_EXPORTER": "gcp",
        }
        self.training = self._training(cfg, common_env, members, after)
        if self.training is None:
            pulumi.log.warn(
                "audiary:trainerImage is not set: datasets build, but no training job is "
                "deployed. Build containers/trainer, set it, and deploy again.")
        self.functions = {
            function: self._function(function, cfg, common_env, members, after)
            for function in FUNCTION_SPECS
        }
        self.transcriber = self._transcriber(cfg, common_env, members, after)
        if self.transcriber is None:
            pulumi.log.warn(
                "audiary:transcriberImage is not set: the transcriber service and its "
                "subscription are not deployed yet. Run `make image`, then deploy again.")

        endpoints: dict[str, pulumi.Input[str]] = {f: fn.uri for f, fn in self.functions.items()}
        if self.transcriber is not None:
            endpoints["transcriber"] = self.transcriber.url
        self.subscriptions = {
            subscription: PushSubscription(subscription, PushSubscriptionArgs(
                project=project, subscription=subscription, topic=self.topics[topic],
                endpoint=endpoints[receiver], invoker_email=self.accounts["pusher"].email,
                pubsub_agent=pubsub_agent, max_delivery_attempts=cfg.max_delivery_attempts,
                ack_deadline_s=ACK_DEADLINE_S,
                dead_letter_endpoint=self.functions[names.DEADLETTERS].uri,
            ), after)
            for subscription, topic, receiver in PUSH_ROUTES
            if receiver in endpoints
        }
        sweeper_uri = self.functions["sweeper"].uri
        self.sweep = SweepSchedule("sweep", ScheduleArgs(
            project=project, region=region, schedule=cfg.sweep_schedule, uri=sweeper_uri,
            caller_email=self.accounts["pusher"].email, audience=sweeper_uri,
            attempt_deadline_s=FUNCTION_SPECS["sweeper"].timeout_s,
        ), after)
        learning_uri = self.functions["learning"].uri
        self.learning_schedule = LearningSchedule("learning", ScheduleArgs(
            project=project, region=region, schedule=cfg.learning_schedule,
            uri=pulumi.Output.concat(learning_uri, "/schedule"),
            caller_email=self.accounts["pusher"].email, audience=learning_uri,
            attempt_deadline_s=FUNCTION_SPECS["learning"].timeout_s,
        ), after)
        # Without Label Studio the sync has nowhere to send to, and the function is not public.
        self.review_sync = ReviewSyncSchedule("review-sync", ScheduleArgs(
            project=project, region=region, schedule=REVIEW_SYNC_SCHEDULE,
            uri=f"{cfg.review_url}/sync", caller_email=self.accounts["pusher"].email,
            # The function checks the token itself, against its AUDIARY_REVIEW_URL.
            audience=cfg.review_url, attempt_deadline_s=FUNCTION_SPECS["review"].timeout_s,
        ), after) if cfg.label_studio_url else None
        self.grants = Grants("grants", GrantsArgs(self._grants(cfg, members)), after)
        self.alerts = Alerts("alerts", AlertsArgs(
            project=project,
            dead_letter_subscriptions=[names.dead_letter_topic(s) for s in self.subscriptions],
            services=[*self.functions, *(["transcriber"] if self.transcriber else [])],
            error_rate_threshold=cfg.error_rate_threshold,
            emails=cfg.alert_emails,
        ), after)

        uploads = self.buckets.uploads.name
        self.outputs: dict[str, pulumi.Input[object]] = {
            "uploadsBucket": uploads,
            "workBucket": self.buckets.work.name,
            "transcriptsBucket": self.buckets.transcripts.name,
            "feedbackBucket": self.buckets.feedback.name,
            "datasetsBucket": self.buckets.datasets.name,
            "modelsBucket": self.buckets.models.name,
            "sourcesBucket": self.buckets.sources.name,
            "apiUrl": self.functions["api"].url,
            # Where Label Studio's webhook goes (`audiary review setup` registers it).
            "reviewUrl": (pulumi.Output.concat(self.functions["review"].url, "/label-studio")
                          if cfg.label_studio_url else ""),
            "transcriberUrl": self.transcriber.url if self.transcriber else "",
            "imageRepository": self.registry.url,
            "dropCommand": pulumi.Output.concat(
                "gcloud storage cp <audio-file> gs://", uploads, "/", names.PREFIX_INBOX),
            # For the audiary CLI on this machine (Application Default Credentials):
            # eval "$(pulumi stack output cliEnv)"; audiary drop x.m4a --wait; audiary notes ID
            "cliEnv": pulumi.Output.all(*common_env.values()).apply(
                lambda values: "export " + " ".join(
                    f"{k}={v}" for k, v in zip(common_env, values, strict=True)
                    if k not in CLI_UNSET
                ) + f" GOOGLE_CLOUD_PROJECT={project}"),
            "deadLetterSubscriptions": [
                s.dead_letter_subscription.name for s in self.subscriptions.values()],
        }
        self.register_outputs(self.outputs)

    def _function(self, function: str, cfg: StackConfig,
                  common_env: Mapping[str, pulumi.Input[str]],
                  members: Mapping[str, pulumi.Output[str]],
                  opts: pulumi.ResourceOptions) -> CloudFunction:
        spec = FUNCTION_SPECS[function]
        env = dict(common_env)
        secret_env: dict[str, SecretEnv] = {}
        depends_on: list[pulumi.Resource] = []
        invokers: dict[str, pulumi.Input[str]] = {"pusher": members["pusher"]}
        public_ingress = spec.public_ingress
        if function == "ingest":
            # Ingest cuts chunks to fit the served model's speed (services.ingest.chunk_target).
            env["AUDIARY_DEVICE"] = "cuda" if cfg.transcriber_gpu else "cpu"
            env["AUDIARY_TRANSCRIBER_CONCURRENCY"] = str(cfg.transcriber_concurrency)
            if cfg.cpu_realtime_factor and not cfg.transcriber_gpu:
                env["AUDIARY_REALTIME_FACTOR"] = f"{cfg.cpu_realtime_factor:g}"
            if (chunk_s := chunk_target_s(cfg)) is not None:
                env["AUDIARY_CHUNK_TARGET_S"] = f"{chunk_s:g}"
        if function == "sweeper":
            env["AUDIARY_STALL_AFTER_S"] = f"{cfg.stall_after_s:g}"
        if function in ("summarize", "review"):
            # Summarize queues each finished job's uncertain spans, and this share of the
            # confident jobs, for review; the review function runs with the same settings.
            env["AUDIARY_REVIEW_AUDIT_PERCENT"] = f"{cfg.review_audit_percent:g}"
        if function == "summarize":
            if cfg.llm_providers:
                env["AUDIARY_LLM_PROVIDERS"] = cfg.llm_providers
            secret_env, depends_on = _mount(self.llm_keys)
        if function == "review":
            env["AUDIARY_REVIEW_URL"] = cfg.review_url
            secret_env, depends_on = _mount(self.review_secrets)
            invokers = {}  # unconfigured, nothing calls it
            if cfg.label_studio_url:
                env["AUDIARY_LABEL_STUDIO_URL"] = cfg.label_studio_url
                env["AUDIARY_REVIEW_SYNC_ACCOUNTS"] = self.accounts["pusher"].email.apply(
                    lambda email: json.dumps([email]))
                # Label Studio cannot present a Google identity: Cloud Run lets everyone
                # through, and the function checks the shared secret (or, on /sync, the
                # scheduler's ID token) itself.
                public_ingress = True
                invokers = {_member_key("allUsers"): "allUsers"}
        if function == "learning":
            if self.training is not None:
                env["AUDIARY_TRAIN_JOB"] = self.training.name
            else:
                env["AUDIARY_TRAINING_ENABLED"] = "false"
        if function == "api":
            env["AUDIARY_API_AUDIENCE"] = cfg.api_url
            if cfg.api_service_accounts:
                env["AUDIARY_API_SERVICE_ACCOUNTS"] = json.dumps(list(cfg.api_service_accounts))
            if cfg.web_google_client_id:
                env["AUDIARY_WEB_GOOGLE_CLIENT_ID"] = cfg.web_google_client_id
                env["AUDIARY_WEB_USERS"] = json.dumps(list(cfg.web_users))
            invokers = dict(api_invokers(cfg))
        return CloudFunction(function, CloudFunctionArgs(
            project=cfg.project, region=cfg.region, function=function, repo_root=REPO_ROOT,
            build_dir=cfg.build_dir, sources_bucket=self.buckets.sources,
            runtime=cfg.functions_runtime,
            service_account_email=self.accounts[function].email,
            build_service_account=self.accounts["builder"].name,
            docker_repository=self.registry.repository.id,
            env=env, memory=spec.memory, cpu=spec.cpu, timeout_s=spec.timeout_s,
            concurrency=spec.concurrency, max_instances=cfg.functions_max_instances,
            public_ingress=public_ingress, secret_env=secret_env, invokers=invokers,
            labels=cfg.labels,
        ), pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=depends_on)))

    def _transcriber(self, cfg: StackConfig, common_env: Mapping[str, pulumi.Input[str]],
                     members: Mapping[str, pulumi.Output[str]],
                     opts: pulumi.ResourceOptions) -> Transcriber | None:
        if not cfg.transcriber_image:
            return None
        env = dict(common_env)
        if cfg.transcriber_gpu:
            # Explicit, so a revision that lost its GPU fails loudly instead of crawling on CPU.
            env.update(AUDIARY_DEVICE="cuda", AUDIARY_COMPUTE_TYPE="float16")
        else:
            # The instance's CPUs shared out among the decode workers, as the engine does
            # with the cores it sees (a container may see the host's).
            threads = cpu_threads_per_worker(0, Settings.model_fields["decode_workers"].default,
                                             "cpu", cores=cfg.transcriber_cpu)
            env.update(AUDIARY_DEVICE="cpu", AUDIARY_COMPUTE_TYPE="int8",
                       AUDIARY_CPU_THREADS=str(threads))
        if cfg.model_path:
            env["AUDIARY_MODEL_PATH"] = cfg.model_path
        env["AUDIARY_TRANSCRIBER_CONCURRENCY"] = str(cfg.transcriber_concurrency)
        return Transcriber("transcriber", TranscriberArgs(
            project=cfg.project, region=cfg.region, image=cfg.transcriber_image,
            service_account_email=self.accounts["transcriber"].email, env=env,
            gpu=cfg.transcriber_gpu,
            gpu_zonal_redundancy_disabled=cfg.gpu_zonal_redundancy_disabled,
            cpu=cfg.transcriber_cpu, memory_gib=cfg.transcriber_memory_gib,
            concurrency=cfg.transcriber_concurrency,
            min_instances=cfg.transcriber_min_instances,
            max_instances=cfg.transcriber_max_instances, timeout_s=ACK_DEADLINE_S,
            invokers={"pusher": members["pusher"]}, labels=cfg.labels,
        ), opts)

    def _training(self, cfg: StackConfig, common_env: Mapping[str, pulumi.Input[str]],
                  members: Mapping[str, pulumi.Output[str]],
                  opts: pulumi.ResourceOptions) -> TrainingJob | None:
        if not cfg.trainer_image:
            return None
        env = dict(common_env)
        env.update(AUDIARY_DEVICE="cuda" if cfg.trainer_gpu else "cpu")
        return TrainingJob("training", TrainingJobArgs(
            project=cfg.project, region=cfg.region, image=cfg.trainer_image,
            service_account_email=self.accounts["trainer"].email, env=env,
            gpu=cfg.trainer_gpu,
            gpu_zonal_redundancy_disabled=cfg.gpu_zonal_redundancy_disabled,
            launchers={"learning": members["learning"]}, labels=cfg.labels,
        ), opts)

    def _grants(self, cfg: StackConfig, members: Mapping[str, pulumi.Output[str]],
                ) -> dict[str, tuple[pulumi.Input[str], list[Grant]]]:
        """The role set of every runtime account, each bound on the narrowest resource."""
        b = self.buckets

        def on_bucket(role: str, bucket: storage.Bucket, label: str) -> Grant:
            return Grant(role, "bucket", bucket.name, label)

        def publish(topic: pubsub.Topic, label: str) -> Grant:
            return Grant(PUBLISHER, "topic", topic.id, label)

        firestore = Grant(DATASTORE_USER, "project", cfg.project, "project")
        transcriber = [
            on_bucket(OBJECT_USER, b.work, "work"),
            on_bucket(OBJECT_USER, b.transcripts, "transcripts"),
            # The registry's promoted model (services.models.serving_model).
            on_bucket(OBJECT_VIEWER, b.models, "models"),
            publish(self.topics[names.TOPIC_TRANSCRIPT_READY], names.TOPIC_TRANSCRIPT_READY),
            firestore,
        ]
        if model_bucket := _gcs_bucket(cfg.model_path):
            transcriber.append(Grant(OBJECT_VIEWER, "bucket", model_bucket, "model"))
        table = {
            # Reads the inbox and copies rejects into quarantine/ (a retry overwrites them).
            "ingest": [
                on_bucket(OBJECT_USER, b.uploads, "uploads"),
                on_bucket(OBJECT_USER, b.work, "work"),
                publish(self.topics[names.TOPIC_TRANSCRIBE_CHUNK], names.TOPIC_TRANSCRIBE_CHUNK),
                firestore,
            ],
            "transcriber": transcriber,
            "summarize": [
                on_bucket(OBJECT_VIEWER, b.transcripts, "transcripts"),
                publish(self.topics[names.TOPIC_JOB_FINISHED], names.TOPIC_JOB_FINISHED),
                firestore,
            ],
            # One delivery message per hook; failed deliveries go to the webhooks dead-letter
            # topic (audiary.services.notify).
            "webhooks": [
                publish(self.topics[names.TOPIC_WEBHOOK_DELIVERY], names.TOPIC_WEBHOOK_DELIVERY),
                publish(self.subscriptions[names.SUBSCRIPTION_WEBHOOKS].dead_letter_topic,
                        names.dead_letter_topic(names.SUBSCRIPTION_WEBHOOKS)),
                firestore,
            ],
            # Ends the job of a dead letter (FAILED), which announces it.
            "deadletters": [
                publish(self.topics[names.TOPIC_JOB_FINISHED], names.TOPIC_JOB_FINISHED),
                firestore,
            ],
            # Re-drives a stalled job's messages, or fails it (which announces it).
            "sweeper": [
                *(publish(self.topics[t], t) for t in (
                    names.TOPIC_AUDIO_UPLOADED, names.TOPIC_TRANSCRIBE_CHUNK,
                    names.TOPIC_TRANSCRIPT_READY, names.TOPIC_JOB_FINISHED)),
                firestore,
            ],
            # Signed uploads, jobs from URLs or inbox objects, downloads, deletes, feedback.
            "api": [
                on_bucket(OBJECT_USER, b.uploads, "uploads"),
                on_bucket(OBJECT_USER, b.work, "work"),
                on_bucket(OBJECT_USER, b.transcripts, "transcripts"),
                on_bucket(OBJECT_USER, b.feedback, "feedback"),
                publish(self.topics[names.TOPIC_AUDIO_UPLOADED], names.TOPIC_AUDIO_UPLOADED),
                # POST /v1/jobs/{id}/notes: a corrected transcript to summarize again.
                publish(self.topics[names.TOPIC_TRANSCRIPT_READY], names.TOPIC_TRANSCRIPT_READY),
                # Each correction that made a version goes on the corrections stream.
                publish(self.topics[names.TOPIC_TRANSCRIPT_CORRECTED],
                        names.TOPIC_TRANSCRIPT_CORRECTED),
                firestore,
                # Signs V4 upload URLs through the IAM signBlob API as itself (no key file).
                Grant(TOKEN_CREATOR, "service_account", self.accounts["api"].name, "self"),
            ],
            # Label Studio's corrections, as the API's feedback makes them (the next transcript
            # version, the userfeedback copy, the review state on the upload, a new note), and
            # the clips it cuts into the work bucket and signs GET URLs for, like the API.
            "review": [
                on_bucket(OBJECT_USER, b.uploads, "uploads"),
                on_bucket(OBJECT_USER, b.work, "work"),
                on_bucket(OBJECT_USER, b.transcripts, "transcripts"),
                on_bucket(OBJECT_USER, b.feedback, "feedback"),
                publish(self.topics[names.TOPIC_TRANSCRIPT_READY], names.TOPIC_TRANSCRIPT_READY),
                publish(self.topics[names.TOPIC_TRANSCRIPT_CORRECTED],
                        names.TOPIC_TRANSCRIPT_CORRECTED),
                firestore,
                Grant(TOKEN_CREATOR, "service_account", self.accounts["review"].name, "self"),
            ],
            # Cuts corrected segments from the canonical audio and machine transcripts into
            # dataset clips and manifests; announces ready datasets. Starting a training run is
            # its Cloud Run Developer binding on the job itself (infra/training.py).
            "learning": [
                on_bucket(OBJECT_VIEWER, b.work, "work"),
                on_bucket(OBJECT_VIEWER, b.transcripts, "transcripts"),
                on_bucket(OBJECT_USER, b.datasets, "datasets"),
                publish(self.topics[names.TOPIC_DATASET_READY], names.TOPIC_DATASET_READY),
                firestore,
            ],
            # Reads a dataset's clips, writes candidate models, records evaluations and
            # promotions.
            "trainer": [
                on_bucket(OBJECT_VIEWER, b.datasets, "datasets"),
                on_bucket(OBJECT_USER, b.models, "models"),
                firestore,
            ],
            "builder": [
                Grant(LOG_WRITER, "project", cfg.project, "project"),
                Grant(REGISTRY_WRITER, "repository", self.registry.repository.repository_id,
                      "images", location=cfg.region),
                # Cloud Functions stages the source in its own gcf-v2-* buckets, which this
                # program does not manage: read access is limited to those and ours.
                Grant(OBJECT_VIEWER, "project", cfg.project, "sources", condition={
                    "title": "function-sources-only",
                    "description": "Function source buckets only",
                    "expression": (
                        'resource.name.startsWith("projects/_/buckets/gcf-v2-sources-") || '
                        'resource.name.startsWith("projects/_/buckets/gcf-v2-uploads-") || '
                        f'resource.name.startsWith("projects/_/buckets/{cfg.sources_bucket}")'
                    ),
                }),
            ],
        }
        # Every account that runs Audiary's code writes its spans to Cloud Trace.
        tracing = Grant(TRACE_AGENT, "project", cfg.project, "project")
        return {key: (members[key], [*grants, *([tracing] if key in TRACED else [])])
                for key, grants in table.items()}


def _mount(secrets: MountedSecrets) -> tuple[dict[str, SecretEnv], list[pulumi.Resource]]:
    """The configured secrets of a set as secret environment, and what the function must wait
    for: the deploy checks that the runtime account can read the secrets it mounts."""
    return ({env: SecretEnv(secrets.secrets[env].secret_id) for env in secrets.configured},
            [*secrets.accessors, *secrets.versions.values()])


def _gcs_bucket(location: str | None) -> str | None:
    """The bucket of a gs:// model location, or None for a local path or hub name."""
    if location and location.startswith("gs://"):
        return location.removeprefix("gs://").split("/", 1)[0]
    return None


def build(cfg: StackConfig) -> Audiary:
    """Declare the whole stack for `cfg`."""
    return Audiary("audiary", cfg)
