"""The model registry in the store: versions under ``models/hhpulse/<version>/`` and a champion pointer.

``models/hhpulse/champion.json`` = ``{"version", "uri", "previous": [older versions, newest
first], "updated_at"}``. Publishing uploads the bundle first and moves the pointer last,
with one atomic put, so a reader sees the old champion or the new one, never a mix.
Old versions are kept for rollback.

A version holds one bundle, for good. :func:`publish` first creates the version's
``MANIFEST.json`` (the sha256 of every file of the bundle) with ``If-None-Match: *``: a second,
different bundle under a taken version is refused with :class:`VersionExists` before any of
its files is written, so two bundles never mix in one folder. The same bundle published again
(a retried step, or a write whose reply was lost) finds its own manifest there and goes on.
Then the files are uploaded, the stored copy is checked against the manifest (every file
present, none extra, each sha256 equal), and only then does the pointer move: it only ever
names a complete bundle whose manifest checks. A publish cut off midway leaves a version
folder that the pointer never names and that :func:`require_version` calls incomplete; the
same bundle's next publish completes it.

An object store may apply a write and lose its reply: the client retries, and a conditional
write's retry then fails its own condition (412). Both conditional writes here read what is
there before deciding they lost: a manifest equal to this bundle's, or a pointer equal to the
one this publish wrote, is this publish's own write (:func:`create_or_match`,
:func:`_move_pointer`).

Two runs may promote at once (a run started by hand while the scheduled one runs). The pointer
only moves by a conditional write (:func:`hhpulse.data.store.update_json`: ``If-Match`` on the
version read), so neither can silently undo the other:

* a promotion that names the champion its gate compared against (``expect_champion``; the
  pipeline's publish step always does) is refused with :class:`ChampionMoved` when the pointer
  has moved since: the challenger was never compared with the new champion;
* a promotion without one (``hhpulse``'s library callers, tests) retries from the new state: it
  becomes the champion and the one it displaced goes to ``previous``, so it can be rolled back to;
* a rollback that names the version it rolls back from (``expect_current``; the deploy step's
  automatic rollback does) is refused with :class:`ChampionMoved` when that is no longer the
  champion.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hhpulse.data.store import (
    ConcurrentUpdateError,
    KeyNotFound,
    PreconditionFailed,
    Store,
    StoreError,
    update_json,
)
from hhpulse.model.bundle import MANIFEST, load_bundle, verify_manifest

log = logging.getLogger(__name__)

PREFIX = "models/hhpulse"
POINTER = f"{PREFIX}/champion.json"


POINTER_RETRIES = 8  # conflicts a pointer move retries from the new state before giving up


class RegistryError(RuntimeError):
    """No champion, an unknown version, or a broken pointer."""


class ChampionMoved(RegistryError):
    """Another run moved the champion pointer after this one read it: the move is refused."""


class VersionExists(RegistryError):
    """Another bundle is already published under this version: the publish is refused."""


class AlreadyExists(StoreError):
    """:func:`create_or_match`: the key holds other content than this writer's."""


class _AnyChampion:
    """``expect_champion``'s default: promote over whatever the champion is by then."""

    def __repr__(self) -> str:
        return "ANY_CHAMPION"


ANY_CHAMPION: Any = _AnyChampion()


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
    return _parse(store, doc)


def _parse(store: Store, doc: Any) -> Champion:
    try:
        return Champion(doc["version"], doc["uri"], list(doc.get("previous", [])), doc.get("updated_at", ""))
    except (KeyError, TypeError) as exc:
        raise RegistryError(f"{store.uri(POINTER)} is malformed: {exc}") from exc


def versions(store: Store) -> list[str]:
    return sorted({k.split("/")[2] for k in store.list(f"{PREFIX}/") if k.count("/") >= 3})


