-- 0003: runs by finish time, for the runs-per-minute counts of the operator surface.

CREATE INDEX runs_finished ON runs (finished_us);
