"""Hosting: ``SiloBuilder``, ``Silo``, ``JobClient`` and ``SyncJobClient``."""

from anu_jobs.hosting.builder import DEFAULT_STORAGE_URL, SiloBuilder
from anu_jobs.hosting.client import JobClient, JobSpec
from anu_jobs.hosting.silo import Silo, SiloService
from anu_jobs.hosting.sync_client import SyncJobClient

__all__ = [
    "DEFAULT_STORAGE_URL",
    "JobClient",
    "JobSpec",
    "Silo",
    "SiloBuilder",
    "SiloService",
    "SyncJobClient",
]