def create_or_match(store: Store, key: str, data: bytes) -> bool:
    """Create ``key`` with ``data`` only if it does not exist yet (``If-None-Match: *``).

    Returns True when this call created it, False when the key already holds exactly ``data``
    (this writer's own earlier write: a retried step, or a write that S3 applied and whose reply
    was lost, so that the client's retry failed its own condition). Raises
    :class:`AlreadyExists` when the key holds anything else.
    """
    try:
        store.put_if(key, data, if_none_match=True)
        return True
    except PreconditionFailed:
        pass
    try:
        there = store.get_bytes(key)
    except KeyNotFound:  # deleted in between: nothing of ours is there, and nothing of theirs
        store.put_if(key, data, if_none_match=True)
        return True
    if there == data:
        return False
    raise AlreadyExists(f"{store.uri(key)} already exists with other content")


def _move_pointer(store: Store, move: Callable[[Champion | None], Champion], what: str) -> Champion:
    """Apply ``move`` to the current champion and store the result with a conditional write,
    retrying from the new pointer when another run moved it in between.

    A pointer equal to one this call tried to write is its own write whose reply was lost (the
    retry's condition failed because the first try had landed): it is taken as done, not as a
    move by another run. Each try's document is unique to it (it names this move's version and
    the moment it was made)."""
    attempted: list[dict[str, Any]] = []

    def fn(doc: dict[str, Any] | None) -> dict[str, Any]:
        if doc is not None and doc in attempted:
            return doc  # ours landed; nothing to write again
        new = move(None if doc is None else _parse(store, doc)).to_dict()
        attempted.append(new)
        return new

    try:
        return _parse(store, update_json(store, POINTER, fn, retries=POINTER_RETRIES))
    except ConcurrentUpdateError as exc:
        raise RegistryError(f"{what}: {exc}") from exc


