"""What is made of finished runs: the sweep report, the comparison across machines, the
scaling laws, and the statistics all three (and the run's own interval) share."""
