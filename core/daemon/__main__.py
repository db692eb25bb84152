"""`python -m core.daemon JOBID`: a job's monitor daemon (started detached by core.daemon.launcher)."""
import sys

from core.daemon.main import main

sys.exit(main(sys.argv[1:]))
