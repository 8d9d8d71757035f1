"""The almasim TFDS builder: its tests live next to it (TFDS convention) and run from here."""

from dfjax.datasets.almasim.almasim_dataset_builder_test import *  # noqa: F403 (run them here)
