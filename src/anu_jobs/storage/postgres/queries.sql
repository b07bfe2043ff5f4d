-- The PostgreSQL provider's queries, one named block each ("-- name: NAME" opens a block).
-- Every contract method is ONE statement run in autocommit mode (one round trip, one
-- implicit transaction); batches arrive as binary arrays read through unnest (or, for
-- commit, as one JSON document), so a statement's text, and its prepared plan, does not
-- depend on the batch size.
--
-- A lease is free when it has no holder (no row, or released), has expired, or its
-- holder's status is dead or stopped; that rule is spelled out in each query that needs it.
-- Expiry and heartbeats are in the store's time, anu_now_us(%(pinned)s): the server's
-- clock (pinned is NULL but in tests), never a silo's; silos send durations.
--
-- Concurrency, in READ COMMITTED:
-- * Whoever takes a lease does it with INSERT ... ON CONFLICT DO UPDATE ... WHERE free:
--   the WHERE is checked against the newest version of the lease row, after waiting for
--   any transaction that holds it, so two claimers can never both take one lease even
--   when both read the lease as free in their snapshots.
-- * Row locks are taken jobs before leases, in job id order, by every statement that may
--   wait for them (claims skip locked jobs instead of waiting), so writers never deadlock.
-- * A locked row is re-read at its newest version (EvalPlanQual): values that must be
--   current (the envelope a claim returns, the lease a write is fenced by) are read from
--   the locked rows, never from the statement's snapshot.

-- name: insert_job
WITH j AS (
    INSERT INTO jobs (job_id, job_id_folded, job_type, stage, state, etag)
    VALUES (%(job_id)s, %(folded)s, %(job_type)s, %(stage)s, %(state)s, %(etag)s)
    ON CONFLICT (job_id) DO NOTHING
    RETURNING job_id
), r AS (
    INSERT INTO reminders (job_id, due_us)
    SELECT job_id, %(due)s FROM j WHERE %(due)s::bigint IS NOT NULL
)
SELECT count(*) FROM j;

-- name: copy_jobs
-- Bulk insert (binary COPY); a duplicate id fails the copy, and its transaction.
COPY jobs (job_id, job_id_folded, job_type, stage, state, etag) FROM STDIN (FORMAT BINARY);

-- name: copy_reminders
COPY reminders (job_id, due_us) FROM STDIN (FORMAT BINARY);

-- name: existing_ids
SELECT job_id FROM jobs WHERE job_id = ANY(%(job_ids)b::text[]);

-- name: read_state
SELECT job_id, job_type, stage, state, etag FROM jobs WHERE job_id = %(job_id)s;

-- name: read_due_at
SELECT job_id, due_us FROM reminders WHERE job_id = ANY(%(job_ids)b::text[]);

-- name: stage_counts
SELECT stage, count(*) FROM jobs GROUP BY stage;

-- name: overdue
WITH late AS MATERIALIZED (
    SELECT r.job_id, r.due_us
    FROM reminders AS r
    LEFT JOIN leases AS l ON l.job_id = r.job_id
    LEFT JOIN silos AS s ON s.silo_id = l.silo_id
    WHERE r.due_us < %(before)s
      AND (l.silo_id IS NULL OR l.expires_us <= anu_now_us(%(pinned)s)
           OR s.status IN ('dead', 'stopped'))
), oldest AS (
    SELECT job_id, due_us FROM late ORDER BY due_us, job_id LIMIT %(limit)s
)
SELECT (SELECT count(*) FROM late),
       ARRAY(SELECT job_id FROM oldest ORDER BY due_us, job_id),
       ARRAY(SELECT due_us FROM oldest ORDER BY due_us, job_id);

-- name: run_counts
-- Buckets floor towards minus infinity, as Python's // does.
SELECT b, stage, count(*)
FROM (
    SELECT finished_us - ((finished_us %% %(bucket)s) + %(bucket)s) %% %(bucket)s AS b, stage
    FROM runs
    WHERE finished_us >= %(since)s
) AS ended
GROUP BY b, stage
ORDER BY b, stage;

