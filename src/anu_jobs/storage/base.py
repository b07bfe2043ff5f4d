"""The storage contract: what every provider (memory, SQLite, PostgreSQL) must do.

The docstrings of :class:`Storage` *are* the contract; ``anu_jobs.testing.storage_suite``
checks it, and every provider must pass that suite unchanged.

Vocabulary (Orleans'):

- **grain state**: one envelope per job: its JSON state, its job type, its job stage and
  an **etag**. Every write is a compare-and-set on the etag. Etags are opaque integers
  that a job never sees twice, even after it is deleted and created again (providers
  draw them at random from 62 bits, or from a store-wide sequence).
- **reminder**: the one durable wake-up time of a job (``due_at``), indexed, so that
  "what is due before T" is an index range scan. A job with no reminder never wakes by
  itself.
- **activation lease**: which silo holds a job's one live activation, until when, under
  which **epoch**. Epochs only grow for a job; taking a lease bumps it. A write carries
  the lease token it was made under and is refused unless the job's lease still has that
  silo and epoch (fencing): a silo that was paused or partitioned while another took
  over can never write again.
- **membership**: silos, their heartbeats and status. A lease held by a silo whose status
  is ``dead`` or ``stopped`` is free to take, whatever its expiry.
- **store time**: the one clock that liveness is judged by. Lease expiries and heartbeats
  are stamped, and compared, with the store's own time, never with a caller's: callers
  send durations (``lease_for``, ``dead_after``), so silos whose clocks disagree still
  agree on who holds what and who is alive. PostgreSQL uses the server's clock; SQLite
  and memory, which serve one host, use the clock they were opened with (the silo's).
  Due times (reminders, ``now`` and ``until`` below) stay the callers' times.
- **control messages**: a durable inbox per job, for requests (cancel, pause, trigger…)
  from processes that do not hold the job's lease. A job with pending control messages
  is due now, whatever its reminder says.
- **run history**: one record per run, upserted as the run moves through its stages.
- **notices**: a best-effort wake-up between processes; never the only way work is found.

Times are aware UTC datetimes in this API; providers keep whole microseconds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from anu_jobs import _json
from anu_jobs._time import from_us_opt
from anu_jobs.errors import EtagConflictError, LeaseLostError

__all__ = [
    "Claim",
    "ControlMessage",
    "GrainWrite",
    "JobQuery",
    "LeaseToken",
    "NewJob",
    "NewJobRow",
    "Notice",
    "NoticeListener",
    "RunRecord",
    "SiloInfo",
    "SiloStatus",
    "StateEnvelope",
    "Storage",
    "WriteResult",
]

SiloStatus = Literal["active", "stopping", "stopped", "dead"]
NoticeKind = Literal["due", "control", "run", "changed"]


#: The key of the document a provider gives as the state of a row whose stored text is
#: not a JSON object: ``{UNREADABLE: why, "raw": the text}``. The job grain quarantines it.
UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class StateEnvelope:
    """A job's stored state: the JSON document, its job type and stage, and its etag.

    A stored text that is not a JSON object comes as ``{UNREADABLE: why, "raw": text}``,
    never as an exception: one corrupt row must not stop a claim or a listing.
    """

    job_id: str
    job_type: str
    stage: str
    state: dict[str, Any]
    etag: int


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to create with :meth:`Storage.insert_jobs`."""

    job_id: str
    job_type: str
    stage: str
    state: dict[str, Any]
    due_at: datetime | None


#: A job to create with :meth:`Storage.insert_encoded_jobs`: its id, job type, stage,
#: state as JSON text (what ``anu_jobs._json.dumps`` makes of the document) and reminder
#: in microseconds since the epoch (None: no reminder).
NewJobRow = tuple[str, str, str, str, int | None]


@dataclass(frozen=True, slots=True)
class LeaseToken:
    """Proof of holding a job's activation lease: the holder and the epoch it took."""

    job_id: str
    silo_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """A request posted to a job's inbox; ``body`` is JSON (``{"op": "cancel", ...}``)."""

    msg_id: int
    job_id: str
    body: dict[str, Any]
    posted_at: datetime


