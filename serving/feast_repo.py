"""A Feast feature repository for LTEs: what ``lte feast-repo`` writes, and the names the
Feast sink (:mod:`serving.feast_store`) finds in it.

One repository holds any number of ``(basis_version, encoder)`` pairs, each as its own
FeatureView fed by its own PushSource (an LTE of one basis means nothing in another, so two
basis versions are two views, side by side, exactly as in the product's own store)::

    feature_store.yaml          project, registry, Redis online store, file offline store
    lte_entities.py             the entity ``user`` (join key ``user_id``)
    lte_<bv>_<encoder>.py       FileSource (offline) -> PushSource -> FeatureView

A view's name carries the pair (``lte_<basis_version>_<encoder slug>``) and its tags carry
it exactly (``lte.basis_version``, ``lte.encoder``): the sink looks views up by tags, never
by parsing names. The features are the LTE fields a model reads; the offline source is a
parquet file with the columns ``lte snapshot --out`` writes, timestamped by
``event_timestamp`` (= ``as_of``), so ``get_historical_features`` joins point-in-time on
the instant each LTE became valid.

The online store is written with ``skip_dedup: true``: Feast's Redis store otherwise skips a
row whose event timestamp is not strictly newer than the stored one, a rule that drops a
newer LTE with the same ``as_of`` (a replay under a frozen clock, a window edge and an event
in the same instant) and lets a restart's backlog decide. The sink enforces the product's
own order instead (see :mod:`serving.feast_store`).

This module writes text only; it imports no Feast (the files do, when Feast reads them).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from serving.errors import ServingError
from serving.store_url import RedisClusterLocation, RedisLocation, parse_store_url

PROJECT = "lte"
TAG_BASIS_VERSION = "lte.basis_version"
TAG_ENCODER = "lte.encoder"
ENTITY_FILE = "lte_entities.py"
# The view's features, in the order of the FeatureView schema and of pushed frames.
FLOAT_FEATURES = ("as_of", "window_start", "window_end", "weight_sum")
VECTOR_FEATURES = ("coefficients", "vector")


class FeastRepoError(ServingError):
    """A Feast repository cannot be written, applied or used by the sink; the message says
    which file or pair and what to run."""


@dataclass(frozen=True, slots=True)
class ViewNames:
    """The Feast names of one ``(basis_version, encoder)`` pair."""

    view: str
    push_source: str
    file_source: str

    @classmethod
    def of(cls, basis_version: str, encoder: str) -> ViewNames:
        view = f"lte_{_slug(basis_version)}_{_slug(encoder)}"
        if _slug(basis_version) != basis_version or _slug(encoder) != encoder:
            # Slugs can collide ("a:b" and "a_b"); a hash of the exact pair cannot.
            view += "_" + hashlib.sha256(f"{basis_version}\0{encoder}".encode()).hexdigest()[:8]
        return cls(view=view, push_source=f"{view}_push", file_source=f"{view}_offline")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def feast_connection_string(url: str) -> tuple[str, str]:
    """Feast's ``(redis_type, connection_string)`` for a ``redis://``/``rediss://``/
    ``redis+cluster://`` URL of this project (Feast's format: ``host:port,db=0,ssl=true``)."""
    where = parse_store_url(url, flag="--redis")
    options = []
    if not isinstance(where, RedisLocation | RedisClusterLocation):
        raise FeastRepoError(f"--redis: expected a redis:// or redis+cluster:// URL, got {url!r}")
    if where.password:
        raise FeastRepoError(
            "--redis: put no password in the repository; set it in feature_store.yaml through "
            "an environment variable (Feast expands ${VAR} there)"
        )
    if where.tls:
        options.append("ssl=true")
    if isinstance(where, RedisLocation):
        nodes = f"{where.host}:{where.port}"
        options.insert(0, f"db={where.db}")
        return "redis", ",".join([nodes, *options])
    nodes = ",".join(f"{h}:{p}" for h, p in where.nodes)
    return "redis_cluster", ",".join([nodes, *options])