-- name: claim_due
-- Two sources: the first :limit free reminders in due order (a walk of reminders_due
-- that stops at :limit, skipping jobs another claimer or writer has locked), and every
-- free job with mail, due :now. A job in both takes the earlier key; the earliest
-- :limit keys win; their leases are taken in job id order.
WITH due AS MATERIALIZED (
    SELECT j.job_id, j.job_type, j.stage, j.state, j.etag, r.due_us, r.due_us AS k
    FROM reminders AS r
    JOIN jobs AS j ON j.job_id = r.job_id
    LEFT JOIN leases AS l ON l.job_id = r.job_id
    LEFT JOIN silos AS s ON s.silo_id = l.silo_id
    WHERE r.due_us <= %(until)s
      AND (l.silo_id IS NULL OR l.expires_us <= anu_now_us(%(pinned)s)
           OR s.status IN ('dead', 'stopped'))
    ORDER BY r.due_us, r.job_id
    LIMIT %(limit)s
    FOR NO KEY UPDATE OF r, j SKIP LOCKED
), mail AS MATERIALIZED (
    SELECT j.job_id, j.job_type, j.stage, j.state, j.etag,
           (SELECT r.due_us FROM reminders AS r WHERE r.job_id = j.job_id) AS due_us,
           %(now)s::bigint AS k
    FROM jobs AS j
    LEFT JOIN leases AS l ON l.job_id = j.job_id
    LEFT JOIN silos AS s ON s.silo_id = l.silo_id
    WHERE j.job_id IN (SELECT m.job_id FROM control AS m)
      AND (l.silo_id IS NULL OR l.expires_us <= anu_now_us(%(pinned)s)
           OR s.status IN ('dead', 'stopped'))
    FOR NO KEY UPDATE OF j SKIP LOCKED
), chosen AS (
    SELECT p.*, p.job_id IN (SELECT job_id FROM mail) AS has_mail
    FROM (
        SELECT DISTINCT ON (job_id) *
        FROM (SELECT * FROM due UNION ALL SELECT * FROM mail) AS u
        ORDER BY job_id, k
    ) AS p
    ORDER BY k, job_id
    LIMIT %(limit)s
), taken AS (
    INSERT INTO leases AS l (job_id, silo_id, epoch, expires_us)
    SELECT job_id, %(silo_id)s, 1, anu_now_us(%(pinned)s) + %(lease_us)s
    FROM chosen ORDER BY job_id
    ON CONFLICT (job_id) DO UPDATE
    SET silo_id = excluded.silo_id, epoch = l.epoch + 1, expires_us = excluded.expires_us
    WHERE l.silo_id IS NULL OR l.expires_us <= anu_now_us(%(pinned)s)
       OR EXISTS (SELECT 1 FROM silos AS s
                  WHERE s.silo_id = l.silo_id AND s.status IN ('dead', 'stopped'))
    RETURNING l.job_id, l.epoch
)
SELECT c.job_id, c.job_type, c.stage, c.state, c.etag, c.due_us, t.epoch,
       mb.ids, mb.bodies, mb.posted
FROM chosen AS c
JOIN taken AS t ON t.job_id = c.job_id
LEFT JOIN LATERAL (
    -- Only jobs in `mail` have any (every free job with mail is there): the others
    -- skip the lookup.
    SELECT array_agg(m.msg_id ORDER BY m.msg_id) AS ids,
           array_agg(m.body ORDER BY m.msg_id) AS bodies,
           array_agg(m.posted_us ORDER BY m.msg_id) AS posted
    FROM control AS m WHERE c.has_mail AND m.job_id = c.job_id
) AS mb ON true
ORDER BY c.k, c.job_id;

-- name: acquire_lease
WITH j AS MATERIALIZED (
    SELECT job_id, job_type, stage, state, etag FROM jobs WHERE job_id = %(job_id)s
    FOR NO KEY UPDATE
), taken AS (
    INSERT INTO leases AS l (job_id, silo_id, epoch, expires_us)
    SELECT job_id, %(silo_id)s, 1, anu_now_us(%(pinned)s) + %(lease_us)s FROM j
    ON CONFLICT (job_id) DO UPDATE
    SET silo_id = excluded.silo_id, epoch = l.epoch + 1, expires_us = excluded.expires_us
    WHERE l.silo_id IS NULL OR l.expires_us <= anu_now_us(%(pinned)s)
       OR EXISTS (SELECT 1 FROM silos AS s
                  WHERE s.silo_id = l.silo_id AND s.status IN ('dead', 'stopped'))
    RETURNING l.epoch
)
SELECT j.job_id, j.job_type, j.stage, j.state, j.etag, t.epoch, mb.ids, mb.bodies, mb.posted
FROM j
LEFT JOIN taken AS t ON true
LEFT JOIN LATERAL (
    SELECT array_agg(m.msg_id ORDER BY m.msg_id) AS ids,
           array_agg(m.body ORDER BY m.msg_id) AS bodies,
           array_agg(m.posted_us ORDER BY m.msg_id) AS posted
    FROM control AS m WHERE m.job_id = j.job_id
) AS mb ON true;

