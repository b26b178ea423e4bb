"""A fresh `Stores` on the in-memory adapters (not cached, unlike `wiring.stores`)."""

from __future__ import annotations

from audiary.adapters.memory import (
    MemoryBlobStore,
    MemoryJobStore,
    MemoryKeyStore,
    MemoryNoteStore,
    MemoryPublisher,
)
from audiary.adapters.url_fetcher import SafeUrlFetcher
from audiary.adapters.webhook_sender import HttpWebhookSender
from audiary.ports import Stores
from audiary.settings import Settings


def memory_stores(settings: Settings) -> Stores:
    urls = SafeUrlFetcher(allow_private=settings.allow_private_urls,
                          allow_http=settings.allow_http_urls)
    return Stores(
        settings, MemoryBlobStore(), MemoryPublisher(), MemoryJobStore(), MemoryNoteStore(),
        MemoryKeyStore(), HttpWebhookSender(urls, attempts=settings.webhook_attempts), urls,
    )