@dataclass(frozen=True, slots=True)
class Claim:
    """A job whose lease :meth:`Storage.claim_due` took, with what the claimer needs."""

    lease: LeaseToken
    envelope: StateEnvelope
    due_at: datetime | None
    control: tuple[ControlMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of a job, as history keeps it. ``data`` is JSON: transitions, error, progress."""

    run_id: str
    job_id: str
    job_type: str
    stage: str
    attempt: int
    scheduled_for: datetime
    started_at: datetime | None
    finished_at: datetime | None
    silo_id: str | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GrainWrite:
    """One job's part of a :meth:`Storage.commit`.

    ``state`` None deletes the job (its state, reminder, lease, inbox and run history).
    ``due_at`` sets the reminder, None removes it. ``runs`` are upserted by ``run_id``.
    ``ack_control`` names inbox messages that this write consumed. ``release`` frees
    the lease once the write is in.
    """

    lease: LeaseToken
    expected_etag: int
    job_type: str
    stage: str
    state: dict[str, Any] | None
    due_at: datetime | None
    runs: tuple[RunRecord, ...] = ()
    ack_control: tuple[int, ...] = ()
    release: bool = False


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of one :class:`GrainWrite`: the new etag, or why it was refused."""

    job_id: str
    etag: int | None
    error: EtagConflictError | LeaseLostError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class SiloInfo:
    """A silo as membership knows it."""

    silo_id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    status: SiloStatus = "active"
    generation: int = 1


@dataclass(frozen=True, slots=True)
class JobQuery:
    """Filters for :meth:`Storage.list_jobs`; results are ordered by ``job_id``."""

    stage: str | None = None
    job_type: str | None = None
    text: str | None = None  # a case-insensitive substring of the job id
    after: str | None = None  # keyset pagination: ids greater than this
    limit: int = 100


@dataclass(frozen=True, slots=True)
class Notice:
    """A wake-up between processes. ``due``: a reminder was set or moved earlier;
    ``control``: a message was posted; ``run``: a run of ``job_id`` reached a terminal
    stage; ``changed``: another process changed the store, in ways the store cannot tell
    (SQLite): anything above may have happened."""

    kind: NoticeKind
    job_id: str | None = None
    due_at: datetime | None = None


NoticeListener = Callable[[Notice], None]


class Storage(ABC):
    """The one contract between the grain runtime and a store.

    Every method is a coroutine that commits before it returns (nothing is left in an
    open transaction). Methods that take sequences must do their work in one
    transaction per call, however long the sequence: that is how claims, renewals and
    writes are batched.
    """

    #: the store's URL with any password replaced by ``***``, for logs and errors
    url: str

    # -- lifecycle ------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect, and create or migrate the schema.

        Must raise :class:`~anu_jobs.errors.StorageUnavailableError` within a bounded
        time when the store cannot be reached, created or written (a missing directory,
        a read-only file, a dead server): never hang.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release connections and threads; calling it twice is harmless."""

    # -- grain state ----------------------------------------------------------------

    @abstractmethod
    async def insert_job(
        self, job_id: str, job_type: str, stage: str, state: dict[str, Any], due_at: datetime | None
    ) -> int:
        """Create a job with its state and reminder, atomically; return its first etag.

        Raises :class:`~anu_jobs.errors.DuplicateJobError` when the id exists. The new
        job has no lease.
        """

    @abstractmethod
    async def insert_jobs(self, jobs: Sequence[NewJob]) -> None:
        """Create many jobs in one transaction, all or nothing.

        Raises :class:`~anu_jobs.errors.DuplicateJobError` naming the first id that
        exists (in the store, or twice in ``jobs``), and then creates none of them. Bulk
        scheduling goes through here: providers should use their fastest bulk path
        (``executemany``, ``COPY``).
        """

    async def insert_encoded_jobs(self, rows: Sequence[NewJobRow]) -> None:
        """:meth:`insert_jobs` for jobs whose state is JSON text already and whose reminder
        is in microseconds: bulk scheduling encodes them itself, and a provider should
        store them as they are (same transaction, same duplicate rule). By default each
        row becomes a :class:`NewJob` again."""
        await self.insert_jobs(
            [
                NewJob(job_id, job_type, stage, _json.loads(text), from_us_opt(due_us))
                for job_id, job_type, stage, text, due_us in rows
            ]
        )

    @abstractmethod
    async def read_state(self, job_id: str) -> StateEnvelope | None:
        """The job's envelope, or None when no such job exists."""

    @abstractmethod
    async def read_due_at(self, job_ids: Sequence[str]) -> dict[str, datetime]:
        """The reminders of those jobs that have one."""

    @abstractmethod
    async def list_jobs(self, query: JobQuery) -> list[StateEnvelope]:
        """Jobs matching ``query``, ordered by ``job_id``, at most ``query.limit``."""

    @abstractmethod
    async def count_jobs(self, query: JobQuery) -> int:
        """How many jobs match ``query`` (ignoring ``after`` and ``limit``)."""

    @abstractmethod
    async def stage_counts(self) -> dict[str, int]:
        """The number of jobs in each job stage present in the store."""

    @abstractmethod
    async def overdue(
        self, due_before: datetime, limit: int = 100
    ) -> tuple[int, list[tuple[str, datetime]]]:
        """Jobs due before ``due_before`` whose lease is free (at store time): due, but
        taken by no silo (late, or missed while no silo ran). Returns how many there are,
        and the ``limit`` most overdue with their ``due_at``, oldest first."""

    @abstractmethod
    async def run_counts(
        self, since: datetime, bucket: timedelta
    ) -> list[tuple[datetime, str, int]]:
        """How many runs ended in each terminal stage per ``bucket`` of ``finished_at``,
        from ``since`` on. Buckets start at whole multiples of ``bucket`` since the epoch;
        rows are ordered by bucket, then stage. Must use an index on the finish time."""

    # -- leases and reminders ---------------------------------------------------------

    @abstractmethod
    async def claim_due(
        self, silo_id: str, now: datetime, until: datetime, limit: int, lease_for: timedelta
    ) -> list[Claim]:
        """Take the leases of up to ``limit`` jobs that are due and free, in one transaction.

        Due: the reminder's ``due_at`` is at or before ``until``, or the job has pending
        control messages (due at ``now``, the caller's time, for the order below). Free:
        no lease, or a lease whose expiry is at or before the store's time, or whose
        holder's status is ``dead`` or ``stopped``. The earliest due come first. Each
        claimed lease gets ``silo_id``, the previous epoch plus one (1 for a job never
        leased) and, as expiry, the store's time plus ``lease_for``. Each claim carries the
        job's envelope, its ``due_at`` and its pending control messages in posting order.
        Concurrent claimers never both claim one job (``FOR UPDATE SKIP LOCKED`` on
        PostgreSQL; the single writer on SQLite).
        """

    @abstractmethod
    async def acquire_lease(
        self, job_id: str, silo_id: str, lease_for: timedelta
    ) -> tuple[LeaseToken, StateEnvelope, tuple[ControlMessage, ...]] | None:
        """Take one job's lease if it is free (same rule as :meth:`claim_due`), due or not,
        until the store's time plus ``lease_for``.

        Returns the token, the envelope and the pending control messages; None when a
        live holder has it. Raises :class:`~anu_jobs.errors.JobNotFoundError` when no
        such job exists. Clients use this to act as a short-lived activation.
        """

    @abstractmethod
    async def renew_leases(
        self, tokens: Sequence[LeaseToken], lease_for: timedelta
    ) -> list[LeaseToken]:
        """Extend the leases still held under these tokens to the store's time plus
        ``lease_for``; return the tokens that were lost (another epoch, another holder, or
        the job is gone). A lease that expired but that nobody took since is still held."""

    @abstractmethod
    async def release_leases(self, tokens: Sequence[LeaseToken]) -> None:
        """Free the leases still held under these tokens (others are left alone). The epoch
        is kept, so the next holder's epoch is higher."""

    @abstractmethod
    async def lease_holder(self, job_id: str) -> LeaseToken | None:
        """The live lease of a job (unexpired at store time, holder not dead or stopped),
        or None."""

    @abstractmethod
    async def next_due(self, now: datetime) -> datetime | None:
        """The earliest ``due_at`` among jobs whose lease is free (at store time); ``now``,
        the caller's time, when such a job has pending control messages and nothing is due
        earlier; None when nothing is scheduled."""

    # -- the write path ------------------------------------------------------------------

    @abstractmethod
    async def commit(self, writes: Sequence[GrainWrite]) -> list[WriteResult]:
        """Apply many jobs' writes in one transaction; one result per write, in order.

        Each write is applied only if the job's lease still has ``write.lease``'s silo
        and epoch (else :class:`~anu_jobs.errors.LeaseLostError`) and its etag equals
        ``expected_etag`` (else :class:`~anu_jobs.errors.EtagConflictError` carrying
        both etags; ``actual`` None when the job is gone, which is checked first). A
        refused write changes nothing of its job and does not stop the others; writes to
        one job in one batch are checked in order, each seeing the ones before. An
        applied write replaces the state, stage and reminder, upserts its runs, deletes
        the acknowledged control messages, releases the lease when asked, and gets a
        fresh etag (a delete's result has etag None).
        """

    # -- control inbox ---------------------------------------------------------------

    @abstractmethod
    async def post_control(self, job_id: str, body: dict[str, Any], now: datetime) -> int:
        """Append a message to the job's inbox and return its id (ids only grow).

        Raises :class:`~anu_jobs.errors.JobNotFoundError` when no such job exists.
        """

    @abstractmethod
    async def pending_control(self, silo_id: str) -> list[ControlMessage]:
        """Pending messages of the jobs whose lease ``silo_id`` holds, in posting order."""

    @abstractmethod
    async def control_pending(self, msg_ids: Sequence[int]) -> set[int]:
        """Which of these messages are still waiting to be consumed."""

    # -- run history -----------------------------------------------------------------

    @abstractmethod
    async def read_runs(
        self, job_id: str, limit: int = 100, before: datetime | None = None
    ) -> list[RunRecord]:
        """A job's runs, newest ``scheduled_for`` first, only those before ``before``."""

    @abstractmethod
    async def read_run(self, run_id: str) -> RunRecord | None:
        """One run by id, or None."""

    @abstractmethod
    async def prune_runs(self, keep: int) -> int:
        """Delete all but the ``keep`` newest runs of every job, terminal runs only
        (completed, failed, compensated, cancelled, skipped); return how many went."""

    # -- membership ------------------------------------------------------------------

    @abstractmethod
    async def register_silo(self, info: SiloInfo) -> None:
        """Add a silo as ``active``; a silo id is never registered twice. Its first
        heartbeat is the store's time (``info.heartbeat_at`` is not used);
        ``info.started_at`` is kept as the silo gave it."""

    @abstractmethod
    async def heartbeat(self, silo_id: str) -> bool:
        """Record that the silo is alive, at the store's time. False when it was declared
        dead or stopped: such a silo must stop at once and never come back under that id."""

    @abstractmethod
    async def set_silo_status(self, silo_id: str, status: SiloStatus, now: datetime) -> None:
        """Change a silo's status. ``stopped`` and ``dead`` free all its leases at once."""

    @abstractmethod
    async def declare_dead(self, dead_after: timedelta, by: str | None = None) -> list[str]:
        """Declare dead every ``active`` or ``stopping`` silo whose last heartbeat is more
        than ``dead_after`` before the store's time, but ``by`` (the silo asking, which has
        just reported itself alive); free their leases; return their ids."""

    @abstractmethod
    async def list_silos(self) -> list[SiloInfo]:
        """Every silo the store knows, newest first."""

    @abstractmethod
    async def now(self) -> datetime:
        """The store's time now, which heartbeats are stamped with: how long ago a silo
        heartbeat is ``await storage.now() - info.heartbeat_at``, whatever the asker's
        clock says."""

    # -- store metadata --------------------------------------------------------------

    @abstractmethod
    async def schema_versions(self) -> list[tuple[int, datetime]]:
        """The schema migrations applied to this store, oldest first, with when each was
        applied; empty for a store that keeps no versioned schema (memory)."""

    @abstractmethod
    async def read_meta(self, key: str) -> dict[str, Any] | None:
        """A small JSON document stored under ``key`` (the silo's declared jobs), or None."""

    @abstractmethod
    async def write_meta(self, key: str, value: dict[str, Any]) -> None:
        """Store a small JSON document under ``key``, replacing what was there."""

    # -- notices ---------------------------------------------------------------------

    @abstractmethod
    async def notify(self, notices: Sequence[Notice]) -> None:
        """Publish notices to every listener of this store, in this process and (where
        the store can) in others. Best effort: a lost notice only delays work until the
        next poll."""

    @abstractmethod
    def add_listener(self, listener: NoticeListener) -> Callable[[], None]:
        """Call ``listener`` on the event loop for every notice; return a function that
        removes it. Listeners must be quick and must not raise."""
