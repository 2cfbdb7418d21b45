"""Artifact store: one small interface over a local folder and S3 (MinIO).

Keys are ``/``-separated relative paths such as ``raw/<run_id>/meta.json``.
Every write is atomic: a reader never sees half an object.

* :class:`LocalStore` writes to a temporary file in the target folder, fsyncs it
  and renames it into place (``os.replace`` is atomic on POSIX).
* :class:`S3Store` puts each object whole with one ``PutObject`` call, so S3's
  own atomicity applies. Credentials come from boto3's standard chain (the
  ``AWS_*`` environment variables, a profile, or an instance role), never from
  arguments. Path-style addressing is on by default, which MinIO needs.

Use :func:`open_store` to get a store from a location string: a folder path,
``file://PATH`` or ``s3://bucket/prefix``.

Conditional writes (optimistic concurrency) keep state that two runs share (the champion
pointer, ``store.json``, the demo-day claims, history's state) from losing an update:

* :meth:`Store.get_versioned` returns an object with its version tag (S3: the ETag; a folder:
  a SHA-256 of the content), and :meth:`Store.put_if` writes only if the object is still at
  that tag (``if_match``) or still absent (``if_none_match``), else raises
  :class:`PreconditionFailed`.
* S3 sends ``If-Match`` / ``If-None-Match: *`` with ``PutObject`` (S3, MinIO and moto check
  them server-side). A folder takes a per-key ``flock`` on a hidden ``.<name>.lock`` file beside
  the object around the compare and the rename: the kernel drops it when a holder dies, so a
  killed run never leaves a stale lock.
* :func:`update_json` is the read-modify-write loop over them: read, apply a function, write
  conditionally, and on a conflict retry from the new state; after ``retries`` conflicts it
  raises :class:`ConcurrentUpdateError` naming the key.
* A reply can be lost after S3 applied a write (a timeout after the commit): the client retries
  on its own, and the retry's condition fails against the write it just made (412). So a failed
  condition is never taken as a lost race on its own: ``put_if`` reads what is there first, and
  when that is exactly what it wrote, the write succeeded (what a conditional write writes is
  unique: a claim carries its holder's random token, a state its own time). ``delete_if`` whose
  object is gone succeeded too.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import random
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:  # pandas is imported lazily: the store must stay cheap to import
    import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_LOCAL_STORE = ".hhpulse/store"
STORE_ENV = "HHPULSE_STORE"
S3_ENDPOINT_ENV = "HHPULSE_S3_ENDPOINT"


class StoreError(RuntimeError):
    """A store operation failed for a reason the caller can act on."""


class KeyNotFound(StoreError, KeyError):
    """The key does not exist in the store."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "key not found"


class PreconditionFailed(StoreError):
    """A conditional write's condition did not hold: someone else wrote (or created, or deleted)
    the object since it was read."""


class ConcurrentUpdateError(StoreError):
    """:func:`update_json` lost the race for a key more times than it was allowed to retry."""


def _check_key(key: str) -> str:
    key = key.strip("/")
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        raise StoreError(f"invalid store key {key!r}: use a relative path like 'raw/<run_id>/meta.json'")
    return key


