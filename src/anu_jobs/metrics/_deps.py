"""The optional packages this layer needs, imported only when a feature is used."""

from __future__ import annotations

import importlib

from anu_jobs.errors import ConfigurationError

__all__ = ["require"]

# what is imported -> (the extra that installs it, what needs it)
_EXTRAS: dict[str, tuple[str, str]] = {
    "prometheus_client": ("metrics", "Prometheus metrics"),
    "opentelemetry.trace": ("otel", "OpenTelemetry tracing"),
    "uvicorn": ("dashboard", "serving metrics and health over HTTP"),
}


def require(module: str) -> None:
    """Raise :class:`ConfigurationError` naming the extra to install when ``module`` (one
    of the optional packages) cannot be imported."""
    extra, what = _EXTRAS[module]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"{what} needs the {exc.name!r} package: pip install 'anu-jobs[{extra}]'"
        ) from None
