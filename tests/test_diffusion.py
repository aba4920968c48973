"""Diffusion maths: schedule, PDAE shift/loss on an analytic Gaussian problem, DDIM round trips, interpolation."""

from __future__ import annotations

import math

import pytest
import torch

torch.set_num_threads(1)

from monai.networks.schedulers import DDPMScheduler  # noqa: E402

from ldae.diffusion import (  # noqa: E402
    DDIM_DEFAULTS,
    DDIMSettings,
    DiffusionSchedule,
    alpha_from_months,
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    extract,
    guided_eps_fn,
    lerp,
    pdae_loss,
    pdae_shifted_eps,
    posterior_mean_from_eps,
    slerp,
)
from ldae.diffusion.ddim import inversion_plan, sampling_plan  # noqa: E402

SCH = DiffusionSchedule()  # paper: T = 1000, linear 1e-4 .. 0.02
F64 = torch.float64


def test_schedule_matches_monai_and_formulas():
    assert len(SCH) == 1000
    assert SCH.betas[0].item() == pytest.approx(1e-4) and SCH.betas[-1].item() == pytest.approx(0.02)
    ref = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta", beta_start=1e-4, beta_end=0.02)
    assert torch.allclose(SCH.alphas_cumprod.float(), ref.alphas_cumprod, rtol=1e-4)
    assert torch.all(SCH.alphas_cumprod[1:] < SCH.alphas_cumprod[:-1])
    abar = SCH.alphas_cumprod
    assert torch.allclose(SCH.snr, abar / (1 - abar))
    t = torch.arange(1000)
    w = SCH.snr_weight(t, 0.1)
    assert torch.allclose(w, SCH.snr**0.1 / (1 + SCH.snr))
    # PDAE shift coefficient, c_0 = 0 (abar_{-1} = 1)
    assert SCH.pdae_shift[0].item() == 0.0
    for k in (1, 10, 500, 999):
        expect = -math.sqrt(1 - SCH.betas[k].item()) * (1 - abar[k - 1].item()) / math.sqrt(1 - abar[k].item())
        assert SCH.pdae_shift[k].item() == pytest.approx(expect, rel=1e-12)
    x0, noise = torch.randn(3, 2, 4, 4, 4), torch.randn(3, 2, 4, 4, 4)
    tt = torch.tensor([0, 400, 999])
    assert torch.allclose(SCH.q_sample(x0, tt, noise), ref.add_noise(x0, noise, tt), atol=1e-5)
    assert torch.allclose(SCH.predict_x0(SCH.q_sample(x0, tt, noise), tt, noise), x0, atol=1e-4)
    assert DiffusionSchedule.from_config({"num_train_timesteps": 50, "other": 1}).num_train_timesteps == 50


def test_shift_in_eps_equals_posterior_variance_times_g():
    """c_t is exactly the eps-space image of the PDAE mean shift beta_tilde_t * G."""
    torch.manual_seed(0)
    x_t, eps, g = (
        torch.randn(4, 1, 3, 3, 3, dtype=F64),
        torch.randn(4, 1, 3, 3, 3, dtype=F64),
        torch.randn(4, 1, 3, 3, 3, dtype=F64),
    )
    t = torch.tensor([1, 20, 300, 999])
    shifted = posterior_mean_from_eps(x_t, t, pdae_shifted_eps(eps, g, t, SCH), SCH)
    expect = posterior_mean_from_eps(x_t, t, eps, SCH) + extract(SCH.posterior_variance, t, x_t) * g
    assert torch.allclose(shifted, expect, rtol=1e-10, atol=1e-12)


# ---- analytic Gaussian problem: y ~ N(0, sy^2), x0 = y + sn * n; all per element ---------------------------------
SY, SN = 1.0, 0.3


def _coefs(t):
    a = SCH.sqrt_alphas_cumprod[t].to(F64)
    b = SCH.sqrt_one_minus_alphas_cumprod[t].to(F64)
    return a, b


def _eps_uncond(x_t, t):  # E[eps | x_t], x0 ~ N(0, sy^2 + sn^2)
    a, b = (extract(c, t, x_t) for c in (SCH.sqrt_alphas_cumprod, SCH.sqrt_one_minus_alphas_cumprod))
    return b * x_t / (a**2 * (SY**2 + SN**2) + b**2)


