-- The SQLite provider's queries, one named block each ("-- name: NAME" opens a block).
-- Lists of ids arrive as one JSON array parameter read through json_each, so that a
-- statement's text (and its cached plan) does not depend on how many ids there are.
--
-- A lease is free when it has no holder (no row, or released), has expired, or its
-- holder's status is dead or stopped; that rule is spelled out in each query that needs it.
-- :now is always the store's time (the clock the store was opened with), which stamps and
-- judges lease expiries and heartbeats; callers' times are due times only.

-- name: insert_job
INSERT INTO jobs (job_id, job_type, stage, state, etag) VALUES (?, ?, ?, ?, ?);

-- name: insert_jobs
-- Many jobs in one statement: {rows} stands for one "(?, ?, ?, ?, ?)" per job, its id,
-- job type, stage, state and due time (unused here). A random 62-bit etag each.
INSERT INTO jobs (job_id, job_type, stage, state, etag)
SELECT column1, column2, column3, column4, random() & 4611686018427387903
FROM (VALUES {rows});

-- name: insert_reminders
-- The reminders of the jobs insert_jobs inserted, from the same parameters.
INSERT INTO reminders (job_id, due_us)
SELECT column1, column5 FROM (VALUES {rows}) WHERE column5 IS NOT NULL
ON CONFLICT (job_id) DO UPDATE SET due_us = excluded.due_us;

-- name: existing_ids
SELECT job_id FROM jobs WHERE job_id IN (SELECT value FROM json_each(?));

-- name: set_reminder
INSERT INTO reminders (job_id, due_us) VALUES (?, ?)
ON CONFLICT (job_id) DO UPDATE SET due_us = excluded.due_us;

-- name: delete_reminder
DELETE FROM reminders WHERE job_id = ?;

-- name: read_state
SELECT job_id, job_type, stage, state, etag FROM jobs WHERE job_id = ?;

-- name: read_due_at
SELECT job_id, due_us FROM reminders WHERE job_id IN (SELECT value FROM json_each(?));

-- name: stage_counts
SELECT stage, count(*) FROM jobs GROUP BY stage;

-- name: claim_due
-- Two sources: the first :limit free reminders in due order (a walk of reminders_due
-- that stops at :limit), and every free job with mail, due :mail_at, the caller's time
-- (control is usually empty). A job in both takes the earlier key; the earliest :limit
-- keys win.
WITH candidates (job_id, k, mail) AS (
    SELECT job_id, MIN(k), MAX(mail) FROM (
        SELECT * FROM (
            SELECT r.job_id, r.due_us AS k, 0 AS mail
            FROM reminders AS r
            LEFT JOIN leases AS l ON l.job_id = r.job_id
            LEFT JOIN silos AS s ON s.silo_id = l.silo_id
            WHERE r.due_us <= :until
              AND (l.silo_id IS NULL OR l.expires_us <= :now OR s.status IN ('dead', 'stopped'))
            ORDER BY r.due_us, r.job_id
            LIMIT :limit
        )
        UNION ALL
        SELECT DISTINCT m.job_id, :mail_at, 1
        FROM control AS m
        LEFT JOIN leases AS l ON l.job_id = m.job_id
        LEFT JOIN silos AS s ON s.silo_id = l.silo_id
        WHERE l.silo_id IS NULL OR l.expires_us <= :now OR s.status IN ('dead', 'stopped')
    )
    GROUP BY job_id
    ORDER BY MIN(k), job_id
    LIMIT :limit
)
SELECT c.job_id, j.job_type, j.stage, j.state, j.etag, r.due_us, l.epoch, c.mail
FROM candidates AS c
JOIN jobs AS j ON j.job_id = c.job_id
LEFT JOIN reminders AS r ON r.job_id = c.job_id
LEFT JOIN leases AS l ON l.job_id = c.job_id
ORDER BY c.k, c.job_id;

-- name: take_lease
INSERT INTO leases (job_id, silo_id, epoch, expires_us) VALUES (?, ?, ?, ?)
ON CONFLICT (job_id) DO UPDATE
SET silo_id = excluded.silo_id, epoch = excluded.epoch, expires_us = excluded.expires_us;

-- name: control_of_jobs
SELECT msg_id, job_id, body, posted_us FROM control
WHERE job_id IN (SELECT value FROM json_each(?))
ORDER BY msg_id;

-- name: acquire_lease
SELECT j.job_id, j.job_type, j.stage, j.state, j.etag, l.epoch,
       (l.silo_id IS NULL OR l.expires_us <= :now OR s.status IN ('dead', 'stopped')) AS free
FROM jobs AS j
LEFT JOIN leases AS l ON l.job_id = j.job_id
LEFT JOIN silos AS s ON s.silo_id = l.silo_id
WHERE j.job_id = :job_id;

-- name: renew_lease
UPDATE leases SET expires_us = ? WHERE job_id = ? AND silo_id = ? AND epoch = ?;

-- name: release_lease
UPDATE leases SET silo_id = NULL WHERE job_id = ? AND silo_id = ? AND epoch = ?;

-- name: lease_holder
SELECT l.silo_id, l.epoch
FROM leases AS l
LEFT JOIN silos AS s ON s.silo_id = l.silo_id
WHERE l.job_id = :job_id AND l.silo_id IS NOT NULL AND l.expires_us > :now
  AND (s.status IS NULL OR s.status NOT IN ('dead', 'stopped'));

-- name: next_due_reminder
SELECT r.due_us
FROM reminders AS r
LEFT JOIN leases AS l ON l.job_id = r.job_id
LEFT JOIN silos AS s ON s.silo_id = l.silo_id
WHERE l.silo_id IS NULL OR l.expires_us <= :now OR s.status IN ('dead', 'stopped')
ORDER BY r.due_us, r.job_id
LIMIT 1;