-- name: renew_leases
WITH t AS (
    SELECT * FROM unnest(%(job_ids)b::text[], %(silo_ids)b::text[], %(epochs)b::bigint[])
        AS t (job_id, silo_id, epoch)
), held AS MATERIALIZED (
    SELECT l.job_id
    FROM leases AS l JOIN t ON t.job_id = l.job_id
    WHERE l.silo_id = t.silo_id AND l.epoch = t.epoch
    ORDER BY l.job_id
    FOR NO KEY UPDATE OF l
)
UPDATE leases AS l SET expires_us = anu_now_us(%(pinned)s) + %(lease_us)s
FROM held WHERE l.job_id = held.job_id
RETURNING l.job_id, l.silo_id, l.epoch;

-- name: release_leases
WITH t AS (
    SELECT * FROM unnest(%(job_ids)b::text[], %(silo_ids)b::text[], %(epochs)b::bigint[])
        AS t (job_id, silo_id, epoch)
), held AS MATERIALIZED (
    SELECT l.job_id
    FROM leases AS l JOIN t ON t.job_id = l.job_id
    WHERE l.silo_id = t.silo_id AND l.epoch = t.epoch
    ORDER BY l.job_id
    FOR NO KEY UPDATE OF l
)
UPDATE leases AS l SET silo_id = NULL
FROM held WHERE l.job_id = held.job_id;

-- name: lease_holder
SELECT l.silo_id, l.epoch
FROM leases AS l
LEFT JOIN silos AS s ON s.silo_id = l.silo_id
WHERE l.job_id = %(job_id)s AND l.silo_id IS NOT NULL
  AND l.expires_us > anu_now_us(%(pinned)s)
  AND (s.status IS NULL OR s.status NOT IN ('dead', 'stopped'));

-- name: next_due
SELECT LEAST(
    (SELECT r.due_us
     FROM reminders AS r
     LEFT JOIN leases AS l ON l.job_id = r.job_id
     LEFT JOIN silos AS s ON s.silo_id = l.silo_id
     WHERE l.silo_id IS NULL OR l.expires_us <= anu_now_us(%(pinned)s)
        OR s.status IN ('dead', 'stopped')
     ORDER BY r.due_us, r.job_id
     LIMIT 1),
    (SELECT %(now)s::bigint
     FROM control AS m
     LEFT JOIN leases AS l ON l.job_id = m.job_id
     LEFT JOIN silos AS s ON s.silo_id = l.silo_id
     WHERE l.silo_id IS NULL OR l.expires_us <= anu_now_us(%(pinned)s)
        OR s.status IN ('dead', 'stopped')
     LIMIT 1)
);