def _eps_cond(x_t, t, y):  # E[eps | x_t, y], x0 | y ~ N(y, sn^2)
    a, b = (extract(c, t, x_t) for c in (SCH.sqrt_alphas_cumprod, SCH.sqrt_one_minus_alphas_cumprod))
    return b * (x_t - a * y) / (a**2 * SN**2 + b**2)


def _grad_log_p_y_given_xt(x_t, t, y):  # analytic classifier gradient = score(x_t | y) - score(x_t)
    a, b = (extract(c, t, x_t) for c in (SCH.sqrt_alphas_cumprod, SCH.sqrt_one_minus_alphas_cumprod))
    return -(x_t - a * y) / (a**2 * SN**2 + b**2) + x_t / (a**2 * (SY**2 + SN**2) + b**2)


def _g_star(x_t, t, y):  # minimiser of the PDAE loss: c_t G* = E[eps|x_t,y] - eps_hat
    return (_eps_cond(x_t, t, y) - _eps_uncond(x_t, t)) / extract(SCH.pdae_shift, t, x_t)


def test_pdae_shift_recovers_conditional_posterior_mean():
    torch.manual_seed(0)
    t = torch.tensor([1, 5, 50, 300, 700, 999])
    y = torch.randn(6, 1, 4, 4, 4, dtype=F64) * SY
    x_t = SCH.q_sample(y + SN * torch.randn_like(y), t, torch.randn_like(y))
    eps = pdae_shifted_eps(_eps_uncond(x_t, t), _g_star(x_t, t, y), t, SCH)
    mean = posterior_mean_from_eps(x_t, t, eps, SCH)
    # independent: Gaussian conditioning of (x_{t-1}, x_t) given y
    ap, bp = (extract(c, t - 1, x_t) for c in (SCH.sqrt_alphas_cumprod, SCH.sqrt_one_minus_alphas_cumprod))
    a, b = (extract(c, t, x_t) for c in (SCH.sqrt_alphas_cumprod, SCH.sqrt_one_minus_alphas_cumprod))
    var_prev = ap**2 * SN**2 + bp**2
    cov = extract(SCH.alphas.sqrt(), t, x_t) * var_prev
    expect = ap * y + cov / (a**2 * SN**2 + b**2) * (x_t - a * y)
    assert torch.allclose(mean, expect, rtol=1e-9, atol=1e-10)
    # the unshifted LDM misses it (the "posterior mean gap")
    assert not torch.allclose(posterior_mean_from_eps(x_t, t, _eps_uncond(x_t, t), SCH), expect, atol=1e-3)


def test_pdae_optimum_is_classifier_gradient_over_r_t():
    """G* = grad log p(y|x_t) / r_t, r_t = -c_t / sqrt(1-abar_t) -> 1: the DDIM 'score' guidance is consistent."""
    torch.manual_seed(1)
    t = torch.tensor([10, 100, 200, 500, 999])
    y = torch.randn(5, 1, 2, 2, 2, dtype=F64)
    x_t = SCH.q_sample(y + SN * torch.randn_like(y), t, torch.randn_like(y))
    r = -SCH.pdae_shift / SCH.sqrt_one_minus_alphas_cumprod
    assert torch.allclose(_g_star(x_t, t, y) * extract(r, t, x_t), _grad_log_p_y_given_xt(x_t, t, y), rtol=1e-9)
    assert r[0] == 0 and 0.8 < r[10] < 0.95 and torch.all(r[100:] > 0.98) and torch.all(r[200:] > 0.989)
    assert torch.all(r < 1)
    # hence: eps_hat - sqrt(1-abar_t) * G_true equals the exact conditional epsilon
    b = extract(SCH.sqrt_one_minus_alphas_cumprod, t, x_t)
    assert torch.allclose(_eps_uncond(x_t, t) - b * _grad_log_p_y_given_xt(x_t, t, y), _eps_cond(x_t, t, y))


