"""Storage: the contract (:class:`Storage`) and its providers.

:func:`open_storage` picks a provider by the URL's scheme and imports its module only
then, so a provider's optional dependency loads only when it is used. A provider module
exposes a :class:`Storage` subclass with a ``from_url(url)`` class method; plugging one
in is one line in ``_PROVIDERS``.
"""

from __future__ import annotations

import importlib

from anu_jobs.clock import Clock
from anu_jobs.errors import ConfigurationError
from anu_jobs.storage._url import ACCEPTED_FORMS, redact_url, scheme_of
from anu_jobs.storage.base import (
    Claim,
    ControlMessage,
    GrainWrite,
    JobQuery,
    LeaseToken,
    Notice,
    NoticeListener,
    RunRecord,
    SiloInfo,
    SiloStatus,
    StateEnvelope,
    Storage,
    WriteResult,
)

__all__ = [
    "Claim",
    "ControlMessage",
    "GrainWrite",
    "JobQuery",
    "LeaseToken",
    "Notice",
    "NoticeListener",
    "RunRecord",
    "SiloInfo",
    "SiloStatus",
    "StateEnvelope",
    "Storage",
    "WriteResult",
    "open_storage",
    "redact_url",
]

# scheme -> (module, class, what to install when the module cannot be imported)
_PROVIDERS: dict[str, tuple[str, str, str]] = {
    "memory": ("anu_jobs.storage.memory", "MemoryStorage", ""),
    "sqlite": ("anu_jobs.storage.sqlite", "SqliteStorage", ""),
    "postgresql": ("anu_jobs.storage.postgres", "PostgresStorage", "anu-jobs[postgres]"),
    "postgres": ("anu_jobs.storage.postgres", "PostgresStorage", "anu-jobs[postgres]"),
}

# Providers that serve one host and keep the store's time (lease expiries, heartbeats) on
# the clock they are given; PostgreSQL keeps it on the server's clock, which silos share.
_HOST_CLOCK = frozenset({"memory", "sqlite"})


def open_storage(url: str, *, clock: Clock | None = None) -> Storage:
    """The provider for ``url``, not yet opened (``await storage.open()`` next).

    ``memory://`` is a fresh private store; ``memory://NAME`` a store shared by that name
    within the process; ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db``
    a SQLite file; ``postgresql://…`` a PostgreSQL database. ``clock`` (the silo's)
    keeps the store's time on memory and SQLite, which serve one host; PostgreSQL always
    uses the server's clock, whatever ``clock`` is. Raises
    :class:`~anu_jobs.errors.ConfigurationError` for any other URL, or when the
    provider is not installed.
    """
    scheme = scheme_of(url)
    entry = _PROVIDERS.get(scheme)
    if entry is None:
        forms = "\n  ".join(ACCEPTED_FORMS)
        raise ConfigurationError(
            f"no storage provider for {redact_url(url)!r}; use one of:\n  {forms}"
        )
    module_name, class_name, extra = entry
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigurationError(
                f"the {scheme} storage provider is not installed yet in this anu-jobs; "
                "use sqlite:///path.db or memory:// for now"
            ) from None
        raise ConfigurationError(
            f"the {scheme} storage provider needs {exc.name!r}: pip install {extra or exc.name}"
        ) from exc
    provider: type[Storage] = getattr(module, class_name)
    kwargs = {"clock": clock} if clock is not None and scheme in _HOST_CLOCK else {}
    storage: Storage = provider.from_url(url, **kwargs)  # type: ignore[attr-defined]
    return storage
