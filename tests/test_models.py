"""Model definitions: shapes, parameter counts from the layer lists, ranges,
BatchNorm modes, GRU directions, registry."""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from dfjax import models
from dfjax.models import blobs_finder, resnet


def n_params(model: nnx.Module) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def abstract(factory, **kwargs) -> nnx.Module:
    """Model with shape-only parameters: counts and shapes without allocating."""
    return nnx.eval_shape(lambda: factory(rngs=nnx.Rngs(0), **kwargs))


# Parameter counts from the layer lists (weights + biases; BatchNorm scale + shift).
def conv(k, cin, cout, bias=False):
    return k * k * cin * cout + (cout if bias else 0)


def bn(c):
    return 2 * c


def dense(fin, fout):
    return fin * fout + fout


def blobs_finder_count(image_size, widths, latent):
    count = 0
    for cin, cout in zip((1, *widths[:-1]), widths):  # conv s2, LReLU, BN, conv s1, LReLU, BN
        count += conv(3, cin, cout) + bn(cout) + conv(3, cout, cout) + bn(cout)
    bottleneck = (image_size // 2 ** len(widths)) ** 2 * widths[-1]
    count += dense(bottleneck, latent) + dense(latent, bottleneck)
    for cin, cout in zip(widths[::-1], (*widths[-2::-1], 1)):
        count += bn(cin)  # bilinear ×2 → LReLU → BN
        count += conv(3, cin, cout) + bn(cout)  # ConvTranspose → LReLU → BN
        count += conv(3, cin + cout, cout) + bn(cout) + conv(3, cout, cout, bias=True)
    return count + conv(1, 1, 1, bias=True)


def resnet_count(stage_sizes, widths, head):
    count = conv(3, 1, widths[0]) + bn(widths[0])
    cin = widths[0]
    for stage, (size, cout) in enumerate(zip(stage_sizes, widths)):
        for i in range(size):
            count += conv(3, cin, cout) + bn(cout) + conv(3, cout, cout) + bn(cout)
            if stage > 0 and i == 0:
                count += conv(1, cin, cout) + bn(cout)
            cin = cout
    return count + dense(widths[-1], head) + dense(head, 1)


def gru_count(fin, hidden):
    # nnx.GRUCell: input kernels + one bias per gate (r, z, n), recurrent kernels.
    return 3 * hidden * (fin + 1) + 3 * hidden * hidden


def deep_gru_count(length, hidden):
    return gru_count(1, hidden) + gru_count(hidden, hidden) + dense(2 * hidden * length, length)


def forward(model: nnx.Module, x: jax.Array) -> jax.Array:
    return model(x)


jit_forward = nnx.jit(forward)


# Each tiny model is built once: initialisers compile per parameter shape.
@pytest.fixture(scope="module")
def tiny_blobs_finder():
    return models.BlobsFinderTiny(rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def tiny_deep_gru():
    return models.DeepGRUTiny(rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def tiny_resnet():
    return models.ResNetTiny(rngs=nnx.Rngs(0))


# ---------------------------------------------------------------- parameter counts

def test_paper_parameter_counts():
    # Hand totals, written out once: Blobs Finder 33.7 M (FC layers 33.6 M of it),
    # Deep GRU 1.06 M, ResNet-18 at widths 64..512 11.2 M.
    assert blobs_finder_count(256, (8, 16, 32, 64), 1024) == 33_718_809
    assert deep_gru_count(128, 32) == 1_058_208
    assert resnet_count((2, 2, 2, 2), (64, 128, 256, 512), 128) == 11_233_473

    assert n_params(abstract(models.BlobsFinder)) == 33_718_809
    assert n_params(abstract(models.DeepGRU)) == 1_058_208
    assert n_params(abstract(models.ResNet18)) == 11_233_473


@pytest.mark.parametrize("factory, expected", [
    (models.BlobsFinderTiny, blobs_finder_count(32, (4, 4, 4, 4), 16)),
    (models.DeepGRUTiny, deep_gru_count(16, 4)),
    (models.ResNetTiny, resnet_count((1, 1, 1, 1), (4, 8, 8, 8), 8)),
    (models.ResNet18Narrow, resnet_count((2, 2, 2, 2), (16, 32, 64, 128), 128)),
])
def test_variant_parameter_counts(factory, expected):
    assert n_params(abstract(factory)) == expected


# ---------------------------------------------------------------- Blobs Finder

def test_blobs_finder_table3_shapes():
    model = abstract(models.BlobsFinder)

    def shapes(model, x):
        out = []
        for block in model.encoder:
            x = block(x)
            out.append(x)
        x = jnp.zeros((x.shape[0], *model.bottleneck_shape))
        for block in model.decoder:
            x = block(x)
            out.append(x)
        return out, model(jnp.zeros((2, 256, 256, 1)))

    outs, y = nnx.eval_shape(lambda m: shapes(m, jnp.zeros((2, 256, 256, 1))), model)
    block_shapes = [o.shape for o in outs]
    # Table 3 in NHWC.
    assert block_shapes == [(2, 128, 128, 8), (2, 64, 64, 16), (2, 32, 32, 32), (2, 16, 16, 64),
                            (2, 32, 32, 32), (2, 64, 64, 16), (2, 128, 128, 8), (2, 256, 256, 1)]
    assert model.to_latent.kernel.shape == (64 * 16 * 16, 1024)
    assert y.shape == (2, 256, 256, 1)


def test_blobs_finder_tiny_forward_in_unit_range(tiny_blobs_finder):
    model = nnx.clone(tiny_blobs_finder)
    model.eval()
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 1)) * 10.0
    y = jit_forward(model, x)
    assert y.shape == (4, 32, 32, 1)
    assert bool(jnp.all((y >= 0) & (y <= 1)))
    assert float(jnp.std(y)) > 0  # not a constant map


def test_blobs_finder_rejects_wrong_shapes(tiny_blobs_finder):
    model = tiny_blobs_finder
    with pytest.raises(ValueError):
        model(jnp.zeros((1, 64, 64, 1)))
    with pytest.raises(ValueError):
        model(jnp.zeros((1, 32, 32)))
    with pytest.raises(ValueError):
        models.BlobsFinder(image_size=100, rngs=nnx.Rngs(0))


def test_batch_norm_follows_train_and_eval(tiny_blobs_finder):
    model = nnx.clone(tiny_blobs_finder)
    x = jax.random.uniform(jax.random.key(2), (4, 32, 32, 1))
    x_other_mates = x.at[2:].set(jax.random.uniform(jax.random.key(3), (2, 32, 32, 1)))
    norm = model.encoder[0].norm1

    model.train()
    assert norm.use_running_average is False
    mean_before = np.asarray(norm.mean[...]).copy()
    y = jit_forward(model, x)
    assert not np.allclose(norm.mean[...], mean_before)  # running stats updated
    # Batch statistics: a sample's output depends on its batch mates.
    assert not np.allclose(y[:2], jit_forward(model, x_other_mates)[:2], atol=1e-5)

    model.eval()
    assert norm.use_running_average is True
    mean_eval = np.asarray(norm.mean[...]).copy()
    np.testing.assert_allclose(jit_forward(model, x)[:2], jit_forward(model, x_other_mates)[:2], atol=1e-6)
    np.testing.assert_array_equal(norm.mean[...], mean_eval)  # frozen


# ---------------------------------------------------------------- Deep GRU

def _np_gru(xs, wi, bi, wh, reverse):
    """Reference GRU over (B, L, F) in numpy; r, z, n blocks in the kernels."""
    hidden = wh.shape[0]
    h = np.zeros((xs.shape[0], hidden))
    out = np.zeros((xs.shape[0], xs.shape[1], hidden))
    order = range(xs.shape[1] - 1, -1, -1) if reverse else range(xs.shape[1])
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for t in order:
        xr, xz, xn = np.split(xs[:, t] @ wi + bi, 3, axis=-1)
        hr, hz, hn = np.split(h @ wh, 3, axis=-1)
        r, z = sig(xr + hr), sig(xz + hz)
        h = (1 - z) * np.tanh(xn + r * hn) + z * h
        out[:, t] = h
    return out


def _np_deep_gru(model, spectrum):
    p = lambda v: np.asarray(v[...], np.float64)  # noqa: E731
    c1, c2 = model.forward_gru.cell, model.backward_gru.cell
    h1 = _np_gru(spectrum[..., None], p(c1.dense_i.kernel), p(c1.dense_i.bias), p(c1.dense_h.kernel), False)
    h2 = _np_gru(h1, p(c2.dense_i.kernel), p(c2.dense_i.bias), p(c2.dense_h.kernel), True)
    latent = np.concatenate([h1, h2], axis=-1).reshape(len(spectrum), -1)
    logits = latent @ p(model.dense.kernel) + p(model.dense.bias)
    return 1 / (1 + np.exp(-logits))


def test_deep_gru_matches_numpy_reference_under_jit(tiny_deep_gru):
    model = tiny_deep_gru
    spectrum = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    got = jit_forward(model, jnp.asarray(spectrum))
    assert got.shape == (3, 16)
    np.testing.assert_allclose(got, _np_deep_gru(model, spectrum.astype(np.float64)), atol=1e-5)
    # (B, L, 1) is accepted and equal.
    np.testing.assert_allclose(jit_forward(model, jnp.asarray(spectrum)[..., None]), got, atol=1e-6)


def test_deep_gru_layers_run_in_opposite_directions(tiny_deep_gru):
    model = tiny_deep_gru
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 16)), jnp.float32)
    x_last = x.at[:, -1].add(3.0)  # change only the highest frequency channel
    f0, b0 = model.hidden_states(x)
    f1, b1 = model.hidden_states(x_last)
    # Low→high layer: channels before the change cannot see it.
    np.testing.assert_array_equal(f0[:, :-1], f1[:, :-1])
    assert not np.allclose(f0[:, -1], f1[:, -1])
    # High→low layer: the change reaches its output at channel 0 (damped by 15
    # recurrent steps, so compare against float32 round-off, not a loose atol).
    assert float(jnp.max(jnp.abs(b0[:, 0] - b1[:, 0]))) > 1e-7
    # And the high→low layer alone: a change at its channel 0 leaves later channels alone.
    h = jnp.asarray(np.random.default_rng(2).standard_normal((2, 16, 4)), jnp.float32)
    zeros = jnp.zeros((2, 4))
    out0 = model.backward_gru(h, initial_carry=zeros)
    out1 = model.backward_gru(h.at[:, 0].add(3.0), initial_carry=zeros)
    np.testing.assert_array_equal(out0[:, 1:], out1[:, 1:])
    assert not np.allclose(out0[:, 0], out1[:, 0])


