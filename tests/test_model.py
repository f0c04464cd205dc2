"""The MLP: initialisers, the letter mask, the loss and the hand-written SGD step against independent maths."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from wdev_utils.errors import ConfigError
from wdev_utils.model import (PARAM_NAMES, forward, init_params, init_weight, letter_mask, loss_and_grad,
                              sgd_step)

EPS = 1e-7


# ---------- initialisation ----------

def test_glorot_uniform_bounds_and_uniformity_per_layer():
    p = init_params(3, 784, 64, 10)
    for name, (fan_out, fan_in) in {"fc1.weight": (64, 784), "fc2.weight": (64, 64), "out.weight": (10, 64)}.items():
        w = p[name].numpy().ravel()
        a = math.sqrt(6 / (fan_in + fan_out))
        assert np.abs(w).max() <= a and np.abs(w).max() > 0.95 * a, name
        assert stats.kstest(w, stats.uniform(loc=-a, scale=2 * a).cdf).pvalue > 1e-3, name
    for name in ("fc1.bias", "fc2.bias", "out.bias"):
        assert not p[name].any()
    assert set(p) == set(PARAM_NAMES)
    assert p["fc1.weight"].shape == (64, 784) and p["out.weight"].shape == (10, 64)


def test_init_is_seeded():
    a, b, c = init_params(1, 20, 8, 3), init_params(1, 20, 8, 3), init_params(2, 20, 8, 3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])


def test_he_uniform_bound():
    w = init_weight((50, 400), "he_uniform", torch.Generator().manual_seed(0)).numpy().ravel()
    a = math.sqrt(6 / 400)
    assert stats.kstest(w, stats.uniform(loc=-a, scale=2 * a).cdf).pvalue > 1e-3


@pytest.mark.parametrize("init,var", [("he_normal", 2 / 400), ("glorot_normal", 2 / 450)])
def test_normal_inits_are_keras_truncated_normals(init, var):
    w = init_weight((50, 400), init, torch.Generator().manual_seed(0)).numpy().ravel().astype(np.float64)
    std = math.sqrt(var) / 0.87962566103423978
    ref = stats.truncnorm(-2, 2, loc=0, scale=std)
    assert np.abs(w).max() <= 2 * std
    assert stats.kstest(w, ref.cdf).pvalue > 1e-3
    assert w.var() == pytest.approx(var, rel=0.05)  # the rescaling restores the target variance


# ---------- letter mask ----------

def _pil_render(char, size):
    """An independent render of the glyph: PIL rasterises matplotlib's DejaVu Sans file, cropped and resized."""
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=False)
    font = ImageFont.truetype(path, 400)
    img = Image.new("L", (600, 600), 0)
    ImageDraw.Draw(img).text((50, 20), char, fill=255, font=font)
    img = img.crop(img.getbbox()).resize((size, size), Image.BILINEAR)
    return np.asarray(img) > 127


def test_letter_a_fills_the_matrix_with_about_half_true():
    m = letter_mask("a", 128)
    assert m.shape == (128, 128) and m.dtype == bool
    assert 0.35 < m.mean() < 0.6
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    assert rows[0] <= 1 and rows[-1] >= 126 and cols[0] <= 1 and cols[-1] >= 126


def test_letter_a_matches_an_independent_render():
    m, ref = letter_mask("a", 96), _pil_render("a", 96)
    iou = (m & ref).sum() / (m | ref).sum()
    assert iou > 0.85
    other = _pil_render("s", 96)
    assert (m & other).sum() / (m | other).sum() < iou - 0.2


def _holes(m):
    labels, n = ndimage.label(~m)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    return sum(1 for i in range(1, n + 1) if i not in border)


def test_letter_a_has_a_closed_bowl_and_is_not_mirror_symmetric():
    m = letter_mask("a", 64)
    background, n = ndimage.label(~m)
    border = set(np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])))
    holes = [i for i in range(1, n + 1) if i not in border]
    assert len(holes) == 1 and (background == holes[0]).sum() > 0.03 * m.size
    hole_rows = np.flatnonzero((background == holes[0]).any(1))
    assert hole_rows.mean() > 32  # the bowl of an "a" is in the lower half (row 0 = top)
    assert (m != np.fliplr(m)).mean() > 0.1
    assert _holes(letter_mask("o", 64)) == 1 and _holes(letter_mask("l", 64)) == 0


def test_letter_mask_rejects_bad_input():
    with pytest.raises(ConfigError, match="single character"):
        letter_mask("ab", 10)
    with pytest.raises(ConfigError, match="positive integer size"):
        letter_mask("a", 0)
    with pytest.raises(ConfigError, match="no visible glyph"):
        letter_mask("\u200b", 10)


