"""Where runs are recorded: the MLflow store, and the replay of runs it missed."""
