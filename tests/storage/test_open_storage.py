"""``open_storage`` URLs and ``redact_url``."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from anu_jobs.errors import ConfigurationError
from anu_jobs.storage import open_storage, redact_url
from anu_jobs.storage.memory import MemoryStorage
from anu_jobs.storage.sqlite import SqliteStorage
from anu_jobs.testing.storage_suite import at


async def test_memory_urls_are_private_or_shared_by_name() -> None:
    name = f"shared-{uuid.uuid4().hex}"
    a, b = open_storage(f"memory://{name}"), open_storage(f"memory://{name}")
    private = open_storage("memory://")
    assert isinstance(private, MemoryStorage)
    for store in (a, b, private):
        await store.open()
    await a.insert_job("j", "demo", "active", {}, None)
    assert await b.read_state("j") is not None
    assert await private.read_state("j") is None
    assert private.url == "memory://"
    assert a.url == f"memory://{name}"
    for store in (a, b, private):
        await store.close()
    again = open_storage(f"memory://{name}")
    await again.open()
    assert await again.read_state("j") is not None  # a name lives as long as the process
    await again.close()


async def test_sqlite_urls_take_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    relative = open_storage("sqlite:///data/rel.db")
    absolute = open_storage(f"sqlite:///{tmp_path / 'abs.db'}")
    assert isinstance(relative, SqliteStorage)
    assert isinstance(absolute, SqliteStorage)
    assert absolute.url == f"sqlite:////{str(tmp_path / 'abs.db').lstrip('/')}"
    for store in (relative, absolute):
        await store.open()
        await store.insert_job("j", "demo", "active", {}, at(0))
        await store.close()
    assert (tmp_path / "data" / "rel.db").is_file()
    assert (tmp_path / "abs.db").is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:secret@db/jobs?schema=no-dashes", "plain identifier"),
        ("postgres://u:secret@db/jobs?connect_timeout=-1", "positive"),
        ("postgres://u:secret@db/jobs?pool_max_size=many", "positive"),
        ("redis://localhost", "sqlite:///"),
        ("jobs.db", "memory://"),
        ("sqlite://", "names no file"),
        ("sqlite:///jobs.db?journal=off", "unknown option"),
        ("sqlite:///jobs.db?synchronous=sometimes", "synchronous"),
    ],
)
def test_bad_urls_say_what_is_accepted(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        open_storage(url)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://user:p%40ss@db:5432/jobs", "postgresql://user:***@db:5432/jobs"),
        ("postgresql://user@db/jobs", "postgresql://user@db/jobs"),
        (
            "postgresql://db/jobs?user=u&password=hunter2",
            "postgresql://db/jobs?user=u&password=***",
        ),
        ("sqlite:////var/lib/jobs.db", "sqlite:////var/lib/jobs.db"),
        ("memory://", "memory://"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_redact_url_hides_passwords(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