def ledger_location(
    redis_type: str, connection_string: str
) -> RedisLocation | RedisClusterLocation:
    """The sink's ledger: the product store on the Redis a Feast ``connection_string`` names
    (``host:port[,host:port…][,db=N][,password=…][,username=…][,ssl=true]``)."""
    nodes: list[tuple[str, int]] = []
    options: dict[str, str] = {}
    for raw in connection_string.split(","):
        part = raw.strip()
        if "=" in part:
            name, _, value = part.partition("=")
            options[name.strip().lower()] = value.strip()
        elif part:
            host, _, port_text = part.rpartition(":")
            nodes.append((host or part, int(port_text) if host else 6379))
    if not nodes:
        raise FeastRepoError(f"online_store.connection_string names no host: {connection_string}")
    tls = options.get("ssl", "").lower() == "true"
    if redis_type == "redis_cluster":
        return RedisClusterLocation(
            tuple(nodes),
            username=options.get("username"),
            password=options.get("password"),
            tls=tls,
        )
    if redis_type != "redis":
        raise FeastRepoError(
            f"online_store.redis_type {redis_type!r}: the sink supports redis and redis_cluster"
        )
    host, port = nodes[0]
    return RedisLocation(
        host,
        port,
        int(options.get("db", "0")),
        username=options.get("username"),
        password=options.get("password"),
        tls=tls,
    )


def write_repo(
    out: Path,
    *,
    basis_version: str,
    encoder: str,
    d: int,
    k: int,
    redis_url: str,
    offline_source: Path | None,
) -> tuple[ViewNames, Path]:
    """Write (or extend) the repository ``out`` with the view of one pair; return its names
    and the file written. ``feature_store.yaml`` and the entity are written once: a second
    basis version adds its own view file beside the first."""
    names = ViewNames.of(basis_version, encoder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    config = out / "feature_store.yaml"
    if not config.exists():
        redis_type, connection = feast_connection_string(redis_url)
        config.write_text(_FEATURE_STORE_YAML.format(type=redis_type, connection=connection))
    entities = out / ENTITY_FILE
    if not entities.exists():
        entities.write_text(_ENTITY_PY)
    source = (
        offline_source if offline_source is not None else Path("data") / f"{names.view}.parquet"
    )
    view_file = out / f"{names.view}.py"
    view_file.write_text(
        _VIEW_PY.format(
            basis_version=basis_version,
            encoder=encoder,
            view=repr(names.view),
            push=repr(names.push_source),
            file_source=repr(names.file_source),
            source=repr(str(source)),
            d=d,
            k=k,
            tags=repr(
                {
                    TAG_BASIS_VERSION: basis_version,
                    TAG_ENCODER: encoder,
                    "lte.d": str(d),
                    "lte.k": str(k),
                }
            ),
        )
    )
    return names, view_file


def apply_repo(repo: Path) -> None:
    """``feast apply`` on ``repo`` (Feast's own command, in a child process: it changes the
    working directory and may exit)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from feast.cli.cli import cli; sys.exit(cli())",
            "--chdir",
            str(repo),
            "apply",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise FeastRepoError(f"feast apply failed in {repo}: {' / '.join(tail)}")


_FEATURE_STORE_YAML = """\
# Written by `lte feast-repo`. The refresher pushes here with `lte refresher --store feast://<this
# directory>`; models read with FeatureStore(repo_path=...).get_online_features(...).
project: lte
provider: local
registry: data/registry.db
online_store:
  type: redis
  redis_type: {type}
  connection_string: "{connection}"
  # The refresher enforces "no older LTE overwrites a newer one" itself (by the product's
  # per-user order, not by event timestamp); Feast's timestamp check would drop a newer LTE
  # that shares its as_of with the stored one.
  skip_dedup: true
offline_store:
  type: file
entity_key_serialization_version: 3
"""

_ENTITY_PY = '''\
"""Written by `lte feast-repo`: the entity every LTE view is keyed by."""

from feast import Entity, ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
'''

_VIEW_PY = '''\
"""Written by `lte feast-repo`: the LTEs of basis_version {basis_version}, encoder {encoder!r}.

Online: `lte refresher --store feast://<repo>` pushes each user's newest LTE to
{push}. Offline: a parquet with the columns of `lte snapshot --out` (one row per
user and as_of; event_timestamp = as_of), for get_historical_features.
"""

from datetime import timedelta

from feast import FeatureView, Field, FileSource, PushSource
from feast.types import Array, Float32, Float64, Int64
from lte_entities import user

offline = FileSource(
    name={file_source},
    path={source},
    timestamp_field="event_timestamp",
)

push = PushSource(name={push}, batch_source=offline)

view = FeatureView(
    name={view},
    entities=[user],
    ttl=timedelta(0),  # no expiry: an LTE stays valid until the stream replaces it
    schema=[
        Field(name="vector", dtype=Array(Float32)),  # d = {d}
        Field(name="coefficients", dtype=Array(Float32)),  # K = {k}
        Field(name="n_events", dtype=Int64),
        Field(name="as_of", dtype=Float64),
        Field(name="window_start", dtype=Float64),
        Field(name="window_end", dtype=Float64),
        Field(name="weight_sum", dtype=Float64),
    ],
    source=push,
    online=True,
    tags={tags},
)
'''
