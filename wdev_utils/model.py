"""The two-hidden-layer ReLU MLP: initialisation, letter mask, forward pass, loss and hand-written SGD step.

Parameters live in a dict keyed by the state_dict names (fc1.weight, fc1.bias, fc2.weight, fc2.bias,
out.weight, out.bias) in torch.nn.Linear layout (out_features x in_features). The same functions
work on one network (2-D weights) and on an ensemble stacked along a leading member axis (3-D weights,
batched matmuls); members never interact.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .errors import ConfigError

LAYERS = ("fc1", "fc2", "out")
PARAM_NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "out.weight", "out.bias")
KERAS_EPSILON = 1e-7
# Keras draws its "normal" variance-scaling inits from a normal truncated at 2 std, rescaled by this.
_TRUNC_STD = 0.87962566103423978


def param_shapes(input_dim: int, width: int, n_classes: int) -> dict[str, tuple[int, ...]]:
    """Shapes of every parameter of the MLP."""
    return {"fc1.weight": (width, input_dim), "fc1.bias": (width,),
            "fc2.weight": (width, width), "fc2.bias": (width,),
            "out.weight": (n_classes, width), "out.bias": (n_classes,)}


def init_weight(shape: tuple[int, int], init: str, generator: torch.Generator) -> torch.Tensor:
    """One weight matrix (out x in) drawn with a Keras-style initialiser from `generator`."""
    fan_out, fan_in = shape
    w = torch.empty(shape, dtype=torch.float32)
    if init == "glorot_uniform":
        a = math.sqrt(6.0 / (fan_in + fan_out))
        return w.uniform_(-a, a, generator=generator)
    if init == "he_uniform":
        a = math.sqrt(6.0 / fan_in)
        return w.uniform_(-a, a, generator=generator)
    if init in ("glorot_normal", "he_normal"):
        var = 2.0 / (fan_in + fan_out) if init == "glorot_normal" else 2.0 / fan_in
        std = math.sqrt(var) / _TRUNC_STD
        return torch.nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std, generator=generator)
    raise ConfigError(f"unknown init {init!r}: choose glorot_uniform, glorot_normal, he_uniform or he_normal")


@functools.lru_cache(maxsize=64)
def _letter_mask_cached(char: str, size: int) -> np.ndarray:
    from matplotlib.font_manager import FontProperties
    from matplotlib.path import Path
    from matplotlib.textpath import TextPath

    try:
        polygons = TextPath((0, 0), char, size=1, prop=FontProperties(family="DejaVu Sans")).to_polygons()
    except (ValueError, AttributeError):
        polygons = []
    if not polygons:
        raise ConfigError(f"mask character {char!r} has no visible glyph in DejaVu Sans; use a letter such as 'a'")
    outline = np.concatenate(polygons)  # flattened curves: the control points may lie outside the ink
    (x0, y0), (x1, y1) = outline.min(0), outline.max(0)
    centres = (np.arange(size) + 0.5) / size
    xs = np.broadcast_to(x0 + centres[None, :] * (x1 - x0), (size, size))
    ys = np.broadcast_to(y1 - centres[:, None] * (y1 - y0), (size, size))  # row 0 = top of the glyph
    points = np.column_stack([xs.ravel(), ys.ravel()])
    inside = np.zeros(len(points), dtype=bool)
    for poly in polygons:  # even-odd rule: holes (the bowl of an "a") are contours inside contours
        inside ^= Path(poly).contains_points(points)
    mask = inside.reshape(size, size)
    mask.setflags(write=False)
    return mask


def letter_mask(char: str, size: int) -> np.ndarray:
    """Boolean size x size image of `char` (DejaVu Sans) stretched to fill the square; True inside the glyph.

    Row 0 is the top of the glyph, so `imshow(mask)` (and `imshow(fc2.weight)`) shows it upright.
    """
    if not isinstance(char, str) or len(char) != 1:
        raise ConfigError(f"letter_mask needs a single character, got {char!r}")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"letter_mask needs a positive integer size, got {size!r}")
    return _letter_mask_cached(char, int(size)).copy()


def init_params(seed: int, input_dim: int, width: int, n_classes: int, init: str = "glorot_uniform",
                mask: str = "none") -> dict[str, torch.Tensor]:
    """Initial parameters of one network (CPU float32): weights from a generator seeded with `seed`, biases 0.

    With a mask character, fc2.weight entries outside the glyph are set to zero (at initialisation only).
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    shapes = param_shapes(input_dim, width, n_classes)
    params = {}
    for layer in LAYERS:
        params[f"{layer}.weight"] = init_weight(shapes[f"{layer}.weight"], init, gen)
        params[f"{layer}.bias"] = torch.zeros(shapes[f"{layer}.bias"], dtype=torch.float32)
    if mask != "none":
        params["fc2.weight"].mul_(torch.from_numpy(letter_mask(mask, width)))
    return params


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if w.dim() == 2:
        return torch.addmm(b, x, w.t())
    if x.dim() == 2:  # inputs shared by every member (evaluation): one GEMM against all members' weights
        k, n_out = w.shape[0], w.shape[1]
        return torch.addmm(b.reshape(-1), x, w.reshape(k * n_out, -1).t()).view(x.shape[0], k, n_out).transpose(0, 1)
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits for inputs x: (B, D) with 2-D weights, or (K, B, D) / shared (B, D) with stacked weights."""
    h = _linear(x, params["fc1.weight"], params["fc1.bias"]).relu_()
    h = _linear(h, params["fc2.weight"], params["fc2.bias"]).relu_()
    return _linear(h, params["out.weight"], params["out.bias"])


def loss_and_grad(logits: torch.Tensor, y: torch.Tensor, loss: str = "keras",
                  need_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample cross-entropy and its gradient w.r.t. the logits (not divided by the batch size).

    "keras": softmax probabilities clipped to [1e-7, 1-1e-7], then -log p_y; where p_y is clipped the
    gradient is zero (as tf.clip_by_value's). "logits": -log_softmax(z)_y. `logits` is overwritten.
    With need_grad=False only the loss is computed (evaluation) and the gradient is None.
    """
    # softmax by hand: torch.softmax over 10 classes is ~2.5x slower on CPU for (K, B, 10) logits
    grad = None
    shifted = logits.sub_(logits.amax(-1, keepdim=True))
    yi = y.unsqueeze(-1)
    if loss == "keras":
        p = shifted.exp_()
        p.div_(p.sum(-1, keepdim=True))
        py = p.gather(-1, yi)
        clipped = py.clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON)
        if need_grad:
            keep = py == clipped  # inside the clip range (False for NaN)
            grad = p.scatter_(-1, yi, py - 1.0).mul_(keep)
        value = clipped.log_().neg_()
    elif loss == "logits":
        p = shifted.exp()
        s = p.sum(-1, keepdim=True)
        value = s.log().sub_(shifted.gather(-1, yi))
        if need_grad:
            p.div_(s)
            grad = p.scatter_(-1, yi, p.gather(-1, yi) - 1.0)
    else:
        raise ConfigError(f"unknown loss {loss!r}: choose 'keras' or 'logits'")
    return value.squeeze(-1), grad


