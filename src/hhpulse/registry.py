"""The model registry in the store: versions under ``models/hhpulse/<version>/`` and a champion pointer.

``models/hhpulse/champion.json`` = ``{"version", "uri", "previous": [older versions, newest
first], "updated_at"}``. Publishing uploads the bundle first and moves the pointer last,
with one atomic put, so a reader sees the old champion or the new one, never a mix.
Old versions are kept for rollback.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hhpulse.bundle import load_bundle, verify_manifest
from hhpulse.store import KeyNotFound, Store

log = logging.getLogger(__name__)

PREFIX = "models/hhpulse"
POINTER = f"{PREFIX}/champion.json"


class RegistryError(RuntimeError):
    """No champion, an unknown version, or a broken pointer."""


@dataclass
class Champion:
    version: str
    uri: str
    previous: list[str] = field(default_factory=list)
    updated_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "uri": self.uri,
            "previous": self.previous,
            "updated_at": self.updated_at,
        }


def version_prefix(version: str) -> str:
    return f"{PREFIX}/{version}"


def champion(store: Store) -> Champion | None:
    """The current champion, or None when none was published yet."""
    try:
        doc = store.get_json(POINTER)
    except KeyNotFound:
        return None
    try:
        return Champion(doc["version"], doc["uri"], list(doc.get("previous", [])), doc.get("updated_at", ""))
    except (KeyError, TypeError) as exc:
        raise RegistryError(f"{store.uri(POINTER)} is malformed: {exc}") from exc


def versions(store: Store) -> list[str]:
    return sorted({k.split("/")[2] for k in store.list(f"{PREFIX}/") if k.count("/") >= 3})


def _point(store: Store, version: str, previous: list[str]) -> Champion:
    ch = Champion(
        version,
        store.uri(version_prefix(version)),
        previous,
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    store.put_json(POINTER, ch.to_dict())
    return ch


def publish(store: Store, bundle_dir: str | os.PathLike[str], version: str | None = None) -> Champion:
    """Upload a verified bundle as ``version`` and make it the champion."""
    manifest = verify_manifest(bundle_dir)
    version = version or manifest["version"]
    keys = store.put_dir(version_prefix(version), bundle_dir)
    log.info("published %d files of %s to %s", len(keys), version, store.uri(version_prefix(version)))
    old = champion(store)
    previous = (
        [old.version, *old.previous] if old and old.version != version else (old.previous if old else [])
    )
    ch = _point(store, version, previous)
    log.info("champion -> %s (previous: %s)", version, ", ".join(previous[:3]) or "none")
    return ch


def require_champion(store: Store) -> Champion:
    """The current champion, or a RegistryError that says how to get one."""
    ch = champion(store)
    if ch is None:
        raise RegistryError(f"no champion in {store.uri(PREFIX)}: run the pipeline first (make run)")
    return ch


def require_version(store: Store, version: str, what: str = "version") -> str:
    """``version`` when it is published (its MANIFEST.json is in the store), else a RegistryError."""
    if not store.exists(f"{version_prefix(version)}/MANIFEST.json"):
        raise RegistryError(f"{what} {version} is not published in {store.uri(PREFIX)}")
    return version


def rollback(store: Store) -> Champion:
    """Point the champion back at the previous version (that version's files are kept)."""
    cur = champion(store)
    if cur is None or not cur.previous:
        raise RegistryError("nothing to roll back to: there is no previous champion")
    target, rest = cur.previous[0], cur.previous[1:]
    require_version(store, target, "previous version")
    ch = _point(store, target, rest)
    log.warning("rolled the champion back from %s to %s", cur.version, target)
    return ch


def fetch(store: Store, version: str, dest: str | os.PathLike[str]) -> Path:
    """Download a version's bundle into ``dest`` and verify it."""
    store.get_dir(version_prefix(version), dest)
    verify_manifest(dest)
    return Path(dest)


def fetch_champion(store: Store, dest: str | os.PathLike[str]) -> Path:
    return fetch(store, require_champion(store).version, dest)


def load_champion(store: Store, workdir: str | os.PathLike[str]):  # type: ignore[no-untyped-def]
    """The champion as a loaded bundle, or None."""
    ch = champion(store)
    return None if ch is None else load_bundle(fetch(store, ch.version, Path(workdir) / ch.version))