class _AnalyticEstimator:
    """(G, eps_hat) from the Gaussian formulas, G* scaled by `scale` (1 = the PDAE optimum)."""

    def __init__(self, scale=1.0):
        self.scale = scale

    def __call__(self, x_t, t, y_sem, return_eps=False):
        y = y_sem.reshape(x_t.shape)
        g = self.scale * torch.nan_to_num(_g_star(x_t, t, y))
        return (g, _eps_uncond(x_t, t)) if return_eps else g


def test_pdae_loss_minimised_by_analytic_estimator():
    torch.manual_seed(2)
    n = 4000
    y = torch.randn(n, 1, 2, 2, 2, dtype=F64) * SY
    x0 = y + SN * torch.randn_like(y)
    noise = torch.randn_like(y)
    t = torch.randint(1, 1000, (n,))
    ysem = y.flatten(1)
    losses = {s: pdae_loss(_AnalyticEstimator(s), x0, t, noise, ysem, SCH).item() for s in (0.0, 0.8, 1.0, 1.2)}
    assert losses[1.0] < losses[0.8] < losses[0.0] and losses[1.0] < losses[1.2]
    # unweighted version too
    unw = {s: pdae_loss(_AnalyticEstimator(s), x0, t, noise, ysem, SCH, gamma=None).item() for s in (0.9, 1.0, 1.1)}
    assert unw[1.0] < unw[0.9] and unw[1.0] < unw[1.1]
    with pytest.raises(ValueError):
        pdae_loss(_AnalyticEstimator(), x0, t[:3], noise, ysem, SCH)


# ---- DDIM ----------------------------------------------------------------------------------------------------------
MU, S = 0.5, 0.7


def _gauss_eps(x, t):  # exact E[eps | x_t] for x0 ~ N(MU, S^2) (element-wise)
    a, b = (extract(c, t, x) for c in (SCH.sqrt_alphas_cumprod, SCH.sqrt_one_minus_alphas_cumprod))
    return b * (x - a * MU) / (a**2 * S**2 + b**2)


OURS = {"clip_x0": None, "grid": "exact"}  # the exact-endpoint grid without clamp (ours before the authors' default)
NO_CLIP = {"clip_x0": None}


def test_ddim_grid_values():
    # authors: int(linspace(0, 999, N+1)), truncated
    assert ddim_timesteps(10, 1000, "authors").tolist() == [0, 99, 199, 299, 399, 499, 599, 699, 799, 899, 999]
    assert ddim_timesteps(100, 1000, "authors").tolist() == [0] + [10 * k - 1 for k in range(1, 101)]
    assert ddim_timesteps(2, 1000).tolist() == [0, 499, 999]  # the default grid is the authors'
    # exact: round(linspace(0, 999, N))
    assert ddim_timesteps(10, 1000, "exact").tolist() == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert ddim_timesteps(100, 1000, "exact").tolist() == [round(999 * k / 99) for k in range(100)]
    assert ddim_timesteps(1, 1000, "exact").tolist() == [999]
    assert ddim_timesteps(1, 1000, "authors").tolist() == [0, 999]
    for n in (10, 20, 50, 100, 999):
        ts = ddim_timesteps(n, 1000, "authors")
        assert len(ts) == n + 1 and ts[0] == 0 and ts[-1] == 999 and torch.all(ts[1:] > ts[:-1])
    for n in (10, 20, 50, 100, 1000):
        ts = ddim_timesteps(n, 1000, "exact")
        assert len(ts) == n and ts[0] == 0 and ts[-1] == 999 and torch.all(ts[1:] > ts[:-1])


def test_ddim_plans_evaluate_the_model_where_the_authors_do():
    abar = SCH.alphas_cumprod
    ts = ddim_timesteps(100, 1000, "authors")
    sample = sampling_plan(ts, abar, "authors")
    assert [t for t, _, _ in sample] == [10 * k - 1 for k in range(100, 0, -1)]  # 999, 989, ..., 9
    assert sample[-1][2] == pytest.approx(0.9999) and sample[-1][2] == float(abar[0])  # ends at t = 0, not 1
    invert = inversion_plan(ts, abar, "authors")
    assert [t for t, _, _, _ in invert] == [0] + [10 * k - 1 for k in range(1, 100)]  # 0, 9, ..., 989
    assert invert[0][1] == float(abar[0]) and invert[-1][3] == 999
    assert [(a_to, a_from) for _, a_from, a_to, _ in invert] == [(a, b) for _, a, b in reversed(sample)]
    ts = ddim_timesteps(10, 1000, "exact")
    sample, invert = sampling_plan(ts, abar, "exact"), inversion_plan(ts, abar, "exact")
    assert [t for t, _, _ in sample] == ts.tolist()[::-1] and sample[-1][2] == 1.0
    assert [t for t, _, _, _ in invert] == [0, *ts.tolist()[:-1]] and invert[0][1] == 1.0


