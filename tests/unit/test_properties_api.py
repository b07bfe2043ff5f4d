"""Property tests: hostile input through the public API of a running silo on SQLite.

Whatever a caller passes (any unicode job id, params of any shape, triggers far in the
future or absurdly dense), ``schedule``, ``schedule_many``, ``trigger``, ``cancel`` and
``get`` either do the right thing (what is stored reads back equal) or raise a typed
error, and the silo goes on running other jobs afterwards.
"""

from __future__ import annotations

import asyncio
import math
import uuid
import zoneinfo
from collections.abc import Coroutine, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anu_jobs import (
    ConfigurationError,
    Cron,
    Every,
    InvalidParamsError,
    InvalidScheduleError,
    Job,
    JobContext,
    JobNotFoundError,
    JobSpec,
    JobStage,
    Once,
    RunStage,
    Silo,
    SiloBuilder,
)

T = TypeVar("T")

FEW = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ZONES = sorted(zoneinfo.available_timezones())
MAX_ID = 255


class Echo(Job):
    """Records the params it ran with."""

    seen: dict[str, Any] = {}

    async def execute(self, ctx: JobContext) -> None:
        Echo.seen[ctx.job_id] = ctx.params


class Canary(Job):
    async def execute(self, ctx: JobContext) -> None:
        return None


class Api:
    """A silo on SQLite, started once, driven from synchronous hypothesis tests."""

    def __init__(self, runner: asyncio.Runner, silo: Silo) -> None:
        self.runner = runner
        self.silo = silo
        self.client = silo.client

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(asyncio.wait_for(coro, 30))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    path: Path = tmp_path_factory.mktemp("props") / "jobs.db"
    silo = SiloBuilder().use_storage(f"sqlite:///{path}").use_jobs(Echo, Canary).build()
    with asyncio.Runner() as runner:
        runner.run(silo.start())
        try:
            yield Api(runner, silo)
        finally:
            runner.run(silo.stop(2.0))


async def _canary_runs(api: Api) -> None:
    """The silo still runs an ordinary job."""
    client = api.client
    await client.schedule(Canary, job_id="canary", replace=True)
    run = await client.wait("canary", run_id=await client.trigger("canary"), timeout=10)
    assert run.stage is RunStage.COMPLETED


# -- job ids ---------------------------------------------------------------------------

SPECIAL_IDS = [
    "",
    "\x00",
    "a\x00b",
    "line\nbreak",
    "\r",
    "\u202eevil.exe",  # right-to-left override
    "مرحبا-שלום",
    "😀" * 50,
    "x" * MAX_ID,
    "x" * (MAX_ID + 1),
    "y" * 10_000,
    "a\ud800b",  # a lone surrogate
    "'; DROP TABLE jobs; --",
    "%_\\",
    " ",
]
ids = st.one_of(
    st.sampled_from(SPECIAL_IDS),
    st.text(st.characters(codec="utf-8"), max_size=300),
    st.text(st.characters(), max_size=20),  # lone surrogates included
)


def _valid_id(job_id: str) -> bool:
    return (
        0 < len(job_id) <= MAX_ID
        and not any(ch in job_id for ch in "\x00\r\n")
        and not any("\ud800" <= ch <= "\udfff" for ch in job_id)
    )


async def _round_trip_id(api: Api, job_id: str) -> None:
    client = api.client
    if not _valid_id(job_id):
        with pytest.raises(ConfigurationError):
            await client.schedule(Echo, job_id=job_id)
        with pytest.raises(ConfigurationError):
            await client.schedule_many([JobSpec(Echo, job_id=job_id)])
        for call in (client.get, client.trigger, client.cancel, client.delete):
            with pytest.raises(JobNotFoundError):
                await call(job_id)
        return
    status = await client.schedule(Echo, job_id=job_id, params={"id": job_id}, replace=True)
    assert status.job_id == job_id
    assert (await client.get(job_id)).params == {"id": job_id}
    assert job_id in [j.job_id for j in await client.list(text=job_id, limit=1000)]
    run = await client.wait(job_id, run_id=await client.trigger(job_id), timeout=10)
    assert run.stage is RunStage.COMPLETED and run.job_id == job_id
    assert Echo.seen[job_id] == {"id": job_id}
    await client.cancel(job_id, reason=job_id)
    cancelled = await client.get(job_id)
    assert cancelled.stage is JobStage.CANCELLED and cancelled.reason == job_id
    await client.delete(job_id)
    with pytest.raises(JobNotFoundError):
        await client.get(job_id)


