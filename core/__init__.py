"""jobmon core: Slurm adapter, analyzer, notifier, state and the monitor daemon."""
