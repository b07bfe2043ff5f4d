"""The grain runtime: silos, activations, reminders, leases and membership."""

from anu_jobs.runtime.activation import Activation
from anu_jobs.runtime.grain import GrainFactory, GrainHost, GrainLogic, Snapshot
from anu_jobs.runtime.runtime import RuntimeOptions, SiloRuntime

__all__ = [
    "Activation",
    "GrainFactory",
    "GrainHost",
    "GrainLogic",
    "RuntimeOptions",
    "SiloRuntime",
    "Snapshot",
]
