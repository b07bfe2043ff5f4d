"""schedule_many's rows: the state it stores is the document ``schedule`` would store, to
the byte, whichever way it was encoded; chunks are written in order while the next is built."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from anu_jobs import (
    ConfigurationError,
    Cron,
    DuplicateJobError,
    Every,
    InvalidParamsError,
    Job,
    JobClient,
    JobContext,
    JobSpec,
    Manual,
    MisfirePolicy,
    Once,
    _json,
)
from anu_jobs.grain import new_job_state
from anu_jobs.hosting._bulk import ChunkBuilder
from anu_jobs.model import validate_params
from anu_jobs.storage.sqlite import SqliteStorage
from anu_jobs.testing import FakeClock

NOW = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


class Plain(Job):
    async def execute(self, ctx: JobContext) -> None:
        return None


class Strict(Job):
    misfire = MisfirePolicy("catch_up", grace=timedelta(seconds=5), limit=7)
    overlap = "queue_one"

    @dataclass
    class Params:
        name: str
        n: int = 1

    async def execute(self, ctx: JobContext) -> None:
        return None


def _specs() -> list[JobSpec]:
    zurich = ZoneInfo("Europe/Zurich")
    times = [
        datetime(2032, 1, 1, tzinfo=UTC),  # no microseconds: iso leaves them out
        datetime(2032, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2032, 3, 31, 2, 30, tzinfo=zurich),  # another zone: stored in UTC
        datetime(2032, 6, 1, 12, tzinfo=timezone(timedelta(hours=-3))),
        datetime(1999, 1, 1, tzinfo=UTC),  # past: due at once
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    specs = [JobSpec(Plain, job_id=f"once-{i}", trigger=Once(at=t)) for i, t in enumerate(times)]
    specs += [
        JobSpec(Plain, job_id="params", params={"é": ["ü", 1.5, None, '"\\'], "n": 2**70},
                trigger=Once(at=times[1])),
        JobSpec(Strict, job_id="strict", params={"name": "x"}, trigger=Once(at=times[0])),
        JobSpec(Strict, job_id="strict-2", params=Strict.Params("y", 3), trigger=Once(at=times[2])),
        JobSpec(Plain, job_id="misfire", trigger=Once(at=times[3]),
                misfire=MisfirePolicy("skip"), overlap="queue_one"),
        JobSpec(Plain, job_id="misfire-2", trigger=Once(at=times[4]),
                misfire=MisfirePolicy("skip"), overlap="queue_one"),
        JobSpec(Plain, job_id="once-again", trigger=Once(at=times[5])),  # back to a shape
        JobSpec(Plain, job_id="delay", trigger=Once(delay=timedelta(seconds=90))),
        JobSpec(Plain, job_id="every", trigger=Every(timedelta(minutes=5))),
        JobSpec(Plain, job_id="cron", trigger=Cron("0 3 * * *", tz="Europe/Zurich")),
        JobSpec(Plain, job_id="manual", trigger=Manual()),
        JobSpec(Plain, job_id="none"),
        JobSpec(Plain, job_id="two", trigger=[Once(at=times[0]), Once(at=times[1])]),
        JobSpec(Plain, job_id="listed", trigger=[Once(at=times[0])]),
        JobSpec("Plain", job_id="by-name", trigger=Once(at=times[1])),
    ]  # fmt: skip
    return specs


def _whole(spec: JobSpec) -> tuple[str, str, int | None]:
    """What ``schedule`` would store for ``spec`` at NOW: stage, text, due."""
    cls = Strict if spec.job in (Strict, "Strict") else Plain
    triggers = spec.trigger if isinstance(spec.trigger, list) else [spec.trigger or Manual()]
    state = new_job_state(
        validate_params(cls, spec.params),
        list(triggers),
        NOW,
        spec.misfire or cls.misfire,
        spec.overlap or cls.overlap,
        "client",
    )
    return state.stage.value, _json.dumps(state.to_json()), state.due_us()


async def test_stored_documents_are_byte_for_byte_those_of_schedule(tmp_path: Path) -> None:
    specs = _specs()
    url = f"sqlite:///{tmp_path}/jobs.db"
    async with JobClient.connect(url, jobs=[Plain, Strict], clock=FakeClock(NOW)) as client:
        # Twice each, in two chunks: each chunk builds its templates anew.
        many = [*specs, *(JobSpec(s.job, f"{s.job_id}+", s.params, s.trigger, s.misfire,
                                  s.overlap) for s in specs)]  # fmt: skip
        ids = await client.schedule_many(many, chunk=len(specs))
        assert ids == [s.job_id for s in many]
        assert isinstance(client.storage, SqliteStorage)
        stored = await client.storage._run(
            False,
            lambda conn: {
                j: (stage, state, due)
                for j, stage, state, due in conn.execute(
                    "SELECT j.job_id, j.stage, j.state, r.due_us FROM jobs AS j "
                    "LEFT JOIN reminders AS r ON r.job_id = j.job_id"
                )
            },
        )
    assert len(stored) == len(many)
    for spec in many:
        assert spec.job_id is not None
        assert stored[spec.job_id] == _whole(spec), spec.job_id


def test_the_fast_path_is_taken_for_one_once_and_checked() -> None:
    """Jobs after the first of a shape are built from its template, and the template is
    only used when it rebuilds the first job's document exactly."""
    registry_client = JobClient.__new__(JobClient)
    from anu_jobs.model import JobRegistry

    registry = JobRegistry()
    registry.register(Plain, Strict)
    registry_client.registry, registry_client.clock = registry, FakeClock(NOW)
    builder = ChunkBuilder(registry, registry_client._new_state, NOW)
    seen: set[str] = set()
    for spec in _specs():
        builder.add(spec, seen)
    templates = builder._templates
    assert templates[(Plain, None, None)] is not None
    assert templates[(Strict, None, None)] is not None
    for row, spec in zip(builder.rows, _specs(), strict=True):
        stage, text, due = _whole(spec)
        assert row == (spec.job_id, spec.job if isinstance(spec.job, str) else spec.job.name,
                       stage, text, due)  # fmt: skip
    assert builder.min_due_us == min(d for s in _specs() if (d := _whole(s)[2]) is not None)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (JobSpec(Plain, job_id="bad", params=[1]), InvalidParamsError),
        (JobSpec(Strict, job_id="bad", params={"n": 1}), InvalidParamsError),
        (JobSpec(Plain, job_id="bad", trigger=Once(at=NOW), overlap="never"), ConfigurationError),
        (JobSpec(Plain, job_id="bad", trigger=Once(at=NOW), misfire="skip"), ConfigurationError),  # type: ignore[arg-type]
        (JobSpec(Plain, job_id="", trigger=Once(at=NOW)), ConfigurationError),
        (JobSpec(Plain, job_id="a\nb", trigger=Once(at=NOW)), ConfigurationError),
        (JobSpec(Plain, job_id="ok-0", trigger=Once(at=NOW)), DuplicateJobError),
    ],
)
async def test_a_bad_spec_after_fast_ones_raises_before_its_chunk(
    tmp_path: Path, bad: JobSpec, error: type[Exception]
) -> None:
    def specs() -> Iterator[JobSpec]:
        for i in range(25):
            yield JobSpec(Plain, job_id=f"ok-{i}", trigger=Once(at=NOW + timedelta(hours=i)))
        yield bad

    url = f"sqlite:///{tmp_path}/jobs.db"
    async with JobClient.connect(url, jobs=[Plain, Strict], clock=FakeClock(NOW)) as client:
        with pytest.raises(error):
            await client.schedule_many(specs(), chunk=10)
        stored = sorted(j.job_id for j in await client.list(limit=100))
        assert stored == sorted(f"ok-{i}" for i in range(20))


