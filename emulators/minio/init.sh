#!/bin/sh
# One-shot MinIO set-up for the compose profile. It runs in the S3 server's own image (Silo,
# the maintained MinIO fork), whose `mc` is PGSTY's fork of the MinIO client, same commands:
# the pipeline buckets (names as in src/audiary/names.py), the `production` and `userfeedback`
# buckets for Label Studio, and the bucket notification that plays GCS's OBJECT_FINALIZE
# notification: new objects under inbox/ of the uploads bucket go to the webhook target BRIDGE
# (configured on the minio service by MINIO_NOTIFY_WEBHOOK_*_BRIDGE), i.e. the bridge service.
# Every step is idempotent, so `docker compose up` may run it again.
set -eu

mc alias set local "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"

for bucket in audiary-uploads audiary-work audiary-transcripts audiary-userfeedback \
              audiary-datasets audiary-models production userfeedback; do
    mc mb --ignore-existing "local/$bucket"
done

mc event add local/audiary-uploads arn:minio:sqs::BRIDGE:webhook \
    --event put --prefix inbox/ --ignore-existing
mc event list local/audiary-uploads
