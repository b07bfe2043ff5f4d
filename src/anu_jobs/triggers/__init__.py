"""Triggers: when jobs fire. Pure schedule math with no I/O and no clock reads.

``Manual``, ``Once``, ``Every`` and ``Cron`` compute fire times from a ``now`` or an
``after`` the caller passes; :func:`plan_fires` applies a :class:`MisfirePolicy` to
fires that came due while nobody ran them. All times are aware UTC datetimes.
"""

from __future__ import annotations

from ._base import Trigger, trigger_from_json
from ._cron import Cron
from ._simple import Every, Manual, Once
from .policy import FirePlan, MisfirePolicy, Overlap, plan_fires

__all__ = [
    "Cron",
    "Every",
    "FirePlan",
    "Manual",
    "MisfirePolicy",
    "Once",
    "Overlap",
    "Trigger",
    "plan_fires",
    "trigger_from_json",
]
