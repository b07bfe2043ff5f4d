-- The current schema, whole: what applying every file in migrations/ in order yields
-- (tests/storage/test_sqlite.py proves it). Change it together with a new migration.
-- Times are INTEGER microseconds since the Unix epoch (UTC); JSON is TEXT. Audit times
-- default to the database's own clock, like now() would.

CREATE TABLE schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_us INTEGER NOT NULL
);

-- Grain state: one envelope per job. etag: a random 62-bit integer, new on every write.
CREATE TABLE jobs (
    job_id     TEXT PRIMARY KEY,
    job_type   TEXT NOT NULL,
    stage      TEXT NOT NULL,
    state      TEXT NOT NULL,
    etag       INTEGER NOT NULL,
    created_us INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)),
    updated_us INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
);
CREATE INDEX jobs_stage ON jobs (stage, job_id);
CREATE INDEX jobs_job_type ON jobs (job_type, job_id);

-- Reminders: each job's one wake-up time. (due_us, job_id) is the due index: "what is
-- due before T, earliest first" is a range scan that needs no sort, ties by job id.
CREATE TABLE reminders (
    job_id TEXT PRIMARY KEY,
    due_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX reminders_due ON reminders (due_us, job_id);

-- Activation leases. A released lease keeps its row (silo_id NULL) so that epochs only
-- grow; the row goes when the job is deleted.
CREATE TABLE leases (
    job_id     TEXT PRIMARY KEY,
    silo_id    TEXT,
    epoch      INTEGER NOT NULL,
    expires_us INTEGER NOT NULL
) WITHOUT ROWID;

-- Membership.
CREATE TABLE silos (
    silo_id      TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_us   INTEGER NOT NULL,
    heartbeat_us INTEGER NOT NULL,
    status       TEXT NOT NULL,
    generation   INTEGER NOT NULL
);

-- Control inboxes. AUTOINCREMENT: message ids are never reused, even after deletes.
CREATE TABLE control (
    msg_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id    TEXT NOT NULL,
    body      TEXT NOT NULL,
    posted_us INTEGER NOT NULL
);
CREATE INDEX control_job ON control (job_id, msg_id);

-- Run history, newest first per job through runs_job.
CREATE TABLE runs (
    run_id       TEXT PRIMARY KEY,
    job_id       TEXT NOT NULL,
    job_type     TEXT NOT NULL,
    stage        TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    scheduled_us INTEGER NOT NULL,
    started_us   INTEGER,
    finished_us  INTEGER,
    silo_id      TEXT,
    data         TEXT NOT NULL
);
CREATE INDEX runs_job ON runs (job_id, scheduled_us, run_id);
CREATE INDEX runs_finished ON runs (finished_us, stage);

-- Small JSON documents about the store itself (a silo's declared jobs), by key.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
