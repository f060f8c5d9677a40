"""What a run draws: the mask of the grid and the pictures that explain it."""