def test_ddim_argument_checks():
    x = torch.randn(2, 1, 4, 4, 4)
    for bad in (0, 1001, 2.5, True):
        with pytest.raises((ValueError, TypeError)):
            ddim_sample(_gauss_eps, x, SCH, bad, grid="exact")
    with pytest.raises(ValueError, match="999"):
        ddim_sample(_gauss_eps, x, SCH, 1000)  # the authors' grid has N + 1 distinct points
    with pytest.raises(ValueError):
        ddim_invert(_gauss_eps, torch.zeros(2, 3, dtype=torch.long), SCH, 10)
    with pytest.raises(TypeError):
        ddim_sample(_gauss_eps, x, None, 10)
    for bad in (
        {"grid": "linear"},
        {"clip_x0": [1.0, -1.0]},
        {"clip_x0": [1.0]},
        {"clip_x0": "yes"},
        {"clip": [-1, 1]},
    ):
        with pytest.raises(ValueError, match="ddim"):
            DDIMSettings.from_config(bad)
    assert DDIMSettings.from_config({}) == DDIMSettings() == DDIMSettings((-1.0, 1.0), "authors")
    assert DDIMSettings.from_config({"clip_x0": None, "grid": "exact"}).kwargs() == OURS
    assert DDIMSettings().as_config() == DDIM_DEFAULTS


def _hand_step(x, eps, a_from, a_to, lo=-1.0, hi=1.0):
    """One clamped DDIM step written out element by element: (x0 clamped, eps used, x next)."""
    x0 = [(xi - math.sqrt(1 - a_from) * ei) / math.sqrt(a_from) for xi, ei in zip(x, eps)]
    x0c = [min(max(v, lo), hi) for v in x0]
    eps2 = [(xi / math.sqrt(a_from) - ci) / math.sqrt(1 / a_from - 1) for xi, ci in zip(x, x0c)]
    nxt = [math.sqrt(a_to) * ci + math.sqrt(1 - a_to) * ei for ci, ei in zip(x0c, eps2)]
    return x0, x0c, eps2, nxt


def _toy_eps(calls):
    def fn(x, t):  # a known, t-dependent epsilon
        calls.append((x.clone(), t.clone()))
        return 0.99 * x + 1e-6 * t.to(x.dtype)[:, None]

    return fn


