-- The current schema, whole: what applying every file in migrations/ in order yields
-- (tests/storage/test_postgres.py proves it by comparing catalogs). Change it together
-- with a new migration. Everything lives in the store's own schema (search_path).
-- Times are bigint microseconds since the Unix epoch (UTC); JSON is text, exactly as
-- the other providers keep it (jsonb would reorder keys and refuse \u0000, and costs
-- more to write). Identifiers use the "C" collation: ordering is by code point, as in
-- Python, and comparisons are cheaper. Audit times default to the database's clock.

CREATE TABLE schema_migrations (
    version    integer PRIMARY KEY,
    applied_us bigint NOT NULL
);

-- Grain state: one envelope per job. etag: a random 62-bit integer, new on every write.
-- Room is left on each page so that a write, which changes no indexed column, can be a
-- HOT update (no index touched). job_id_folded: the id lower-cased by Python, so JobQuery.text matches as in Python
-- whatever the database's locale.
CREATE TABLE jobs (
    job_id        text COLLATE "C" PRIMARY KEY,
    job_id_folded text COLLATE "C" NOT NULL,
    job_type      text COLLATE "C" NOT NULL,
    stage         text COLLATE "C" NOT NULL,
    state         text NOT NULL,
    etag          bigint NOT NULL,
    created_us    bigint NOT NULL DEFAULT (extract(epoch FROM now()) * 1000000)::bigint,
    updated_us    bigint NOT NULL DEFAULT (extract(epoch FROM now()) * 1000000)::bigint
) WITH (fillfactor = 80);
CREATE INDEX jobs_stage ON jobs (stage, job_id);
CREATE INDEX jobs_job_type ON jobs (job_type, job_id);

-- Reminders: each job's one wake-up time; a job without one has no row, so the due
-- index needs no partial predicate. (due_us, job_id) is the due index: "what is due
-- before T, earliest first" is a range scan that needs no sort, ties by job id.
CREATE TABLE reminders (
    job_id text COLLATE "C" PRIMARY KEY,
    due_us bigint NOT NULL
);
CREATE INDEX reminders_due ON reminders (due_us, job_id);

-- Activation leases. A released lease keeps its row (silo_id NULL) so that epochs only
-- grow; the row goes when the job is deleted. No index on silo_id: claims and renewals
-- then update rows in place (HOT), and only the rare silo stop scans.
CREATE TABLE leases (
    job_id     text COLLATE "C" PRIMARY KEY,
    silo_id    text COLLATE "C",
    epoch      bigint NOT NULL,
    expires_us bigint NOT NULL
) WITH (fillfactor = 70);

-- The store's time, in microseconds: the server's clock (NULL) or a pinned time (tests).
-- Lease expiries and heartbeats are stamped and judged with it, never with a silo's clock.
CREATE FUNCTION anu_now_us(pinned bigint) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT COALESCE(pinned, (extract(epoch FROM now()) * 1000000)::bigint) $$;

-- Membership. heartbeat_us is the store's time of the last heartbeat.
CREATE TABLE silos (
    silo_id      text COLLATE "C" PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_us   bigint NOT NULL,
    heartbeat_us bigint NOT NULL,
    status       text COLLATE "C" NOT NULL,
    generation   integer NOT NULL
);

-- Control inboxes. A sequence: message ids are never reused, even after deletes.
CREATE TABLE control (
    msg_id    bigserial PRIMARY KEY,
    job_id    text COLLATE "C" NOT NULL,
    body      text NOT NULL,
    posted_us bigint NOT NULL
);
CREATE INDEX control_job ON control (job_id, msg_id);

-- Run history, newest first per job through runs_job.
CREATE TABLE runs (
    run_id       text COLLATE "C" PRIMARY KEY,
    job_id       text COLLATE "C" NOT NULL,
    job_type     text COLLATE "C" NOT NULL,
    stage        text COLLATE "C" NOT NULL,
    attempt      integer NOT NULL,
    scheduled_us bigint NOT NULL,
    started_us   bigint,
    finished_us  bigint,
    silo_id      text COLLATE "C",
    data         text NOT NULL
);
CREATE INDEX runs_job ON runs (job_id, scheduled_us, run_id);
-- Ended runs by finish time, for the runs-per-minute counts of the operator surface;
-- partial, as an open run has no finish time.
CREATE INDEX runs_finished ON runs (finished_us, stage) WHERE finished_us IS NOT NULL;

-- Small JSON documents about the store itself (a silo's declared jobs), by key.
CREATE TABLE meta (
    key   text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);
