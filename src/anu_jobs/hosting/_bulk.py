"""The rows of :meth:`JobClient.schedule_many`: specs validated, states encoded, fast.

A job's stored state is ``_json.dumps(new_job_state(...).to_json())``. Scheduling a
million jobs that way builds and encodes a million documents that differ in three
places only; so for the common shape (one ``Once(at=...)`` trigger), the document of
the first such job of a chunk is encoded whole and cut at those places into a
template, and each further job of that shape is its params' text, its time and its
microseconds put into the template. JSON encodes an object member by member, so the
result is the text that encoding the whole document would give; the first job of each
shape is checked against it, and any other shape is encoded whole.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from anu_jobs import _json
from anu_jobs._time import to_us
from anu_jobs.errors import ConfigurationError, DuplicateJobError
from anu_jobs.grain import JobState
from anu_jobs.model import Job, JobRegistry, validate_params
from anu_jobs.storage.base import NewJobRow
from anu_jobs.triggers import MisfirePolicy, Once

__all__ = ["MAX_JOB_ID", "ChunkBuilder", "check_job_id"]

#: builds the state of a new job: ``(job type, params, trigger, misfire, overlap, now=)``
StateFactory = Callable[..., JobState]

# Stand-ins for the parts of a document that differ between jobs of one shape. They
# are strings that JSON escapes (a control character), so their encoded form cannot
# occur in the rest of a document that anu-jobs writes; the split checks it anyway.
_PARAMS, _AT, _NEXT = "\x01params\x01", "\x01at\x01", "\x01next\x01"


@dataclass(frozen=True, slots=True)
class _Template:
    """A ``Once(at=...)`` job's document with its params, time and next fire left out."""

    head: str  # up to the params
    to_at: str  # from the params to the text of the time, with its opening quote
    to_next: str  # from the time to the microseconds of the next fire
    tail: str  # the rest
    stage: str

    def text(self, params: str, at: datetime, at_us: int) -> str:
        iso = at.isoformat().replace("+00:00", "Z")  # triggers' iso() of an aware UTC time
        return f"{self.head}{params}{self.to_at}{iso}{self.to_next}{at_us}{self.tail}"


def _template(doc: dict[str, Any], stage: str) -> _Template | None:
    """Cut the encoded ``doc`` of a one-``Once`` job at its varying parts; None when the
    document is not of that shape."""
    triggers, nxt = doc.get("triggers"), doc.get("next")
    if not (isinstance(triggers, list) and len(triggers) == 1 and isinstance(nxt, list)):
        return None
    trigger = dict(triggers[0])
    if trigger.get("kind") != Once.kind or not isinstance(trigger.get("at"), str):
        return None
    trigger["at"] = _AT
    text = _json.dumps({**doc, "params": _PARAMS, "triggers": [trigger], "next": _NEXT})
    pieces: list[str] = []
    for marker in (_PARAMS, _AT, _NEXT):
        head, sep, text = text.partition(_json.dumps(marker))
        if not sep or _json.dumps(marker) in text:
            return None
        pieces.append(head)
    head, to_at, to_next = pieces
    return _Template(head, f'{to_at}"', f'"{to_next}[', f"]{text}", stage)