-- name: next_due_mail
SELECT 1
FROM control AS m
LEFT JOIN leases AS l ON l.job_id = m.job_id
LEFT JOIN silos AS s ON s.silo_id = l.silo_id
WHERE l.silo_id IS NULL OR l.expires_us <= :now OR s.status IN ('dead', 'stopped')
LIMIT 1;

-- name: commit_check
SELECT j.job_id, j.etag, l.silo_id, l.epoch, r.due_us
FROM jobs AS j
LEFT JOIN leases AS l ON l.job_id = j.job_id
LEFT JOIN reminders AS r ON r.job_id = j.job_id
WHERE j.job_id IN (SELECT value FROM json_each(?));

-- name: update_job
UPDATE jobs
SET job_type = ?, stage = ?, state = ?, etag = ?,
    updated_us = CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)
WHERE job_id = ?;

-- name: upsert_run
INSERT INTO runs (run_id, job_id, job_type, stage, attempt, scheduled_us, started_us,
                  finished_us, silo_id, data)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE
SET job_id = excluded.job_id, job_type = excluded.job_type, stage = excluded.stage,
    attempt = excluded.attempt, scheduled_us = excluded.scheduled_us,
    started_us = excluded.started_us, finished_us = excluded.finished_us,
    silo_id = excluded.silo_id, data = excluded.data;

-- name: ack_control
DELETE FROM control WHERE msg_id = ? AND job_id = ?;

-- name: release_job_lease
UPDATE leases SET silo_id = NULL WHERE job_id = ?;

-- name: delete_job
DELETE FROM jobs WHERE job_id = ?;

-- name: delete_job_reminder
DELETE FROM reminders WHERE job_id = ?;

-- name: delete_job_lease
DELETE FROM leases WHERE job_id = ?;

-- name: delete_job_control
DELETE FROM control WHERE job_id = ?;

-- name: delete_job_runs
DELETE FROM runs WHERE job_id = ?;

-- name: job_exists
SELECT 1 FROM jobs WHERE job_id = ?;

-- name: post_control
INSERT INTO control (job_id, body, posted_us) VALUES (?, ?, ?);

-- name: pending_control
SELECT m.msg_id, m.job_id, m.body, m.posted_us
FROM control AS m
JOIN leases AS l ON l.job_id = m.job_id
WHERE l.silo_id = ?
ORDER BY m.msg_id;

-- name: control_pending
SELECT msg_id FROM control WHERE msg_id IN (SELECT value FROM json_each(?));

-- name: read_runs
SELECT run_id, job_id, job_type, stage, attempt, scheduled_us, started_us, finished_us,
       silo_id, data
FROM runs
WHERE job_id = ? AND scheduled_us < ?
ORDER BY scheduled_us DESC, run_id DESC
LIMIT ?;

-- name: read_run
SELECT run_id, job_id, job_type, stage, attempt, scheduled_us, started_us, finished_us,
       silo_id, data
FROM runs
WHERE run_id = ?;

-- name: prune_runs
-- Rank each job's terminal runs newest first; everything past :keep goes.
DELETE FROM runs WHERE run_id IN (
    SELECT run_id FROM (
        SELECT run_id, row_number() OVER (
            PARTITION BY job_id ORDER BY scheduled_us DESC, run_id DESC
        ) AS rank
        FROM runs
        WHERE stage IN (SELECT value FROM json_each(:terminal))
    )
    WHERE rank > :keep
);

-- name: register_silo
INSERT INTO silos (silo_id, host, pid, started_us, heartbeat_us, status, generation)
VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: heartbeat
UPDATE silos SET heartbeat_us = ? WHERE silo_id = ? AND status IN ('active', 'stopping');

-- name: set_silo_status
UPDATE silos SET status = ? WHERE silo_id = ?;

-- name: free_silo_leases
UPDATE leases SET silo_id = NULL WHERE silo_id = ?;

-- name: missing_silos
SELECT silo_id FROM silos
WHERE status IN ('active', 'stopping') AND heartbeat_us < ?
ORDER BY silo_id;

-- name: list_silos
SELECT silo_id, host, pid, started_us, heartbeat_us, status, generation
FROM silos
ORDER BY started_us DESC, silo_id DESC;

-- name: read_meta
SELECT value FROM meta WHERE key = ?;

-- name: write_meta
INSERT INTO meta (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: overdue_count
SELECT count(*)
FROM reminders AS r
LEFT JOIN leases AS l ON l.job_id = r.job_id
LEFT JOIN silos AS s ON s.silo_id = l.silo_id
WHERE r.due_us < :before
  AND (l.silo_id IS NULL OR l.expires_us <= :now OR s.status IN ('dead', 'stopped'));

-- name: overdue_list
SELECT r.job_id, r.due_us
FROM reminders AS r
LEFT JOIN leases AS l ON l.job_id = r.job_id
LEFT JOIN silos AS s ON s.silo_id = l.silo_id
WHERE r.due_us < :before
  AND (l.silo_id IS NULL OR l.expires_us <= :now OR s.status IN ('dead', 'stopped'))
ORDER BY r.due_us, r.job_id
LIMIT :limit;

-- name: run_counts
SELECT (finished_us / :bucket) * :bucket AS b, stage, count(*)
FROM runs
WHERE finished_us >= :since
GROUP BY b, stage
ORDER BY b, stage;

-- name: schema_versions
SELECT version, applied_us FROM schema_migrations ORDER BY version;