-- name: commit
-- One round of a batch: at most one write per job (the caller splits repeats into
-- later rounds, each a statement of its own that sees the rounds before). The round
-- arrives as ONE JSON document, an array of writes, each with its runs and acknowledged
-- messages inside: one encoder call in Python, one parse here. `json` (not jsonb)
-- values keep the text they were sent as, so states and run data are stored byte for
-- byte as encoded. Every step below is driven by the rows of `held` (or `upd`) and
-- reaches tables through their primary keys only: linear in the batch, whatever the
-- planner estimates. Returns one row: the jobs whose lease held (with their etags as
-- the lock saw them), the jobs updated, the jobs deleted, and the jobs that were gone.
WITH w AS (
    SELECT *
    FROM ROWS FROM (
        json_to_recordset(%(batch)s::json)
            AS (i text, s text, e bigint, x bigint, t text, g text, st json, d bigint,
                r boolean, n bigint, runs json, k bigint[])
    ) WITH ORDINALITY
        AS w (job_id, silo_id, epoch, expected, job_type, stage, state, due_us, release,
              etag, runs, acks, n)
), held AS MATERIALIZED (
    -- The fence: the lease row's newest version must still carry the token.
    SELECT w.*, j.etag AS actual
    FROM w
    JOIN jobs AS j ON j.job_id = w.job_id
    JOIN leases AS l ON l.job_id = w.job_id
    WHERE l.silo_id = w.silo_id AND l.epoch = w.epoch
    ORDER BY w.job_id
    FOR NO KEY UPDATE OF j, l
), upd AS (
    UPDATE jobs AS j
    SET job_type = h.job_type, stage = h.stage, state = h.state::text, etag = h.etag,
        updated_us = (extract(epoch FROM now()) * 1000000)::bigint
    FROM held AS h
    WHERE j.job_id = h.job_id AND j.etag = h.expected AND h.state IS NOT NULL
    RETURNING j.job_id, h.due_us, h.release, h.runs, h.acks, h.n
), gone AS (
    DELETE FROM jobs AS j
    USING held AS h
    WHERE j.job_id = h.job_id AND j.etag = h.expected AND h.state IS NULL
    RETURNING j.job_id
), move_due AS (
    -- Most writes move a reminder the job has: a plain update (an upsert would probe,
    -- lock and then update each row).
    UPDATE reminders AS r SET due_us = upd.due_us
    FROM upd
    WHERE r.job_id = upd.job_id AND upd.due_us IS NOT NULL AND r.due_us <> upd.due_us
), add_due AS (
    INSERT INTO reminders AS r (job_id, due_us)
    SELECT upd.job_id, upd.due_us FROM upd
    WHERE upd.due_us IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM reminders AS old WHERE old.job_id = upd.job_id)
    ORDER BY upd.job_id
    ON CONFLICT (job_id) DO UPDATE SET due_us = excluded.due_us
), drop_due AS (
    DELETE FROM reminders AS r
    USING (SELECT job_id FROM upd WHERE due_us IS NULL UNION ALL SELECT job_id FROM gone) AS x
    WHERE r.job_id = x.job_id
), released AS (
    UPDATE leases AS l SET silo_id = NULL
    FROM upd WHERE l.job_id = upd.job_id AND upd.release
), drop_lease AS (
    DELETE FROM leases AS l USING gone WHERE l.job_id = gone.job_id
), drop_control AS (
    DELETE FROM control AS m USING gone WHERE m.job_id = gone.job_id
), drop_runs AS (
    DELETE FROM runs AS r USING gone WHERE r.job_id = gone.job_id
), acked AS (
    DELETE FROM control AS m
    USING upd
    WHERE upd.acks IS NOT NULL AND m.job_id = upd.job_id AND m.msg_id = ANY(upd.acks)
), saved AS (
    -- A run named twice in the round: the last one wins.
    INSERT INTO runs AS r (run_id, job_id, job_type, stage, attempt, scheduled_us,
                           started_us, finished_us, silo_id, data)
    SELECT DISTINCT ON (x.i) x.i, x.j, x.t, x.s, x.a, x.sc, x.st, x.fi, x.si, x.d::text
    FROM upd
    CROSS JOIN LATERAL ROWS FROM (
        json_to_recordset(upd.runs)
            AS (i text, j text, t text, s text, a int, sc bigint, st bigint, fi bigint,
                si text, d json)
    ) WITH ORDINALITY AS x (i, j, t, s, a, sc, st, fi, si, d, k)
    WHERE upd.runs IS NOT NULL
    ORDER BY x.i, upd.n DESC, x.k DESC
    ON CONFLICT (run_id) DO UPDATE
    SET job_id = excluded.job_id, job_type = excluded.job_type, stage = excluded.stage,
        attempt = excluded.attempt, scheduled_us = excluded.scheduled_us,
        started_us = excluded.started_us, finished_us = excluded.finished_us,
        silo_id = excluded.silo_id, data = excluded.data
)
SELECT h.ids, h.etags, ARRAY(SELECT job_id FROM upd), ARRAY(SELECT job_id FROM gone),
       ARRAY(SELECT w.job_id FROM w
             WHERE w.job_id NOT IN (SELECT job_id FROM held)
               AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.job_id = w.job_id))
FROM (SELECT array_agg(job_id) AS ids, array_agg(actual) AS etags FROM held) AS h;

-- name: post_control
-- FOR KEY SHARE: a job deleted meanwhile waits for this insert, and then takes the
-- message with it; claims and writes (FOR NO KEY UPDATE) are not held up.
WITH j AS (
    SELECT job_id FROM jobs WHERE job_id = %(job_id)s FOR KEY SHARE
)
INSERT INTO control (job_id, body, posted_us)
SELECT job_id, %(body)s, %(posted)s FROM j
RETURNING msg_id;

