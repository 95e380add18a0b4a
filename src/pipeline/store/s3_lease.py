"""The S3 store's lock: a lease held in an object (see ``pipeline.store.s3``'s docstring).

Taken by an exclusive create, renewed in a thread by conditional updates (``If-Match`` on its
ETag), released by a delete, and taken over once its ETag has not changed for a lease time. The
lease's body names its holder's nonce, so a create whose response was lost is recognised.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from obstore import UpdateVersion

    from pipeline.store.s3 import S3Store


def _raise(exc: Exception) -> Any:
    raise exc


def _holder(body: bytes) -> str | None:
    """The nonce of the writer that holds a lease, from the lease object's body."""
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(body).get("holder"))
    return None


class Lease:
    """An exclusive lease on one object, renewed in a thread while held (see the module doc)."""

    def __init__(self, store: S3Store, key: str) -> None:
        self.store, self.key = store, key
        self.nonce = uuid.uuid4().hex
        self.e_tag: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"holder": self.nonce, "at": time.time()}).encode()

    def acquire(self, on_wait: Callable[[], None] | None = None) -> None:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        store, client = self.store, self.store.client()
        store._probe()
        seen: tuple[str | None, float] = (None, time.monotonic())
        while True:
            try:
                result = obstore.put(client, self.key, self._body(), mode="create")
                self.e_tag = result["e_tag"]
                break
            except (AlreadyExistsError, PreconditionError):
                pass
            except Exception as exc:
                store._call("lock", self.key, functools.partial(_raise, exc))
            try:
                found = store._call("lock", self.key, lambda: obstore.get(client, self.key))
            except FileNotFoundError:
                continue  # released meanwhile: try again at once
            meta = found.meta
            if _holder(bytes(found.bytes())) == self.nonce:
                self.e_tag = meta["e_tag"]  # our own create: a retry whose first answer was lost
                break
            if on_wait is not None:  # another holder's lease: once, before the first wait
                on_wait()
                on_wait = None
            if meta["e_tag"] != seen[0]:
                seen = (meta["e_tag"], time.monotonic())  # alive (or new): wait a lease from now
            elif time.monotonic() - seen[1] > store.lease_s:
                # Unchanged for a whole lease: its holder died. Take it over; If-Match makes one
                # of several waiters the winner.
                try:
                    update: UpdateVersion = {"e_tag": meta["e_tag"]}
                    result = obstore.put(client, self.key, self._body(), mode=update)
                    self.e_tag = result["e_tag"]
                    break
                except (AlreadyExistsError, PreconditionError, FileNotFoundError):
                    seen = (None, time.monotonic())
            time.sleep(0.05)
        self._renewer = threading.Thread(target=self._renew, daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        """Rewrite the lease (If-Match on our ETag) every fifth of the lease time while held."""
        import obstore

        client = self.store.client()
        while not self._stop.wait(self.store.lease_s / 5):
            try:
                update: UpdateVersion = {"e_tag": self.e_tag}
                self.e_tag = obstore.put(client, self.key, self._body(), mode=update)["e_tag"]
            except Exception:
                return

    def release(self) -> None:
        import obstore

        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        client = self.store.client()
        # Delete only our own lease: one taken over (we stalled a whole lease) is another's.
        with contextlib.suppress(Exception):
            if obstore.head(client, self.key)["e_tag"] == self.e_tag:
                obstore.delete(client, self.key)
