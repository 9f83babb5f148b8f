"""The ledger: done-markers in the output store, one per finished chunk, written after its data.

Layout: ``<ledger url>/<stage>/<identity>/<chunk id>.json``, plus ``params.json`` beside the
markers recording what the identity stands for. A rerun lists the markers once per stage and
skips those chunks; a changed parameter changes the identity, so nothing is skipped.

A marker records what its task wrote: ``"objects": {<url>: {<key>: <stored size>}}`` (see
`written_objects`), which resume and `petavox verify` check against a listing of the store.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from petavox.tasks.core import objects
from petavox.tasks.core.storage import StorageContext

PARAMS_FILE = "params.json"
GLOBAL_STEP = "global"


@dataclass(frozen=True)
class Ledger:
    """Done-markers under `url` (usually ``<run output>/ledger``)."""

    url: str
    context: StorageContext = StorageContext()

    def prefix(self, stage: str, ident: str) -> str:
        return f"{stage}/{ident}/"

    def record_params(self, stage: str, ident: str, spec: dict[str, Any]) -> None:
        key = self.prefix(stage, ident) + PARAMS_FILE
        # (`get`, not `exists`: cloud-files' exists needs a GCS batch API emulators lack)
        if objects.get(self.url, key, self.context) is None:
            record = {"stage": stage, "identity": ident, "spec": spec}
            objects.put_json(self.url, key, record, self.context)

    def done(self, stage: str, ident: str) -> set[str]:
        """Ids of the chunks (and global steps) already finished for this stage identity."""
        prefix = self.prefix(stage, ident)
        names = set()
        for key in objects.list_keys(self.url, prefix, self.context):
            name = key[len(prefix) :] if key.startswith(prefix) else key.rsplit("/", 1)[-1]
            if name.endswith(".json") and name != PARAMS_FILE:
                names.add(name[: -len(".json")])
        return names

    def records(self, stage: str, ident: str, ids: Iterable[str]) -> dict[str, dict | None]:
        """The markers of chunks `ids` (None for one that is gone or unreadable)."""
        prefix = self.prefix(stage, ident)
        found = objects.get_many(self.url, [f"{prefix}{i}.json" for i in ids], self.context)
        records: dict[str, dict | None] = {}
        for key, data in found.items():
            chunk_id = key[len(prefix) : -len(".json")]
            try:
                records[chunk_id] = json.loads(data) if data else None
            except ValueError:
                records[chunk_id] = None
        return records

    def mark_done(self, stage: str, ident: str, chunk_id: str, record: dict[str, Any]) -> None:
        record = {
            "chunk": chunk_id,
            "finished": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **record,
        }
        objects.put_json(
            self.url, self.prefix(stage, ident) + f"{chunk_id}.json", record, self.context
        )


def written_objects(written: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """What `objects.recording_writes` collected, as a marker's ``objects`` field."""
    grouped: dict[str, dict[str, int]] = {}
    for (url, key), size in sorted(written.items()):
        grouped.setdefault(url, {})[key] = size
    return grouped
