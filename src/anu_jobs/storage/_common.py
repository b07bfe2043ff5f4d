"""What the providers share, so that they cannot drift apart: how times, etags and rows
are encoded, the lease and retention rules as data, and in-process notice fan-out."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from operator import is_
from typing import Any, cast

from anu_jobs import _json
from anu_jobs._time import from_us, from_us_opt, to_us, to_us_opt
from anu_jobs.storage.base import (
    UNREADABLE,
    ControlMessage,
    NewJob,
    NewJobRow,
    Notice,
    NoticeListener,
    RunRecord,
    SiloInfo,
    SiloStatus,
    StateEnvelope,
)

__all__ = [
    "FREEING_STATUSES",
    "MAX_US",
    "RUN_SLOT",
    "RUN_SLOT_TEXT",
    "TERMINAL_RUN_STAGES",
    "ControlRow",
    "JobRow",
    "NewJobRow",
    "NoticeHub",
    "RunRow",
    "SiloRow",
    "control_from_row",
    "encode_write",
    "envelope_from_row",
    "from_us",
    "id_matches",
    "new_etag",
    "new_job_rows",
    "parse_state",
    "run_from_row",
    "run_to_row",
    "shared_run",
    "silo_from_row",
    "silo_to_row",
    "state_run_text",
    "to_us",
]

log = logging.getLogger("anu_jobs.storage")

#: later than any time a store holds; stands in for "no bound"
MAX_US = 2**63 - 1

#: a lease whose holder has one of these statuses is free, whatever its expiry
FREEING_STATUSES: tuple[SiloStatus, ...] = ("dead", "stopped")
#: run stages that :meth:`Storage.prune_runs` may delete
TERMINAL_RUN_STAGES = frozenset({"completed", "failed", "compensated", "cancelled", "skipped"})

# Rows as both providers hold them (the SQL column order); objects are built from rows
# by the functions below only, so both providers return byte-for-byte the same values.
JobRow = tuple[str, str, str, str, int]  # job_id, job_type, stage, state JSON, etag
ControlRow = tuple[int, str, str, int]  # msg_id, job_id, body JSON, posted_us
RunRow = tuple[str, str, str, str, int, int, int | None, int | None, str | None, str]
SiloRow = tuple[str, str, int, int, int, str, int]


# Etags need to differ, not to be secret: a Mersenne Twister seeded from the OS (and
# again in a forked child, so that parent and child do not draw the same etags) costs a
# tenth of a system call per etag.
_etags = random.Random()
os.register_at_fork(after_in_child=_etags.seed)


def new_etag(previous: int | None = None) -> int:
    """A random 62-bit etag, never equal to ``previous`` (so a write always changes it)."""
    while True:
        etag = _etags.getrandbits(62)
        if etag != previous:
            return etag


def new_job_rows(jobs: Sequence[NewJob]) -> list[NewJobRow]:
    """The rows of :meth:`Storage.insert_encoded_jobs` for ``jobs``."""
    return [
        (
            j.job_id,
            j.job_type,
            j.stage,
            _json.dumps(j.state),
            None if j.due_at is None else to_us(j.due_at),
        )
        for j in jobs
    ]


def id_matches(job_id: str, text: str) -> bool:
    """:attr:`JobQuery.text`: a case-insensitive substring of the job id.

    SQLite's LIKE folds ASCII only, so the SQLite provider registers this very function
    with its connection: unicode ids match the same way in every provider.
    """
    return text.lower() in job_id.lower()


def envelope_from_row(row: Sequence[Any]) -> StateEnvelope:
    job_id, job_type, stage, state, etag = row
    return StateEnvelope(job_id, job_type, stage, parse_state(state), etag)


def parse_state(text: str) -> dict[str, Any]:
    """A stored state document; text that is not a JSON object comes back as
    ``{UNREADABLE: why, "raw": text}`` (see :data:`~anu_jobs.storage.base.UNREADABLE`)."""
    try:
        doc = _json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        why = f"the stored state is not JSON ({type(exc).__name__}: {exc})"
    else:
        if isinstance(doc, dict):
            return doc
        kind = {list: "an array", str: "a string", bool: "a boolean"}.get(type(doc), "a number")
        why = f"the stored state is {'null' if doc is None else kind}, not a JSON object"
    return {UNREADABLE: why, "raw": text if isinstance(text, str) else repr(text)}


def control_from_row(row: Sequence[Any]) -> ControlMessage:
    msg_id, job_id, body, posted_us = row
    return ControlMessage(
        msg_id, job_id, cast(dict[str, Any], _json.loads(body)), from_us(posted_us)
    )


def run_to_row(run: RunRecord) -> RunRow:
    return (
        run.run_id,
        run.job_id,
        run.job_type,
        run.stage,
        run.attempt,
        to_us(run.scheduled_for),
        to_us_opt(run.started_at),
        to_us_opt(run.finished_at),
        run.silo_id,
        _json.dumps(run.data),
    )


# What stands in for a run document while the rest of a state is encoded: encoded, it is
# a JSON string that begins with a NUL, which stored state never holds (and the splices
# check that it occurs exactly where it was put, whatever the state holds).
RUN_SLOT = "\x00anu-jobs run\x00"
RUN_SLOT_TEXT = _json.dumps(RUN_SLOT)


def encode_write(state: dict[str, Any], runs: Sequence[RunRecord]) -> tuple[str, list[RunRow]]:
    """``_json.dumps(state)`` and :func:`run_to_row` of each run, with the same text and
    errors, encoding only once a run document that both carry.

    A job's state holds its current run (``"run"``: the history document plus its
    checkpoint) or, once the run ends, ``"last_run"`` (the history document itself), made
    from the same values as the run record written with it. When the state's document
    shares every value (the same objects, so the same JSON) and key order with a record's
    (see :func:`shared_run`), the record's text is spliced into the state's; otherwise
    the state is encoded whole.
    """
    try:
        rows = [run_to_row(r) for r in runs]
    except Exception:
        _json.dumps(state)  # as before, a state that cannot be encoded is named first
        raise
    found = shared_run(state, [r.data for r in runs])
    if found is not None:
        key, index = found
        text = state_run_text(key, rows[index][9])
        if text is not None:
            copy = dict(state)
            copy[key] = RUN_SLOT
            outer = _json.dumps(copy)
            if outer.count(RUN_SLOT_TEXT) == 1:
                return outer.replace(RUN_SLOT_TEXT, text), rows
    return _json.dumps(state), rows


def shared_run(state: dict[str, Any], datas: Sequence[Any]) -> tuple[str, int] | None:
    """The key of ``state`` (``"run"`` or ``"last_run"``) and the index in ``datas`` of
    a run document that the state carries as well, value for value (the same objects,
    so the same JSON, in the same key order; ``"run"`` has a null ``"checkpoint"``
    before its last key, ``"silo_id"``, a string or null); else None."""
    for key in ("run", "last_run"):
        doc = state.get(key)
        if type(doc) is dict:
            for index, data in enumerate(datas):
                if type(data) is dict and _same_doc(doc, data, key == "run"):
                    return key, index
    return None


def state_run_text(key: str, text: str) -> str | None:
    """The JSON of a state's ``key`` document made from ``text``, the JSON of the run
    document that :func:`shared_run` found it shares (None if the text is not as it
    must be)."""
    if key == "last_run":
        return text
    # "silo_id" is the last key and its value a string or null: the last ',"silo_id":'
    # of the text is that key (a quote inside a JSON string is always escaped).
    at = text.rfind(',"silo_id":')
    if at < 0:
        return None
    return f'{text[:at]},"checkpoint":null{text[at:]}'


def _same_doc(doc: dict[str, Any], data: dict[str, Any], checkpoint: bool) -> bool:
    keys = list(data)
    if checkpoint:
        if not keys or keys[-1] != "silo_id" or doc.get("checkpoint", 0) is not None:
            return False
        silo = data["silo_id"]
        if silo is not None and type(silo) is not str:
            return False
        keys.insert(-1, "checkpoint")
    if list(doc) != keys:
        return False
    for k, v in data.items():
        other = doc[k]
        if other is v:
            continue
        if (
            type(v) is list
            and type(other) is list
            and len(v) == len(other)
            and all(map(is_, v, other))
        ):
            continue
        return False
    return True


def run_from_row(row: Sequence[Any]) -> RunRecord:
    run_id, job_id, job_type, stage, attempt, sched, started, finished, silo_id, data = row
    return RunRecord(
        run_id=run_id,
        job_id=job_id,
        job_type=job_type,
        stage=stage,
        attempt=attempt,
        scheduled_for=from_us(sched),
        started_at=from_us_opt(started),
        finished_at=from_us_opt(finished),
        silo_id=silo_id,
        data=cast(dict[str, Any], _json.loads(data)),
    )


def silo_to_row(info: SiloInfo) -> SiloRow:
    # A registered silo starts active, whatever status the caller's object carried.
    return (
        info.silo_id,
        info.host,
        info.pid,
        to_us(info.started_at),
        to_us(info.heartbeat_at),
        "active",
        info.generation,
    )


def silo_from_row(row: Sequence[Any]) -> SiloInfo:
    silo_id, host, pid, started, heartbeat, status, generation = row
    return SiloInfo(
        silo_id,
        host,
        pid,
        from_us(started),
        from_us(heartbeat),
        cast(SiloStatus, status),
        generation,
    )


class NoticeHub:
    """The listeners of one store in this process.

    Each listener is called on the event loop that was running when it was added
    (directly when the publisher runs on that loop, else through
    ``call_soon_threadsafe``), or directly when none was running. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._entries: dict[int, tuple[NoticeListener, asyncio.AbstractEventLoop | None]] = {}

    def add(self, listener: NoticeListener) -> Callable[[], None]:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        key = next(self._ids)
        with self._lock:
            self._entries[key] = (listener, loop)

        def remove() -> None:
            with self._lock:
                self._entries.pop(key, None)

        return remove

    def publish(self, notices: Iterable[Notice]) -> None:
        batch = tuple(notices)
        with self._lock:
            entries = list(self._entries.items())
        if not batch or not entries:
            return
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for key, (listener, loop) in entries:
            if loop is None or loop is current:
                _deliver(listener, batch)
            elif loop.is_closed():
                # Its owner went away without removing it: forget it rather than leak.
                with self._lock:
                    self._entries.pop(key, None)
            else:
                try:
                    loop.call_soon_threadsafe(_deliver, listener, batch)
                except RuntimeError:  # closed between the check and the call
                    with self._lock:
                        self._entries.pop(key, None)


def _deliver(listener: NoticeListener, notices: tuple[Notice, ...]) -> None:
    for notice in notices:
        try:
            listener(notice)
        except Exception:
            # Listeners must not raise; one that does must not stop the others or the writer.
            log.exception("a storage notice listener raised on %r", notice)
