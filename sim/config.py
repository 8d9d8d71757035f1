"""Simulator configuration: one namespace per concern, pedantic parsing, one set of defaults.

Every random range of the paper's Table 1 lives in `SkyConfig`; every observing parameter of
Table 2 in `ObservationConfig`. Positions and line centres are stored as fractions of the field
and band so that the same ranges serve a 360x360x128 paper cube and a small CPU cube alike:
Table 1's "100-250 px" of a 360 px field is `position_frac = (0.2778, 0.6944)`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from sim.array import available_configurations

Range = tuple[float, float]

TABLE1_FWHM_PX: dict[str, Range] = {"sigma": (4.71, 18.84), "fwhm": (2.0, 8.0)}
"""The two readings of Table 1's "FWHM of the 2-D Gaussian component: 2-8 px" (`sky.size_reading`).

* ``sigma`` (default): the width w of eq. 3, ``exp(-((x - x_c)/w)^2 / 2)``, is a sigma, as in the
  paper's generator, so the sources have true FWHMs of 2.35482 w = 4.71-18.84 px, resolved by
  the 8.9 x 7.6 px beam; the cubes the paper trained on.
* ``fwhm``: 2-8 px are true FWHMs, as the text says ("a FWHM between 0.2 and 0.8 arcsec" at
  0.1"/px): the mostly unresolved sources the paper describes.

`sky.size_reading` picks `sky.fwhm_px` (the range of true FWHMs that is drawn) when
`sky.fwhm_px` is not given; an explicit `sky.fwhm_px` is always drawn as given.
"""

NEW_KEYS = ("sky.size_reading", "noise.paper_fraction", "observation.niter", "observation.threshold_jy",
            "observation.nsigma", "observation.pbcor", "observation.pblimit")
"""Keys added after simulator 1.0.0, whose defaults reproduce 1.0.0; `to_dict(lean=True)` leaves
them out at their defaults, so a default run's config.yaml stays byte for byte as before."""


NOISE_MODES = ("none", "thermal", "snr", "paper")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the offending field."""


@dataclass(frozen=True)
class SkyConfig:
    """Sky-model draw, paper Table 1 (uniform ranges, inclusive)."""

    n_serendipitous: tuple[int, int] = (2, 5)
    amplitude: Range = (1.0, 5.0)  # continuum amplitude of the 2-D Gaussian, arbitrary units
    size_reading: str = "sigma"  # how Table 1's "FWHM 2-8 px" is read: sigma | fwhm (TABLE1_FWHM_PX)
    fwhm_px: Range = TABLE1_FWHM_PX["sigma"]  # true FWHMs drawn; unset: TABLE1_FWHM_PX[size_reading]
    spectral_index: Range = (-2.0, 2.0)
    position_frac: Range = (100 / 360, 250 / 360)  # fraction of the field, both axes
    pa_deg: Range = (0.0, 90.0)
    line_amplitude: Range = (1.0, 5.0)  # relative to the continuum amplitude (eq. 4: G = g + l*g)
    line_centre_frac: Range = (10 / 128, 110 / 128)  # fraction of the band
    line_fwhm_chan: Range = (3.0, 10.0)
    peak_jy_per_px: float = 0.001  # simobserve's inbright: brightest model pixel after rescaling


@dataclass(frozen=True)
class ObservationConfig:
    """Observing set-up, paper Table 2, and the product imaged from it.

    The defaults give the paper's dirty cube (``tclean`` with ``niter=0``, nothing blanked).
    ``niter > 0`` cleans it (Hogbom, restored with the fitted beam, which the BEAMS extension then
    holds; tclean with the casa backend, `sim.clean` with the fast one) until `threshold_jy` or
    `nsigma` stops each channel, and
    `pbcor` divides by the primary beam and blanks to NaN where it is below `pblimit`, as the ALMA
    pipeline delivers (Briggs robust 0.5, pblimit 0.2).
    """

    antenna_config: str = "alma.cycle9.3"
    ra_deg: float = 59.99983333  # 03h59m59.96s
    dec_deg: float = -34.99986111  # -34d59m59.50s
    cell_arcsec: float = 0.1
    centre_freq_hz: float = 230.0e9
    channel_width_hz: float = 10.0e6
    integration_s: float = 10.0
    total_time_s: float = 2400.0
    pwv_mm: float = 0.8
    weighting: str = "natural"  # natural | uniform | briggs
    robust: float = 0.5  # Briggs robustness, used when weighting == "briggs"
    # The product imaged (the defaults are the dirty cube of Table 2):
    niter: int = 0  # tclean CLEAN iterations per channel (hogbom); 0: the dirty cube, no deconvolution
    threshold_jy: float = 0.0  # tclean's threshold, Jy/beam: stop cleaning a channel below it (niter > 0)
    nsigma: float = 0.0  # tclean's nsigma: stop at nsigma x the residual's robust rms per channel; 0: off
    pbcor: bool = False  # divide by the primary beam (tclean pbcor); NaN where the beam is below pblimit
    pblimit: float = 0.2  # the ALMA pipeline's primary-beam cut, used when pbcor is true


@dataclass(frozen=True)
class NoiseConfig:
    """Noise, `mode` one of

    * ``none``;
    * ``thermal``: the radiometer equation (sim.noise), correlated like the dirty beam;
    * ``snr``: thermal noise scaled up (never down) so that the central source reaches a target
      peak SNR drawn from `snr_range`: all of it beam-correlated;
    * ``paper``: the paper's sec. 3, thermal noise, then 3-D uncorrelated white Gaussian noise
      added in the image domain after imaging so that the total rms sqrt(thermal^2 + white^2)
      gives the central source the target peak SNR; none when the thermal noise alone is more.

    With ``snr``, each cube uses ``paper`` instead with probability `paper_fraction`, drawn from
    the cube's seeded generator (a training set mixing both noise textures).
    """

    mode: str = "snr"
    snr_range: Range = (10.0, 50.0)
    paper_fraction: float = 0.0  # per-cube probability of the paper mode when mode is snr


@dataclass(frozen=True)
class CubeConfig:
    size: int = 360  # pixels along RA and Dec
    channels: int = 128


@dataclass(frozen=True)
class SimConfig:
    sky: SkyConfig = field(default_factory=SkyConfig)
    observation: ObservationConfig = field(default_factory=ObservationConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    cube: CubeConfig = field(default_factory=CubeConfig)
    backend: str = "fast"  # fast | casa
    seed: int = 0

    def to_dict(self, *, lean: bool = False) -> dict[str, Any]:
        """Plain nested mapping; with `lean`, `NEW_KEYS` at their defaults are left out."""
        data = _to_plain(dataclasses.asdict(self))
        if lean:
            defaults = _to_plain(dataclasses.asdict(SimConfig()))
            for section, key in (dotted.split(".") for dotted in NEW_KEYS):
                if data[section][key] == defaults[section][key]:
                    del data[section][key]
        return data

    def replace(self, **overrides: Any) -> SimConfig:
        """Return a copy with dotted overrides applied, e.g. replace(**{"cube.size": 64}).

        Overriding `sky.size_reading` alone also resets `sky.fwhm_px` to that reading's range."""
        data = self.to_dict()
        if "sky.size_reading" in overrides and "sky.fwhm_px" not in overrides:
            data["sky"].pop("fwhm_px")
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                if not isinstance(node.get(key), dict):
                    raise ConfigError(f"sim.{dotted}: unknown key")
                node = node[key]
            if leaf not in node:
                raise ConfigError(f"sim.{dotted}: unknown key")
            node[leaf] = value
        return from_dict(data)


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(v) for v in obj]
    return obj


