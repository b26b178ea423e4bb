"""Firestore in native mode: the database, the composite indexes the code queries, a TTL policy.

Queries and the indexes they need (src/audiary/adapters/firestore.py):
- `FirestoreJobStore.list_jobs`: jobs where owner == X order by timestamps.RECEIVED desc
  (optionally also timestamps.RECEIVED < cursor) -> composite (owner asc, RECEIVED desc).
- feedback where job_id == X, webhooks where owner == X, chunks order by index: single-field
  queries, served by Firestore's automatic single-field indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_gcp import firestore

from audiary import names
from audiary.domain.jobs import JobStatus
from infra.options import child_options

DATABASE = "(default)"
RECEIVED_FIELD = f"timestamps.{JobStatus.RECEIVED.value}"
# (collection, [(field, order), ...]) for every composite index.
COMPOSITE_INDEXES: Sequence[tuple[str, Sequence[tuple[str, str]]]] = (
    (names.COLLECTION_JOBS, (("owner", "ASCENDING"), (RECEIVED_FIELD, "DESCENDING"))),
)
# Cached notes expire: Firestore deletes an `llm-cache` document once its `expires_at`
# (a timestamp) has passed. Documents without the field are kept, and FirestoreNoteStore does
# not write it yet: until put_cached sets it, the policy removes nothing.
TTL_COLLECTION = names.COLLECTION_LLM_CACHE
TTL_FIELD = "expires_at"


@dataclass(frozen=True)
class FirestoreArgs:
    project: str
    location: str
    # True: `pulumi down` deletes the database and its documents; False: it is left behind.
    delete_on_destroy: bool = False


class Firestore(pulumi.ComponentResource):
    """The `(default)` database with COMPOSITE_INDEXES and the TTL policy."""

    def __init__(self, name: str, args: FirestoreArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("audiary:data:Firestore", name, None, opts)
        self.database = firestore.Database(
            name,
            project=args.project,
            name=DATABASE,
            location_id=args.location,
            type="FIRESTORE_NATIVE",
            delete_protection_state=(
                "DELETE_PROTECTION_DISABLED" if args.delete_on_destroy
                else "DELETE_PROTECTION_ENABLED"),
            deletion_policy="DELETE" if args.delete_on_destroy else "ABANDON",
            opts=child_options(self, opts),
        )
        after_db = child_options(self, opts, self.database)
        self.indexes = [
            firestore.Index(
                f"{name}-{collection}-{'-'.join(f.split('.')[-1].lower() for f, _ in fields)}",
                project=args.project,
                database=self.database.name,
                collection=collection,
                query_scope="COLLECTION",
                fields=[{"field_path": f, "order": order} for f, order in fields],
                opts=after_db,
            )
            for collection, fields in COMPOSITE_INDEXES
        ]
        self.ttl = firestore.Field(
            f"{name}-{TTL_COLLECTION}-ttl",
            project=args.project,
            database=self.database.name,
            collection=TTL_COLLECTION,
            field=TTL_FIELD,
            ttl_config={},
            # No single-field index on an expiry timestamp: nothing queries it, and indexing
            # monotonically increasing values creates write hotspots.
            index_config={},
            opts=after_db,
        )
        self.register_outputs({"database": self.database.name})
