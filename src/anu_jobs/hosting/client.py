"""``JobClient``: schedule, control and observe jobs, in a silo or from any process."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import uuid
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from anu_jobs._json import clean_text
from anu_jobs._time import from_us, to_us
from anu_jobs.clock import Clock, SystemClock, ensure_utc
from anu_jobs.errors import (
    ConfigurationError,
    DuplicateJobError,
    JobNotFoundError,
    JobStateError,
    LeaseLostError,
    WaitTimeoutError,
)
from anu_jobs.grain import (
    JobGrain,
    JobStage,
    JobState,
    JobStatus,
    RunInfo,
    new_job_state,
    run_id_for,
    status_from_envelope,
)
from anu_jobs.grain.state import STATE_ERRORS
from anu_jobs.hosting._bulk import MAX_JOB_ID, ChunkBuilder, check_job_id
from anu_jobs.hosting._passive import apply_passive
from anu_jobs.model import Job, JobRegistry, validate_params
from anu_jobs.storage import open_storage
from anu_jobs.storage.base import (
    ControlMessage,
    JobQuery,
    LeaseToken,
    Notice,
    SiloInfo,
    StateEnvelope,
    Storage,
)
from anu_jobs.triggers import Manual, MisfirePolicy, Trigger

if TYPE_CHECKING:
    from anu_jobs.runtime import SiloRuntime

__all__ = ["MAX_JOB_ID", "JobClient", "JobSpec", "check_job_id"]

log = logging.getLogger("anu_jobs.client")

_TERMINAL = {"completed", "failed", "compensated", "cancelled", "skipped"}


def _lookup_id(job_id: object) -> str:
    """``job_id`` for a read or a request: a string that no job can have (too long, a
    NUL) is simply not found, rather than sent to the store."""
    if not isinstance(job_id, str):
        raise ConfigurationError(f"a job id is a string, not {type(job_id).__name__}")
    try:
        return check_job_id(job_id)
    except ConfigurationError:
        raise JobNotFoundError(job_id) from None


def _filter_text(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} is a string, not {type(value).__name__}")
    return value


def _reason(reason: object) -> str | None:
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise ConfigurationError(f"a reason is a string, not {type(reason).__name__}")
    return clean_text(reason)


def as_triggers(trigger: Trigger | Sequence[Trigger] | None) -> list[Trigger]:
    if trigger is None:
        return [Manual()]
    items = [trigger] if isinstance(trigger, Trigger) else list(trigger)
    if not items:
        return [Manual()]
    for item in items:
        if not isinstance(item, Trigger):
            raise ConfigurationError(
                f"expected a trigger (Manual, Once, Every, Cron), not {item!r}"
            )
    return items


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job for :meth:`JobClient.schedule_many`; fields as in :meth:`JobClient.schedule`."""

    job: type[Job] | str
    job_id: str | None = None
    params: Any = None
    trigger: Trigger | Sequence[Trigger] | None = None
    misfire: MisfirePolicy | None = None
    overlap: str | None = None


