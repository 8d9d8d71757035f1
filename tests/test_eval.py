"""Evaluation: the paper's matching criterion, metrics against hand counts, the model box
against the simulator's truth box, the tuning grid, the report, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dfjax.eval import metrics as M
from dfjax.eval.matching import MatchCriteria, box_centres, iou_1d, iou_2d, match
from dfjax.eval.report import write_report
from dfjax.eval.tune import grid_points
from dfjax.pipeline import ConfigError, PipelineConfig
from dfjax.pipeline.characterise import model_box
from sim import sky


def box(x0, y0, x1, y1, z0=10.0, z1=20.0):
    return [x0, y0, x1, y1, z0, z1]


def test_iou_matches_the_simulators_scalar_iou():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 20, (30, 2))
    a = np.concatenate([a, a + rng.integers(1, 10, (30, 2)), np.zeros((30, 2))], axis=1)
    b = np.roll(a, 3, axis=0)
    expected = np.array([[sky.iou_2d(tuple(p[:4].astype(int)), tuple(q[:4].astype(int))) for q in b] for p in a])
    np.testing.assert_allclose(iou_2d(a, b), expected)


def test_iou_1d_of_intervals():
    a = np.array([box(0, 0, 1, 1, 10, 20)])
    b = np.array([box(0, 0, 1, 1, 15, 25), box(0, 0, 1, 1, 30, 40), box(0, 0, 1, 1, 10, 20)])
    np.testing.assert_allclose(iou_1d(a, b), [[5 / 15, 0.0, 1.0]])


def test_box_centres_of_half_open_boxes():
    np.testing.assert_allclose(box_centres(np.array([box(10, 20, 15, 23)])), [[12.0, 21.0]])


def test_each_criterion_can_reject_a_match():
    truth = np.array([box(10, 10, 20, 20, 10, 20)])
    assert match(np.array([box(10, 10, 20, 20, 10, 20)]), truth).tp == 1
    assert match(np.array([box(10, 10, 20, 25, 10, 20)]), truth).tp == 1  # IoU 100/150, centres 2.5 px apart
    assert match(np.array([box(11, 11, 21, 21, 10, 20)]), truth).tp == 1  # IoU 81/119 = 0.68, distance 1.4 px
    assert match(np.array([box(12, 12, 22, 22, 10, 20)]), truth).tp == 0  # IoU 64/136 = 0.47
    assert match(np.array([box(10, 10, 20, 20, 16, 26)]), truth).tp == 0  # 1-D IoU 4/16
    criteria_2d = MatchCriteria(spectral=False)
    assert match(np.array([box(10, 10, 20, 20, 16, 26)]), truth, criteria_2d).tp == 1
    big = np.array([box(0, 0, 40, 40)])
    wide = np.array([box(0, 0, 40, 46)])  # IoU 0.87 but centres 3 px apart
    assert match(wide, big).tp == 0


def test_a_prediction_counts_for_one_source_only():
    truth = np.array([box(10, 10, 20, 20), box(10, 10, 20, 21)])
    m = match(np.array([box(10, 10, 20, 20)]), truth)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    assert m.pairs.tolist() == [[0, 0]]  # the better overlap wins


def test_empty_inputs_and_bad_shapes():
    m = match(np.zeros((0, 6)), np.array([box(0, 0, 5, 5)]))
    assert (m.tp, m.fp, m.fn) == (0, 0, 1)
    m = match(np.array([box(0, 0, 5, 5)]), np.zeros((0, 6)))
    assert (m.tp, m.fp, m.fn) == (0, 1, 0)
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        match(np.zeros((2, 4)), np.zeros((1, 6)))


def test_detection_metrics_by_hand():
    truth = np.array([box(10, 10, 20, 20), box(40, 40, 50, 50), box(70, 70, 80, 80)])
    predicted = np.array([box(10, 10, 20, 20), box(41, 40, 51, 50), box(100, 100, 110, 110)])
    m = match(predicted, truth)
    d = M.detection_metrics([m], [np.array([3.0, 12.0, 50.0])])
    assert (d["tp"], d["fp"], d["fn"]) == (2, 1, 1)
    assert d["precision"] == pytest.approx(2 / 3) and d["recall"] == pytest.approx(2 / 3)
    assert d["f1"] == pytest.approx(2 / 3)
    assert d["mean_iou"] == pytest.approx((1.0 + 90 / 110) / 2)
    found = {b["snr_min"]: (b["sources"], b["found"]) for b in d["recall_by_snr"]}
    assert found[0.0] == (1, 1) and found[10.0] == (1, 1) and found[40.0] == (1, 0)


def test_angle_residual_is_modulo_180():
    np.testing.assert_allclose(M.angle_residual(np.array([179.0, 5.0, 90.0]), np.array([1.0, 175.0, 0.0])),
                               [-2.0, 10.0, -90.0])  # fmt: skip


def test_characterisation_metrics_by_hand():
    values = {"pa": (np.array([10.0, 50.0, 80.0]), np.array([10.5, 58.0, 80.0])),
              "flux": (np.array([1.0, 2.0]), np.array([1.15, 1.0]))}  # fmt: skip
    c = M.characterisation_metrics(values)
    assert c["pa"]["mean"] == pytest.approx(8.5 / 3)
    assert c["pa"]["within_10pct"] == pytest.approx(2 / 3)  # 0.5/10, 8/50 = 16%, 0/80
    assert c["pa"]["within_20pct"] == pytest.approx(1.0)
    assert c["flux"]["within_10pct"] == 0.0 and c["flux"]["within_20pct"] == 0.5
    assert c["flux"]["std"] == pytest.approx(np.std([0.15, -1.0]))


def test_model_box_is_the_truth_catalogues_box():
    rng = np.random.default_rng(1)
    for _ in range(200):
        src = sky.Source(x=rng.uniform(20, 40), y=rng.uniform(20, 40), z=5.0, fwhm_x=rng.uniform(2, 8),
                         fwhm_y=rng.uniform(2, 8), pa=rng.uniform(0, 180), fwhm_z=3.0, amplitude=1.0,
                         line_amplitude=1.0, spectral_index=0.0)  # fmt: skip
        assert model_box(src.x, src.y, src.fwhm_x, src.fwhm_y, src.pa) == sky.box_2d(sky.spatial_profile(src, 64))


def test_model_box_is_clipped_to_the_field():
    assert model_box(1.0, 62.5, 6.0, 6.0, 0.0, shape=(64, 64)) == (0, 58, 6, 64)


def test_grid_points_in_order_and_bad_grids():
    points = grid_points({"detect.threshold": [0.15, 0.1], "focus.min_snr": [1.0, 3.0]})
    assert points[0] == {"detect.threshold": 0.15, "focus.min_snr": 1.0} and len(points) == 4
    from dfjax.eval.evaluate import EvalError

    with pytest.raises(EvalError, match="detect.threshold"):
        grid_points({"detect.threshold": 0.15})
    with pytest.raises(ConfigError, match="detect.treshold"):
        PipelineConfig().replace(**{"detect.treshold": 0.1})


def test_box_source_is_validated():
    with pytest.raises(ConfigError, match="characterise.box"):
        PipelineConfig.from_dict({"characterise": {"box": "blob"}})


def test_report_lists_ours_and_the_baselines(tmp_path):
    d = {"tp": 9, "fp": 0, "fn": 1, "precision": 1.0, "recall": 0.9, "f1": 0.947, "mean_iou": 0.8, "cubes": 2,
         "seconds_per_cube": 0.5, "split": "test",
         "recall_by_snr": [{"snr_min": 0.0, "snr_max": None, "sources": 10, "found": 9, "recall": 0.9}]}  # fmt: skip
    d["criteria_2d_only"] = dict(d)
    c = {"sources": 9, "x": {"mean": 0.1, "std": 0.2, "mean_abs": 0.15}}
    b = {"photutils": {"detection": {**d, "tp": 5, "f1": 0.6}}}
    (tmp_path / "plots").mkdir()
    write_report(tmp_path / "reports" / "evaluation.md", d, c, [tmp_path / "plots" / "recall_vs_snr.png"],
                 baselines=b)  # fmt: skip
    text = (tmp_path / "reports" / "evaluation.md").read_text()
    assert "| dfjax pipeline | 9 | 0 | 1 | 1.000 | 0.900 | 0.947 |" in text
    assert "| photutils (tuned on validation) | 5 |" in text
    assert "](../plots/recall_vs_snr.png)" in text


def test_report_shows_a_compared_run_beside_ours(tmp_path):
    d = {"tp": 9, "fp": 0, "fn": 1, "precision": 1.0, "recall": 0.9, "f1": 0.947, "mean_iou": 0.8, "cubes": 2,
         "seconds_per_cube": 0.5, "split": "test", "recall_by_snr": []}  # fmt: skip
    d["criteria_2d_only"] = dict(d)
    c = {"sources": 9, "x": {"mean": 0.1, "std": 0.2, "mean_abs": 0.15},
         "pa": {"mean": 1.0, "std": 20.0, "mean_abs": 9.0, "within_10pct": 0.5, "within_20pct": 0.7}}
    paper = ({**d, "tp": 6, "fp": 3, "f1": 0.667}, {**c, "sources": 6, "pa": {**c["pa"], "within_10pct": 0.25},
             "flux_fit": {"mean": 0.0, "std": 0.5, "mean_abs": 0.4, "within_10pct": 0.8, "sources": 5}})  # fmt: skip
    write_report(tmp_path / "evaluation.md", d, c, [], compared={"paper's pipeline": paper})
    text = (tmp_path / "evaluation.md").read_text()
    assert "| paper's pipeline | 6 | 3 | 1 |" in text
    assert "| pa | std 20, 50% within 10% | std 20, 25% within 10% |" in text
    assert "| flux_fit | – | std 0.5, 80% within 10% (5 sources) |" in text  # only the compared run has it
    assert "paper's pipeline (6 TPs)" in text


def test_compare_needs_an_earlier_runs_metrics(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dfjax.eval.evaluate", "--model-dir", str(tmp_path),
                        "--compare", f"paper={tmp_path / 'none'}"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "--compare" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("module", ["dfjax.eval.evaluate", "dfjax.eval.tune"])
def test_missing_dataset_is_one_line_and_exit_2(tmp_path, module):
    out = tmp_path / "metrics"
    args = [sys.executable, "-m", module, "--data-dir", str(tmp_path / "nope"), "--model-dir", str(tmp_path)]
    if module.endswith("evaluate"):
        args += ["--metrics-dir", str(out)]
    else:
        (tmp_path / "params.yaml").write_text("pipeline: {}\n")
        args += ["--params", str(tmp_path / "params.yaml"), "--metrics", str(out / "tune.json")]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith(f"python -m {module}: error:") and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_tuned_config_next_to_the_models(tmp_path):
    from dfjax.infer import InferError, tuned_config

    assert tuned_config(tmp_path) is None
    (tmp_path / "pipeline.yaml").write_text("pipeline:\n  focus: {min_snr: 3.0}\n")
    assert tuned_config(tmp_path).focus.min_snr == 3.0
    (tmp_path / "pipeline.yaml").write_text("pipeline:\n  focus: {min_snr_: 3.0}\n")
    with pytest.raises(InferError, match="pipeline.yaml.*focus.min_snr_"):
        tuned_config(tmp_path)


def test_match_centres_pairs_nearest_within_reach_one_to_one():
    from dfjax.eval.matching import match_centres

    truth = np.array([[10.0, 10.0, 20.0, 6.0], [30.0, 30.0, 50.0, 2.0]])  # reach 3 and 2 channels
    predicted = np.array([[11.0, 10.0, 22.9, 0], [10.5, 10.5, 20.0, 0], [30.0, 32.9, 50.0, 0], [30.0, 30.0, 52.5, 0]])
    m = match_centres(predicted[:, :3], truth)
    assert sorted(map(tuple, m.pairs)) == [(1, 0), (2, 1)]  # the nearer of two wins; 2.5 channels is too far
    assert m.fp == 2 and m.fn == 0
    assert match_centres(np.zeros((0, 3)), truth).fn == 2


def test_scoring_a_directory_of_simulated_cubes(tmp_path):
    """dfjax.eval.cubes on two tiny simulated cubes with stand-in networks: every true source is
    either found or missed, both matchings are reported, and the pairs' figures are finite."""
    import jax.numpy as jnp

    from dfjax.eval.cubes import score
    from dfjax.pipeline import PipelineConfig
    from dfjax.pipeline.run import Models
    from sim.config import SimConfig
    from sim.generate import generate

    class Sized:
        def __init__(self, f, **sizes):
            self.f = f
            self.__dict__.update(sizes)

        def __call__(self, x):
            return self.f(x)

    config = SimConfig().replace(**{"cube.size": 32, "cube.channels": 16, "seed": 5, "noise.snr_range": [30.0, 40.0]})
    generate(tmp_path, 2, config, progress=False)
    minmax = lambda x: (x - x.min(-1, keepdims=True)) / jnp.maximum(x.max(-1, keepdims=True) - x.min(-1, keepdims=True), 1e-6)  # noqa: E731
    const = lambda v: (lambda x: jnp.full((x.shape[0],), v, jnp.float32))  # noqa: E731
    models = Models(blobs_finder=Sized(lambda x: x, image_size=32), deep_gru=Sized(minmax, spectrum_length=16),
                    resnet_fwhm_x=const(6.0), resnet_fwhm_y=const(6.0), resnet_pa=const(0.0), resnet_flux=const(1.0))
    result = score(tmp_path, models, PipelineConfig().replace(**{"detect.threshold": 0.3}), progress=False)
    truth = sum(1 for _ in open(tmp_path / "catalogue.csv")) - 1
    for way in ("paper_matching", "centre_matching"):
        d = result["dfjax"][way]
        assert d["tp"] + d["fn"] == truth and 0.0 <= d["precision"] <= 1.0
    assert result["dfjax"]["centre_matching"]["tp"] >= 1
    assert np.isfinite(result["dfjax"]["centre_matched"]["x"]["std"])