def test_two_step_authors_sampling_and_inversion_by_hand():
    a999, a499, a0 = (float(SCH.alphas_cumprod[t]) for t in (999, 499, 0))
    x_T = torch.tensor([[2.0, 0.1, -3.0]], dtype=F64)
    calls = []
    out = ddim_sample(_toy_eps(calls), x_T, SCH, 2)  # authors' defaults: grid [0, 499, 999], clamp [-1, 1]
    assert [int(t) for _, t in calls] == [999, 499]
    # step 1: model at 999, to abar_499
    eps1 = [0.99 * v + 999e-6 for v in x_T[0].tolist()]
    x0, x0c, eps1c, x1 = _hand_step(x_T[0].tolist(), eps1, a999, a499)
    assert x0[0] > 1 and x0[2] < -1 and abs(x0[1]) < 1  # the clamp bites on elements 0 and 2 only
    assert x0c == [1.0, x0[1], -1.0] and eps1c[1] == pytest.approx(eps1[1], rel=1e-9)  # unclamped: eps unchanged
    assert eps1c[0] != pytest.approx(eps1[0], rel=1e-3)
    step = ddim_step(x_T, torch.tensor([eps1], dtype=F64), a999, a499, (-1.0, 1.0))
    assert step.x0[0].tolist() == pytest.approx(x0c, rel=1e-12)
    assert step.eps[0].tolist() == pytest.approx(eps1c, rel=1e-10)
    assert step.x[0].tolist() == pytest.approx(x1, rel=1e-10)
    assert calls[1][0][0].tolist() == pytest.approx(x1, rel=1e-10)  # the state the model saw second
    # step 2: model at 499, to abar_0 = 0.9999 (the authors' end point; not 1)
    eps2 = [0.99 * v + 499e-6 for v in x1]
    _, x0c2, _, x2 = _hand_step(x1, eps2, a499, a0)
    assert out[0].tolist() == pytest.approx(x2, rel=1e-10)
    assert out[0].tolist() != pytest.approx(x0c2, abs=1e-3)  # 1 % noise is left at t = 0
    # inversion: model at 0 (from abar_0) then 499, ending at abar_999
    calls.clear()
    z0 = torch.tensor([[1.5, 0.2, -0.4]], dtype=F64)
    x_T = ddim_invert(_toy_eps(calls), z0, SCH, 2)
    assert [int(t) for _, t in calls] == [0, 499]
    e = [0.99 * v for v in z0[0].tolist()]
    pred, c, e_c, y1 = _hand_step(z0[0].tolist(), e, a0, a499)
    assert pred[0] > 1 and c[0] == 1.0  # 1.5 clamped: its residual is amplified by 1/sqrt(1/abar_0 - 1) = 100
    assert e_c[0] == pytest.approx(e[0] + (pred[0] - 1) / math.sqrt(1 / a0 - 1), rel=1e-9)
    assert 1 / math.sqrt(1 / a0 - 1) == pytest.approx(100, rel=1e-4)
    assert calls[1][0][0].tolist() == pytest.approx(y1, rel=1e-10)
    _, _, _, y2 = _hand_step(y1, [0.99 * v + 499e-6 for v in y1], a499, a999)
    assert x_T[0].tolist() == pytest.approx(y2, rel=1e-10)


def test_two_step_exact_grid_by_hand():
    """The exact grid [0, 999] with the clean end point abar = 1; clamp at abar = 1 keeps the model's eps."""
    a999, a0 = (float(SCH.alphas_cumprod[t]) for t in (999, 0))
    x_T = torch.tensor([[2.0, -0.3]], dtype=F64)
    calls = []
    out = ddim_sample(_toy_eps(calls), x_T, SCH, 2, clip_x0=None, grid="exact")
    assert [int(t) for _, t in calls] == [999, 0]
    x = x_T[0].tolist()
    for t, a_from, a_to in ((999, a999, a0), (0, a0, 1.0)):
        eps = [0.99 * v + 1e-6 * t for v in x]
        x0 = [(xi - math.sqrt(1 - a_from) * ei) / math.sqrt(a_from) for xi, ei in zip(x, eps)]
        x = [math.sqrt(a_to) * c + math.sqrt(1 - a_to) * ei for c, ei in zip(x0, eps)]
    assert out[0].tolist() == pytest.approx(x, rel=1e-10) and x == pytest.approx(x0, rel=1e-12)  # ends at x0
    calls.clear()
    z0 = torch.tensor([[1.5, -0.3]], dtype=F64)
    ddim_invert(_toy_eps(calls), z0, SCH, 2, clip_x0=(-1.0, 1.0), grid="exact")
    assert [int(t) for _, t in calls] == [0, 0]  # first step from abar = 1 uses the model at ts[0] = 0
    first = [math.sqrt(a0) * min(max(v, -1), 1) + math.sqrt(1 - a0) * 0.99 * v for v in z0[0].tolist()]
    assert calls[1][0][0].tolist() == pytest.approx(first, rel=1e-12)


