"""Claims with an expiry (leases) in the store, made with conditional writes.

A claim is a small JSON object at a key that means "this is taken"::

    {"holder": "<random hex>", "state": "held", "claimed_at": ..., "expires_at": ..., ...}
    {"holder": "<random hex>", "state": "done", "done_at": ..., ...}            # for good

* :func:`claim` creates it with ``If-None-Match: *``: of two runs claiming one key, exactly one
  succeeds. A held claim whose ``expires_at`` has passed (its holder was killed) is taken over
  with ``If-Match`` on the version read, so two runs cannot both take over the same one either.
* :func:`complete` turns the caller's claim into a permanent ``done`` record, and
  :func:`release` removes it; both only if it is still the caller's (``If-Match``): a lease that
  expired and was taken over is never overwritten by its old holder.

A reply lost after S3 applied the write (the retry then fails its condition) does not lose the
claim: the store's conditional writes read what is there before deciding a write lost, and a
claim is its holder's alone (the random ``holder`` token), so a claim, a completion or a release
whose reply was lost still counts (:mod:`hhpulse.data.store`; tests/test_concurrent_runs.py puts
the fault-injecting proxy in front of moto).

The demo source claims its simulated day this way (``claims/demo-day/<day>.json``), so two
demo runs started at once on one store never collect the same day.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from hhpulse.data.store import KeyNotFound, PreconditionFailed, Store, json_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    """A claim this process holds: its key, its holder token and the version it wrote."""

    key: str
    holder: str
    tag: str


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc)


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def claim_state(store: Store, key: str, *, now: datetime | None = None) -> str:
    """``free`` (absent, or held and expired), ``held`` (unexpired) or ``done``."""
    try:
        doc = store.get_json(key)
    except KeyNotFound:
        return "free"
    return _state(doc, _now(now))


def _state(doc: Any, now: datetime) -> str:
    if not isinstance(doc, dict):
        return "free"  # not a claim: take it over
    if doc.get("state") == "done":
        return "done"
    try:
        expires = datetime.fromisoformat(str(doc.get("expires_at")))
    except ValueError:
        return "free"
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=timezone.utc)
    return "held" if expires > now else "free"


def claim(
    store: Store, key: str, *, ttl_s: float, info: dict[str, Any] | None = None, now: datetime | None = None
) -> Lease | None:
    """Take the claim at ``key`` for ``ttl_s`` seconds; None when another run holds it (or it is done)."""
    when = _now(now)
    holder = secrets.token_hex(8)
    doc = {
        **(info or {}),
        "holder": holder,
        "state": "held",
        "claimed_at": _iso(when),
        "expires_at": _iso(when + timedelta(seconds=ttl_s)),
    }
    try:
        return Lease(key, holder, store.put_if(key, json_bytes(doc), if_none_match=True))
    except PreconditionFailed:
        pass
    try:
        data, tag = store.get_versioned(key)
    except KeyNotFound:  # released in between: one more try at creating it
        try:
            return Lease(key, holder, store.put_if(key, json_bytes(doc), if_none_match=True))
        except PreconditionFailed:
            return None
    try:
        old = json.loads(data)
    except json.JSONDecodeError:
        old = None
    if _state(old, when) != "free":
        return None
    try:
        lease = Lease(key, holder, store.put_if(key, json_bytes(doc), if_match=tag))
    except PreconditionFailed:
        return None  # another run took the expired claim over first
    log.warning("took over the expired claim %s (was %s)", store.uri(key), old)
    return lease


def complete(store: Store, lease: Lease, info: dict[str, Any] | None = None) -> bool:
    """Make the claim permanent (``done``); False (and a warning) when it is no longer ours."""
    doc = {**(info or {}), "holder": lease.holder, "state": "done", "done_at": _iso(_now(None))}
    try:
        store.put_if(lease.key, json_bytes(doc), if_match=lease.tag)
        return True
    except PreconditionFailed:
        log.warning(
            "the claim %s expired and was taken over by another run before this one finished",
            store.uri(lease.key),
        )
        return False


def release(store: Store, lease: Lease) -> bool:
    """Give the claim up (delete it); False when it is no longer ours (it is left alone)."""
    try:
        store.delete_if(lease.key, if_match=lease.tag)
        return True
    except PreconditionFailed:
        log.warning("the claim %s was taken over by another run: left as it is", store.uri(lease.key))
        return False
