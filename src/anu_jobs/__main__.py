from anu_jobs.cli import main

main()
