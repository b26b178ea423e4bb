"""`BlobStore` on S3-compatible storage (MinIO, moto) through boto3.

The generation is the object's ETag (without quotes). It changes whenever the bytes change;
rewriting identical bytes keeps it, unlike a GCS generation. The ETag is used rather than a
VersionId because listings carry ETags but not version ids, and buckets need not be versioned.

S3 stores user metadata as HTTP headers, so metadata keys come back lower-cased: use
lower-case keys. Listings carry no content type or metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import ClientError

from audiary.errors import NotFoundError
from audiary.ports import BlobInfo, BlobStore, SignedUpload
from audiary.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_CONTENT_TYPE = "application/octet-stream"
_MISSING = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


def _etag(value: str) -> str:
    return value.strip('"')


class S3BlobStore(BlobStore):
    """Objects in S3 buckets, with path-style addresses so that MinIO and moto work."""

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.region = region
        self._client: S3Client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"mode": "standard"},
                signature_version="s3v4",
            ),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            endpoint_url=settings.s3_endpoint_url,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            region=settings.s3_region,
        )

    def ensure_bucket(self, bucket: str) -> None:
        try:
            self._client.head_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if not _missing(exc):
                raise
        try:
            if self.region == "us-east-1":
                # us-east-1 rejects an explicit LocationConstraint.
                self._client.create_bucket(Bucket=bucket)
            else:
                self._client.create_bucket(
                    Bucket=bucket,
                    CreateBucketConfiguration={"LocationConstraint": self.region},  # type: ignore[typeddict-item]
                )
        except self._client.exceptions.BucketAlreadyOwnedByYou:
            pass  # created meanwhile: that is what we wanted

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        try:
            response = self._client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentType=content_type or DEFAULT_CONTENT_TYPE,
                Metadata=dict(metadata or {}),
            )
        except ClientError as exc:
            if _missing(exc):
                raise NotFoundError(f"bucket s3://{bucket} does not exist") from exc
            raise
        return BlobInfo(
            bucket=bucket,
            key=key,
            size=len(data),
            generation=_etag(response["ETag"]),
            content_type=content_type or DEFAULT_CONTENT_TYPE,
            metadata={k.lower(): v for k, v in (metadata or {}).items()},
        )

    def upload_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        try:
            # The managed transfer switches to multipart upload for large files.
            self._client.upload_file(
                str(path),
                bucket,
                key,
                ExtraArgs={
                    "ContentType": content_type or DEFAULT_CONTENT_TYPE,
                    "Metadata": dict(metadata or {}),
                },
            )
        except S3UploadFailedError as exc:
            if "NoSuchBucket" in str(exc):
                raise NotFoundError(f"bucket s3://{bucket} does not exist") from exc
            raise
        return self._stat_or_raise(bucket, key)

    def upload_stream(
        self,
        bucket: str,
        key: str,
        stream: IO[bytes],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        try:
            # Multipart in 8 MiB parts; a stream that fails aborts the upload (no object).
            self._client.upload_fileobj(
                stream, bucket, key,
                ExtraArgs={"ContentType": content_type or DEFAULT_CONTENT_TYPE,
                           "Metadata": dict(metadata or {})},
            )
        except S3UploadFailedError as exc:
            if "NoSuchBucket" in str(exc):
                raise NotFoundError(f"bucket s3://{bucket} does not exist") from exc
            raise
        return self._stat_or_raise(bucket, key)

    def get(self, bucket: str, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                raise NotFoundError(f"s3://{bucket}/{key} does not exist") from exc
            raise

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        try:
            self._client.download_file(bucket, key, str(path))
        except ClientError as exc:
            if _missing(exc):
                path.unlink(missing_ok=True)
                raise NotFoundError(f"s3://{bucket}/{key} does not exist") from exc
            raise

    def read_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"bad byte range [{start}, {end})")
        if start == end:
            return b""
        try:
            response = self._client.get_object(
                Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}"
            )
        except ClientError as exc:
            if _missing(exc):
                raise NotFoundError(f"s3://{bucket}/{key} does not exist") from exc
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # start at or past the end: an empty slice, as for a Python bytes
            raise
        return response["Body"].read()

    def stat(self, bucket: str, key: str) -> BlobInfo | None:
        try:
            head = self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return BlobInfo(
            bucket=bucket,
            key=key,
            size=head["ContentLength"],
            generation=_etag(head["ETag"]),
            content_type=head.get("ContentType"),
            metadata=dict(head.get("Metadata", {})),
        )

    def _stat_or_raise(self, bucket: str, key: str) -> BlobInfo:
        info = self.stat(bucket, key)
        if info is None:
            raise NotFoundError(f"s3://{bucket}/{key} vanished right after it was written")
        return info

    def copy(self, bucket: str, key: str, dest_bucket: str, dest_key: str) -> BlobInfo:
        try:
            # Single-request copy works up to 5 GB, above the upload size cap; it keeps
            # content type and metadata (MetadataDirective COPY).
            self._client.copy_object(
                Bucket=dest_bucket, Key=dest_key, CopySource={"Bucket": bucket, "Key": key}
            )
        except ClientError as exc:
            if _missing(exc):
                raise NotFoundError(
                    f"cannot copy s3://{bucket}/{key} to s3://{dest_bucket}/{dest_key}: "
                    "the source object or a bucket does not exist"
                ) from exc
            raise
        return self._stat_or_raise(dest_bucket, dest_key)

    def list(self, bucket: str, prefix: str = "") -> list[BlobInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        infos: list[BlobInfo] = []
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                infos.extend(
                    BlobInfo(
                        bucket=bucket,
                        key=item["Key"],
                        size=item["Size"],
                        generation=_etag(item["ETag"]),
                    )
                    for item in page.get("Contents", [])
                )
        except ClientError as exc:
            if _missing(exc):
                raise NotFoundError(f"bucket s3://{bucket} does not exist") from exc
            raise
        return sorted(infos, key=lambda info: info.key)

    def delete(self, bucket: str, key: str) -> None:
        try:
            self._client.delete_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if not _missing(exc):
                raise

    def update_metadata(self, bucket: str, key: str, metadata: Mapping[str, str]) -> BlobInfo:
        current = self._stat_or_raise(bucket, key)
        # S3 metadata cannot be patched: copy the object onto itself with the merged set.
        self._client.copy_object(
            Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key},
            Metadata={**current.metadata, **{k.lower(): v for k, v in metadata.items()}},
            MetadataDirective="REPLACE",
            ContentType=current.content_type or DEFAULT_CONTENT_TYPE,
        )
        return self._stat_or_raise(bucket, key)

    def signed_put_url(
        self, bucket: str, key: str, *, content_type: str, size: int, expires_s: int
    ) -> SignedUpload:
        # Content type and length are signed: an upload of another type or size is refused.
        url = self._client.generate_presigned_url(
            "put_object",
            Params={"Bucket": bucket, "Key": key, "ContentType": content_type,
                    "ContentLength": size},
            ExpiresIn=expires_s,
        )
        return SignedUpload(
            url=url, method="PUT",
            headers={"Content-Type": content_type, "Content-Length": str(size)},
            expires_at=datetime.now(UTC) + timedelta(seconds=expires_s),
        )

    def signed_get_url(self, bucket: str, key: str, *, expires_s: int) -> str:
        return str(self._client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s))
