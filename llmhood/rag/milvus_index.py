"""The Milvus backend of the vector index: Milvus Lite in the version, or a Milvus server.

* Milvus Lite (the default): an embedded database, the directory `milvus.db` inside the
  version directory, so it is written, switched and deleted with the version like every
  other file. pymilvus starts it in-process behind a local gRPC port; it holds a LOCK file
  inside milvus.db while open, so `close` stops it (not only the client), or a later open
  of the same files, in this process or another, would find them locked.
* A server (`milvus_uri`, e.g. http://127.0.0.1:19530; scripts/milvus-server.sh starts
  one): one collection per version, named by the knowledge base, dropped by `drop` once
  the next version is in use. The URI is used as given; nothing is probed or guessed.

Schema: id INT64 primary key (= row id), vector FLOAT_VECTOR(dim), source VARCHAR. The
vector index is FLAT with metric IP: exact, so Milvus ranks like the other backends, and
a knowledge base's size (~10^5 chunks) does not need an approximate one. The collection
is created with Strong consistency, so a search right after the build sees every row.

A prefix filter is `source like "<prefix>%"` when the prefix has no character that LIKE
treats specially. Milvus 2.3 has no escape for `%` and `_` in a LIKE pattern (a backslash
before them matches nothing) and Milvus Lite follows pyarrow's rules instead, so a prefix
containing `%`, `_` or a backslash is sent as the list of its row ids (`id in [...]`),
computed from the sources: exact on every version, just a longer expression. Only `"`
needs escaping in the string literal, as `\\"`. A prefix matching no row returns at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from llmhood.errors import LLMHoodError
from llmhood.rag.index import PrefixRows, empty_result

LITE_FILE = "milvus.db"
CONNECT_TIMEOUT = 5.0  # seconds; a server that does not answer by then is reported down
BATCH = 4096  # rows per insert: well under the 64 MiB gRPC message limit at dim 1024
MAX_TOPK = 16384  # Milvus refuses a larger limit
MAX_SOURCE = 1024  # characters of a source path, the VARCHAR's max_length
LIKE_SPECIAL = ("%", "_", "\\")


def import_pymilvus() -> ModuleType:
    try:
        import pymilvus
    except ImportError as error:
        raise LLMHoodError(
            "The milvus backend needs pymilvus and Milvus Lite: pip install 'llmhood[milvus]', "
            "or use --backend builtin."
        ) from error
    return pymilvus


def check_uri(uri: str) -> None:
    if not uri.startswith(("http://", "https://")):
        raise LLMHoodError(
            f"--milvus-uri {uri!r} is not a server address: give http://HOST:PORT "
            "(e.g. http://127.0.0.1:19530), or leave it out to use Milvus Lite."
        )


class Connection:
    """A MilvusClient for a server URI or a Milvus Lite path; closing it stops Milvus Lite."""

    def __init__(self, uri: str | None, directory: Path):
        pymilvus = import_pymilvus()
        self.lite_path = None if uri else str(directory / LITE_FILE)
        if uri:
            check_uri(uri)
        target = uri or self.lite_path
        try:
            self.client = pymilvus.MilvusClient(uri=target, timeout=CONNECT_TIMEOUT)
        except pymilvus.MilvusException as error:
            if self.lite_path:
                raise LLMHoodError(f"Milvus Lite could not open {target}: {error}") from error
            raise LLMHoodError(
                f"The Milvus server at {uri} did not answer within {CONNECT_TIMEOUT:.0f} s. "
                "Start one (scripts/milvus-server.sh start DATA_DIR) and try again, or leave "
                "out --milvus-uri to use Milvus Lite, a file inside the knowledge base."
            ) from error

    def close(self) -> None:
        self.client.close()
        if self.lite_path:
            from milvus_lite import server_manager_instance

            server_manager_instance.release_server(self.lite_path)


def build(
    vectors: np.ndarray, sources: Sequence[str], directory: Path, uri: str | None, name: str
) -> dict:
    """Create the collection `name` with every row of `vectors` ([n, dim] float32)."""
    pymilvus = import_pymilvus()
    if any(len(source) > MAX_SOURCE for source in sources):
        raise LLMHoodError(f"A source path is longer than {MAX_SOURCE} characters: shorten it.")
    connection = Connection(uri, directory)
    client = connection.client
    try:
        if client.has_collection(name):  # left by a build that died before its switch
            client.drop_collection(name)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", pymilvus.DataType.INT64, is_primary=True)
        schema.add_field("vector", pymilvus.DataType.FLOAT_VECTOR, dim=vectors.shape[1])
        schema.add_field("source", pymilvus.DataType.VARCHAR, max_length=MAX_SOURCE)
        index_params = client.prepare_index_params()
        index_params.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        client.create_collection(
            name, schema=schema, index_params=index_params, consistency_level="Strong"
        )
        for start in range(0, len(sources), BATCH):
            end = min(start + BATCH, len(sources))
            batch = np.asarray(vectors[start:end], dtype=np.float32)  # [≤BATCH, dim]
            rows = [
                {"id": row, "vector": vector, "source": sources[row]}
                for row, vector in enumerate(batch.tolist(), start)
            ]
            client.insert(name, rows)
        client.flush(name)
    finally:
        connection.close()
    return {"kind": MilvusIndex.kind, "uri": uri, "collection": name}


def drop(settings: dict) -> None:
    """Drop a server collection; a Milvus Lite database goes with its version directory."""
    if settings["uri"] is None:
        return
    connection = Connection(settings["uri"], Path())
    try:
        if connection.client.has_collection(settings["collection"]):
            connection.client.drop_collection(settings["collection"])
    finally:
        connection.close()


def prefix_filter(prefix: str, ids: np.ndarray) -> str:
    """The boolean expression that selects the rows `ids` whose source starts with prefix."""
    if any(special in prefix for special in LIKE_SPECIAL):
        return f"id in [{', '.join(map(str, ids.tolist()))}]"
    return 'source like "' + prefix.replace('"', '\\"') + '%"'


class MilvusIndex:
    kind = "milvus"

    def __init__(self, connection: Connection, collection: str, sources: Sequence[str]):
        self.connection = connection
        self.collection = collection
        self.rows = PrefixRows(sources)

    @classmethod
    def open(cls, settings: dict, sources: Sequence[str], directory: Path) -> MilvusIndex:
        if settings["uri"] is None and not (directory / LITE_FILE).is_dir():
            raise LLMHoodError(
                f"The Milvus Lite database {directory / LITE_FILE} is missing; rebuild the "
                "knowledge base (llmhood rag ingest --rebuild)."
            )
        connection = Connection(settings["uri"], directory)
        name = settings["collection"]
        if not connection.client.has_collection(name):
            connection.close()
            raise LLMHoodError(
                f"The Milvus collection {name} is missing at {settings['uri'] or directory}; "
                "rebuild the knowledge base (llmhood rag ingest --rebuild)."
            )
        connection.client.load_collection(name)
        return cls(connection, name, sources)

    def search(
        self, query: np.ndarray, k: int, prefix: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        limit = min(k, len(self.rows), MAX_TOPK)
        expression = ""
        if prefix is not None:
            ids = self.rows(prefix)
            limit = min(limit, len(ids))
            expression = prefix_filter(prefix, ids)
        if limit <= 0:
            return empty_result()
        hits = self.connection.client.search(
            self.collection,
            data=[np.asarray(query, dtype=np.float32).tolist()],
            limit=limit,
            filter=expression,
            anns_field="vector",
            search_params={"metric_type": "IP"},
        )[0]
        ids = np.array([hit["id"] for hit in hits], dtype=np.int64)
        scores = np.array([hit["distance"] for hit in hits], dtype=np.float32)
        return ids, scores

    def close(self) -> None:
        self.connection.close()