def test_masked_fc2_is_zero_outside_the_glyph_only():
    p = init_params(0, 30, 48, 5, mask="a")
    m = letter_mask("a", 48)
    w = p["fc2.weight"].numpy()
    assert (w[~m] == 0).all()
    assert (w[m] != 0).all()
    assert torch.equal(p["fc1.weight"], init_params(0, 30, 48, 5)["fc1.weight"])


# ---------- loss ----------

def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_keras_loss_and_gradient_by_hand_with_clipping():
    z = np.array([[2.0, 1.0, 0.1],      # ordinary
                  [40.0, 0.0, 0.0],     # p_y ~ e^-40: clipped below
                  [0.0, 40.0, 0.0],     # p_y = 1 in float32: clipped above
                  [1.0, 1.0, 1.0]])
    y = np.array([0, 1, 1, 2])
    value, grad = loss_and_grad(torch.tensor(z, dtype=torch.float32), torch.tensor(y))
    p = _np_softmax(z)
    py = p[np.arange(4), y]
    eps32 = np.float32(EPS)
    hi32 = np.float32(1) - eps32
    expect = -np.log(np.clip(py, eps32, hi32))
    np.testing.assert_allclose(value.numpy(), expect, rtol=1e-5)
    assert value[1].item() == pytest.approx(-math.log(1e-7), rel=1e-6)  # the 16.1 plateau
    onehot = np.eye(3)[y]
    kept = (py >= eps32) & (py <= hi32)
    np.testing.assert_allclose(grad.numpy(), (p - onehot) * kept[:, None], atol=1e-6)
    assert kept.tolist() == [True, False, False, True]
    assert not grad[1].any() and not grad[2].any()


def test_keras_loss_gradient_matches_autograd_of_the_clipped_formula():
    torch.manual_seed(0)
    z = (torch.randn(64, 10) * 12).requires_grad_()
    y = torch.randint(0, 10, (64,))
    ref = -torch.softmax(z, -1).clamp(EPS, 1 - EPS).log().gather(1, y[:, None]).mean()
    ref.backward()
    value, grad = loss_and_grad(z.detach().clone(), y)
    assert value.mean().item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(grad / 64, z.grad, atol=1e-7, rtol=1e-5)


def test_logits_loss_is_plain_cross_entropy():
    z = (torch.randn(32, 7) * 30).requires_grad_()
    y = torch.randint(0, 7, (32,))
    ref = torch.nn.functional.cross_entropy(z, y)
    ref.backward()
    value, grad = loss_and_grad(z.detach().clone(), y, "logits")
    assert value.mean().item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(grad / 32, z.grad, atol=1e-7, rtol=1e-5)
    assert value.max() > 17  # not clipped


# ---------- forward and the SGD step ----------

