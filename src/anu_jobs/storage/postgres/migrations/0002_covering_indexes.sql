-- 0002: covering indexes for the operator surface. The jobs list filtered by stage or
-- type walks its index in id order and stops at the page; runs per minute are counted
-- from the index alone.

DROP INDEX jobs_stage;
CREATE INDEX jobs_stage ON jobs (stage, job_id);
DROP INDEX jobs_job_type;
CREATE INDEX jobs_job_type ON jobs (job_type, job_id);
DROP INDEX runs_finished;
CREATE INDEX runs_finished ON runs (finished_us, stage) WHERE finished_us IS NOT NULL;