class ChunkBuilder:
    """Validates specs and builds the rows of one chunk (for
    :meth:`~anu_jobs.storage.base.Storage.insert_encoded_jobs`).

    Every job of a chunk is created at ``now`` (its ``created_at``): one clock reading
    per chunk, not per job.
    """

    def __init__(self, registry: JobRegistry, new_state: StateFactory, now: datetime) -> None:
        self.registry = registry
        self.new_state = new_state
        self.now = now
        self.rows: list[NewJobRow] = []
        self.min_due_us: int | None = None
        # the shape of the last fast job (job type, misfire, overlap) and its template
        self._shape: tuple[type[Job], object, object] | None = None
        self._template: _Template | None = None
        self._templates: dict[tuple[type[Job], object, object], _Template | None] = {}
        self._last_job: object = None
        self._last_cls: type[Job] | None = None

    def add(self, spec: Any, seen: set[str]) -> str:
        """Validate ``spec`` (a :class:`JobSpec`), add its row; return its job id."""
        job = spec.job
        cls = self._last_cls
        if job is not self._last_job or cls is None:
            cls = self.registry.resolve(job)
            self._last_job, self._last_cls = job, cls
        job_id = spec.job_id
        jid = check_job_id(job_id if job_id is not None else uuid.uuid4().hex)
        if jid in seen:
            raise DuplicateJobError(jid)
        trigger = spec.trigger
        if type(trigger) is Once:
            at = trigger.at
            if at is not None and type(at) is datetime and at.tzinfo is UTC:
                template = self._fast_template(cls, spec)
                if template is not None:
                    params = spec.params
                    if params is None and cls.Params is None:
                        ptext = "{}"
                    else:
                        ptext = _json.dumps(validate_params(cls, params))
                    at_us = to_us(at)
                    self.rows.append(
                        (jid, cls.name, template.stage, template.text(ptext, at, at_us), at_us)
                    )
                    if self.min_due_us is None or at_us < self.min_due_us:
                        self.min_due_us = at_us
                    seen.add(jid)
                    return jid
        self._add_whole(jid, cls, spec)
        seen.add(jid)
        return jid

    def _fast_template(self, cls: type[Job], spec: Any) -> _Template | None:
        misfire, overlap = spec.misfire, spec.overlap
        shape = self._shape
        if shape is not None and shape[0] is cls and shape[1] is misfire and shape[2] is overlap:
            return self._template
        if misfire is not None and not isinstance(misfire, MisfirePolicy):
            return None  # the whole path says what is wrong
        if overlap is not None and not isinstance(overlap, str):
            return None
        key = (cls, misfire, overlap)
        if key not in self._templates:
            return None  # the first job of its shape builds the template: _add_whole
        self._shape, self._template = key, self._templates[key]
        return self._template

    def _add_whole(self, jid: str, cls: type[Job], spec: Any) -> None:
        """Build and encode the whole document (and, for the first job of a shape, the
        template of the jobs like it)."""
        state = self.new_state(
            cls, spec.params, spec.trigger, spec.misfire, spec.overlap, now=self.now
        )
        doc = state.to_json()
        text = _json.dumps(doc)
        due = state.due_us()
        self.rows.append((jid, cls.name, state.stage.value, text, due))
        if due is not None and (self.min_due_us is None or due < self.min_due_us):
            self.min_due_us = due
        trigger = spec.trigger
        if type(trigger) is not Once or state.triggers != [trigger]:
            return
        at = trigger.at
        if at is None or type(at) is not datetime or at.tzinfo is not UTC:
            return
        key = (cls, spec.misfire, spec.overlap)
        if key in self._templates:
            return
        template = _template(doc, state.stage.value)
        if template is not None:
            params = _json.dumps(doc["params"])
            if template.text(params, at, to_us(at)) != text or due != to_us(at):
                template = None  # not the document the template would write: no fast path
        self._templates[key] = template


MAX_JOB_ID = 255


def check_job_id(job_id: object) -> str:
    """``job_id`` if it can name a job, else :class:`ConfigurationError` saying why."""
    # The usual id first: printable ASCII has no control character and nothing to clean.
    if (
        type(job_id) is str
        and 0 < len(job_id) <= MAX_JOB_ID
        and job_id.isascii()
        and job_id.isprintable()
    ):
        return job_id
    if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_JOB_ID:
        raise ConfigurationError(
            f"a job id is a non-empty string of at most {MAX_JOB_ID} characters, not {job_id!r}"
        )
    if any(ch in job_id for ch in "\x00\r\n"):
        raise ConfigurationError(f"a job id may not contain NUL or line breaks: {job_id!r}")
    if _json.clean_text(job_id) != job_id:
        raise ConfigurationError(
            f"a job id must be valid Unicode text, without lone surrogates: {job_id!r}"
        )
    return job_id