-- name: pending_control
SELECT m.msg_id, m.job_id, m.body, m.posted_us
FROM control AS m
JOIN leases AS l ON l.job_id = m.job_id
WHERE l.silo_id = %(silo_id)s
ORDER BY m.msg_id;

-- name: control_pending
SELECT msg_id FROM control WHERE msg_id = ANY(%(msg_ids)b::bigint[]);

-- name: read_runs
SELECT run_id, job_id, job_type, stage, attempt, scheduled_us, started_us, finished_us,
       silo_id, data
FROM runs
WHERE job_id = %(job_id)s AND scheduled_us < %(before)s
ORDER BY scheduled_us DESC, run_id DESC
LIMIT %(limit)s;

-- name: read_run
SELECT run_id, job_id, job_type, stage, attempt, scheduled_us, started_us, finished_us,
       silo_id, data
FROM runs
WHERE run_id = %(run_id)s;

-- name: prune_runs
-- Rank each job's terminal runs newest first; everything past :keep goes.
DELETE FROM runs WHERE run_id IN (
    SELECT run_id FROM (
        SELECT run_id, row_number() OVER (
            PARTITION BY job_id ORDER BY scheduled_us DESC, run_id DESC
        ) AS rank
        FROM runs
        WHERE stage = ANY(%(terminal)b::text[])
    ) AS ranked
    WHERE rank > %(keep)s
);

-- name: register_silo
-- The first heartbeat is the store's time, whatever the silo's clock says.
INSERT INTO silos (silo_id, host, pid, started_us, heartbeat_us, status, generation)
VALUES (%(silo_id)s, %(host)s, %(pid)s, %(started)s, anu_now_us(%(pinned)s), %(status)s,
        %(generation)s)
ON CONFLICT (silo_id) DO NOTHING
RETURNING silo_id;

-- name: heartbeat
UPDATE silos SET heartbeat_us = anu_now_us(%(pinned)s)
WHERE silo_id = %(silo_id)s AND status IN ('active', 'stopping')
RETURNING silo_id;

-- name: set_silo_status
-- Stopped and dead silos let go of every lease they hold.
WITH s AS (
    UPDATE silos SET status = %(status)s WHERE silo_id = %(silo_id)s RETURNING silo_id
), held AS MATERIALIZED (
    SELECT l.job_id FROM leases AS l
    WHERE %(frees)s AND l.silo_id IN (SELECT silo_id FROM s)
    ORDER BY l.job_id
    FOR NO KEY UPDATE OF l
)
UPDATE leases AS l SET silo_id = NULL
FROM held WHERE l.job_id = held.job_id AND l.silo_id = %(silo_id)s;

-- name: declare_dead
WITH d AS (
    UPDATE silos SET status = 'dead'
    WHERE status IN ('active', 'stopping')
      AND heartbeat_us < anu_now_us(%(pinned)s) - %(dead_after_us)s
      AND silo_id IS DISTINCT FROM %(by)s
    RETURNING silo_id
), held AS MATERIALIZED (
    SELECT l.job_id FROM leases AS l
    WHERE l.silo_id IN (SELECT silo_id FROM d)
    ORDER BY l.job_id
    FOR NO KEY UPDATE OF l
), freed AS (
    UPDATE leases AS l SET silo_id = NULL
    FROM held WHERE l.job_id = held.job_id AND l.silo_id IN (SELECT silo_id FROM d)
)
SELECT silo_id FROM d ORDER BY silo_id;

-- name: list_silos
SELECT silo_id, host, pid, started_us, heartbeat_us, status, generation
FROM silos
ORDER BY started_us DESC, silo_id DESC;

-- name: store_now
SELECT anu_now_us(%(pinned)s);

-- name: read_meta
SELECT value FROM meta WHERE key = %(key)s;

-- name: write_meta
INSERT INTO meta (key, value) VALUES (%(key)s, %(value)s)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: notify
-- One NOTIFY per payload chunk, all in one statement.
SELECT pg_notify(%(channel)s, payload) FROM unnest(%(payloads)b::text[]) AS payload;

-- name: schema_versions
SELECT version, applied_us FROM schema_migrations ORDER BY version;
