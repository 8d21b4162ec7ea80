"""Each explainer against its definition, on toy models whose activations, gradients or
attention are known, with references written plainly here (loops, numpy in float64), not
copied from the implementation:

- integrated gradients: completeness (attributions sum to f(x) - f(x0)) and, on a quadratic
  model where the midpoint rule is exact, the closed form a (x^2 - x0^2) + b (x - x0);
- occlusion: a brute-force loop that slides the patch, fills it with zeros and averages the
  probability drops per pixel;
- SmoothGrad: the mean input gradient over the same noise draws (seeded generator);
- attention rollout: a 2-block transformer whose attention matrices are chosen by hand;
- Grad-CAM and Grad-CAM++: their formulas on a CNN whose head is linear in the feature map,
  so the gradient d logit / d A is the head's weight row.

Every map the explainers return is scaled to [0, 1] per image (negative values clamped), so
the references go through the same scaling (`scaled` below).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from foveal.explain import explain
from foveal.explain.gradients import ig_attributions
from foveal.models.base import FovealModel


def scaled(m: np.ndarray) -> np.ndarray:
    """(..., H, W) -> negative values clamped to 0, divided by the image's largest value."""
    m = np.clip(m, 0, None)
    return m / max(m.max(), 1e-12)


def close(got: torch.Tensor, want: np.ndarray, atol: float = 1e-5) -> bool:
    return np.allclose(got.detach().double().numpy(), want, atol=atol, rtol=0)


# ---------------------------------------------------------------- integrated gradients

def smooth_model(seed: int = 0) -> nn.Module:
    """A small CNN with smooth activations: (B, 3, 6, 6) -> (B, 4) logits."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.Tanh(), nn.Conv2d(5, 4, 3, padding=1), nn.Softplus(),
                          nn.Flatten(), nn.Linear(4 * 36, 4)).eval()
    with torch.no_grad():
        model[0].weight.mul_(2)  # the tanh's curved range: IG's path integral is far from a linear model's
        model[5].weight.mul_(10)  # logit differences of a few units
    return model


@pytest.mark.parametrize("baseline", [None, "channel"])
def test_ig_completeness(baseline):
    """sum over channels and pixels of the attributions = f_t(x) - f_t(x0), per image."""
    model = smooth_model()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, 6, generator=g) * 1.5
    x0 = None if baseline is None else torch.tensor([0.5, -1.0, 0.25]).view(1, 3, 1, 1)
    with torch.no_grad():
        deltas = model(x) - model(torch.zeros_like(x) if x0 is None else x0.expand_as(x))  # f(x) - f(x0), (B, K)
    target = deltas.abs().argmax(1)  # the class with the most to account for
    delta = deltas.gather(1, target[:, None])[:, 0]
    assert delta.abs().min() > 0.5
    total = ig_attributions(model, x, target, steps=128, baseline=x0).sum(dim=(1, 2, 3))
    assert torch.allclose(total, delta, rtol=1e-4, atol=1e-5), (total, delta)  # midpoint error ~1e-5 here


class Quadratic(nn.Module):
    """f_k(x) = sum_i a_ki x_i^2 + b_ki x_i: d f_k / d x_i = 2 a_ki x_i + b_ki is linear in x, so
    the midpoint rule integrates it exactly and IG_i = a_ki (x_i^2 - x0_i^2) + b_ki (x_i - x0_i)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.a, self.b = nn.Parameter(a), nn.Parameter(b)  # (K, C*H*W) each

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)
        return (v * v) @ self.a.T + v @ self.b.T


def test_ig_closed_form_on_quadratic_model():
    """Per-element attributions and the returned map equal the closed form (4 steps suffice)."""
    g = torch.Generator().manual_seed(2)
    C, H, W = 2, 5, 5
    a, b = torch.randn(3, C * H * W, generator=g), torch.randn(3, C * H * W, generator=g)
    model = Quadratic(a, b).eval()
    x = torch.randn(2, C, H, W, generator=g)
    x0 = torch.tensor([0.3, -0.7]).view(1, C, 1, 1)
    target = torch.tensor([2, 0])
    want = np.zeros((2, C, H, W))
    xn, x0n = x.double().numpy(), x0.expand_as(x).double().numpy()
    for n in range(2):
        an = a[target[n]].double().numpy().reshape(C, H, W)
        bn = b[target[n]].double().numpy().reshape(C, H, W)
        want[n] = an * (xn[n] ** 2 - x0n[n] ** 2) + bn * (xn[n] - x0n[n])
    attr = ig_attributions(model, x, target, steps=4, baseline=x0)
    assert close(attr, want, atol=1e-4), np.abs(attr.detach().numpy() - want).max()
    maps = explain(model, x, "ig", target=target, steps=4, baseline=x0)
    assert close(maps, np.stack([scaled(np.abs(w.sum(0))) for w in want]), atol=1e-5)