class Store(ABC):
    """What every backend offers. Keys are relative, ``/``-separated."""

    url: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` to ``key`` atomically, replacing any earlier object."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Return the object's bytes; raise :class:`KeyNotFound` if absent."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object exists at ``key``."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys of every object under ``prefix`` (a folder-like prefix)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object. Missing keys are ignored."""

    @abstractmethod
    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and its version tag (for :meth:`put_if`); :class:`KeyNotFound` if absent."""

    @abstractmethod
    def put_if(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        """Write ``data`` atomically only if the object is still at version ``if_match``, or (with
        ``if_none_match``) does not exist yet; return the new version tag. Raise
        :class:`PreconditionFailed` when the condition does not hold (a missing object fails
        ``if_match`` too). Exactly one of the two conditions must be given."""

    @abstractmethod
    def delete_if(self, key: str, *, if_match: str) -> None:
        """Remove the object only if it is still at version ``if_match``, else :class:`PreconditionFailed`."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes; :class:`KeyNotFound` if absent."""

    # -- derived helpers, shared by every backend -------------------------------------------
    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self.put_bytes(key, Path(path).read_bytes())

    def get_file(self, key: str, path: str | os.PathLike[str]) -> Path:
        """Copy an object to a local file (atomically) and return its path."""
        dest = Path(path)
        atomic_write_bytes(dest, self.get_bytes(key))
        return dest

    def put_json(self, key: str, obj: Any) -> None:
        self.put_bytes(key, json_bytes(obj))

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise StoreError(f"{self.uri(key)} is not valid JSON: {exc}") from exc

    def put_parquet(self, key: str, df: pd.DataFrame) -> None:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        self.put_bytes(key, buf.getvalue())

    def get_parquet(self, key: str) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.get_bytes(key)))

    def put_dir(self, prefix: str, folder: str | os.PathLike[str]) -> list[str]:
        """Upload every file below ``folder`` under ``prefix``; return the keys written."""
        root = Path(folder)
        keys = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = f"{prefix.strip('/')}/{path.relative_to(root).as_posix()}"
            self.put_file(key, path)
            keys.append(key)
        return keys

    def get_dir(self, prefix: str, folder: str | os.PathLike[str]) -> list[Path]:
        """Download every object under ``prefix`` into ``folder``; return the local paths."""
        prefix = prefix.strip("/") + "/"
        keys = self.list(prefix)
        if not keys:
            raise KeyNotFound(f"nothing stored under {self.uri(prefix)}")
        out = []
        for key in keys:
            out.append(self.get_file(key, Path(folder) / key[len(prefix) :]))
        return out

    def uri(self, key: str = "") -> str:
        """A human-readable address for ``key`` (for messages and logs)."""
        return f"{self.url.rstrip('/')}/{key.lstrip('/')}" if key else self.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def json_bytes(obj: Any) -> bytes:
    """How the store writes JSON: UTF-8, indented, keys sorted."""
    return json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True, default=str).encode()


def _check_condition(if_match: str | None, if_none_match: bool) -> None:
    if (if_match is None) == (not if_none_match):
        raise ValueError("put_if needs exactly one condition: if_match=<version> or if_none_match=True")


def update_json(
    store: Store,
    key: str,
    fn: Callable[[dict[str, Any] | None], dict[str, Any]],
    *,
    retries: int = 5,
    backoff_s: float = 0.02,
) -> dict[str, Any]:
    """Read-modify-write of a small JSON object that concurrent runs share, without lost updates.

    Reads the object and its version (``None`` when absent), calls ``fn`` on it, and writes the
    result only if the object has not changed meanwhile (``If-Match`` on its version, or
    ``If-None-Match`` when it was absent). When another writer got there first, ``fn`` is applied
    again to the NEW state, up to ``retries`` more times (with a short randomized backoff), then
    :class:`ConcurrentUpdateError` is raised naming the key. ``fn`` may raise to refuse the update
    (the error propagates; nothing is written), and may return the state unchanged (nothing is
    written). Returns the state that is now stored.
    """
    for attempt in range(retries + 1):
        try:
            data, tag = store.get_versioned(key)
        except KeyNotFound:
            current, tag = None, None
        else:
            try:
                current = json.loads(data)
            except json.JSONDecodeError as exc:
                raise StoreError(f"{store.uri(key)} is not valid JSON: {exc}") from exc
        new = fn(None if current is None else json.loads(json.dumps(current)))  # fn gets its own copy
        if current is not None and new == current:
            return new
        try:
            if tag is None:
                store.put_if(key, json_bytes(new), if_none_match=True)
            else:
                store.put_if(key, json_bytes(new), if_match=tag)
            return new
        except PreconditionFailed:
            if attempt < retries:
                log.debug(
                    "%s changed while it was updated (attempt %d): retrying", store.uri(key), attempt + 1
                )
                time.sleep(random.uniform(0, min(1.0, backoff_s * 2**attempt)))
    raise ConcurrentUpdateError(
        f"could not update {store.uri(key)}: another writer changed it {retries + 1} times while this "
        f"run tried (no update was lost; this run's change was not written). Try again"
    )


def current_umask() -> int:
    """The process umask (read without a window where it is changed, where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(*, directory: bool = False) -> int:
    """The mode ``open``/``mkdir`` would give a new file or folder under the umask.

    ``tempfile.mkstemp``/``mkdtemp`` always create 0600/0700; what is renamed into place
    gets this mode instead, so a store or bundle written by one user can be read by
    another (the predictor's uid, for one) whenever the umask allows it.
    """
    return (0o777 if directory else 0o666) & ~current_umask()


GZIP_MAGIC = b"\x1f\x8b"


def gunzipped(stream: BinaryIO) -> BinaryIO:
    """``stream`` itself, or a reader that gunzips it when it starts with gzip's magic bytes
    (sniffed with ``peek``, so stdin works too; a stream that cannot peek is taken as plain)."""
    peek = getattr(stream, "peek", None)
    if peek is not None and peek(2)[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    return stream


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    The file gets the mode a plain ``open(path, "w")`` would (the umask applies).
    """
    with atomic_writer(path) as fh:
        fh.write(data)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file handle whose content appears at ``path`` only when the block succeeds.

    Writes go to a temporary file in the same folder, which is fsynced and renamed into
    place at the end; on an exception it is removed and ``path`` keeps its old content.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.fchmod(fd, default_mode())
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStore(Store):
    """A folder on disk: the embedded default, standing in for MinIO."""

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_LOCAL_STORE) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            atomic_write_bytes(path, data)
        except (NotADirectoryError, FileExistsError, PermissionError) as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a file where a folder should be
            raise KeyNotFound(f"{path} does not exist") from None
        except IsADirectoryError:
            raise KeyNotFound(f"{path} is a folder, not an object") from None
        except PermissionError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        prefix = prefix.lstrip("/")
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        # temporary files of in-flight writes start with "." and end with ".tmp": never list them
        return sorted(k for k in keys if k.startswith(prefix) and not _is_tmp(k))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise KeyNotFound(f"{path} does not exist")
        return path.stat().st_size

    # -- conditional writes: a per-key flock around the compare and the rename -------------
    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)  # one read of a file that only ever changes by rename
        return data, content_version(data)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``.<name>.lock`` beside ``path``.

        The lock file is never removed (removing it would let two writers lock two different
        inodes); the kernel releases the lock when its holder exits, however it exits.
        """
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        # read-only is enough for flock, and lets any user who can read the store take the lock
        fd = os.open(path.parent / f".{path.name}.lock", os.O_RDONLY | os.O_CREAT, default_mode())
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StoreError(
                            f"timed out after {LOCK_TIMEOUT_S:.0f} s waiting for the write lock of {path} "
                            "(a process holding it is stuck)"
                        ) from None
                    time.sleep(0.002)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _current_version(self, path: Path) -> str | None:
        try:
            return content_version(path.read_bytes())
        except (FileNotFoundError, IsADirectoryError):
            return None

    def put_if(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        _check_condition(if_match, if_none_match)
        path = self._path(key)
        mine = content_version(data)
        with self._locked(path):
            current = self._current_version(path)
            if current == mine and (if_none_match or current != if_match):
                return mine  # already there, exactly as this write would leave it (see the module doc)
            if if_none_match and current is not None:
                raise PreconditionFailed(f"{path} already exists (If-None-Match)")
            if if_match is not None and current != if_match:
                what = "no longer exists" if current is None else "was changed by another writer"
                raise PreconditionFailed(f"{path} {what} since it was read (If-Match {if_match})")
            atomic_write_bytes(path, data)
        return mine

    def delete_if(self, key: str, *, if_match: str) -> None:
        path = self._path(key)
        with self._locked(path):
            current = self._current_version(path)
            if current is None:
                return  # gone already: what this delete asked for
            if current != if_match:
                raise PreconditionFailed(
                    f"{path} was changed by another writer since it was read (If-Match {if_match})"
                )
            path.unlink()


LOCK_TIMEOUT_S = 30.0


def content_version(data: bytes) -> str:
    """A folder store's version tag: the content's SHA-256 (S3's ETag is its MD5, the same idea)."""
    return hashlib.sha256(data).hexdigest()


def _is_tmp(key: str) -> bool:
    """Temporary files of in-flight writes (``.<name>.<random>.tmp``) and the lock files of
    conditional writes (``.<name>.lock``): never listed as objects."""
    name = key.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith((".tmp", ".lock"))


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not url.startswith("s3://"):
            raise StoreError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
        rest = url[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StoreError(f"S3 URL {url!r} has no bucket (expected s3://bucket/prefix)")
        return cls(bucket=bucket, prefix=prefix.strip("/"))


class S3Store(Store):
    """An S3 bucket and prefix, through boto3. Works with MinIO (path-style addressing).

    Args:
        url: ``s3://bucket/prefix``.
        endpoint_url: the S3 endpoint, e.g. ``http://minio.minio:9000``. Defaults to
            ``$HHPULSE_S3_ENDPOINT``, then ``$AWS_ENDPOINT_URL``, then AWS itself.
        path_style: use path-style addressing (needed for MinIO). Default on.
        region: the region name; defaults to boto3's chain, then ``us-east-1``.
    """

    def __init__(
        self,
        url: str,
        endpoint_url: str | None = None,
        *,
        path_style: bool = True,
        region: str | None = None,
        client: Any | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.location = S3Location.parse(url)
        self.url = f"s3://{self.location.bucket}" + (
            f"/{self.location.prefix}" if self.location.prefix else ""
        )
        self.endpoint_url = (
            endpoint_url or os.environ.get(S3_ENDPOINT_ENV) or os.environ.get("AWS_ENDPOINT_URL")
        )
        self.path_style = path_style
        self.region = (
            region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
        self._session: Any = None
        if client is None:
            cfg = Config(
                s3={"addressing_style": "path" if path_style else "auto"},
                retries={"max_attempts": 5, "mode": "standard"},
            )
            # a fresh session: the default one caches credentials resolved earlier in the process
            self._session = boto3.session.Session()
            client = self._session.client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=cfg
            )
        self._s3 = client

    def storage_options(self) -> dict[str, str]:
        """The same bucket for object_store-based clients (delta-rs, Polars, DuckDB): endpoint, region,
        addressing, the credentials boto3 resolved (environment, profile or instance role), and
        conditional puts with ``If-None-Match``/ETags, which make Delta commits safe on S3 and MinIO.
        Held in memory only; never logged."""
        opts = {
            "AWS_REGION": self.region,
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false" if self.path_style else "true",
            "conditional_put": "etag",
        }
        if self.endpoint_url:
            opts["AWS_ENDPOINT_URL"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                opts["AWS_ALLOW_HTTP"] = "true"
        creds = self._session.get_credentials() if self._session is not None else None
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            opts["AWS_ACCESS_KEY_ID"], opts["AWS_SECRET_ACCESS_KEY"] = frozen.access_key, frozen.secret_key
            if frozen.token:
                opts["AWS_SESSION_TOKEN"] = frozen.token
        return opts

    def _key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.location.prefix}/{key}" if self.location.prefix else key

    def _error(self, exc: Exception, key: str) -> StoreError:
        from botocore.exceptions import ClientError, NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            return StoreError(
                f"no S3 credentials for {self.uri(key)}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE) in the environment"
            )
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return KeyNotFound(f"{self.uri(key)} does not exist")
            if code == "NoSuchBucket":
                return StoreError(
                    f"bucket {self.location.bucket!r} does not exist at {self.endpoint_url or 'AWS'}"
                )
            return StoreError(f"S3 {code or 'error'} on {self.uri(key)}: {exc}")
        return StoreError(f"S3 request for {self.uri(key)} failed: {exc}")

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self._s3.put_object(Bucket=self.location.bucket, Key=self._key(key), Body=data)
        except Exception as exc:  # botocore raises many types; report one clear error
            raise self._error(exc, key) from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            obj = self._s3.get_object(Bucket=self.location.bucket, Key=self._key(key))
            return obj["Body"].read()
        except Exception as exc:
            raise self._error(exc, key) from exc

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.location.bucket, Key=self._key(key))
            return True
        except Exception as exc:
            err = self._error(exc, key)
            if isinstance(err, KeyNotFound):
                return False
            raise err from exc

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        # string-prefix semantics, the same as LocalStore.list
        base = f"{self.location.prefix}/" if self.location.prefix else ""
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=base + prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"][len(base) :]

    def list(self, prefix: str = "") -> list[str]:
        try:
            return sorted(self._iter_keys(prefix.lstrip("/")))
        except Exception as exc:
            raise self._error(exc, prefix) from exc

    def delete(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.location.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._error(exc, key) from exc

    def size(self, key: str) -> int:
        try:
            return int(self._s3.head_object(Bucket=self.location.bucket, Key=self._key(key))["ContentLength"])
        except Exception as exc:
            raise self._error(exc, key) from exc

    # -- conditional writes: S3 checks If-Match / If-None-Match itself ----------------------
    def get_versioned(self, key: str) -> tuple[bytes, str]:
        try:
            obj = self._s3.get_object(Bucket=self.location.bucket, Key=self._key(key))
            return obj["Body"].read(), str(obj["ETag"])
        except Exception as exc:
            raise self._error(exc, key) from exc

    def _conditional_error(self, exc: Exception, key: str, condition: str) -> StoreError:
        err = self._error(exc, key)
        code = _client_error_code(exc)
        # 412: the condition failed; 409 ConditionalRequestConflict: a concurrent conditional
        # write to the key is in flight (retry from a fresh read); a 404 on If-Match: it was deleted
        if code in CONDITION_FAILED_CODES or (
            isinstance(err, KeyNotFound) and condition.startswith("If-Match")
        ):
            return PreconditionFailed(f"{self.uri(key)} changed since it was read ({condition}: S3 {code})")
        return err

    def put_if(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        _check_condition(if_match, if_none_match)
        cond = {"IfMatch": if_match} if if_match is not None else {"IfNoneMatch": "*"}
        try:
            resp = self._s3.put_object(Bucket=self.location.bucket, Key=self._key(key), Body=data, **cond)
        except Exception as exc:
            name = f"If-Match {if_match}" if if_match is not None else "If-None-Match *"
            err = self._conditional_error(exc, key, name)
            if isinstance(err, PreconditionFailed):
                # botocore retries a write whose reply was lost, and the retry's condition fails
                # against that very write: read what is there before deciding this write lost
                tag = self._written(key, data)
                if tag is not None:
                    log.info(
                        "%s: the write was applied (its reply was lost, the retry said %s)",
                        self.uri(key),
                        _client_error_code(exc),
                    )
                    return tag
            raise err from exc
        return str(resp["ETag"])

    def _written(self, key: str, data: bytes) -> str | None:
        """The object's version tag when it holds exactly ``data``, else None."""
        try:
            current, tag = self.get_versioned(key)
        except KeyNotFound:
            return None
        return tag if current == data else None

    def delete_if(self, key: str, *, if_match: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.location.bucket, Key=self._key(key), IfMatch=if_match)
        except Exception as exc:
            err = self._conditional_error(exc, key, f"If-Match {if_match}")
            if isinstance(err, PreconditionFailed) and not self.exists(key):
                return  # gone: the delete was applied (a lost reply, then a retry) or another run removed it
            raise err from exc


CONDITION_FAILED_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


def _client_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str((response or {}).get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def open_store(location: str | os.PathLike[str] | None = None, *, endpoint_url: str | None = None) -> Store:
    """Open a store from a location string.

    ``None`` means ``$HHPULSE_STORE`` or, failing that, the embedded default
    ``.hhpulse/store``. ``s3://bucket/prefix`` opens S3 (MinIO with
    ``endpoint_url`` or ``$HHPULSE_S3_ENDPOINT``); anything else is a folder.
    """
    loc = str(location) if location is not None else os.environ.get(STORE_ENV) or DEFAULT_LOCAL_STORE
    if loc.startswith("s3://"):
        return S3Store(loc, endpoint_url=endpoint_url)
    if loc.startswith("file://"):
        loc = loc[len("file://") :]
    if "://" in loc:
        raise StoreError(f"unsupported store location {loc!r}: use a folder path or s3://bucket/prefix")
    check_folder(loc)
    return LocalStore(loc)


def check_folder(location: str | os.PathLike[str]) -> Path:
    """A folder store's path, when it can be one: the folder itself or, when it does not exist
    yet, its nearest existing parent must be a folder. Else :class:`StoreError` in one line
    (a file given as the store, or a path through a file)."""
    path = Path(location).expanduser().absolute()
    for at in (path, *path.parents):
        if at.is_dir():
            return path
        if at.exists() or at.is_symlink():
            what = "is a file" if at == path else f"goes through {at}, which is a file"
            raise StoreError(
                f"store {location} {what}, not a folder: give a store folder or s3://bucket/prefix"
            )
    return path