def test_a_fit_folded_across_90_degrees_is_compared_as_the_ellipse_it_is():
    # truth (5, 15, 89°); the fit at 91° folds to (15, 5, 1°): the same ellipse, 2° off
    fx, fy, pa = M.aligned_shapes(np.array([5.0, 5.0]), np.array([15.0, 15.0]), np.array([15.2, 5.1]),
                                  np.array([4.9, 14.8]), np.array([1.0, 87.0]))  # fmt: skip
    np.testing.assert_allclose(fx, [4.9, 5.1])
    np.testing.assert_allclose(fy, [15.2, 14.8])
    np.testing.assert_allclose(M.angle_residual(pa, np.array([89.0, 89.0])), [2.0, -2.0])


def test_paired_values_score_every_flux_estimate_and_pa_of_elongated_sources_only():
    truth = {"x": [1.0, 2.0], "y": [1.0, 2.0], "z": [3.0, 4.0], "fwhm_x": [5.0, 8.0], "fwhm_y": [15.0, 8.4],
             "fwhm_z": [2.0, 2.0], "pa": [89.0, 30.0], "flux": [2.0, 4.0]}  # fmt: skip
    pred = truth | {"fwhm_x": [15.0, 8.0], "fwhm_y": [5.0, 8.4], "pa": [1.0, 75.0], "flux": [3.0, 4.0],
                    "flux_measured": [2.1, 4.0], "flux_fit": [np.nan, 3.0]}  # fmt: skip
    values = M.paired_values([({k: np.array(v) for k, v in truth.items()}, {k: np.array(v) for k, v in pred.items()})])
    c = M.characterisation_metrics(values)
    assert c["fwhm_x"]["std"] == 0.0 and c["fwhm_y"]["std"] == 0.0  # the first is the same ellipse
    assert c["pa_elongated"]["sources"] == 1 and c["pa_elongated"]["mean"] == pytest.approx(2.0)
    assert c["pa"]["mean"] == pytest.approx((2.0 + 45.0) / 2)  # the round second source counts in pa
    assert c["flux"]["within_10pct"] == 0.5 and c["flux_measured"]["within_10pct"] == 1.0
    assert c["flux_fit"]["sources"] == 1 and c["flux_fit"]["mean"] == pytest.approx(-1.0)  # NaN left out
    del pred["flux_fit"]
    values = M.paired_values([({k: np.array(v) for k, v in truth.items()}, {k: np.array(v) for k, v in pred.items()})])
    assert "flux_fit" not in values and "flux_measured" in values


