"""gridbench: classify a grid of MNIST digits in different execution modes and record it."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
"""Project paths (data, weights, tracking store) are anchored here, never at the cwd."""
