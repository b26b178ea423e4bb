"""`BlobStore` on Google Cloud Storage (or gcp-storage-emulator via STORAGE_EMULATOR_HOST)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Self

import google.auth.transport.requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud.storage import Client as StorageClient

from audiary.errors import NotFoundError
from audiary.ports import BlobInfo, BlobStore, SignedUpload
from audiary.settings import Settings

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Resumable uploads of streams go in parts of this size (a multiple of 256 KiB).
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024


def _endpoint_url(endpoint: str) -> str:
    # STORAGE_EMULATOR_HOST is documented with a scheme, but host:port is common too.
    return endpoint if "://" in endpoint else f"http://{endpoint}"


class GcsBlobStore(BlobStore):
    """Objects in GCS buckets. With `endpoint` (an emulator) requests are anonymous."""

    def __init__(
        self,
        project: str,
        *,
        endpoint: str | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self._endpoint = _endpoint_url(endpoint) if endpoint else None
        if endpoint:
            self._client = StorageClient(
                project=project,
                credentials=credentials or AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": _endpoint_url(endpoint)},
            )
        else:
            self._client = StorageClient(project=project, credentials=credentials)
        self.project = project

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.project_id, endpoint=settings.storage_emulator_host)

    @staticmethod
    def _info(blob: Any) -> BlobInfo:
        return BlobInfo(
            bucket=blob.bucket.name,
            key=blob.name,
            size=int(blob.size or 0),
            generation=str(blob.generation),
            content_type=blob.content_type,
            metadata=dict(blob.metadata or {}),
        )

    def ensure_bucket(self, bucket: str) -> None:
        if self._client.lookup_bucket(bucket) is not None:
            return
        # Conflict: created meanwhile by someone else, which is what we wanted.
        with contextlib.suppress(gexc.Conflict):
            self._client.create_bucket(bucket, project=self.project)

    def _blob(self, bucket: str, key: str) -> Any:
        return self._client.bucket(bucket).blob(key)

    def _upload(self, bucket: str, key: str, metadata: Mapping[str, str] | None,
                send: Callable[[Any], None]) -> BlobInfo:
        blob = self._blob(bucket, key)
        blob.metadata = dict(metadata) if metadata else None
        try:
            send(blob)
        except gexc.NotFound as exc:
            raise NotFoundError(f"bucket gs://{bucket} does not exist") from exc
        return self._info(blob)

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        return self._upload(bucket, key, metadata, lambda blob: blob.upload_from_string(
            data, content_type=content_type or DEFAULT_CONTENT_TYPE))

    def upload_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        return self._upload(bucket, key, metadata, lambda blob: blob.upload_from_filename(
            str(path), content_type=content_type or DEFAULT_CONTENT_TYPE))

    def upload_stream(
        self,
        bucket: str,
        key: str,
        stream: IO[bytes],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        def send(blob: Any) -> None:
            # A resumable upload in chunks of this size; the object is finalized only by the
            # last chunk, so a stream that fails part way leaves none.
            blob.chunk_size = UPLOAD_CHUNK_BYTES
            blob.upload_from_file(_Counted(stream),
                                  content_type=content_type or DEFAULT_CONTENT_TYPE)

        return self._upload(bucket, key, metadata, send)

    def get(self, bucket: str, key: str) -> bytes:
        try:
            data: bytes = self._blob(bucket, key).download_as_bytes()
        except gexc.NotFound as exc:
            raise NotFoundError(f"gs://{bucket}/{key} does not exist") from exc
        return data

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        try:
            self._blob(bucket, key).download_to_filename(str(path))
        except gexc.NotFound as exc:
            path.unlink(missing_ok=True)
            raise NotFoundError(f"gs://{bucket}/{key} does not exist") from exc

    def read_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"bad byte range [{start}, {end})")
        if start == end:
            return b""
        try:
            # A ranged GET (Range: bytes=start-(end-1)); the library's `end` is inclusive.
            data: bytes = self._blob(bucket, key).download_as_bytes(start=start, end=end - 1)
        except gexc.NotFound as exc:
            raise NotFoundError(f"gs://{bucket}/{key} does not exist") from exc
        except gexc.RequestRangeNotSatisfiable:
            return b""  # start at or past the end: an empty slice, as for a Python bytes
        return data

    def stat(self, bucket: str, key: str) -> BlobInfo | None:
        try:
            blob = self._client.bucket(bucket).get_blob(key)
        except gexc.NotFound:
            return None  # the bucket itself is missing
        return None if blob is None else self._info(blob)

    def copy(self, bucket: str, key: str, dest_bucket: str, dest_key: str) -> BlobInfo:
        source = self._blob(bucket, key)
        dest = self._blob(dest_bucket, dest_key)
        try:
            # rewrite, not copyTo: copyTo fails on large objects across locations or classes.
            token, _, _ = dest.rewrite(source)
            while token is not None:
                token, _, _ = dest.rewrite(source, token=token)
        except gexc.NotFound as exc:
            raise NotFoundError(
                f"cannot copy gs://{bucket}/{key} to gs://{dest_bucket}/{dest_key}: "
                "the source object or a bucket does not exist"
            ) from exc
        return self._info(dest)

    def list(self, bucket: str, prefix: str = "") -> list[BlobInfo]:
        try:
            blobs = [self._info(b) for b in self._client.list_blobs(bucket, prefix=prefix or None)]
        except gexc.NotFound as exc:
            raise NotFoundError(f"bucket gs://{bucket} does not exist") from exc
        return sorted(blobs, key=lambda info: info.key)

    def delete(self, bucket: str, key: str) -> None:
        # NotFound: already gone, and deleting is idempotent.
        with contextlib.suppress(gexc.NotFound):
            self._blob(bucket, key).delete()

    def update_metadata(self, bucket: str, key: str, metadata: Mapping[str, str]) -> BlobInfo:
        blob = self._client.bucket(bucket).get_blob(key)
        if blob is None:
            raise NotFoundError(f"gs://{bucket}/{key} does not exist")
        blob.metadata = {**(blob.metadata or {}), **metadata}
        blob.patch()
        return self._info(blob)

    def _signing(self) -> dict[str, Any]:
        """How URLs are signed: on Google Cloud the function's service account signs through
        the IAM signBlob API (no key file); against the emulator, which checks no signature, a
        throwaway key signs."""
        if self._endpoint:
            return {"credentials": _throwaway_signer(), "api_access_endpoint": self._endpoint}
        credentials = self._client._credentials
        credentials.refresh(google.auth.transport.requests.Request())
        return {"service_account_email": credentials.service_account_email,
                "access_token": credentials.token}

    def signed_put_url(
        self, bucket: str, key: str, *, content_type: str, size: int, expires_s: int
    ) -> SignedUpload:
        """A V4 signed URL; content type and an exact length range are part of the signature.

        On Google Cloud the function's service account signs through the IAM signBlob API
        (no key file). Against the emulator, which checks no signature, a throwaway key signs.
        """
        headers = {"Content-Type": content_type, "x-goog-content-length-range": f"{size},{size}"}
        url = self._blob(bucket, key).generate_signed_url(
            version="v4", expiration=timedelta(seconds=expires_s), method="PUT",
            content_type=content_type, headers={"x-goog-content-length-range": f"{size},{size}"},
            **self._signing(),
        )
        return SignedUpload(url=url, method="PUT", headers=headers,
                            expires_at=datetime.now(UTC) + timedelta(seconds=expires_s))

    def signed_get_url(self, bucket: str, key: str, *, expires_s: int) -> str:
        """A V4 signed GET URL (signed like `signed_put_url`'s)."""
        return str(self._blob(bucket, key).generate_signed_url(
            version="v4", expiration=timedelta(seconds=expires_s), method="GET",
            **self._signing()))


@functools.cache
def _throwaway_signer() -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.oauth2 import service_account

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return service_account.Credentials.from_service_account_info({  # type: ignore[no-untyped-call]
        "type": "service_account", "client_email": "emulator@audiary-local.iam.gserviceaccount.com",
        "private_key": pem, "token_uri": "https://oauth2.googleapis.com/token",
    })


class _Counted:
    """A read-only stream that knows its position: the resumable upload asks `tell()` where it
    starts, which a network stream cannot answer itself."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position
