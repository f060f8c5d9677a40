"""How the grid is classified: the strategies (one process, worker processes, Ray actors),
the backends that run the model, and the devices they run on."""
