"""Where an interrupted training run keeps its state in the store, and how it is read back.

A checkpoint is one file ``checkpoints/<digest>.pt`` written atomically: the fitting loop's
``FitState`` (as plain tensors and data; with N Ray workers, every rank's), which phase it was
in, and, in the refit phase, the result of the selection phase. The digest covers everything
the build id depends on except the weights (data, split, seed, code, build config, and so the
number of workers), so a checkpoint can only resume the run it came from. Files are loaded
with ``weights_only=True``: tensors and plain data, nothing unpickled.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from pipeline.errors import IntegrityError, NotFoundError
from pipeline.fit import FitState
from pipeline.settings import Settings
from pipeline.store import Store, canonical_json


class Checkpoints:
    """The checkpoint of one run's inputs: save, load, discard."""

    FORMAT = 2  # 2: the file starts with the sha256 of the rest (``_sealed``)

    def __init__(
        self,
        store: Store,
        inputs: dict[str, Any],
        config: dict[str, Any],
        variants: Callable[[], Iterable[tuple[str, dict[str, Any]]]] = tuple,
    ) -> None:
        """``variants``: the configs of the same run asked for another way (how, config), which
        a missing checkpoint's message names when one of them has a checkpoint."""
        self.store, self.inputs, self.variants = store, inputs, variants
        self.fingerprint = self._fingerprint(config)
        self.key = f"checkpoints/{self.fingerprint[:32]}.pt"

    @classmethod
    def of_run(
        cls, store: Store, inputs: dict[str, Any], settings: Settings, resolved: dict[str, str]
    ) -> Checkpoints:
        """The checkpoints of a `pipeline train` run with ``settings`` on data whose ``auto``
        settings ``resolved`` to these values (``Prepared.resolved``): its build config, and
        the same run's configs with another worker count as variants (N is in the key)."""

        def variants() -> Iterator[tuple[str, dict[str, Any]]]:
            for n in (None, *range(1, 4097)):
                if n != settings.train.workers:
                    train = settings.train.model_copy(update={"workers": n})
                    how = "without --workers" if n is None else f"with --workers {n}"
                    other = settings.model_copy(update={"train": train})
                    yield how, other.build_config(resolved=resolved)

        return cls(store, inputs, settings.build_config(resolved=resolved), variants)

    def _fingerprint(self, config: dict[str, Any]) -> str:
        return hashlib.sha256(canonical_json({"inputs": self.inputs, "config": config})).hexdigest()

    def _elsewhere(self) -> str:
        """What a missing checkpoint's message adds when a variant of the run has one."""
        names = set(self.store.list("checkpoints"))
        if not names:
            return ""
        for how, config in self.variants():
            if f"{self._fingerprint(config)[:32]}.pt" in names:
                return (
                    f"; there is one for the same run {how}: resume it {how}, or run "
                    "`pipeline train` without --resume"
                )
        return ""

    def save(
        self,
        log: Any,
        phase: str,
        loop: FitState,
        selection: dict[str, Any] | None,
        *,
        others: list[FitState] | None = None,
    ) -> None:
        """Write the state atomically (a crash leaves the previous checkpoint or this one).

        ``loop`` is the loop's state (rank 0's on Ray); ``others`` the other ranks' states, in
        rank order, when N data-parallel workers train (each has its own streams and rows)."""
        buf = io.BytesIO()
        doc = {
            "format": self.FORMAT,
            "fingerprint": self.fingerprint,
            "phase": phase,
            "loop": loop.to_dict(),
            "selection": selection,
        }
        if others:
            doc["others"] = [state.to_dict() for state in others]
        torch.save(doc, buf)
        body = buf.getvalue()
        self.store.write(self.key, _sealed(body))
        log.info(
            "train.checkpoint",
            key=self.key,
            phase=phase,
            epoch=loop.epoch,
            position=loop.position,
            bytes=buf.tell(),
        )

    def load(self, log: Any) -> dict[str, Any]:
        """The checkpoint of these inputs (``loop`` as a ``FitState``); NotFoundError if none."""
        try:
            blob = self.store.read_bytes(self.key)
        except KeyError:
            elsewhere = self._elsewhere()
            raise NotFoundError(
                f"no checkpoint {self.key} in store {self.store.uri} for this data, settings and "
                + (
                    f"seed{elsewhere}"
                    if elsewhere
                    else "seed: run `pipeline train` without --resume (a checkpoint exists only "
                    "after a run was stopped, and it matches only the same inputs)"
                )
            ) from None
        try:
            body = _opened(blob)
            with warnings.catch_warnings():  # torch warns of a pickle protocol on stderr
                warnings.simplefilter("ignore")
                ck: dict[str, Any] = torch.load(
                    io.BytesIO(body), map_location="cpu", weights_only=True
                )
            valid = ck["format"] == self.FORMAT and ck["fingerprint"] == self.fingerprint
            if valid:
                ck["loop"] = FitState.from_dict(ck["loop"])
                ck["others"] = [FitState.from_dict(d) for d in ck.get("others", [])]
        except Exception as exc:  # a damaged file: any unpickling, shape or field error
            # torch's own text for a pickle it refuses advises weights_only=False, which would
            # run the file's code: such a file is named for what it is, nothing relayed.
            why = (
                "not a checkpoint: torch refused to unpickle it"
                if isinstance(exc, pickle.UnpicklingError)
                else str(exc)
                if isinstance(exc, _Damaged)
                else f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
            )
            raise IntegrityError(
                f"checkpoint {self.key} in store {self.store.uri} is unreadable ({why}); delete "
                "it and run `pipeline train` without --resume"
            ) from None
        if not valid:
            raise IntegrityError(
                f"checkpoint {self.key} in store {self.store.uri} belongs to other inputs; delete "
                "it and run `pipeline train` without --resume"
            )
        log.info(
            "train.resume",
            key=self.key,
            phase=ck["phase"],
            epoch=ck["loop"].epoch,
            position=ck["loop"].position,
        )
        return ck

    def discard(self) -> None:
        """Remove the checkpoint once the build it was for exists."""
        self.store.delete(self.key)


# A checkpoint file: this line, the sha256 of the rest in hex and a newline, then torch's bytes.
# A byte changed in the weights loaded without a word and resumed to another build id.
MAGIC = b"pipeline-checkpoint sha256 "


class _Damaged(Exception):
    """The file's bytes are not the ones its digest was made of."""


def _sealed(body: bytes) -> bytes:
    return MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def _opened(blob: bytes) -> bytes:
    """The torch bytes of a checkpoint file; ``_Damaged`` unless they match its digest."""
    head, _, body = blob.partition(b"\n")
    if not head.startswith(MAGIC):
        raise _Damaged("not a checkpoint of this pipeline version: no digest line")
    if hashlib.sha256(body).hexdigest().encode() != head[len(MAGIC) :]:
        raise _Damaged("its bytes do not match its sha256: damaged after it was written")
    return body
