import pytest

from sim.config import TABLE1_FWHM_PX, ConfigError, SimConfig, from_dict


def test_defaults_are_the_papers_tables():
    c = SimConfig()
    assert c.cube.size == 360 and c.cube.channels == 128
    assert c.sky.fwhm_px == (4.71, 18.84) and c.sky.line_fwhm_chan == (3.0, 10.0)
    assert c.sky.position_frac[0] * 360 == pytest.approx(100) and c.sky.position_frac[1] * 360 == pytest.approx(250)
    assert c.sky.line_centre_frac[0] * 128 == pytest.approx(10) and c.sky.line_centre_frac[1] * 128 == pytest.approx(110)
    o = c.observation
    assert (o.antenna_config, o.cell_arcsec, o.centre_freq_hz, o.channel_width_hz) == ("alma.cycle9.3", 0.1, 230e9, 10e6)
    assert (o.integration_s, o.total_time_s, o.pwv_mm) == (10.0, 2400.0, 0.8)


@pytest.mark.parametrize(
    "data, field",
    [
        ({"sky": {"fwhm_px": [8, 2]}}, "sim.sky.fwhm_px"),
        ({"sky": {"fwhm_pxx": [2, 8]}}, "sim.sky.fwhm_pxx"),
        ({"cube": {"size": -5}}, "sim.cube.size"),
        ({"cube": {"channels": 0}}, "sim.cube.channels"),
        ({"observation": {"antenna_config": "alma.cycle99.1"}}, "sim.observation.antenna_config"),
        ({"observation": {"cell_arcsec": 0}}, "sim.observation.cell_arcsec"),
        ({"noise": {"mode": "loud"}}, "sim.noise.mode"),
        ({"noise": {"snr_range": [50, 10]}}, "sim.noise.snr_range"),
        ({"cube": {"size": "big"}}, "sim.cube.size"),
        ({"sky": {"position_frac": [0.2, 1.5]}}, "sim.sky.position_frac"),
        ({"sky": {"pa_deg": [0]}}, "sim.sky.pa_deg"),
        ({"nonsense": 1}, "sim.nonsense"),
        ({"noise": {"mode": "white"}}, "sim.noise.mode"),
        ({"noise": {"paper_fraction": 1.5}}, "sim.noise.paper_fraction"),
        ({"noise": {"paper_fraction": "half"}}, "sim.noise.paper_fraction"),
        ({"noise": {"mode": "thermal", "paper_fraction": 0.5}}, "sim.noise.paper_fraction"),
        ({"noise": {"paper_fractions": 0.5}}, "sim.noise.paper_fractions"),
        ({"sky": {"size_reading": "radius"}}, "sim.sky.size_reading"),
        ({"sky": {"size_reading": 2}}, "sim.sky.size_reading"),
        ({"backend": "casa", "observation": {"niter": -1}}, "sim.observation.niter"),
        ({"backend": "casa", "observation": {"niter": 1.5}}, "sim.observation.niter"),
        ({"backend": "casa", "observation": {"threshold_jy": 1e-3}}, "sim.observation.threshold_jy"),  # niter 0
        ({"backend": "casa", "observation": {"niter": 10, "nsigma": -3}}, "sim.observation.nsigma"),
        ({"backend": "casa", "observation": {"pbcor": "yes"}}, "sim.observation.pbcor"),
        ({"backend": "casa", "observation": {"pbcor": True, "pblimit": 1.2}}, "sim.observation.pblimit"),
        ({"observation": {"pbcor": True}, "noise": {"mode": "snr"}}, "sim.observation.pbcor"),  # fast backend too
        ({"backend": "casa", "observation": {"pbcor": True}, "noise": {"mode": "paper"}}, "sim.observation.pbcor"),
    ],
)
def test_invalid_values_name_the_field(data, field):
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    assert str(err.value).startswith(field + ":")


def test_replace_applies_dotted_overrides_and_validates():
    c = SimConfig().replace(**{"cube.size": 64, "sky.fwhm_px": [3, 4]})
    assert c.cube.size == 64 and c.sky.fwhm_px == (3.0, 4.0)
    with pytest.raises(ConfigError, match="sim.cube.sizes"):
        SimConfig().replace(**{"cube.sizes": 64})


def test_round_trip_through_a_plain_dict():
    c = SimConfig().replace(**{"observation.weighting": "briggs", "observation.robust": -1.0})
    assert from_dict(c.to_dict()) == c


def test_size_reading_picks_table_1s_range_unless_fwhm_px_is_given():
    assert SimConfig().sky.size_reading == "sigma" and SimConfig().sky.fwhm_px == TABLE1_FWHM_PX["sigma"]
    assert from_dict({"sky": {"size_reading": "fwhm"}}).sky.fwhm_px == (2.0, 8.0)
    assert SimConfig().replace(**{"sky.size_reading": "fwhm"}).sky.fwhm_px == (2.0, 8.0)
    back = SimConfig().replace(**{"sky.size_reading": "fwhm"}).replace(**{"sky.size_reading": "sigma"})
    assert back == SimConfig()
    explicit = from_dict({"sky": {"size_reading": "fwhm", "fwhm_px": [3, 4]}})
    assert explicit.sky.fwhm_px == (3.0, 4.0)
    assert SimConfig().replace(**{"sky.size_reading": "fwhm", "sky.fwhm_px": [3, 4]}) == explicit
    c = SimConfig().replace(**{"sky.size_reading": "fwhm", "noise.paper_fraction": 0.25})
    assert from_dict(c.to_dict()) == c and from_dict(c.to_dict(lean=True)) == c


def test_lean_dict_leaves_out_new_keys_at_their_defaults():
    lean = SimConfig().to_dict(lean=True)
    assert "size_reading" not in lean["sky"] and "paper_fraction" not in lean["noise"]
    assert from_dict(lean) == SimConfig()
    mixed = SimConfig().replace(**{"noise.paper_fraction": 0.5}).to_dict(lean=True)
    assert mixed["noise"]["paper_fraction"] == 0.5 and "size_reading" not in mixed["sky"]


def test_the_cleaned_pb_corrected_product_is_opt_in_and_lean():
    o = SimConfig().observation
    assert (o.niter, o.threshold_jy, o.nsigma, o.pbcor, o.pblimit) == (0, 0.0, 0.0, False, 0.2)  # today's dirty cube
    lean = SimConfig().to_dict(lean=True)["observation"]
    assert not {"niter", "threshold_jy", "nsigma", "pbcor", "pblimit"} & set(lean)  # config.yaml as before
    c = from_dict({"backend": "casa", "noise": {"mode": "thermal"},
                   "observation": {"weighting": "briggs", "niter": 500, "nsigma": 4.0, "pbcor": True}})
    assert c.observation.niter == 500 and c.observation.pbcor and from_dict(c.to_dict(lean=True)) == c