@pytest.mark.parametrize("grid", ["authors", "exact"])
def test_ddim_round_trip_with_exact_eps(grid):
    torch.manual_seed(0)
    x0 = MU + S * torch.randn(4, 1, 6, 6, 6, dtype=F64)
    errs = {}
    for steps in (50, 100):
        x_T = ddim_invert(_gauss_eps, x0, SCH, steps, grid=grid, **NO_CLIP)
        assert abs(x_T.mean().item()) < 0.15 and abs(x_T.std().item() - 1) < 0.1  # data mapped to ~N(0, 1)
        rec = ddim_sample(_gauss_eps, x_T, SCH, steps, grid=grid, **NO_CLIP)
        errs[steps] = ((rec - x0).pow(2).mean().sqrt() / x0.std()).item()  # relative RMS error
    # standard inversion: first-order in the step size (~4% relative RMS at 100 steps for this toy)
    assert errs[100] < 0.06 and 1.6 < errs[50] / errs[100] < 2.4, errs
    # fixed-point refined inversion: the exact inverse of the sampler, even at 10 steps
    for steps, iters, tol in ((10, 25, 1e-6), (100, 6, 1e-8)):
        x_T = ddim_invert(_gauss_eps, x0, SCH, steps, fixed_point_iters=iters, grid=grid, **NO_CLIP)
        rec = ddim_sample(_gauss_eps, x_T, SCH, steps, grid=grid, **NO_CLIP)
        assert (rec - x0).abs().max().item() < tol
    with pytest.raises(ValueError):
        ddim_invert(_gauss_eps, x0, SCH, 10, fixed_point_iters=-1)


def _unit_eps(x, t):  # exact E[eps | x_t] for unit-variance data x0 ~ N(0, 1)
    return extract(SCH.sqrt_one_minus_alphas_cumprod, t, x) * x


def test_authors_clamp_on_unit_variance_latents():
    """Fidelity review, section 3 (toy, N = 100): with the authors' clamp the inverted x_T of unit-variance latents
    has std ~39 (elements beyond +-1 turn into outliers: the first inversion step multiplies the clamp residual by
    1/sqrt(1/abar_0 - 1) = 100), generation from noise shrinks to std ~0.72, the round trip stays close (~0.016 RMSE);
    without the clamp x_T ~ N(0, 1) (std ~0.98) and the round trip RMSE is ~0.036."""
    torch.manual_seed(0)
    z0 = torch.randn(8, 1, 8, 8, 8, dtype=F64)
    noise = torch.randn_like(z0)
    found = {}
    for name, clip in (("clamp", (-1.0, 1.0)), ("none", None)):
        x_T = ddim_invert(_unit_eps, z0, SCH, 100, clip_x0=clip)
        rec = ddim_sample(_unit_eps, x_T, SCH, 100, clip_x0=clip)
        gen = ddim_sample(_unit_eps, noise, SCH, 100, clip_x0=clip)
        found[name] = {
            "x_T std": x_T.std().item(),
            "outliers": (x_T.abs() > 4).double().mean().item(),
            "rmse": (rec - z0).pow(2).mean().sqrt().item(),
            "gen std": gen.std().item(),
        }
    clamp, none = found["clamp"], found["none"]
    beyond = (z0.abs() > 1).double().mean().item()  # ~0.32
    assert 25 < clamp["x_T std"] < 60 and clamp["outliers"] == pytest.approx(beyond, abs=0.05), found
    assert 0.65 < clamp["gen std"] < 0.8 and clamp["rmse"] < 0.03, found
    assert 0.9 < none["x_T std"] < 1.1 and none["outliers"] < 0.01, found
    assert 0.9 < none["gen std"] < 1.1 and 0.02 < none["rmse"] < 0.06, found
    # latents inside +-1 never meet the clamp: the two samplers agree
    small = 0.25 * z0.clamp(-3.9, 3.9)
    assert torch.allclose(ddim_invert(_unit_eps, small, SCH, 20), ddim_invert(_unit_eps, small, SCH, 20, **NO_CLIP))


@pytest.mark.parametrize("grid", ["authors", "exact"])
def test_ddim_generation_matches_data_distribution(grid):
    torch.manual_seed(0)
    x = ddim_sample(_gauss_eps, torch.randn(20000, 1, dtype=F64), SCH, 50, grid=grid, **NO_CLIP)
    assert x.mean().item() == pytest.approx(MU, abs=0.03) and x.std().item() == pytest.approx(S, abs=0.03)


