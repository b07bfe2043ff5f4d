"""The registry of job types, and validation of params against a type's ``Params``."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from anu_jobs._json import JSONError, check_json
from anu_jobs.errors import (
    ConfigurationError,
    InvalidParamsError,
    JobDefinitionError,
    UnknownJobTypeError,
)
from anu_jobs.model.job import Job

__all__ = ["JobRegistry"]


class JobRegistry:
    """Job types by name. Only registered types are ever instantiated: a name that
    storage supplies is looked up here, never imported."""

    def __init__(self) -> None:
        self._types: dict[str, type[Job]] = {}

    def register(self, *items: type[Job] | ModuleType) -> None:
        """Register job classes, or every ``Job`` subclass defined in the given modules."""
        for item in items:
            if isinstance(item, ModuleType):
                for cls in _job_classes(item):
                    self._add(cls)
            elif isinstance(item, type) and issubclass(item, Job):
                self._add(item)
            else:
                raise ConfigurationError(
                    f"use_jobs() takes Job subclasses or modules, not {item!r}"
                )

    def _add(self, cls: type[Job]) -> None:
        if cls.execute is Job.execute:
            raise JobDefinitionError(cls.name, "it does not implement execute(self, ctx)")
        known = self._types.get(cls.name)
        if known is not None and known is not cls:
            raise ConfigurationError(
                f"two job classes share the type name {cls.name!r}: "
                f"{known.__module__}.{known.__qualname__} and {cls.__module__}.{cls.__qualname__}; "
                "set `name = ...` on one of them"
            )
        self._types[cls.name] = cls

    def get(self, name: str) -> type[Job]:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownJobTypeError(name, tuple(sorted(self._types))) from None

    def resolve(self, job: type[Job] | str) -> type[Job]:
        """The registered class for a class or a type name; registers a class seen first here."""
        if isinstance(job, str):
            return self.get(job)
        if not (isinstance(job, type) and issubclass(job, Job)):
            raise ConfigurationError(f"expected a Job subclass or a type name, not {job!r}")
        if self._types.get(job.name) is not job:
            self._add(job)
        return job

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._types))


def _job_classes(module: ModuleType) -> Iterable[type[Job]]:
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if (
            issubclass(obj, Job)
            and obj is not Job
            and obj.__module__ == module.__name__
            and obj.execute is not Job.execute
        ):
            yield obj


def validate_params(cls: type[Job], params: Any) -> dict[str, Any]:
    """Check ``params`` for ``cls`` and return the JSON dict to store.

    With ``Params`` declared (a pydantic model or a dataclass), params are validated by
    it and stored as its JSON form; an instance of ``Params`` is accepted too.
    Without it, params must be a JSON object (a dict of JSON values).
    """
    if params is None:
        params = {}
    spec = cls.Params
    if spec is not None:
        if isinstance(params, spec):
            data = _dump(spec, params)
        else:
            if not isinstance(params, Mapping):
                raise InvalidParamsError(
                    cls.name, f"expected a dict or {spec.__name__}, not {type(params).__name__}"
                )
            data = _dump(spec, _build(cls.name, spec, dict(params)))
    else:
        if not isinstance(params, Mapping):
            raise InvalidParamsError(
                cls.name, f"params must be a dict, not {type(params).__name__}"
            )
        data = dict(params)
    try:
        check_json(data, "params")
    except JSONError as exc:
        raise InvalidParamsError(cls.name, str(exc)) from None
    return data


def load_params(cls: type[Job], data: dict[str, Any]) -> Any:
    """What ``ctx.params`` is for stored params: a ``Params`` instance, or the dict."""
    spec = cls.Params
    if spec is None:
        return data
    return _build(cls.name, spec, data)


def _build(name: str, spec: type[Any], data: dict[str, Any]) -> Any:
    validate = getattr(spec, "model_validate", None)
    try:
        if callable(validate):
            return validate(data)
        if dataclasses.is_dataclass(spec):
            return spec(**data)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise InvalidParamsError(name, str(exc)) from None
    raise JobDefinitionError(name, "Params must be a pydantic model or a dataclass")


def _dump(spec: type[Any], value: Any) -> dict[str, Any]:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        result: dict[str, Any] = dump(mode="json")
        return result
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise JobDefinitionError(spec.__name__, "Params must be a pydantic model or a dataclass")