def _mT(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(-1, -2)


def _gemm(bias, a, b):
    """bias + a @ b for 2-D or stacked (K, ...) operands; `bias` broadcasts over the result."""
    return torch.addmm(bias, a, b) if a.dim() == 2 else torch.baddbmm(bias, a, b)


def _update(w, b, gt, h, lr, momentum, bufs, name):
    """w -= lr * gt @ h and b -= lr * sum(gt) for a gradient gt (..., out, B) and inputs h (..., B, in).

    Without momentum the weight update is one fused GEMM.
    """
    gb = gt.sum(-1)
    if momentum == 0.0:
        if w.dim() == 2:
            w.addmm_(gt, h, alpha=-lr)
        else:
            w.baddbmm_(gt, h, alpha=-lr)
        b.sub_(gb, alpha=lr)
        return
    bw, bb = bufs[f"{name}.weight"], bufs[f"{name}.bias"]
    bw.mul_(momentum).add_(gt @ h)
    bb.mul_(momentum).add_(gb)
    w.add_(bw, alpha=-lr)
    b.add_(bb, alpha=-lr)


def sgd_step(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, lr: float, loss: str = "keras",
             momentum: float = 0.0, bufs: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on the batch's mean loss, in place; returns (sum of sample losses, number correct).

    Same update as autograd + torch.optim.SGD(lr, momentum); each ensemble member uses its own mean loss.
    """
    w1, b1 = params["fc1.weight"], params["fc1.bias"]
    w2, b2 = params["fc2.weight"], params["fc2.bias"]
    w3, b3 = params["out.weight"], params["out.bias"]
    # Hidden activations are held feature-major, (..., W, B): W @ x^T is a far better GEMM shape than
    # x @ W^T when W is small (about 2x at width 10, and 1.2-1.4x for one network at widths 100-1000).
    h1 = _gemm(b1.unsqueeze(-1), w1, _mT(x)).relu_()
    h2 = _gemm(b2.unsqueeze(-1), w2, h1).relu_()
    z = _mT(_gemm(b3.unsqueeze(-1), w3, h2)).contiguous()  # logits sample-major (..., B, C) for the loss
    correct = (z.argmax(-1) == y).sum(-1)
    value, dz = loss_and_grad(z, y, loss)
    dzt = _mT(dz.mul_(1.0 / y.shape[-1]))
    dh2 = _mT(w3) @ dzt  # gradients through each layer use its weights before their update
    _update(w3, b3, dzt, _mT(h2), lr, momentum, bufs, "out")
    dh2 = torch.ops.aten.threshold_backward(dh2, h2, 0.0)  # ReLU backward: zero where h2 <= 0
    dh1 = _mT(w2) @ dh2
    _update(w2, b2, dh2, _mT(h1), lr, momentum, bufs, "fc2")
    dh1 = torch.ops.aten.threshold_backward(dh1, h1, 0.0)
    _update(w1, b1, dh1, x, lr, momentum, bufs, "fc1")
    return value.sum(-1), correct