def test_deep_gru_output_range_and_shape_errors(tiny_deep_gru):
    model = tiny_deep_gru
    y = jit_forward(model, 100.0 * jax.random.normal(jax.random.key(0), (4, 16)))
    assert bool(jnp.all((y >= 0) & (y <= 1)))
    with pytest.raises(ValueError):
        model(jnp.zeros((4, 17)))
    with pytest.raises(ValueError):
        model(jnp.zeros((4, 16, 2)))


# ---------------------------------------------------------------- ResNet

def test_resnet_last_stage_is_4x4_for_64x64(tiny_resnet):
    x = jnp.zeros((2, 64, 64, 1))
    paper = abstract(models.ResNet18)
    assert nnx.eval_shape(lambda m: m.features(x), paper).shape == (2, 4, 4, 512)
    assert nnx.eval_shape(lambda m: m(x), paper).shape == (2,)
    assert nnx.jit(lambda m, x: m.features(x))(tiny_resnet, x).shape == (2, 4, 4, 8)


def test_resnet_tiny_forward_under_jit(tiny_resnet):
    model = nnx.clone(tiny_resnet)
    model.eval()
    x = jax.random.uniform(jax.random.key(3), (3, 64, 64, 1))
    y = jit_forward(model, x)
    assert y.shape == (3,)
    np.testing.assert_allclose(y, model(x), atol=1e-5)  # eager == jit
    assert not np.allclose(y[0], y[1])  # depends on the input
    with pytest.raises(ValueError):
        model(jnp.zeros((3, 64, 64)))
    with pytest.raises(ValueError):
        model(jnp.zeros((3, 64, 64, 2)))


