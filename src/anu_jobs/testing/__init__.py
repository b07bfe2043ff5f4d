"""Test support for anu-jobs and for code that uses it: a clock that tests drive.

The storage conformance suite lives in ``anu_jobs.testing.storage_suite`` (it needs pytest).
"""

from anu_jobs.testing.clock import FakeClock

__all__ = ["FakeClock"]
