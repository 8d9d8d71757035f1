"""The almasim dataset: simulated ALMA cubes packaged for training (see README.md)."""
