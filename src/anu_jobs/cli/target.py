"""``anu-jobs run module:attr``: find the silo (or the silo builder) to run."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

from anu_jobs.errors import AnuJobsError
from anu_jobs.hosting import Silo, SiloBuilder

__all__ = ["TargetError", "load_target"]


class TargetError(Exception):
    """``module:attr`` does not name a silo or a silo builder (exit code 2)."""


def load_target(spec: str, url: str | None) -> Silo:
    """Import ``module`` (the current directory first on ``sys.path``) and build a silo
    from its ``attr``: a :class:`SiloBuilder` (given ``url`` as its storage, if any) or a
    :class:`Silo` (which cannot take another ``url``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TargetError(f"expected module:attr, such as myapp.jobs:builder, not {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise TargetError(
                f"cannot import {module_name!r}: no module named {exc.name!r} "
                f"(looked in {cwd} and on sys.path)"
            ) from None
        raise TargetError(f"importing {module_name!r} failed: {exc}") from None
    except AnuJobsError:
        raise  # a bad trigger or job definition in the module: its message says what
    except Exception as exc:
        traceback.print_exc()
        raise TargetError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, SiloBuilder):
        if url is not None:
            obj.use_storage(url)
        return obj.build()
    if isinstance(obj, Silo):
        if url is not None:
            raise TargetError(
                f"{spec} is a built Silo whose storage is fixed; --url applies to a SiloBuilder"
            )
        return obj
    raise TargetError(f"{spec} is a {type(obj).__name__!r} object, not a SiloBuilder or a Silo")