# ---------------------------------------------------------------- occlusion

def test_occlusion_equals_brute_force():
    """Slide a 4 x 4 zero patch with stride 3 over 11 x 11 images (starts 0, 3, 6 and 7, the
    last one so the border is covered); each pixel's value is the mean drop of the target
    class probability over the patches that cover it."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 121, 4)).eval()
    with torch.no_grad():
        model[3].weight.mul_(8)  # sizeable probability changes
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 2, 11, 11, generator=g) + 1.0  # far from the zero fill
    target = torch.tensor([0, 2])
    starts, window = [0, 3, 6, 7], 4
    want = np.zeros((2, 11, 11))
    for n in range(2):
        with torch.no_grad():
            p0 = torch.softmax(model(x[n:n + 1]).double(), 1)[0, target[n]].item()
        total, count = np.zeros((11, 11)), np.zeros((11, 11))
        for i in starts:
            for j in starts:
                occluded = x[n:n + 1].clone()
                occluded[..., i:i + window, j:j + window] = 0.0
                with torch.no_grad():
                    p = torch.softmax(model(occluded).double(), 1)[0, target[n]].item()
                total[i:i + window, j:j + window] += p0 - p
                count[i:i + window, j:j + window] += 1
        assert count.min() >= 1  # every pixel covered
        want[n] = scaled(total / count)
    assert (want > 0.05).mean() > 0.3  # a map with structure, not a few pixels
    for chunk in (1, 6):  # one window per pass, and several (with a partial last pass)
        got = explain(model, x, "occlusion", target=target, window=window, stride=3, chunk=chunk)
        assert close(got, want, atol=1e-4), (chunk, np.abs(got.numpy() - want).max())


# ---------------------------------------------------------------- SmoothGrad

def tanh_mlp() -> nn.Module:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 25, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        model[1].weight.mul_(4)  # tanh well into its curved range, so noise changes the gradient
    return model


def grad_of(model: nn.Module, image: torch.Tensor, k: int) -> np.ndarray:
    """d f_k / d image for one (C, H, W) image."""
    xi = image[None].clone().requires_grad_(True)
    model(xi)[0, k].backward()
    return xi.grad[0].double().numpy()


def smoothgrad_reference(model: nn.Module, x: torch.Tensor, target: torch.Tensor, samples: int, noise: float,
                         seed: int) -> np.ndarray:
    """Mean over samples s of d f_t / d x at x + noise * (max(x) - min(x)) * eps_s, eps drawn
    from a generator seeded with `seed` as one (samples, B, C, H, W) standard normal tensor;
    then max over channels of |mean|, scaled."""
    eps = torch.randn((samples, *x.shape), generator=torch.Generator().manual_seed(seed))
    out = []
    for n in range(len(x)):
        span = (x[n].max() - x[n].min()).item()
        mean = sum(grad_of(model, x[n] + noise * span * eps[s, n], int(target[n])) for s in range(samples)) / samples
        out.append(scaled(np.abs(mean).max(0)))
    return np.stack(out)


def test_smoothgrad_is_mean_gradient_over_the_noise_draws():
    model = tanh_mlp()
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 2, 5, 5, generator=g) * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)  # different spans
    target = torch.tensor([1, 2])
    want = smoothgrad_reference(model, x, target, samples=6, noise=0.3, seed=11)
    got = explain(model, x, "smoothgrad", target=target, samples=6, noise=0.3, seed=11)
    assert close(got, want, atol=1e-5), np.abs(got.numpy() - want).max()
    plain = smoothgrad_reference(model, x, target, samples=1, noise=0.0, seed=0)  # = saliency
    assert not np.allclose(want, plain, atol=1e-2)  # the noise matters on this model
    other = explain(model, x, "smoothgrad", target=target, samples=6, noise=0.3, seed=12)
    assert not torch.allclose(got, other, atol=1e-3)  # the seed picks the draws
    assert close(explain(model, x, "smoothgrad", target=target, samples=3, noise=0.0), plain)
    assert close(explain(model, x, "saliency", target=target), plain)


# ---------------------------------------------------------------- attention rollout

class FixedAttention(nn.Module):
    """Holds the ``qkv`` and ``num_heads`` rollout looks for; passes its tokens through (the
    attention output is not needed: rollout recomputes the matrices from the block input)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class TwoBlockTransformer(FovealModel):
    """Two attention blocks over N fixed one-hot tokens (embedding width 2N, two heads of N).
    The qkv weights make head h of block l attend with exactly the row-stochastic matrix
    P[l][h]: with token i = e_i, q_i = sqrt(N) log P[i, :] and k_j = e_j, so the scaled logits
    are log P and their softmax is P."""

    def __init__(self, P: np.ndarray, prefix: int):
        n = P.shape[-1]
        super().__init__(num_classes=2, in_chans=1, img_size=2)
        self.num_prefix_tokens = prefix
        self.blocks = nn.ModuleList(FixedAttention(2 * n, 2) for _ in range(len(P)))
        with torch.no_grad():
            for block, heads in zip(self.blocks, P):
                w = torch.zeros(6 * n, 2 * n)  # rows: q (2n) | k (2n) | v (2n), each split head 0 | head 1
                for h in range(2):
                    for i in range(n):
                        for j in range(n):
                            w[h * n + j, i] = n ** 0.5 * float(np.log(heads[h][i, j]))
                        w[2 * n + h * n + i, i] = 1.0
                block.qkv.weight.copy_(w)
        self.register_buffer("tokens", torch.cat([torch.eye(n), torch.zeros(n, n)], 1))  # (N, 2N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens.expand(len(x), -1, -1)
        for block in self.blocks:
            t = block(t)
        return t[:, 0, :2]