def test_guided_eps_fn_modes():
    torch.manual_seed(0)
    x, y = torch.randn(3, 1, 2, 2, 2, dtype=F64), torch.randn(3, 8, dtype=F64)
    t = torch.tensor([0, 100, 900])
    g = torch.randn_like(x)

    def est(x_t, tt, y_sem, return_eps=False):
        return (g, 2 * x_t) if return_eps else g

    b = extract(SCH.sqrt_one_minus_alphas_cumprod, t, x)
    assert torch.allclose(guided_eps_fn(est, y, SCH, "score")(x, t), 2 * x - b * g)
    assert torch.allclose(guided_eps_fn(est, y, SCH, "pdae")(x, t), 2 * x + extract(SCH.pdae_shift, t, x) * g)
    assert torch.allclose(guided_eps_fn(est, y, SCH, "none")(x, t), 2 * x)
    assert torch.allclose(guided_eps_fn(est, y, SCH, "score", scale=0.0)(x, t), 2 * x)
    with pytest.raises(ValueError):
        guided_eps_fn(est, y, SCH, "bogus")


def test_guided_ddim_with_analytic_estimator_reconstructs_conditionally():
    """Guided DDIM from pure noise lands near the conditional mean y (x0 | y ~ N(y, sn^2))."""
    torch.manual_seed(3)
    y = torch.randn(2000, 1, dtype=F64)

    class Est:
        def __call__(self, x_t, t, y_sem, return_eps=False):
            return _grad_log_p_y_given_xt(x_t, t, y_sem.reshape(x_t.shape)), _eps_uncond(x_t, t)

    x = ddim_sample(guided_eps_fn(Est(), y, SCH, "score"), torch.randn_like(y), SCH, 50, **NO_CLIP)
    resid = x - y
    assert abs(resid.mean().item()) < 0.03 and resid.std().item() == pytest.approx(SN, abs=0.03)


# ---- interpolation -----------------------------------------------------------------------------------------------


def test_lerp_slerp():
    torch.manual_seed(0)
    a, b = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    for f in (lerp, slerp):
        assert torch.allclose(f(a, b, 0.0), a, atol=1e-5) and torch.allclose(f(a, b, 1.0), b, atol=1e-5)
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    mid = slerp(e1, e2, 0.5)
    assert torch.allclose(mid, torch.tensor([[1.0, 1.0]]) / math.sqrt(2), atol=1e-6)
    assert lerp(e1, e2, 0.5).norm().item() == pytest.approx(math.sqrt(0.5))
    # equal-norm high-dimensional vectors: slerp keeps the norm, lerp shrinks it
    u, v = torch.randn(2, 5000), torch.randn(2, 5000)
    v = v / v.norm(dim=1, keepdim=True) * u.norm(dim=1, keepdim=True)
    for al in (0.25, 0.5, 0.8):
        assert torch.allclose(slerp(u, v, al).norm(dim=1), u.norm(dim=1), rtol=1e-4)
        assert torch.all(lerp(u, v, al).norm(dim=1) < 0.95 * u.norm(dim=1))
    # per-sample alpha, 1-D input, near-parallel fallback stays finite and equals lerp
    out = slerp(a, b, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(out[0], a[0], atol=1e-5) and torch.allclose(out[2], b[2], atol=1e-5)
    w = torch.randn(10)
    assert torch.allclose(slerp(w, 2 * w, 0.5), lerp(w, 2 * w, 0.5)) and torch.isfinite(slerp(w, w, 0.3)).all()
    assert torch.isfinite(slerp(torch.zeros(1, 4), torch.ones(1, 4), 0.5)).all()
    with pytest.raises(ValueError):
        slerp(a, b[:2], 0.5)


def test_alpha_from_months():
    assert alpha_from_months(0, 6, 24) == pytest.approx(0.25)
    assert torch.allclose(
        alpha_from_months(torch.tensor([0, 12]), torch.tensor([12, 18]), torch.tensor([24, 36])),
        torch.tensor([0.5, 0.25], dtype=F64),
    )
    with pytest.raises(ValueError):
        alpha_from_months(0, 30, 24)
    with pytest.raises(ValueError):
        alpha_from_months(12, 12, 12)
