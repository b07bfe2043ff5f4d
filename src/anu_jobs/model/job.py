"""What a user writes: a ``Job`` subclass and its policy."""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from anu_jobs.errors import JobDefinitionError
from anu_jobs.triggers import MisfirePolicy

if TYPE_CHECKING:
    from anu_jobs.model.context import JobContext

__all__ = ["Job", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how soon a failed attempt is tried again.

    After failed attempt ``n`` (1-based) the next one waits
    ``min(initial_delay * backoff ** (n - 1), max_delay)``, then that delay is spread by
    up to ``jitter`` (a fraction: 0.1 means +-10%) so that many failing jobs do not
    retry in lock step. ``max_retries`` counts retries, so a run has at most
    ``max_retries + 1`` attempts.
    """

    max_retries: int = 0
    initial_delay: timedelta = timedelta(seconds=1)
    backoff: float = 2.0
    max_delay: timedelta = timedelta(minutes=10)
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, not {self.max_retries}")
        if self.initial_delay < timedelta(0) or self.max_delay < timedelta(0):
            raise ValueError("initial_delay and max_delay must not be negative")
        if self.backoff < 1.0:
            raise ValueError(f"backoff must be 1.0 or more, not {self.backoff}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter is a fraction from 0 to 1, not {self.jitter}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """The wait before the attempt after failed attempt ``attempt``."""
        base = self.initial_delay.total_seconds() * self.backoff ** max(attempt - 1, 0)
        seconds = min(base, self.max_delay.total_seconds())
        if self.jitter:
            spread = seconds * self.jitter
            seconds += (rng or random).uniform(-spread, spread)
        return timedelta(seconds=max(seconds, 0.0))

    def to_json(self) -> dict[str, Any]:
        return {
            "max_retries": self.max_retries,
            "initial_delay": self.initial_delay.total_seconds(),
            "backoff": self.backoff,
            "max_delay": self.max_delay.total_seconds(),
            "jitter": self.jitter,
        }


class Job:
    """A unit of work. Subclass it and implement :meth:`execute`.

    Class attributes set the job type's policy::

        class SendDigest(Job):
            name = "send-digest"             # the stored type name; default: the class name
            retry = RetryPolicy(max_retries=3, initial_delay=timedelta(seconds=1))
            timeout = timedelta(minutes=5)   # per attempt; None: no limit
            Params = DigestParams            # a pydantic model or dataclass; None: a JSON dict
            misfire = MisfirePolicy("run_once")
            overlap = "skip"                 # or "queue_one"

    ``execute`` and ``compensate`` may be ``async def`` (run on the silo's event loop)
    or plain ``def`` (run in a worker thread). A fresh instance serves each attempt.
    """

    name: ClassVar[str]
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    timeout: ClassVar[timedelta | None] = None
    Params: ClassVar[type[Any] | None] = None
    misfire: ClassVar[MisfirePolicy] = MisfirePolicy()
    overlap: ClassVar[str] = "skip"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        _check_definition(cls)

    async def execute(self, ctx: JobContext) -> None:
        """Do the work. Raise to fail the attempt; it is retried per ``retry``."""
        raise NotImplementedError

    async def compensate(self, ctx: JobContext) -> None:
        """Undo what failed attempts left behind; runs once retries are spent.

        Only called when a subclass overrides it. ``ctx.error`` says what failed.
        """

    @classmethod
    def has_compensation(cls) -> bool:
        """Whether this job type overrides :meth:`compensate`."""
        return cls.compensate is not Job.compensate

    @classmethod
    def is_async(cls, method: str) -> bool:
        return inspect.iscoroutinefunction(getattr(cls, method))


def _check_definition(cls: type[Job]) -> None:
    name = cls.__dict__.get("name", cls.__name__)
    if not isinstance(name, str) or not name or len(name) > 200:
        raise JobDefinitionError(str(name), "name must be a non-empty string of at most 200 chars")
    if not name.isprintable():
        raise JobDefinitionError(
            name, "name must be printable text (no control or format characters, line breaks, NUL)"
        )
    if not isinstance(cls.retry, RetryPolicy):
        raise JobDefinitionError(name, "retry must be a RetryPolicy")
    if cls.timeout is not None and (
        not isinstance(cls.timeout, timedelta) or cls.timeout <= timedelta(0)
    ):
        raise JobDefinitionError(name, "timeout must be a positive timedelta or None")
    if not isinstance(cls.misfire, MisfirePolicy):
        raise JobDefinitionError(name, "misfire must be a MisfirePolicy")
    if cls.overlap not in ("skip", "queue_one"):
        raise JobDefinitionError(
            name, f"overlap must be 'skip' or 'queue_one', not {cls.overlap!r}"
        )