# ---------------------------------------------------------------- registry

@pytest.mark.parametrize("name, cls", [
    ("blobs_finder", models.BlobsFinder), ("deep_gru", models.DeepGRU),
    ("resnet_fwhm_x", models.ResNet), ("resnet_fwhm_y", models.ResNet),
    ("resnet_pa", models.ResNet), ("resnet_flux", models.ResNet),
])
def test_create_by_name(name, cls):
    model = nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0)))
    assert type(model) is cls


def test_create_passes_overrides_and_resnets_share_architecture():
    a = abstract(models.create, name="resnet_pa", widths=resnet.PAPER_WIDTHS)
    assert n_params(a) == n_params(abstract(models.ResNet18))
    counts = {n_params(abstract(models.create, name=n)) for n in models.MODEL_NAMES if n.startswith("resnet")}
    assert counts == {resnet_count((2, 2, 2, 2), resnet.CPU_WIDTHS, 128)}
    bf = abstract(models.create, name="blobs_finder", image_size=32, widths=(2, 4, 4, 8), latent_features=16)
    assert n_params(bf) == blobs_finder_count(32, (2, 4, 4, 8), 16)
    assert blobs_finder.PAPER_WIDTHS == (8, 16, 32, 64)


def test_create_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="blobs_finder.*deep_gru.*resnet_flux"):
        models.create("unet", rngs=nnx.Rngs(0))
