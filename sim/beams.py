"""The set-up's primary beam as a FITS file (``python -m sim psf --pb``), beside its dirty beam
(:func:`sim.generate.write_psf`): what tclean writes as ``.pb`` next to every image, and what a
dirty cube of the fast backend is multiplied by (:func:`sim.instrument.primary_beam`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim import fitsio, sky
from sim.config import SimConfig
from sim.instrument import build_instrument

__all__ = ["write_pb"]


def write_pb(path: Path, config: SimConfig) -> None:
    """The fast backend's primary beam for `config`, one plane per channel, peak 1 at the field's centre."""
    obs, cube_cfg = config.observation, config.cube
    freqs = sky.channel_frequencies(obs.centre_freq_hz, obs.channel_width_hz, cube_cfg.channels)
    instrument = build_instrument(obs, cube_cfg.size, freqs)
    header = fitsio.celestial_header(obs, cube_cfg.size, freqs)
    fitsio.write_atomic(path, fitsio.cube_hdus(np.asarray(instrument.primary_beam), header, bunit="",
                                               cards={"ORIGIN": "dfjax.sim", "ANTCFG": obs.antenna_config}))  # fmt: skip