def test_the_cube_scorer_compares_each_ellipse_not_its_labelling():
    """dfjax.eval.cubes on one true source found as (fy, fx, pa + 90°): no size error, as in Table 5."""
    from dfjax.eval.cubes import _scores

    truth = {"x": np.array([50.0]), "y": np.array([60.0]), "z": np.array([20.0]), "fwhm_z": np.array([6.0]),
             "fwhm_x": np.array([8.7]), "fwhm_y": np.array([16.4]), "pa": np.array([0.3]), "peak_snr": np.array([10.0]),
             "x0": np.array([40.0]), "x1": np.array([61.0]), "y0": np.array([45.0]), "y1": np.array([76.0]),
             "z0": np.array([14.0]), "z1": np.array([27.0]), "line_flux": np.array([1.0])}  # fmt: skip
    found = {**truth, "x": np.array([50.5]), "fwhm_x": np.array([16.6]), "fwhm_y": np.array([8.8]),
             "pa": np.array([90.5])}  # fmt: skip
    res = _scores([found], [truth])["centre_matched"]
    assert res["x"]["bias"] == pytest.approx(0.5)
    assert res["fwhm_x"]["bias"] == pytest.approx(0.1) and res["fwhm_y"]["bias"] == pytest.approx(0.2)
    sofia = {k: found[k] for k in ("x", "y", "z", "x0", "x1", "y0", "y1", "z0", "z1")}  # no shapes: positions only
    assert set(_scores([sofia], [truth])["centre_matched"]) == {"x", "y"}