def row_stochastic(rows: list[list[float]]) -> np.ndarray:
    m = np.array(rows, dtype=np.float64)
    return m / m.sum(1, keepdims=True)


@pytest.mark.parametrize("prefix", [1, 0])
def test_rollout_on_hand_made_attention(prefix):
    """Rollout = norm(A2 + I) @ norm(A1 + I), A_l the mean of the heads' attention and norm
    dividing each row by its sum; the map is the class token's row over the patch tokens (or,
    without a class token, the column means), laid on the 2 x 2 patch grid."""
    n = 4 + prefix
    rng = np.random.default_rng(7 + prefix)
    P = np.stack([[row_stochastic((rng.random((n, n)) + 0.05).tolist()) for _ in range(2)] for _ in range(2)])
    P[0, 0, 0] = [0.05] * (n - 1) + [1.0]  # a skewed class-token row in one head
    P[0, 0, 0] /= P[0, 0, 0].sum()
    A1, A2 = P[0].mean(0), P[1].mean(0)  # head fusion by mean
    I = np.eye(n)
    R1, R2 = (A1 + I) / (A1 + I).sum(1, keepdims=True), (A2 + I) / (A2 + I).sum(1, keepdims=True)
    flow = R2 @ R1
    row = flow[0, prefix:] if prefix else flow.mean(0)
    want = scaled(row.reshape(2, 2))
    model = TwoBlockTransformer(P, prefix).eval()
    got = explain(model, torch.zeros(2, 1, 2, 2), "rollout")
    assert got.shape == (2, 2, 2)
    assert close(got[0], want, atol=1e-5) and close(got[1], want, atol=1e-5), (got[0], want)
    assert not np.allclose(want, scaled((R1 @ R2)[0, prefix:] if prefix else (R1 @ R2).mean(0)).reshape(2, 2),
                           atol=1e-3)  # the layer order is visible in this case


# ---------------------------------------------------------------- Grad-CAM and Grad-CAM++