class JobClient:
    """Schedules and controls jobs in a store. ``silo.client`` is one; from another
    process use ``await JobClient.connect(url)`` (or ``async with JobClient.connect(url)``).

    Every call that changes a job is durable when it returns. Requests for a job that a
    silo is running are delivered to that silo's activation (interleaved with the run);
    requests for a job nobody holds are applied here, under the job's lease.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        registry: JobRegistry | None = None,
        clock: Clock | None = None,
        runtime: SiloRuntime | None = None,
        owns_storage: bool = False,
        control_timeout: float = 5.0,
    ) -> None:
        self.storage = storage
        self.registry = registry or JobRegistry()
        self.clock = clock or SystemClock()
        self._runtime = runtime
        self._owns_storage = owns_storage
        self._control_timeout = control_timeout
        self._holder = f"client-{uuid.uuid4().hex[:12]}"
        self._run_events: dict[str, set[asyncio.Event]] = {}
        self._remove_listener = storage.add_listener(self._on_notice)

    @classmethod
    def connect(
        cls, url: str, *, jobs: Sequence[type[Job] | ModuleType] = (), clock: Clock | None = None
    ) -> _Connect:
        """Open the store at ``url`` and return a client for it (await it, or use it as an
        async context manager). Register ``jobs`` to schedule job types by name."""
        return _Connect(cls, url, jobs, clock)

    async def close(self) -> None:
        self._remove_listener()
        if self._owns_storage:
            await self.storage.close()

    async def __aenter__(self) -> JobClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- scheduling -------------------------------------------------------------------

    async def schedule(
        self,
        job: type[Job] | str,
        *,
        job_id: str | None = None,
        params: Any = None,
        trigger: Trigger | Sequence[Trigger] | None = None,
        replace: bool = False,
        misfire: MisfirePolicy | None = None,
        overlap: str | None = None,
    ) -> JobStatus:
        """Schedule a job; with no trigger it is ``Manual()`` (it runs on :meth:`trigger`).

        Raises :class:`DuplicateJobError` when ``job_id`` exists and ``replace`` is False;
        with ``replace=True`` the job's params, triggers and policies are replaced (a run
        in flight goes on). Params are validated by the job type's ``Params``.
        """
        cls = self.registry.resolve(job)
        jid = check_job_id(job_id if job_id is not None else uuid.uuid4().hex)
        state = self._new_state(cls, params, trigger, misfire, overlap, "client")
        await self._put(jid, cls, state, replace)
        return status_from_envelope(
            StateEnvelope(jid, cls.name, state.stage.value, state.to_json(), 0)
        )

    async def schedule_many(
        self, jobs: Iterable[JobSpec], *, chunk: int = 10_000
    ) -> builtins.list[str]:
        """Schedule many jobs at once and return their ids, in order.

        The jobs are validated and inserted ``chunk`` at a time, each chunk in one
        transaction, so memory stays bounded however many there are (``jobs`` may be a
        generator). A spec that fails validation, or a job id that already exists or comes
        twice, raises before its chunk is written; earlier chunks stay written. With up to
        ``chunk`` jobs, nothing is written unless all are valid. Much faster than many
        :meth:`schedule` calls: one commit per chunk, and the next chunk is validated
        while the store writes the one before. The jobs of one chunk share their
        creation time (one clock reading per chunk).
        """
        if chunk < 1:
            raise ConfigurationError(f"chunk must be at least 1, not {chunk}")
        ids: builtins.list[str] = []
        seen: set[str] = set()
        earliest: datetime | None = None
        writing: asyncio.Task[datetime | None] | None = None
        try:
            builder = ChunkBuilder(self.registry, self._new_state, self.clock.now())
            for spec in jobs:
                ids.append(builder.add(spec, seen))
                count = len(builder.rows)
                if not count & 255:
                    # Let the write in flight move on (a PostgreSQL copy is sent from this
                    # loop) and the rest of the loop run: a silo's heartbeats and timers.
                    await asyncio.sleep(0)
                if count >= chunk:
                    # Hand the chunk to the store and build the next one meanwhile;
                    # chunks are written one at a time, in order.
                    if writing is not None:
                        earliest = await writing
                    writing = asyncio.ensure_future(self._insert_chunk(builder, earliest))
                    await asyncio.sleep(0)  # let it start
                    builder = ChunkBuilder(self.registry, self._new_state, self.clock.now())
                    # An id of an earlier chunk is in the store by the time this chunk is
                    # written, which then refuses it whole: the ids are only remembered a
                    # chunk at a time (a million of them would hold some 40 MB).
                    seen = set()
            if writing is not None:
                earliest = await writing
            if builder.rows:
                await self._insert_chunk(builder, earliest)
        finally:
            # A bad spec (or a failing generator) stops the call only once the chunk
            # before it is written; should that write fail, its error is the one raised.
            if writing is not None and not writing.done():
                await writing
        return ids

    async def _insert_chunk(
        self, chunk: ChunkBuilder, earliest: datetime | None
    ) -> datetime | None:
        """Insert one chunk of :meth:`schedule_many`; wake the silos if it holds an
        earlier due time than the chunks before it. Returns the earliest due time so far."""
        await self.storage.insert_encoded_jobs(chunk.rows)
        if chunk.min_due_us is not None:
            first = from_us(chunk.min_due_us)
            if earliest is None or first < earliest:
                earliest = first
                await self._notify(Notice("due", None, earliest))
        return earliest

    def _new_state(
        self,
        cls: type[Job],
        params: Any,
        trigger: Trigger | Sequence[Trigger] | None,
        misfire: MisfirePolicy | None,
        overlap: str | None,
        source: str = "client",
        now: datetime | None = None,
    ) -> JobState:
        data = validate_params(cls, params)
        triggers = as_triggers(trigger)
        if overlap is not None and overlap not in ("skip", "queue_one"):
            raise ConfigurationError(f"overlap must be 'skip' or 'queue_one', not {overlap!r}")
        if misfire is not None and not isinstance(misfire, MisfirePolicy):
            raise ConfigurationError(f"misfire must be a MisfirePolicy, not {misfire!r}")
        return new_job_state(
            data,
            triggers,
            self.clock.now() if now is None else now,
            misfire or cls.misfire,
            overlap or cls.overlap,
            source,
        )

    async def _put(self, job_id: str, cls: type[Job], state: JobState, replace: bool) -> None:
        due = state.due_us()
        try:
            await self.storage.insert_job(
                job_id,
                cls.name,
                state.stage.value,
                state.to_json(),
                None if due is None else from_us(due),
            )
        except DuplicateJobError:
            if not replace:
                raise
            await self._control(job_id, {"op": "replace", "state": state.to_json()})
            return
        await self._notify(Notice("due", job_id, None if due is None else from_us(due)))

    # -- control ----------------------------------------------------------------------

    async def trigger(self, job_id: str) -> str:
        """Run the job now (a manual fire, queued behind a run in flight); returns the run id."""
        env = await self._existing(job_id)
        if env.stage == JobStage.CANCELLED:
            raise JobStateError(
                job_id,
                env.stage,
                "a cancelled job does not run; schedule it again with replace=True",
            )
        now = self.clock.now()
        run_id = run_id_for(job_id, now)
        await self._control(job_id, {"op": "trigger", "at": to_us(now), "run_id": run_id})
        return run_id

    async def cancel(self, job_id: str, reason: str | None = None) -> None:
        """Cancel the job: trip the running attempt's token (its task is cancelled after a
        grace period) and drop every future fire. Cancelling twice is harmless."""
        await self._existing(job_id)
        await self._control(job_id, {"op": "cancel", "reason": _reason(reason) or "cancelled"})

    async def pause(self, job_id: str, reason: str | None = None) -> None:
        """Stop firing the job's triggers (a run in flight goes on) until :meth:`resume`."""
        env = await self._existing(job_id)
        if env.stage in (JobStage.CANCELLED, JobStage.FINISHED):
            raise JobStateError(job_id, env.stage, "only an active job can be paused")
        await self._control(job_id, {"op": "pause", "reason": _reason(reason) or "paused"})

    async def resume(self, job_id: str) -> None:
        """Fire the job's triggers again from now on (fires missed while paused are skipped,
        except a ``Once`` whose time passed, which fires at once)."""
        env = await self._existing(job_id)
        if env.stage == JobStage.CANCELLED:
            raise JobStateError(
                job_id,
                env.stage,
                "a cancelled job cannot resume; schedule it again with replace=True",
            )
        await self._control(job_id, {"op": "resume"})

    async def delete(self, job_id: str) -> None:
        """Cancel the job and remove it with its run history."""
        await self._existing(job_id)
        await self._control(job_id, {"op": "delete"})

    async def _existing(self, job_id: str) -> StateEnvelope:
        job_id = _lookup_id(job_id)
        env = await self.storage.read_state(job_id)
        if env is None:
            raise JobNotFoundError(job_id)
        return env

    async def _control(self, job_id: str, body: dict[str, Any]) -> None:
        runtime = self._runtime
        if runtime is not None:
            local = runtime.activations.get(job_id)
            if local is not None and local.alive:
                if not local.releasing:
                    logic = local.logic
                    local.turn(lambda: logic.on_control(body))
                    await local.save()
                    return
                # It is being collected: let that finish, then go the usual way.
                with contextlib.suppress(LeaseLostError):
                    await local.save()
        holder = runtime.silo_id if runtime is not None else self._holder
        got = await self.storage.acquire_lease(job_id, holder, timedelta(seconds=30))
        if got is not None:
            token, env, msgs = got
            if runtime is not None:
                act = runtime.activate(token, env, msgs)
                act.turn(lambda: act.logic.on_control(body))
                await act.save()
                return
            await self._apply_passive(token, env, msgs, body)
            return
        msg_id = await self.storage.post_control(job_id, body, self.clock.now())
        await self._notify(Notice("control", job_id))
        await self._await_consumed(msg_id)

    async def _apply_passive(
        self,
        token: LeaseToken,
        env: StateEnvelope,
        msgs: Sequence[ControlMessage],
        body: dict[str, Any],
    ) -> None:
        """Apply a request to a job no silo holds, as a short-lived passive activation."""
        notices = await apply_passive(
            self.storage, self.registry, self.clock, token, env, msgs, body
        )
        await self._notify(*notices)

    async def _await_consumed(self, msg_id: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._control_timeout
        delay = 0.01
        while loop.time() < deadline:
            if not await self.storage.control_pending([msg_id]):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        log.info("control message %d is stored but not yet taken by the job's silo", msg_id)

    async def _notify(self, *notices: Notice) -> None:
        try:
            await self.storage.notify(notices)
        except Exception as exc:  # notices are best effort; polls find the work anyway
            log.debug("notify failed: %s", exc)

    # -- reading ----------------------------------------------------------------------

    async def get(self, job_id: str) -> JobStatus:
        """The job's status: stage, triggers, next fire time, current and last run."""
        job_id = _lookup_id(job_id)
        runtime = self._runtime
        if runtime is not None:
            act = runtime.activations.get(job_id)
            logic = act.logic if act is not None and act.alive else None
            if isinstance(logic, JobGrain) and logic.state is not None and not logic.deleted:
                st = logic.state
                return status_from_envelope(
                    StateEnvelope(job_id, logic.job_type, st.stage.value, st.to_json(), 0)
                )
        return status_from_envelope(await self._existing(job_id))

    async def runs(
        self, job_id: str, limit: int = 100, before: datetime | None = None
    ) -> builtins.list[RunInfo]:
        """The job's runs, newest first (the history keeps the last N per job)."""
        env = await self._existing(job_id)
        records = await self.storage.read_runs(
            job_id, limit, ensure_utc(before) if before else None
        )
        return [RunInfo.from_json(job_id, env.job_type, r.data) for r in records]

    async def list(
        self,
        *,
        stage: str | None = None,
        job_type: str | None = None,
        text: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> builtins.list[JobStatus]:
        """Jobs by id, filtered by job stage, type and a substring of the id; page with
        ``after`` (the last id of the previous page)."""
        filters = [
            _filter_text(value, what)
            for value, what in ((stage, "stage"), (job_type, "job_type"), (text, "text"))
        ]
        if not isinstance(limit, int):
            raise ConfigurationError(f"limit is an int, not {type(limit).__name__}")
        after = _filter_text(after, "after")
        if any(f is not None and (clean_text(f) != f or "\x00" in f) for f in filters):
            return []  # no stored id, type or stage holds a NUL or a lone surrogate
        if after is not None:
            after = after.split("\x00", 1)[0]  # ids hold no NUL: the same ids follow
            if clean_text(after) != after:
                raise ConfigurationError(f"after must be valid Unicode text, not {after!r}")
        query = JobQuery(filters[0], filters[1], filters[2], after, limit)
        envs = await self.storage.list_jobs(query)
        return [status_from_envelope(e) for e in envs]

    async def stage_counts(self) -> dict[str, int]:
        """How many jobs are in each job stage."""
        return await self.storage.stage_counts()

    async def overdue(
        self, threshold: timedelta = timedelta(seconds=60), limit: int = 100
    ) -> tuple[int, builtins.list[tuple[str, datetime]]]:
        """Jobs due more than ``threshold`` ago that no silo has taken (late or missed):
        how many, and the ``limit`` oldest with their due time."""
        return await self.storage.overdue(self.clock.now() - threshold, limit)

    async def run_counts(
        self, since: datetime, bucket: timedelta = timedelta(minutes=1)
    ) -> builtins.list[tuple[datetime, str, int]]:
        """How many runs ended in each terminal stage per ``bucket``, since ``since``."""
        return await self.storage.run_counts(ensure_utc(since), bucket)

    async def silos(self) -> builtins.list[SiloInfo]:
        """The silos the store knows, with their status and last heartbeat."""
        return await self.storage.list_silos()

    async def store_now(self) -> datetime:
        """The store's time, which silos' heartbeats are stamped with (the PostgreSQL
        server's clock, which may differ from this process's)."""
        return await self.storage.now()

    async def wait(self, job_id: str, run_id: str | None = None, timeout: float = 30.0) -> RunInfo:
        """Wait for a run to reach a terminal stage and return it: ``run_id``, or the job's
        current run, or its next one (or, when nothing is in flight or due, its last
        run). Raises :class:`WaitTimeoutError` after ``timeout`` s."""
        env = await self._existing(job_id)
        if run_id is None:
            run_id = _current_or_next_run(env)
            if run_id is None:
                raise JobStateError(
                    job_id, env.stage, "no run is in flight or due; trigger it first"
                )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        event = asyncio.Event()
        waiters = self._run_events.setdefault(job_id, set())
        waiters.add(event)
        try:
            while True:
                event.clear()
                rec = await self.storage.read_run(run_id)
                if rec is not None and rec.stage in _TERMINAL:
                    return RunInfo.from_json(job_id, rec.job_type, rec.data)
                left = deadline - loop.time()
                if left <= 0:
                    raise WaitTimeoutError(job_id, run_id, timeout)
                # Notices wake this at once; the poll covers notices lost meanwhile.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, 0.25))
        finally:
            waiters.discard(event)
            if not waiters:
                self._run_events.pop(job_id, None)

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind == "run" and notice.job_id is not None:
            for event in self._run_events.get(notice.job_id, ()):
                event.set()
        elif notice.kind == "changed":
            for events in self._run_events.values():
                for event in events:
                    event.set()


def _current_or_next_run(env: StateEnvelope) -> str | None:
    try:
        state = JobState.from_json(env.state)
    except STATE_ERRORS:
        return None
    if state.run is not None:
        return state.run.run_id
    if state.pending:
        return str(min(state.pending, key=lambda p: p[0])[2])
    if state.stage is JobStage.ACTIVE:
        nxt = [n for n in state.next if n is not None]
        if nxt:
            return run_id_for(env.job_id, from_us(min(nxt)))
    if state.last_run is not None:  # it ended before we looked
        return str(state.last_run["run_id"])
    return None


class _Connect:
    """``JobClient.connect(url)``: awaitable, and an async context manager that closes."""

    def __init__(
        self,
        cls: type[JobClient],
        url: str,
        jobs: Sequence[type[Job] | ModuleType],
        clock: Clock | None,
    ) -> None:
        self._cls, self._url, self._jobs, self._clock = cls, url, jobs, clock
        self._client: JobClient | None = None

    async def _open(self) -> JobClient:
        storage = open_storage(self._url, clock=self._clock)
        await storage.open()
        registry = JobRegistry()
        registry.register(*self._jobs)
        return self._cls(storage, registry=registry, clock=self._clock, owns_storage=True)

    def __await__(self) -> Generator[Any, None, JobClient]:
        return self._open().__await__()

    async def __aenter__(self) -> JobClient:
        self._client = await self._open()
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.close()