def test_the_cube_scorer_reports_the_fits_own_errors_beside_the_scatter():
    """Five true sources, one of them 2.5 px off: the std is the outlier's, the robust std the
    rest's; with the catalogue's err_x the pulls (residual / err) come out as computed by hand."""
    from dfjax.eval.cubes import _scores

    n = 5
    truth = {"x": np.arange(n) * 20.0, "y": np.full(n, 50.0), "z": np.full(n, 20.0), "fwhm_z": np.full(n, 6.0),
             "peak_snr": np.full(n, 10.0), "line_flux": np.ones(n)}  # fmt: skip
    truth |= {"x0": truth["x"] - 5, "x1": truth["x"] + 5, "y0": truth["y"] - 5, "y1": truth["y"] + 5,
              "z0": truth["z"] - 3, "z1": truth["z"] + 3}  # fmt: skip
    dx = np.array([0.1, -0.1, 0.2, -0.2, 2.5])
    found = {**truth, "x": truth["x"] + dx, "err_x": np.full(n, 0.5), "err_y": np.full(n, 0.5)}
    res = _scores([found], [truth])["centre_matched"]
    assert res["x"]["std"] == pytest.approx(np.std(dx))
    assert res["x"]["robust_std"] < 0.4 < res["x"]["std"]
    assert res["x"]["median_err"] == 0.5 and res["x"]["pull_std"] == pytest.approx(np.std(dx / 0.5))
    del found["err_x"]  # no x errors in the catalogue: no x pulls, the y pulls still there
    res = _scores([found], [truth])["centre_matched"]
    assert "pull_std" not in res["x"] and res["y"]["pull_std"] == 0.0
