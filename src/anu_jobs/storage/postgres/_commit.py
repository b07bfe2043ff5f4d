"""The write path: :meth:`~anu_jobs.storage.base.Storage.commit` as one statement.

A batch travels as ONE JSON document (each write with its runs and acknowledged
messages inside, encoded by one call of the C encoder) into the ``commit`` block of
``queries.sql``, which fences, compares etags, applies and reports per write, all
server-side. So a batch of any size costs one round trip and one parse.

The statement can hold one write per job: PostgreSQL cannot change a row twice in one
statement, and a later write to a job must see the earlier one. A batch that names a
job more than once is split into rounds (round *k* holds each job's *k*-th write), run
in order in one transaction, each round a statement that sees the rounds before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from anu_jobs._json import JSONError
from anu_jobs._time import to_us, to_us_opt
from anu_jobs.errors import EtagConflictError, LeaseLostError
from anu_jobs.storage._common import RUN_SLOT, RUN_SLOT_TEXT, new_etag, shared_run, state_run_text
from anu_jobs.storage.base import GrainWrite, RunRecord, WriteResult
from anu_jobs.storage.postgres._ops import Conn, fetch

__all__ = ["commit", "split"]

# The same JSON as anu_jobs._json.dumps (compact, no NaN, unicode as is), so a state
# is stored exactly as the other providers store it; one encoder for the whole batch.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _run(run: RunRecord) -> dict[str, Any]:
    return {
        "i": run.run_id,
        "j": run.job_id,
        "t": run.job_type,
        "s": run.stage,
        "a": run.attempt,
        "sc": to_us(run.scheduled_for),
        "st": to_us_opt(run.started_at),
        "fi": to_us_opt(run.finished_at),
        "si": run.silo_id,
        "d": run.data,
    }


@dataclass(slots=True)
class Round:
    """One statement's writes as the ``commit`` block reads them (keys: its column list),
    and where each write came from."""

    positions: list[int] = field(default_factory=list)
    etags: list[int | None] = field(default_factory=list)
    writes: list[dict[str, Any]] = field(default_factory=list)

    def add(self, position: int, w: GrainWrite) -> None:
        etag = new_etag(w.expected_etag)  # differs from the etag it replaces
        self.writes.append(
            {
                "i": w.lease.job_id,
                "s": w.lease.silo_id,
                "e": w.lease.epoch,
                "x": w.expected_etag,
                "t": w.job_type,
                "g": w.stage,
                "st": w.state,
                "d": to_us_opt(w.due_at),
                "r": w.release,
                "n": etag,
                "runs": [_run(r) for r in w.runs] or None,
                "k": list(w.ack_control) or None,
            }
        )
        self.positions.append(position)
        self.etags.append(None if w.state is None else etag)

    def encode(self) -> str:
        """The round as JSON; a value that is not JSON raises here, before anything is sent."""
        try:
            return _encode_spliced(self.writes)
        except (TypeError, ValueError) as exc:
            raise JSONError(str(exc)) from None


def _encode_spliced(writes: list[dict[str, Any]]) -> str:
    """``_encode(writes)``, encoding once each run document that a write's state carries
    too (see :func:`~anu_jobs.storage._common.shared_run`).

    Such a run's data and the state's copy of it become placeholders in one encoding of
    the round; the run's text, encoded on its own, takes their places. The text is the
    same as the plain encoding's (JSON's is made of its parts'); should the placeholders
    not come out exactly as put in, or any part fail, the round is encoded whole (and
    fails, if it does, as it always did).
    """
    skeleton: list[dict[str, Any]] = []
    texts: list[str] = []
    try:
        for w in writes:
            state, runs = w["st"], w["runs"]
            found = None if state is None or not runs else shared_run(state, [r["d"] for r in runs])
            if found is None:
                skeleton.append(w)
                continue
            key, index = found
            text = _encode(runs[index]["d"])
            doc_text = state_run_text(key, text)
            if doc_text is None:
                skeleton.append(w)
                continue
            shared = list(runs)
            shared[index] = {**runs[index], "d": RUN_SLOT}
            # "st" comes before "runs" in a write, so its place comes first in the text
            skeleton.append({**w, "st": {**state, key: RUN_SLOT}, "runs": shared})
            texts += (doc_text, text)
        if not texts:
            return _encode(writes)
        parts = _encode(skeleton).split(RUN_SLOT_TEXT)
    except (TypeError, ValueError, RecursionError):
        return _encode(writes)
    if len(parts) != len(texts) + 1:
        return _encode(writes)
    out = [parts[0]]
    for text, part in zip(texts, parts[1:], strict=True):
        out += (text, part)
    return "".join(out)


def split(writes: Sequence[GrainWrite]) -> list[Round]:
    """Split ``writes`` into rounds with one write per job each."""
    rounds: list[Round] = []
    seen: dict[str, int] = {}
    for position, w in enumerate(writes):
        k = seen.get(w.lease.job_id, 0)
        seen[w.lease.job_id] = k + 1
        if k == len(rounds):
            rounds.append(Round())
        rounds[k].add(position, w)
    return rounds


async def _apply(
    conn: Conn, writes: Sequence[GrainWrite], r: Round, batch: str, out: list[Any]
) -> None:
    [(held_ids, held_etags, updated, deleted, missing)] = await fetch(conn, "commit", batch=batch)
    held = dict(zip(held_ids or (), held_etags or (), strict=True))
    applied = {*updated, *deleted}
    missing = set(missing)
    for position, etag in zip(r.positions, r.etags, strict=True):
        w = writes[position]
        job_id = w.lease.job_id
        error: EtagConflictError | LeaseLostError
        if job_id in applied:
            out[position] = WriteResult(job_id, etag)
            continue
        if job_id in missing:
            error = EtagConflictError(job_id, w.expected_etag, None)
        elif job_id not in held:
            error = LeaseLostError(job_id, w.lease.silo_id, w.lease.epoch)
        else:
            error = EtagConflictError(job_id, w.expected_etag, held[job_id])
        out[position] = WriteResult(job_id, None, error)


async def commit(conn: Conn, writes: Sequence[GrainWrite]) -> list[WriteResult]:
    """Apply ``writes`` in one transaction: one statement, or one per round."""
    rounds = split(writes)
    batches = [r.encode() for r in rounds]  # all of them before the first is sent
    results: list[Any] = [None] * len(writes)
    if len(rounds) == 1:
        await _apply(conn, writes, rounds[0], batches[0], results)
    elif rounds:
        async with conn.transaction():
            for r, batch in zip(rounds, batches, strict=True):
                await _apply(conn, writes, r, batch, results)
    return results