class LinearHeadCNN(nn.Module):
    """conv -> ReLU (the cam_layer "features", A: (B, K, 6, 6)) -> linear over the flattened map.
    d logit_t / d A = the head's weight row t laid as (K, 6, 6), known without autograd; the map
    has the image's size, so no upsampling enters the comparison."""

    cam_layer = "features"

    def __init__(self, k: int = 4, side: int = 6, classes: int = 3):
        super().__init__()
        torch.manual_seed(8)
        self.features = nn.Sequential(nn.Conv2d(2, k, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(k * side * side, classes)
        with torch.no_grad():
            self.head.weight.mul_(20)  # sum(A) g^3 comparable to 2 g^2 in Grad-CAM++

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def activations_and_gradients(model: LinearHeadCNN, x: torch.Tensor, target: torch.Tensor):
    with torch.no_grad():
        A = model.features(x).double().numpy()  # (B, K, h, w)
    G = model.head.weight.detach().double().numpy()[target.numpy()].reshape(A.shape)  # (B, K, h, w)
    return A, G


def gradcam_reference(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    """w_k = spatial mean of g_k; map = ReLU(sum_k w_k A_k)."""
    out = []
    for a, g in zip(A, G):
        cam = np.zeros(a.shape[1:])
        for k in range(len(a)):
            cam += g[k].mean() * a[k]
        out.append(scaled(np.maximum(cam, 0)))
    return np.stack(out)


def gradcampp_reference(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Chattopadhay et al. 2018: alpha_kij = g^2 / (2 g^2 + sum_ab A_kab g^3),
    w_k = sum_ij alpha_kij ReLU(g_kij), map = ReLU(sum_k w_k A_k)."""
    out = []
    for a, g in zip(A, G):
        cam = np.zeros(a.shape[1:])
        for k in range(len(a)):
            total = a[k].sum()
            w = 0.0
            for i in range(a.shape[1]):
                for j in range(a.shape[2]):
                    gij = g[k, i, j]
                    if gij > 0:  # ReLU(g) = 0 otherwise; here the denominator is > 0
                        w += gij ** 2 / (2 * gij ** 2 + total * gij ** 3) * gij
            cam += w * a[k]
        out.append(scaled(np.maximum(cam, 0)))
    return np.stack(out)


@pytest.mark.parametrize("method, reference", [("gradcam", gradcam_reference), ("gradcampp", gradcampp_reference)])
def test_cam_formula_on_linear_head(method, reference):
    model = LinearHeadCNN().eval()
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 2, 6, 6, generator=g)
    target = torch.tensor([0, 1, 2])
    A, G = activations_and_gradients(model, x, target)
    want = reference(A, G)
    assert (want > 0.05).mean() > 0.2  # a map with structure
    got = explain(model, x, method, target=target)
    assert close(got, want, atol=1e-5), np.abs(got.numpy() - want).max()


def test_gradcampp_differs_from_gradcam_here():
    """The toy case separates the two formulas (else the Grad-CAM++ test could not tell them apart)."""
    model = LinearHeadCNN().eval()
    x = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(9))
    A, G = activations_and_gradients(model, x, torch.tensor([0, 1, 2]))
    assert np.abs(gradcam_reference(A, G) - gradcampp_reference(A, G)).max() > 0.05


class ClassTokenMixer(FovealModel):
    """A class-token transformer reduced to what Grad-CAM sees: patch tokens are the pixels of a
    (B, D, 2, 2) image, the last block (cam_layer) mixes tokens linearly, out = t + M t, and the
    head reads only the class token. The block's patch outputs never reach the logits, so the
    map uses the block's input tokens a_i with gradient g_i = M[0, i] W_t (i >= 1), known
    without autograd, and per-token weights: Grad-CAM cam_i = ReLU(sum_c g_ic a_ic)."""

    cam_layer = "block"
    num_prefix_tokens = 1

    class Mix(nn.Module):
        def __init__(self, m: torch.Tensor):
            super().__init__()
            self.register_buffer("m", m)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return t + self.m @ t

    def __init__(self, dim: int = 3, classes: int = 3):
        super().__init__(num_classes=classes, in_chans=dim, img_size=2)
        torch.manual_seed(10)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.block = self.Mix(torch.tensor([[0.3, 1.5, -0.8, 0.6, 2.0]] + [[0.1] * 5] * 4))
        self.head = nn.Linear(dim, classes)
        with torch.no_grad():
            self.head.weight.mul_(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.cat([self.cls.expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)], 1)  # (B, 5, D)
        return self.head(self.block(t)[:, 0])


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_cam_formula_on_class_token_tokens(method):
    model = ClassTokenMixer().eval()
    x = torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(11)) + 0.2  # positive, as after a GELU mostly
    target = torch.tensor([0, 2])
    m0 = model.block.m[0].double().numpy()
    W = model.head.weight.detach().double().numpy()
    want = []
    for n in range(2):
        a = x[n].double().numpy().reshape(3, 4).T  # (tokens, channels), row-major grid
        g = np.stack([m0[1 + i] * W[target[n]] for i in range(4)])  # (tokens, channels)
        cam = np.zeros(4)
        for i in range(4):
            for c in range(3):
                if method == "gradcam":
                    cam[i] += g[i, c] * a[i, c]
                elif g[i, c] > 0:  # Grad-CAM++ per token: alpha g_+ a, sum(A) over the grid
                    alpha = g[i, c] ** 2 / (2 * g[i, c] ** 2 + a[:, c].sum() * g[i, c] ** 3)
                    cam[i] += alpha * g[i, c] * a[i, c]
        want.append(scaled(cam.reshape(2, 2)))
    got = explain(model, x, method, target=target)
    assert close(got, np.stack(want), atol=1e-5), (got, np.stack(want))
