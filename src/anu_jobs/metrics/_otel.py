"""``OtelEvents``: one OpenTelemetry span per attempt."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from anu_jobs._time import to_us
from anu_jobs.clock import Clock, SystemClock
from anu_jobs.metrics._deps import require

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["SPAN_NAME", "OtelEvents"]

log = logging.getLogger("anu_jobs.metrics")

SPAN_NAME = "anu_jobs.attempt"


class OtelEvents:
    """Records a span ``anu_jobs.attempt`` for each attempt of a job's ``execute`` or
    ``compensate`` (a :class:`~anu_jobs.grain.JobEvents`): add it with
    ``builder.use_events(OtelEvents(tracer_provider))``.

    The span is made when the attempt ends, with explicit start and end times (the end
    is ``clock``'s now, the start that minus the attempt's duration), so nothing is held
    open across the attempt and no state is kept between events. It is a root span, with
    attributes ``anu_jobs.job_type``, ``anu_jobs.job_id``, ``anu_jobs.run_id``,
    ``anu_jobs.attempt``, ``anu_jobs.method`` and ``anu_jobs.outcome`` (``ok``, ``error``,
    ``cancelled``, ``interrupted``, ``lost``), and the status ERROR when the attempt raised.

    ``tracer_provider`` defaults to the global one. ``clock`` defaults to
    :class:`~anu_jobs.clock.SystemClock`, which is right for a silo on the system clock;
    a silo on another clock (``use_clock(FakeClock(...))`` in tests) should be given the
    same one here, so that spans sit on the silo's timeline (durations are measured by the
    silo either way). Raises :class:`~anu_jobs.errors.ConfigurationError` when
    opentelemetry-api is missing.
    """

    def __init__(
        self, tracer_provider: TracerProvider | None = None, *, clock: Clock | None = None
    ) -> None:
        require("opentelemetry.trace")
        from opentelemetry import trace

        from anu_jobs import __version__

        self.tracer = trace.get_tracer("anu_jobs", __version__, tracer_provider=tracer_provider)
        self.clock: Clock = clock if clock is not None else SystemClock()

    def attempt_started(
        self, job_type: str, job_id: str, run_id: str, method: str, attempt: int, lateness: float
    ) -> None:
        return None

    def attempt_finished(
        self,
        job_type: str,
        job_id: str,
        run_id: str,
        method: str,
        attempt: int,
        outcome: str,
        duration: float,
    ) -> None:
        try:
            from opentelemetry.context import Context
            from opentelemetry.trace import Status, StatusCode

            end_ns = to_us(self.clock.now()) * 1000
            start_ns = end_ns - max(int(duration * 1e9), 0)
            span = self.tracer.start_span(
                SPAN_NAME,
                context=Context(),  # a root span: not a child of whatever the loop has current
                attributes={
                    "anu_jobs.job_type": job_type,
                    "anu_jobs.job_id": job_id,
                    "anu_jobs.run_id": run_id,
                    "anu_jobs.attempt": attempt,
                    "anu_jobs.method": method,
                    "anu_jobs.outcome": outcome,
                },
                start_time=start_ns,
            )
            if outcome == "ok":
                span.set_status(Status(StatusCode.OK))
            elif outcome == "error":
                span.set_status(Status(StatusCode.ERROR, "the attempt raised"))
            span.end(end_time=end_ns)
        except Exception:  # tracing must never fail a job
            log.exception("recording an attempt's span failed")

    def run_finished(self, job_type: str, job_id: str, run_id: str, stage: str) -> None:
        return None