def _pointing_at(store: Store, version: str, previous: list[str]) -> Champion:
    return Champion(
        version,
        store.uri(version_prefix(version)),
        previous,
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def publish(
    store: Store,
    bundle_dir: str | os.PathLike[str],
    version: str | None = None,
    *,
    expect_champion: str | None = ANY_CHAMPION,
) -> Champion:
    """Upload a verified bundle as ``version`` and make it the champion.

    ``expect_champion``: the champion this bundle was gated against (None: there was none).
    When given and the pointer names another version by the time it is moved (another run
    promoted meanwhile), :class:`ChampionMoved` is raised and the pointer stays; the bundle's
    files stay under ``models/hhpulse/<version>/``. By default the promotion goes over whatever
    the champion is then, and that champion becomes ``previous[0]``.
    """
    manifest = verify_manifest(bundle_dir)
    version = version or manifest["version"]
    check_version_name(version)
    upload(store, bundle_dir, version)

    def promote(old: Champion | None) -> Champion:
        now = old.version if old else None
        if old is not None and now == version:
            return old  # already the champion (a retried request that had landed): nothing to move
        if expect_champion is not ANY_CHAMPION and now != (expect_champion or None):
            raise ChampionMoved(
                f"not promoting {version}: its gate compared it with "
                f"{expect_champion or 'no champion'}, but the champion is now {now or 'none'} (another "
                f"run moved {store.uri(POINTER)} meanwhile), and {version} was never compared with it. "
                f"The pointer is unchanged; {version}'s files stay in {store.uri(version_prefix(version))}. "
                "Run the pipeline again to gate a new challenger against the new champion"
            )
        if old is None:
            return _pointing_at(store, version, [])
        previous = [old.version, *old.previous] if old.version != version else old.previous
        return _pointing_at(store, version, previous)

    ch = _move_pointer(store, promote, f"could not make {version} the champion")
    log.info("champion -> %s (previous: %s)", version, ", ".join(ch.previous[:3]) or "none")
    return ch


def require_champion(store: Store) -> Champion:
    """The current champion, or a RegistryError that says how to get one."""
    ch = champion(store)
    if ch is None:
        raise RegistryError(f"no champion in {store.uri(PREFIX)}: run the pipeline first (make run)")
    return ch


def require_version(store: Store, version: str, what: str = "version") -> str:
    """``version`` when it is published completely (its MANIFEST.json and every file it lists
    are in the store), else a RegistryError."""
    try:
        check_stored(store, version, hashes=False)
    except RegistryError as exc:
        raise RegistryError(f"{what} {version} is not published in {store.uri(PREFIX)}: {exc}") from exc
    return version


_VERSION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def check_version_name(version: str) -> str:
    """A version names one folder under ``models/hhpulse/``: letters, digits, ``-``, ``_`` and
    ``.``, not ``champion.json``."""
    if (
        not version
        or version in (".", "..")
        or not set(version) <= _VERSION_CHARS
        or version == POINTER.rsplit("/", 1)[-1]
    ):
        raise RegistryError(f"{version!r} cannot be a model version (letters, digits, '-', '_', '.')")
    return version


def upload(store: Store, bundle_dir: str | os.PathLike[str], version: str) -> list[str]:
    """Upload a verified bundle as ``version``: claim the version by creating its manifest
    (:func:`create_or_match`), upload every file, then check the stored copy
    (:func:`check_stored`). The same bundle may be uploaded again (it completes a cut-off
    upload); another bundle under the same version is :class:`VersionExists`."""
    root = Path(bundle_dir)
    prefix = version_prefix(version)
    manifest_bytes = (root / MANIFEST).read_bytes()
    try:
        created = create_or_match(store, f"{prefix}/{MANIFEST}", manifest_bytes)
    except AlreadyExists:
        raise VersionExists(
            f"version {version} is already published with another bundle in {store.uri(prefix)}: "
            "a version is never reused or mixed; build the bundle again to get a new version"
        ) from None
    if not created:
        log.info("%s already holds this bundle's manifest: completing its upload", store.uri(prefix))
    keys = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        key = f"{prefix}/{path.relative_to(root).as_posix()}"
        store.put_file(key, path)
        keys.append(key)
    check_stored(store, version, hashes=True)
    log.info("uploaded %d files of %s to %s (checked)", len(keys) + 1, version, store.uri(prefix))
    return [f"{prefix}/{MANIFEST}", *keys]


def check_stored(store: Store, version: str, *, hashes: bool = True) -> dict[str, Any]:
    """The stored version against its manifest: every listed file present and nothing else
    (and, with ``hashes``, each file's sha256 equal); its manifest, else a RegistryError."""
    import hashlib
    import json

    prefix = version_prefix(version)
    try:
        manifest = json.loads(store.get_bytes(f"{prefix}/{MANIFEST}"))
        files: dict[str, str] = dict(manifest["files"])
    except KeyNotFound:
        raise RegistryError(f"{store.uri(prefix)} has no {MANIFEST}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"{store.uri(f'{prefix}/{MANIFEST}')} is unreadable: {exc}") from exc
    stored = {k[len(prefix) + 1 :] for k in store.list(f"{prefix}/")} - {MANIFEST}
    missing, extra = sorted(set(files) - stored), sorted(stored - set(files))
    if missing:
        raise RegistryError(f"{store.uri(prefix)} is incomplete: missing {', '.join(missing[:5])}")
    if extra:
        raise RegistryError(f"{store.uri(prefix)} holds file(s) not in its manifest: {', '.join(extra[:5])}")
    if hashes:
        for rel, digest in sorted(files.items()):
            if hashlib.sha256(store.get_bytes(f"{prefix}/{rel}")).hexdigest() != digest:
                raise RegistryError(f"{store.uri(f'{prefix}/{rel}')} does not match its sha256 in {MANIFEST}")
    return manifest


def rollback(store: Store, *, expect_current: str | None = None) -> Champion:
    """Point the champion back at the previous version (that version's files are kept).

    ``expect_current``: roll back only if this is still the champion (else :class:`ChampionMoved`:
    another run promoted meanwhile, and rolling back would undo its promotion instead).
    """
    rolled_from: list[str] = []

    def back(cur: Champion | None) -> Champion:
        if expect_current is not None and (cur is None or cur.version != expect_current):
            raise ChampionMoved(
                f"not rolling back {expect_current}: the champion is now {cur.version if cur else 'none'} "
                f"(another run moved {store.uri(POINTER)} meanwhile); the pointer is unchanged"
            )
        if cur is None or not cur.previous:
            raise RegistryError("nothing to roll back to: there is no previous champion")
        require_version(store, cur.previous[0], "previous version")
        rolled_from[:] = [cur.version]
        return _pointing_at(store, cur.previous[0], cur.previous[1:])

    ch = _move_pointer(store, back, "could not roll the champion back")
    log.warning("rolled the champion back from %s to %s", rolled_from[0], ch.version)
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
