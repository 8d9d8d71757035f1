"""ALMA antenna configurations and Earth-rotation uv tracks.

The antenna tables in `sim/data/antennas/` are the public ALMA configuration files
(`alma.cycleN.M.cfg`, `aca.cycleN.cfg`, local tangent plane, metres) as distributed with CASA's
data repository, bundled so that the default install needs no CASA.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np

ALMA_LATITUDE_DEG = -23.022886  # array centre, as used by CASA's simobserve
SIDEREAL_DAY_S = 86164.0905
SPEED_OF_LIGHT_M_S = 299_792_458.0


@dataclass(frozen=True)
class AntennaConfiguration:
    name: str
    enu_m: np.ndarray  # (n_ant, 3): east, north, up in metres
    diameter_m: np.ndarray  # (n_ant,)
    pads: tuple[str, ...]

    @property
    def n_antennas(self) -> int:
        return len(self.pads)

    @property
    def max_baseline_m(self) -> float:
        d = self.enu_m[:, None, :] - self.enu_m[None, :, :]
        return float(np.sqrt((d**2).sum(-1)).max())


def _antenna_dir():
    return resources.files("sim") / "data" / "antennas"


@functools.cache
def available_configurations() -> tuple[str, ...]:
    """Names of the bundled configurations, e.g. ``alma.cycle9.3`` or ``aca.cycle10``."""
    names = [p.name[: -len(".cfg")] for p in _antenna_dir().iterdir() if p.name.endswith(".cfg")]
    return tuple(sorted(names))


@functools.cache
def load_configuration(name: str) -> AntennaConfiguration:
    """Read a bundled antenna configuration by name."""
    if name not in available_configurations():
        raise ValueError(f"unknown antenna configuration {name!r}")
    text = (_antenna_dir() / f"{name}.cfg").read_text()
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    enu = np.array([[float(r[0]), float(r[1]), float(r[2])] for r in rows])
    diam = np.array([float(r[3]) for r in rows])
    pads = tuple(r[4] if len(r) > 4 else f"A{i:03d}" for i, r in enumerate(rows))
    return AntennaConfiguration(name=name, enu_m=enu, diameter_m=diam, pads=pads)


def hour_angles_rad(total_time_s: float, integration_s: float) -> np.ndarray:
    """Mid-integration hour angles of a track centred on transit (as simobserve does)."""
    n = max(1, int(round(total_time_s / integration_s)))
    t = (np.arange(n) + 0.5) * integration_s - n * integration_s / 2.0
    return t * (2.0 * np.pi / SIDEREAL_DAY_S)


def baselines_enu(config: AntennaConfiguration) -> np.ndarray:
    """(n_baselines, 3) ENU baseline vectors b = r_j - r_i for i < j, in metres."""
    i, j = np.triu_indices(config.n_antennas, k=1)
    return config.enu_m[j] - config.enu_m[i]


def uvw_tracks_m(
    config: AntennaConfiguration,
    *,
    dec_deg: float,
    total_time_s: float,
    integration_s: float,
    latitude_deg: float = ALMA_LATITUDE_DEG,
) -> np.ndarray:
    """uvw coordinates in metres, shape (n_times, n_baselines, 3) (Thompson, Moran & Swenson eq. 4.1-4.3)."""
    lat, dec = np.deg2rad(latitude_deg), np.deg2rad(dec_deg)
    b = baselines_enu(config)
    east, north, up = b[:, 0], b[:, 1], b[:, 2]
    x = -np.sin(lat) * north + np.cos(lat) * up
    y = east
    z = np.cos(lat) * north + np.sin(lat) * up
    h = hour_angles_rad(total_time_s, integration_s)[:, None]
    u = np.sin(h) * x + np.cos(h) * y
    v = -np.sin(dec) * np.cos(h) * x + np.sin(dec) * np.sin(h) * y + np.cos(dec) * z
    w = np.cos(dec) * np.cos(h) * x - np.cos(dec) * np.sin(h) * y + np.sin(dec) * z
    return np.stack([u, v, w], axis=-1)


def elevation_deg(dec_deg: float, hour_angle_rad: np.ndarray | float, latitude_deg: float = ALMA_LATITUDE_DEG):
    """Source elevation for a given hour angle."""
    lat, dec = np.deg2rad(latitude_deg), np.deg2rad(dec_deg)
    s = np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(hour_angle_rad)
    return np.rad2deg(np.arcsin(s))