async def test_a_failed_write_is_raised_before_a_later_bad_spec(tmp_path: Path) -> None:
    """The chunk before a bad spec is written while the bad spec is found; should that
    write fail, its error is the one raised, as if the chunks had gone one by one."""
    url = f"sqlite:///{tmp_path}/jobs.db"

    def specs() -> Iterator[Any]:
        for i in range(10):
            yield JobSpec(Plain, job_id=f"j{i}", trigger=Once(at=NOW))
        yield JobSpec(Plain, job_id="late", params="not a dict")

    async with JobClient.connect(url, jobs=[Plain], clock=FakeClock(NOW)) as client:
        await client.schedule(Plain, job_id="j7")
        with pytest.raises(DuplicateJobError) as info:
            await client.schedule_many(specs(), chunk=10)
        assert info.value.job_id == "j7"
        assert [j.job_id for j in await client.list()] == ["j7"]
        with pytest.raises(InvalidParamsError):  # without the duplicate, the spec's error
            await client.schedule_many(s for s in specs() if s.job_id != "j7")
        assert [j.job_id for j in await client.list()] == ["j7"]
        ids = await client.schedule_many(
            (s for s in specs() if s.job_id not in ("j7", "late")), chunk=3
        )
        assert len(ids) == 9 and len(await client.list()) == 10