def _np_step(p, x, y, lr, loss):
    """Forward, backward and SGD update of the MLP written out in numpy (float64)."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    z1 = x @ p["fc1.weight"].T + p["fc1.bias"]
    h1 = np.maximum(z1, 0)
    z2 = h1 @ p["fc2.weight"].T + p["fc2.bias"]
    h2 = np.maximum(z2, 0)
    z3 = h2 @ p["out.weight"].T + p["out.bias"]
    prob = _np_softmax(z3)
    py = prob[np.arange(len(y)), y]
    dz3 = prob - np.eye(z3.shape[1])[y]
    if loss == "keras":
        dz3 *= ((py >= EPS) & (py <= 1 - EPS))[:, None]
    dz3 /= len(y)
    g = {"out.weight": dz3.T @ h2, "out.bias": dz3.sum(0)}
    dz2 = (dz3 @ p["out.weight"]) * (z2 > 0)
    g.update({"fc2.weight": dz2.T @ h1, "fc2.bias": dz2.sum(0)})
    dz1 = (dz2 @ p["fc2.weight"]) * (z1 > 0)
    g.update({"fc1.weight": dz1.T @ x, "fc1.bias": dz1.sum(0)})
    return {k: p[k] - lr * g[k] for k in p}, -np.log(np.clip(py, EPS, 1 - EPS)) if loss == "keras" else None


def _batch(n=50, d=12, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)).astype(np.float32), rng.integers(0, c, n)


def _torch(p):
    return {k: torch.tensor(v) for k, v in p.items()}


@pytest.mark.parametrize("loss", ["keras", "logits"])
def test_sgd_step_matches_a_numpy_update(loss):
    x, y = _batch()
    p = {k: v.numpy() for k, v in init_params(0, 12, 9, 4).items()}
    p = {k: v + 0.05 for k, v in p.items()}  # non-zero biases, some dead units
    expect, expect_loss = _np_step(p, x.astype(np.float64), y, 0.3, loss)
    tp = _torch(p)
    value, correct = sgd_step(tp, torch.tensor(x), torch.tensor(y), 0.3, loss)
    for k in p:
        np.testing.assert_allclose(tp[k].numpy(), expect[k], atol=2e-6, err_msg=k)
    if expect_loss is not None:
        assert value.item() == pytest.approx(expect_loss.sum(), rel=1e-5)
    logits = forward(_torch(p), torch.tensor(x))
    assert correct.item() == (logits.argmax(1).numpy() == y).sum()


def _reference_module(p):
    net = torch.nn.Sequential(torch.nn.Linear(p["fc1.weight"].shape[1], p["fc1.weight"].shape[0]), torch.nn.ReLU(),
                              torch.nn.Linear(*p["fc2.weight"].shape[::-1]), torch.nn.ReLU(),
                              torch.nn.Linear(*p["out.weight"].shape[::-1]))
    names = dict(zip(["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"], PARAM_NAMES))
    net.load_state_dict({k: p[v].clone() for k, v in names.items()})
    return net, names


@pytest.mark.parametrize("momentum,loss", [(0.0, "keras"), (0.9, "keras"), (0.5, "logits")])
def test_sgd_steps_match_autograd_and_torch_optim(momentum, loss):
    x, y = _batch(n=64, d=20, c=5)
    p = init_params(4, 20, 16, 5)
    net, names = _reference_module(p)
    opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=momentum)
    bufs = {k: torch.zeros_like(v) for k, v in p.items()}
    xt, yt = torch.tensor(x), torch.tensor(y)
    for step in range(3):
        xb, yb = xt[step * 20:(step + 1) * 20 + 4], yt[step * 20:(step + 1) * 20 + 4]
        opt.zero_grad()
        z = net(xb)
        if loss == "keras":
            ref = -torch.softmax(z, -1).clamp(EPS, 1 - EPS).log().gather(1, yb[:, None]).mean()
        else:
            ref = torch.nn.functional.cross_entropy(z, yb)
        ref.backward()
        opt.step()
        value, _ = sgd_step(p, xb, yb, 0.2, loss, momentum, bufs)
        assert value.item() / len(yb) == pytest.approx(ref.item(), rel=1e-5)
    for k, v in names.items():
        torch.testing.assert_close(p[v], net.state_dict()[k], atol=1e-6, rtol=1e-5)


def test_forward_matches_torch_modules():
    p = init_params(2, 20, 16, 5)
    net, _ = _reference_module(p)
    x = torch.rand(30, 20)
    torch.testing.assert_close(forward(p, x), net(x).detach())


def test_batched_step_equals_member_by_member_and_isolates_nan():
    x, y = _batch(n=40, d=10, c=3)
    members = [init_params(s, 10, 8, 3) for s in range(3)]
    xs = torch.stack([torch.tensor(x)[torch.randperm(40, generator=torch.Generator().manual_seed(s))]
                      for s in range(3)])
    ys = torch.stack([torch.tensor(y)[torch.randperm(40, generator=torch.Generator().manual_seed(s))]
                      for s in range(3)])
    members[1]["fc1.weight"][0, 0] = float("nan")
    stacked = {k: torch.stack([m[k] for m in members]) for k in PARAM_NAMES}
    values, correct = sgd_step(stacked, xs, ys, 0.5)
    for i, m in enumerate(members):
        v, c = sgd_step(m, xs[i], ys[i], 0.5)
        if i == 1:
            assert torch.isnan(v) and torch.isnan(stacked["fc2.weight"][1]).any()
            continue
        assert v.item() == pytest.approx(values[i].item(), rel=1e-6) and c.item() == correct[i].item()
        for k in PARAM_NAMES:
            torch.testing.assert_close(stacked[k][i], m[k], atol=1e-7, rtol=1e-6)
            assert torch.isfinite(stacked[k][i]).all()


@pytest.mark.parametrize("loss", ["keras", "logits"])
def test_loss_without_gradient_gives_the_same_values(loss):
    z = torch.randn(4, 7, 10, dtype=torch.float32) * 20  # large logits: some clipped under keras
    y = torch.randint(0, 10, (4, 7))
    with_grad, g = loss_and_grad(z.clone(), y, loss)
    value_only, none = loss_and_grad(z.clone(), y, loss, need_grad=False)
    assert none is None and g is not None
    assert torch.equal(with_grad, value_only)