def from_dict(data: dict[str, Any] | None) -> SimConfig:
    """Parse a nested mapping into a validated `SimConfig`; unknown keys are errors."""
    config = parse_dataclass(SimConfig, data or {}, "sim")
    sky = (data or {}).get("sky") or {}
    if "fwhm_px" not in sky and config.sky.size_reading in TABLE1_FWHM_PX:
        config = dataclasses.replace(
            config, sky=dataclasses.replace(config.sky, fwhm_px=TABLE1_FWHM_PX[config.sky.size_reading]))
    validate(config)
    return config


def parse_dataclass(cls: type, data: Any, path: str, *, error: type[Exception] = ConfigError) -> Any:
    """Build the (nested, frozen) dataclass `cls` from a mapping, pedantically: an unknown key or
    a value of the wrong type raises `error` with the dotted path of the field, e.g. `sim.sky.foo`.
    Fields missing from `data` keep their defaults. Shared by every configuration in the project."""
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise error(f"{path}.{key}: unknown key (known: {', '.join(known)})")
    values = {}
    for name, f in known.items():
        if name not in data:
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        values[name] = _coerce(default, data[name], f"{path}.{name}", error)
    return cls(**values)


def _coerce(default: Any, value: Any, path: str, error: type[Exception]) -> Any:
    if dataclasses.is_dataclass(default):
        return parse_dataclass(type(default), value, path, error=error)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            expected = "a [low, high] pair" if len(default) == 2 else f"a list of {len(default)} values"
            raise error(f"{path}: expected {expected}, got {value!r}")
        return tuple(_coerce(d, v, path, error) for d, v in zip(default, value))
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise error(f"{path}: expected true/false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise error(f"{path}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise error(f"{path}: must be finite, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise error(f"{path}: expected a string, got {value!r}")
        return value
    raise error(f"{path}: unsupported value {value!r}")  # pragma: no cover


def _check_range(path: str, r: Range, lo: float | None = None, hi: float | None = None) -> None:
    if r[0] > r[1]:
        raise ConfigError(f"{path}: inverted range [{r[0]}, {r[1]}]")
    if lo is not None and r[0] < lo:
        raise ConfigError(f"{path}: {r[0]} is below the allowed minimum {lo}")
    if hi is not None and r[1] > hi:
        raise ConfigError(f"{path}: {r[1]} is above the allowed maximum {hi}")


def _check_product(c: SimConfig) -> None:
    """The cleaned / primary-beam-corrected product, only with options that act."""
    o = c.observation
    if o.niter < 0:
        raise ConfigError(f"sim.observation.niter: must be >= 0, got {o.niter}")
    for name in ("threshold_jy", "nsigma"):
        value = getattr(o, name)
        if value < 0:
            raise ConfigError(f"sim.observation.{name}: must be >= 0, got {value}")
        if value > 0 and o.niter == 0:
            raise ConfigError(f"sim.observation.{name}: a CLEAN stopping rule, but sim.observation.niter is 0 "
                              f"(the dirty cube)")  # fmt: skip
    if not 0.0 < o.pblimit < 1.0:
        raise ConfigError(f"sim.observation.pblimit: {o.pblimit} is not in (0, 1)")
    if o.pbcor and (c.noise.mode not in ("none", "thermal") or c.noise.paper_fraction > 0):
        raise ConfigError(f"sim.observation.pbcor: image-domain noise (sim.noise.mode {c.noise.mode!r}) on a "
                          f"primary-beam-corrected cube is not modelled; use noise.mode thermal or none")  # fmt: skip


def validate(c: SimConfig) -> None:
    """Raise `ConfigError` naming the first invalid field."""
    s, o, n, cube = c.sky, c.observation, c.noise, c.cube
    _check_range("sim.sky.n_serendipitous", s.n_serendipitous, lo=0)
    _check_range("sim.sky.amplitude", s.amplitude, lo=1e-12)
    if s.size_reading not in TABLE1_FWHM_PX:
        raise ConfigError(f"sim.sky.size_reading: {s.size_reading!r} is not sigma or fwhm")
    _check_range("sim.sky.fwhm_px", s.fwhm_px, lo=0.5)
    _check_range("sim.sky.spectral_index", s.spectral_index)
    _check_range("sim.sky.position_frac", s.position_frac, lo=0.0, hi=1.0)
    _check_range("sim.sky.pa_deg", s.pa_deg, lo=0.0, hi=180.0)
    _check_range("sim.sky.line_amplitude", s.line_amplitude, lo=0.0)
    _check_range("sim.sky.line_centre_frac", s.line_centre_frac, lo=0.0, hi=1.0)
    _check_range("sim.sky.line_fwhm_chan", s.line_fwhm_chan, lo=0.5)
    if s.peak_jy_per_px <= 0:
        raise ConfigError(f"sim.sky.peak_jy_per_px: must be positive, got {s.peak_jy_per_px}")
    if o.antenna_config not in available_configurations():
        raise ConfigError(
            f"sim.observation.antenna_config: unknown antenna configuration {o.antenna_config!r}"
            " (see `python -m sim configs`)"
        )
    if not -90.0 <= o.dec_deg <= 90.0:
        raise ConfigError(f"sim.observation.dec_deg: {o.dec_deg} is not a declination")
    if not 0.0 <= o.ra_deg < 360.0:
        raise ConfigError(f"sim.observation.ra_deg: {o.ra_deg} is not in [0, 360)")
    for name in ("cell_arcsec", "centre_freq_hz", "channel_width_hz", "integration_s", "total_time_s"):
        if getattr(o, name) <= 0:
            raise ConfigError(f"sim.observation.{name}: must be positive, got {getattr(o, name)}")
    if o.integration_s > o.total_time_s:
        raise ConfigError("sim.observation.integration_s: longer than total_time_s")
    if o.pwv_mm < 0:
        raise ConfigError(f"sim.observation.pwv_mm: must be >= 0, got {o.pwv_mm}")
    if o.weighting not in ("natural", "uniform", "briggs"):
        raise ConfigError(
            f"sim.observation.weighting: {o.weighting!r} is not natural, uniform or briggs"
        )
    if not -2.0 <= o.robust <= 2.0:
        raise ConfigError(f"sim.observation.robust: {o.robust} is outside [-2, 2]")
    _check_product(c)
    if n.mode not in NOISE_MODES:
        raise ConfigError(f"sim.noise.mode: {n.mode!r} is not none, thermal, snr or paper")
    _check_range("sim.noise.snr_range", n.snr_range, lo=1e-6)
    if not 0.0 <= n.paper_fraction <= 1.0:
        raise ConfigError(f"sim.noise.paper_fraction: {n.paper_fraction} is not a probability in [0, 1]")
    if n.paper_fraction > 0 and n.mode != "snr":
        raise ConfigError(f"sim.noise.paper_fraction: mixes the paper mode into the snr mode, "
                          f"but sim.noise.mode is {n.mode!r}")  # fmt: skip
    if cube.size < 8:
        raise ConfigError(f"sim.cube.size: must be at least 8 pixels, got {cube.size}")
    if cube.channels < 1:
        raise ConfigError(f"sim.cube.channels: must be at least 1, got {cube.channels}")
    if c.backend not in ("fast", "casa"):
        raise ConfigError(f"sim.backend: {c.backend!r} is not fast or casa")
    if c.seed < 0:
        raise ConfigError(f"sim.seed: must be >= 0, got {c.seed}")
