"""The chaos soak of anu-jobs: real silo processes, injected faults, an independent ledger.

Not part of the installed package. Run ``python chaos/soak.py --help`` from a checkout
(see the README, "Chaos soak"); ``tests/integration/test_chaos.py`` runs a short variant.

- :mod:`chaos.clock`: the silos' injected clock, with an offset the soak changes at run time.
- :mod:`chaos.ledger`: the append-only ledger the job bodies write, one file per process.
- :mod:`chaos.jobs`: the job types of the load.
- :mod:`chaos.silo`: a silo process (``python -m chaos.silo``).
- :mod:`chaos.canceller`: the separate client process that cancels long-running jobs.
- :mod:`chaos.soak`: the driver and its command line: cluster, load, faults, then
  :mod:`chaos.check`. Its parts: :mod:`chaos.config` (what to run), :mod:`chaos.cluster`
  (the store, the silo processes, the supervisor), :mod:`chaos.load` (the jobs and the
  cancel plan), :mod:`chaos.faults` (the fault injection), :mod:`chaos.collect` (reading
  the store, the ledger and the logs back for the verdict).
- :mod:`chaos.check`: the verdict, from the ledger and the store, against the schedules.
  Its parts: :mod:`chaos.records` (what it reads and the report it returns),
  :mod:`chaos.tally` (what the checks share), :mod:`chaos.check_runs` (fires on time,
  terminal records, fencing) and :mod:`chaos.check_recovery` (compensation, cancels,
  re-executions, the processes).
- :mod:`chaos.repros`: one small reproduction per bug the soak found.
"""