@FEW
@given(job_id=ids)
def test_any_job_id_is_stored_exactly_or_refused(api: Api, job_id: str) -> None:
    api.run(_round_trip_id(api, job_id))


# -- params ----------------------------------------------------------------------------

# Any text a store can keep: valid UTF-8 without NUL (see test_sql_metacharacters).
TEXT = st.characters(codec="utf-8", exclude_characters="\x00")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(TEXT, max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(TEXT, max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
json_params = st.dictionaries(st.text(TEXT, max_size=20), json_values)


def _deep(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(levels):
        doc = {"a": [doc]}
    return doc


NOT_JSON: list[Any] = [
    {"a": {1, 2}},
    {"a": b"bytes"},
    {"a": math.nan},
    {"a": -math.inf},
    {"a": datetime(2030, 1, 1, tzinfo=UTC)},
    {"a": date(2030, 1, 1)},
    {"a": (1, 2)},
    {"a": Decimal("1.5")},
    {"a": object()},
    {1: "int key"},
    {"a": "\udc80"},  # a lone surrogate, as surrogateescape makes them
    {"\ud800": 1},
    {"a": "nul\x00"},  # PostgreSQL cannot keep a NUL, so no provider takes one
    {"a": 10**5000},  # more digits than int() may convert
    _deep(500),
    [1, 2],
    "a string",
    42,
]


async def _round_trip_params(api: Api, params: Any) -> None:
    client = api.client
    await client.schedule(Echo, job_id="p", params=params, replace=True)
    assert (await client.get("p")).params == params
    run = await client.wait("p", run_id=await client.trigger("p"), timeout=10)
    assert run.stage is RunStage.COMPLETED
    assert Echo.seen["p"] == params


@settings(FEW, max_examples=40)
@given(params=json_params)
def test_json_params_read_back_equal(api: Api, params: dict[str, Any]) -> None:
    api.run(_round_trip_params(api, params))


@pytest.mark.parametrize("params", NOT_JSON, ids=lambda p: type(p).__name__)
def test_params_that_are_not_json_are_refused_with_a_typed_error(api: Api, params: Any) -> None:
    async def go() -> None:
        with pytest.raises(InvalidParamsError):
            await api.client.schedule(Echo, job_id="bad-params", params=params)
        with pytest.raises(InvalidParamsError):
            await api.client.schedule_many([JobSpec(Echo, job_id="bad-many", params=params)])
        with pytest.raises(JobNotFoundError):
            await api.client.get("bad-params")
        with pytest.raises(JobNotFoundError):
            await api.client.get("bad-many")

    api.run(go())


@settings(FEW, max_examples=25)
@given(
    specs=st.lists(
        st.tuples(ids, st.one_of(json_params, st.sampled_from(NOT_JSON))), min_size=1, max_size=8
    )
)
def test_schedule_many_validates_everything_before_writing(
    api: Api, specs: list[tuple[str, Any]]
) -> None:
    async def go() -> None:
        prefixed = [(f"many-{i}-{job_id}", params) for i, (job_id, params) in enumerate(specs)]
        try:
            await api.client.schedule_many(JobSpec(Echo, job_id=j, params=p) for j, p in prefixed)
        except (ConfigurationError, InvalidParamsError):
            for job_id, _ in prefixed:  # none was written
                with pytest.raises(JobNotFoundError):
                    await api.client.get(job_id)
            return
        for job_id, params in prefixed:
            assert (await api.client.get(job_id)).params == params
            await api.client.delete(job_id)

    api.run(go())


# -- triggers --------------------------------------------------------------------------

aware = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(ZONES).map(zoneinfo.ZoneInfo),
    allow_imaginary=True,
)


@FEW
@given(at=aware)
def test_once_at_any_time_up_to_the_year_9999_is_stored_as_given(api: Api, at: datetime) -> None:
    job_id = f"once-{uuid.uuid4().hex}"

    async def go() -> None:
        status = await api.client.schedule(Canary, job_id=job_id, trigger=Once(at=at))
        stored = await api.client.get(job_id)
        want = at.astimezone(UTC)
        assert stored.triggers == (Once(at=want),)
        if want > api.client.clock.now() + timedelta(seconds=5):
            assert stored.next_fire_at == want == status.next_fire_at
        await api.client.delete(job_id)

    api.run(go())


intervals = st.one_of(
    # From a millisecond: the schedules run on the test's live silo until cancelled, and
    # a microsecond schedule there piled up runs faster than the suite could go on.
    st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(seconds=1)),
    st.timedeltas(min_value=timedelta(days=365), max_value=timedelta.max),
    st.timedeltas(max_value=timedelta(0)),  # refused: not positive
    st.timedeltas(min_value=timedelta(milliseconds=1)),
)


@FEW
@given(interval=intervals, start=st.none() | aware)
def test_every_with_any_interval_schedules_or_raises_a_typed_error(
    api: Api, interval: timedelta, start: datetime | None
) -> None:
    job_id = f"every-{uuid.uuid4().hex}"  # each example a job of its own

    async def go() -> None:
        try:
            trigger = Every(interval, start=start)
            status = await api.client.schedule(Canary, job_id=job_id, trigger=trigger)
        except InvalidScheduleError:
            # a typed error: a non-positive interval, or a first fire past the year 9999
            return
        try:
            assert interval > timedelta(0)
            nxt = status.next_fire_at
            if nxt is not None and start is None:
                assert nxt - api.client.clock.now() <= interval
        finally:
            # never leave a microsecond schedule firing on the silo, even when this fails
            await api.client.cancel(job_id)

    api.run(go())


FIELD = st.one_of(
    st.just("*"),
    st.integers(0, 70).map(str),
    st.tuples(st.integers(0, 60), st.integers(0, 60)).map(lambda t: f"{t[0]}-{t[1]}"),
    st.integers(1, 90).map(lambda n: f"*/{n}"),
    st.sampled_from(["L", "?", "mon", "jan-mar", "1,2,3", "5/0", "-1", "W", "#", "", "%s", "$1"]),
)
cron_exprs = st.one_of(
    st.lists(FIELD, min_size=4, max_size=7).map(" ".join),
    st.sampled_from(["@hourly", "@daily", "@yearly", "@reboot", "@nope", "0 0 30 2 *"]),
    st.text(max_size=30),
)


@FEW
@given(expr=cron_exprs, zone=st.sampled_from(ZONES) | st.text(max_size=20))
def test_cron_with_any_expression_and_zone_schedules_or_raises_a_typed_error(
    api: Api, expr: str, zone: str
) -> None:
    try:
        trigger = Cron(expr, tz=zone)
    except InvalidScheduleError:
        return
    now = api.client.clock.now()
    fires: list[datetime] = []
    cursor = now
    for _ in range(5):
        nxt = trigger.next_fire(cursor)
        if nxt is None:
            break
        assert nxt > cursor
        fires.append(nxt)
        cursor = nxt

    job_id = f"cron-{uuid.uuid4().hex}"

    async def go() -> None:
        status = await api.client.schedule(Canary, job_id=job_id, trigger=trigger)
        if fires:
            assert status.next_fire_at is not None and status.next_fire_at >= fires[0]
        else:
            assert status.next_fire_at is None and status.stage is JobStage.FINISHED
        await api.client.cancel(job_id)

    api.run(go())


def test_offsets_past_the_year_9999_are_typed_errors(api: Api) -> None:
    for trigger in (Once(delay=timedelta.max), Every(timedelta.max)):
        with pytest.raises(InvalidScheduleError, match="9999"):
            api.run(api.client.schedule(Canary, job_id="far", trigger=trigger))


@FEW
@given(
    text=st.text(max_size=30) | st.sampled_from(["%", "_", "\\", "'", "%s", "$1", "\x00"]),
    field=st.sampled_from(["text", "job_type", "stage", "after"]),
)
def test_list_filters_take_any_text(api: Api, text: str, field: str) -> None:
    async def go() -> None:
        try:
            found = await api.client.list(**{field: text}, limit=5)
        except ConfigurationError:
            assert field == "after"  # only a lone surrogate as a paging cursor is refused
            return
        if field == "text":
            assert all(text.lower() in j.job_id.lower() for j in found)

    api.run(go())


def test_the_silo_still_runs_jobs_after_all_that(api: Api) -> None:
    api.run(_canary_runs(api))
    assert api.silo.runtime.fatal is None
