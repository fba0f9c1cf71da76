"""``inertia.optim``: energy restarts and FIRE against references computed independently.

* Restarts: every step, the test copies ``theta_k`` and the gradient before the step and decides
  the rule itself from parameters, gradients, losses and (speed rule) PyTorch's documented
  state, never from the tracker's mappings; the wrapper must restart after exactly those steps,
  and a NumPy heavy ball with restarts must reproduce its trajectory.
* ``torch.optim.Optimizer`` behaviour: state dict round trips (bit-identical continuation),
  shared parameter groups, schedulers, closures, hooks, validation.
* FIRE: a NumPy implementation written from Bitzek et al. (2006) and ASE's ``FIRE`` on the 2-D
  Rosenbrock function and a 13-atom Lennard-Jones cluster (known minimum -44.326801).
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inertia.optim import FIRE, EnergyRestart  # noqa: E402

F64 = torch.float64
LAM = np.array([1.0, 4.0, 30.0, 100.0])  # eigenvalues of the test quadratic


def rotated_quadratic(lam: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``A = Q diag(lam) Q^T`` and a start ``theta_0`` (NumPy float64)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(lam), len(lam))))
    return (q * lam) @ q.T, rng.standard_normal(len(lam))


class Problem:
    """``L = 1/2 theta^T A theta + c^T theta`` over two parameters (sizes 1 and 3)."""

    def __init__(self, seed: int = 0, lam: np.ndarray = LAM) -> None:
        self.a_np, self.theta0 = rotated_quadratic(lam, seed)
        self.c_np = 0.2 * np.random.default_rng(seed + 1).standard_normal(len(lam))
        self.a = torch.tensor(self.a_np, dtype=F64)
        self.c = torch.tensor(self.c_np, dtype=F64)

    def params(self) -> list[Any]:
        return [torch.nn.Parameter(torch.tensor(x, dtype=F64)) for x in np.split(self.theta0, [1])]

    def loss(self, params: list[Any]) -> Any:
        theta = torch.cat([p.reshape(-1) for p in params])
        return 0.5 * theta @ self.a @ theta + self.c @ theta


def flat(tensors: list[Any]) -> np.ndarray:
    return torch.cat([t.detach().reshape(-1) for t in tensors]).numpy().copy()


OPTIMIZERS = {
    "heavy_ball": (torch.optim.SGD, {"lr": 0.004, "momentum": 0.95}),
    "dampening_wd": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.05}),
    "nesterov": (torch.optim.SGD, {"lr": 0.008, "momentum": 0.9, "nesterov": True}),
    "nesterov_foreach_wd": (
        torch.optim.SGD,
        {"lr": 0.008, "momentum": 0.9, "nesterov": True, "foreach": True, "weight_decay": 0.02},
    ),
    "nesterov_foreach": (torch.optim.SGD, {"lr": 0.008, "momentum": 0.9, "nesterov": True, "foreach": True}),
    "adam": (torch.optim.Adam, {"lr": 0.2, "betas": (0.9, 0.99)}),
    "adam_l2": (torch.optim.Adam, {"lr": 0.2, "weight_decay": 0.1}),
    "adamw": (torch.optim.AdamW, {"lr": 0.1, "weight_decay": 0.1}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 0.012, "momentum": 0.9}),
    "rmsprop_centered_wd": (
        torch.optim.RMSprop,
        {"lr": 0.012, "momentum": 0.9, "centered": True, "weight_decay": 0.05},
    ),
}


def weight_decay_gradient(opt: Any, grads: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``G_k = grad L + wd theta_k`` (every supported optimizer: the potential's gradient)."""
    wd = opt.param_groups[0]["weight_decay"]
    return grads + wd * theta


def drive(
    wrapped: EnergyRestart, problem: Problem, params: list[Any], n_steps: int
) -> tuple[list[int], list[float], list[np.ndarray], list[float]]:
    """Run ``n_steps``; return the steps after which the *test* says the gradient rule fires, the
    cosines ``<G_k, dtheta_k> / (|G_k| |dtheta_k|)``, the thetas and the losses."""
    fired, powers, scales, thetas, losses = [], [], [], [flat(params)], []
    for k in range(n_steps):
        wrapped.zero_grad()
        loss = problem.loss(params)
        loss.backward()
        theta, grads = flat(params), flat([p.grad for p in params])
        g = weight_decay_gradient(wrapped, grads, theta)
        wrapped.step()
        dtheta = flat(params) - theta
        powers.append(float(g @ dtheta))
        scales.append(float(np.linalg.norm(g) * np.linalg.norm(dtheta)))
        if powers[-1] > 0:
            fired.append(k)
        thetas.append(flat(params))
        losses.append(float(loss.detach()))
    return fired, [p / s for p, s in zip(powers, scales, strict=True)], thetas, losses


# ---------------------------------------------------------------------------------- gradient rule


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_gradient_rule_fires_exactly_when_the_force_does_negative_work(name: str) -> None:
    cls, kwargs = OPTIMIZERS[name]
    problem = Problem(seed=1)
    params = problem.params()
    wrapped = EnergyRestart(cls(params, **kwargs), rule="gradient")
    fired, cosines, _, _ = drive(wrapped, problem, params, 120)
    assert wrapped.restarts == fired
    assert 3 <= len(fired) < 100  # the rule is exercised both ways
    assert min(abs(x) for x in cosines) > 1e-6  # no decision rests on rounding


@pytest.mark.parametrize("name", ["heavy_ball", "nesterov_foreach", "adam", "rmsprop"])
def test_restart_zeroes_the_momentum_and_keeps_the_rest(name: str) -> None:
    cls, kwargs = OPTIMIZERS[name]
    problem = Problem(seed=2)
    params = problem.params()
    wrapped = EnergyRestart(cls(params, **kwargs))
    key = "exp_avg" if cls is not torch.optim.SGD and cls is not torch.optim.RMSprop else "momentum_buffer"
    fired: list[int] = []
    wrapped.register_restart_hook(lambda opt, k: fired.append(k))
    for k in range(80):
        wrapped.zero_grad()
        problem.loss(params).backward()
        identity = [wrapped.state[p].get(key) for p in params]
        wrapped.step()
        restarted = bool(wrapped.restarts) and wrapped.restarts[-1] == k
        assert fired == wrapped.restarts
        for p, same in zip(params, identity, strict=True):
            st = wrapped.state[p]
            assert (torch.count_nonzero(st[key]) == 0) == restarted
            if same is not None:
                assert st[key] is same  # zeroed in place, never replaced
            if restarted:  # the metric and the step count are kept
                for other in ("exp_avg_sq", "square_avg"):
                    assert other not in st or torch.count_nonzero(st[other]) > 0
                assert "step" not in st or float(st["step"]) == k + 1
    assert len(wrapped.restarts) >= 2


def heavy_ball_with_restarts(
    a: np.ndarray, c: np.ndarray, theta0: np.ndarray, lr: float, mu: float, n_steps: int, rule: str
) -> tuple[np.ndarray, list[int]]:
    """THEORY.md section 6's heavy ball (``b <- mu b + g``, ``theta <- theta - lr b``) in NumPy,
    with the momentum zeroed after step ``k`` when the rule fires."""
    theta, b = theta0.copy(), np.zeros_like(theta0)
    restarts: list[int] = []
    kinetic_prev, loss_prev = 0.0, math.inf
    for k in range(n_steps):
        loss = 0.5 * theta @ a @ theta + c @ theta
        if rule == "function" and k > 0 and loss > loss_prev:
            b[:] = 0.0
            restarts.append(k - 1)
        loss_prev = loss
        g = a @ theta + c
        b = mu * b + g
        step = -lr * b
        theta = theta + step
        kinetic = 0.5 * (step @ step) / lr  # K = |v|^2 / 2 with v = dtheta / sqrt(lr)
        if (rule == "gradient" and g @ step > 0) or (rule == "speed" and kinetic < kinetic_prev):
            b[:] = 0.0
            restarts.append(k)
            kinetic = 0.0
        kinetic_prev = kinetic
    return theta, restarts


@pytest.mark.parametrize("rule", ["gradient", "speed", "function"])
def test_heavy_ball_with_restarts_matches_numpy(rule: str) -> None:
    problem = Problem(seed=3, lam=np.array([0.5, 3.0, 20.0, 80.0]))
    params = problem.params()
    lr, mu = 0.006, 0.97
    wrapped = EnergyRestart(torch.optim.SGD(params, lr=lr, momentum=mu), rule=rule)

    def closure() -> Any:
        wrapped.zero_grad()
        loss = problem.loss(params)
        loss.backward()
        return loss

    for _ in range(150):
        wrapped.step(closure)
    expected, restarts = heavy_ball_with_restarts(
        problem.a_np, problem.c_np, problem.theta0, lr, mu, 150, rule
    )
    assert wrapped.restarts == restarts and len(restarts) >= 3
    np.testing.assert_allclose(flat(params), expected, rtol=1e-10, atol=1e-12)
    # without the restarts the run ends elsewhere: the comparison has teeth
    late, _ = heavy_ball_with_restarts(problem.a_np, problem.c_np, problem.theta0, lr, mu, 150, "none")
    assert np.abs(late - expected).max() > 1e-4


def adam_kinetic(opt: Any, params: list[Any]) -> float:
    """``K = c^2/2 sum m^2 / M`` from Adam's documented state (``c^2 = lr / ((1 - b1) bc1)``,
    ``M = sqrt(s / bc2) + eps``), written here independently of :mod:`inertia.track.adam`."""
    group = opt.param_groups[0]
    b1, b2 = group["betas"]
    total = 0.0
    for p in params:
        st = opt.state[p]
        t = float(st["step"])
        m, s = st["exp_avg"].numpy(), st["exp_avg_sq"].numpy()
        metric = np.sqrt(s / (1 - b2**t)) + group["eps"]
        total += 0.5 * group["lr"] / ((1 - b1) * (1 - b1**t)) * float(np.sum(m * m / metric))
    return total


def test_speed_rule_on_adam_follows_the_kinetic_energy_of_its_state() -> None:
    problem = Problem(seed=4)
    params = problem.params()
    inner = torch.optim.Adam(params, lr=0.05)
    wrapped = EnergyRestart(inner, rule="speed")
    expected, prev = [], 0.0
    for k in range(100):
        wrapped.zero_grad()
        problem.loss(params).backward()
        n = len(wrapped.restarts)
        # the state after the inner step, read before the wrapper acts: replay the step on a copy
        shadow = torch.optim.Adam([torch.nn.Parameter(p.detach().clone()) for p in params], lr=0.05)
        shadow.load_state_dict(copy.deepcopy(inner.state_dict()))
        for sp, p in zip(shadow.param_groups[0]["params"], params, strict=True):
            sp.grad = p.grad.clone()
        shadow.step()
        kinetic = adam_kinetic(shadow, shadow.param_groups[0]["params"])
        wrapped.step()
        if kinetic < prev:
            expected.append(k)
            kinetic = 0.0
        prev = kinetic
        assert len(wrapped.restarts) - n == (1 if expected and expected[-1] == k else 0)
    assert wrapped.restarts == expected and len(expected) >= 3


def test_function_rule_uses_the_loss_keyword_or_the_closure() -> None:
    problem = Problem(seed=5)
    runs = []
    for use_closure in (True, False):
        params = problem.params()
        wrapped = EnergyRestart(torch.optim.Adam(params, lr=0.1), rule="function")
        losses = []
        for _ in range(60):
            if use_closure:

                def closure(wrapped: Any = wrapped, params: Any = params) -> Any:
                    wrapped.zero_grad()
                    loss = problem.loss(params)
                    loss.backward()
                    return loss

                losses.append(float(wrapped.step(closure).detach()))
            else:
                wrapped.zero_grad()
                loss = problem.loss(params)
                loss.backward()
                assert wrapped.step(loss=loss.detach()) is None
                losses.append(float(loss.detach()))
        expected = [k - 1 for k in range(1, 60) if losses[k] > losses[k - 1]]
        assert wrapped.restarts == expected and len(expected) >= 2
        runs.append(flat(params))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_min_interval_spaces_the_restarts() -> None:
    problem = Problem(seed=1)
    counts = {}
    for interval in (1, 7):
        params = problem.params()
        wrapped = EnergyRestart(torch.optim.SGD(params, lr=0.008, momentum=0.95), min_interval=interval)
        drive(wrapped, problem, params, 150)
        gaps = np.diff(wrapped.restarts)
        assert (gaps >= interval).all()
        counts[interval] = len(wrapped.restarts)
    assert counts[7] < counts[1]


def test_restart_helps_heavy_ball_on_an_ill_conditioned_quadratic() -> None:
    """Condition number 1e3, momentum tuned for the stiff end: the gradient rule reaches
    ``L - L* < 1e-10`` in far fewer steps than plain heavy ball (deterministic)."""
    lam = np.geomspace(1e-3, 1.0, 20)
    a, theta0 = rotated_quadratic(lam, seed=7)
    steps = {}
    for wrap in (False, True):
        theta = torch.nn.Parameter(torch.tensor(theta0, dtype=F64))
        opt: Any = torch.optim.SGD([theta], lr=0.5, momentum=0.99)
        opt = EnergyRestart(opt) if wrap else opt
        at = torch.tensor(a, dtype=F64)
        steps[wrap] = 20000
        for k in range(20000):
            opt.zero_grad()
            loss = 0.5 * theta @ at @ theta
            if float(loss.detach()) < 1e-10:
                steps[wrap] = k
                break
            loss.backward()
            opt.step()
    assert steps[True] < 0.5 * steps[False], steps


def test_a_restart_cycle_can_grow_a_stiff_mode() -> None:
    """The docstring's warning: ``eta lam = 0.9``, ``mu = 0.99``: restarts every third step,
    each cycle multiplies the mode by ``-1.059``; plain heavy ball decays."""
    finals = {}
    for wrap in (False, True):
        x = torch.nn.Parameter(torch.tensor([1.0], dtype=F64))
        opt: Any = torch.optim.SGD([x], lr=0.9, momentum=0.99)
        opt = EnergyRestart(opt) if wrap else opt
        trace = []
        for _ in range(30):
            opt.zero_grad()
            (0.5 * x * x).sum().backward()
            opt.step()
            trace.append(float(x))
        finals[wrap] = trace
        if wrap:
            assert opt.restarts == list(range(2, 30, 3))
    wrapped = finals[True]
    ratios = [wrapped[k + 3] / wrapped[k] for k in range(2, 24, 3)]
    np.testing.assert_allclose(ratios, -1.059, atol=1e-3)
    assert abs(finals[False][-1]) < 1.0 < abs(wrapped[-1])


# ---------------------------------------------------------------------------------- a real Optimizer


def run(wrapped: EnergyRestart, problem: Problem, params: list[Any], n_steps: int) -> None:
    for _ in range(n_steps):
        wrapped.zero_grad()
        problem.loss(params).backward()
        wrapped.step()


@pytest.mark.parametrize("rule", ["gradient", "speed"])
def test_state_dict_round_trip_continues_bit_for_bit(rule: str) -> None:
    problem = Problem(seed=6)
    params = problem.params()
    wrapped = EnergyRestart(torch.optim.Adam(params, lr=0.2), rule=rule)
    run(wrapped, problem, params, 37)
    saved = copy.deepcopy(wrapped.state_dict())
    theta_saved = [p.detach().clone() for p in params]
    run(wrapped, problem, params, 50)

    params2 = [torch.nn.Parameter(t.clone()) for t in theta_saved]
    again = EnergyRestart(torch.optim.Adam(params2, lr=0.2), rule=rule)
    again.load_state_dict(saved)
    run(again, problem, params2, 50)
    for p, q in zip(params, params2, strict=True):
        assert torch.equal(p, q)
    assert again.restarts == wrapped.restarts and again.n_steps == wrapped.n_steps == 87
    assert len(wrapped.restarts) > 2


def test_state_dicts_interoperate_with_the_bare_optimizer() -> None:
    problem = Problem(seed=6)
    params = problem.params()
    wrapped = EnergyRestart(torch.optim.SGD(params, lr=0.01, momentum=0.9))
    run(wrapped, problem, params, 10)
    sd = wrapped.state_dict()
    assert sd["energy_restart"]["rule"] == "gradient"
    bare = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    bare.load_state_dict(sd)  # the extra entry is ignored by torch
    assert bare.state_dict()["state"].keys() == sd["state"].keys()
    fresh = EnergyRestart(torch.optim.SGD(params, lr=0.01, momentum=0.9))
    fresh.load_state_dict(bare.state_dict())
    assert fresh.restarts == [] and fresh.n_steps == 0
    assert torch.equal(fresh.state[params[0]]["momentum_buffer"], wrapped.state[params[0]]["momentum_buffer"])
    other = EnergyRestart(torch.optim.SGD(params, lr=0.01, momentum=0.9), rule="speed")
    with pytest.raises(ValueError, match="rule='gradient'"):
        other.load_state_dict(sd)


def test_param_groups_state_and_schedulers_are_shared() -> None:
    problem = Problem(seed=0)
    params = problem.params()
    inner = torch.optim.SGD(
        [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.002}], lr=0.01, momentum=0.9
    )
    wrapped = EnergyRestart(inner)
    assert isinstance(wrapped, torch.optim.Optimizer)
    assert wrapped.param_groups is inner.param_groups and wrapped.state is inner.state
    assert wrapped.defaults is inner.defaults
    sched = torch.optim.lr_scheduler.StepLR(wrapped, step_size=2, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()"
        for _ in range(4):
            run(wrapped, problem, params, 1)
            sched.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.0025)
    assert inner.param_groups[1]["lr"] == pytest.approx(0.0005)
    extra = torch.nn.Parameter(torch.zeros(2, dtype=F64))
    wrapped.add_param_group({"params": [extra], "lr": 0.1})
    assert len(inner.param_groups) == 3 and inner.param_groups[2]["momentum"] == 0.9
    with pytest.raises(ValueError, match="parameter group 3 has momentum = 0"):
        wrapped.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "momentum": 0.0})
    assert len(inner.param_groups) == 3
    # state loaded into the inner optimizer (new state objects) is seen through the wrapper
    inner.load_state_dict(inner.state_dict())
    assert wrapped.state is inner.state and wrapped.param_groups is inner.param_groups


def test_step_hooks_closure_and_zero_grad() -> None:
    problem = Problem(seed=0)
    params = problem.params()
    wrapped = EnergyRestart(torch.optim.SGD(params, lr=0.01, momentum=0.9))
    seen = []
    wrapped.register_step_pre_hook(lambda opt, args, kwargs: seen.append("pre"))
    wrapped.register_step_post_hook(lambda opt, args, kwargs: seen.append("post"))
    calls = []

    def closure() -> Any:
        calls.append(torch.is_grad_enabled())
        wrapped.zero_grad()
        loss = problem.loss(params)
        loss.backward()
        return loss

    out = wrapped.step(closure)
    assert calls == [True] and seen == ["pre", "post"] and out.requires_grad
    wrapped.zero_grad()
    assert all(p.grad is None for p in params)
    handle = wrapped.register_restart_hook(lambda opt, k: calls.append(k))
    handle.remove()
    assert not wrapped._restart_hooks
    assert "rule='gradient'" in repr(wrapped)


def test_validation() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=r"`rule` must be one of .*got 'power'"):
        EnergyRestart(torch.optim.SGD([p], lr=0.1, momentum=0.9), rule="power")
    with pytest.raises(ValueError, match="`min_interval` must be >= 1, got 0"):
        EnergyRestart(torch.optim.SGD([p], lr=0.1, momentum=0.9), min_interval=0)
    with pytest.raises(ValueError, match="parameter group 0 has momentum = 0"):
        EnergyRestart(torch.optim.SGD([p], lr=0.1))
    with pytest.raises(ValueError, match=r"betas\[0\] = 0"):
        EnergyRestart(torch.optim.Adam([p], betas=(0.0, 0.9)))
    with pytest.raises(TypeError, match=r"no mapping for LBFGS.*register_mapping"):
        EnergyRestart(torch.optim.LBFGS([p]))
    with pytest.raises(TypeError, match=r"must be a torch\.optim\.Optimizer"):
        EnergyRestart([p])  # type: ignore[arg-type]
    wrapped = EnergyRestart(torch.optim.SGD([p], lr=0.1, momentum=0.9), rule="function")
    with pytest.raises(TypeError, match="already an EnergyRestart"):
        EnergyRestart(wrapped)
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match=r"rule='function' needs the loss.*step\(loss=loss\)"):
        wrapped.step()


# ---------------------------------------------------------------------------------- FIRE


def fire_reference(
    grad: Any,
    x0: np.ndarray,
    dt: float,
    n_steps: int,
    dt_max: float,
    n_min: int = 5,
    f_inc: float = 1.1,
    f_dec: float = 0.5,
    a_start: float = 0.1,
    f_a: float = 0.99,
) -> tuple[np.ndarray, list[float]]:
    """FIRE as in Bitzek et al. (2006) and ASE's ``ase.optimize.FIRE`` (without its ``maxstep``),
    in NumPy float64: the velocity starts at zero and the power is not tested on the first step."""
    x = x0.copy()
    v = None
    a, n_pos = a_start, 0
    dts = []
    for _ in range(n_steps):
        f = -grad(x)
        if v is None:
            v = np.zeros_like(x)
        else:
            vf = float(np.vdot(f, v))
            if vf > 0.0:
                v = (1.0 - a) * v + a * f / np.sqrt(np.vdot(f, f)) * np.sqrt(np.vdot(v, v))
                if n_pos > n_min:
                    dt = min(dt * f_inc, dt_max)
                    a *= f_a
                n_pos += 1
            else:
                v = v * 0.0
                a = a_start
                dt *= f_dec
                n_pos = 0
        v = v + dt * f
        x = x + dt * v
        dts.append(dt)
    return x, dts


def rosenbrock(x: Any) -> Any:
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def rosenbrock_grad(x: np.ndarray) -> np.ndarray:
    return np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2), 200 * (x[1] - x[0] ** 2)])


def lennard_jones(x: Any) -> Any:
    """``E = sum_{i<j} 4 (r^-12 - r^-6)`` of atoms at ``x.reshape(-1, 3)`` (torch)."""
    pos = x.reshape(-1, 3)
    i, j = torch.triu_indices(len(pos), len(pos), offset=1)
    r2 = ((pos[i] - pos[j]) ** 2).sum(-1)
    inv6 = r2**-3
    return (4 * (inv6 * inv6 - inv6)).sum()


def lennard_jones_grad(x: np.ndarray) -> np.ndarray:
    """The gradient of :func:`lennard_jones`, by hand in NumPy."""
    pos = x.reshape(-1, 3)
    d = pos[:, None, :] - pos[None, :, :]
    r2 = (d**2).sum(-1) + np.eye(len(pos))
    inv6 = r2**-3
    coef = (-48 * inv6 * inv6 + 24 * inv6) / r2
    np.fill_diagonal(coef, 0.0)
    return (coef[:, :, None] * d).sum(1).reshape(-1)


def icosahedron(perturb: float, seed: int) -> np.ndarray:
    """13 atoms: a centre and an icosahedral shell of radius 1.1, jiggled."""
    phi = (1 + 5**0.5) / 2
    verts = [(0, s1, s2 * phi) for s1 in (-1, 1) for s2 in (-1, 1)]
    verts = [np.roll(v, r) for v in verts for r in range(3)]
    shell = np.array(verts, dtype=float)
    shell *= 1.1 / np.linalg.norm(shell[0])
    pos = np.vstack([np.zeros(3), shell])
    return (pos + perturb * np.random.default_rng(seed).standard_normal(pos.shape)).reshape(-1)


def run_fire(loss_fn: Any, x0: np.ndarray, n_steps: int, **kwargs: Any) -> tuple[Any, list[float], Any]:
    x = torch.nn.Parameter(torch.tensor(x0, dtype=F64))
    opt = FIRE([x], **kwargs)
    dts = []
    for _ in range(n_steps):
        opt.zero_grad()
        loss_fn(x).backward()
        opt.step()
        dts.append(opt.param_groups[0]["dt"])
    return x, dts, opt


def test_fire_matches_the_reference_on_rosenbrock() -> None:
    x0 = np.array([-1.2, 1.0])
    x, dts, _ = run_fire(rosenbrock, x0, 600, lr=0.003)
    ref, ref_dts = fire_reference(rosenbrock_grad, x0, 0.003, 600, dt_max=0.03)
    np.testing.assert_allclose(x.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dts, ref_dts, rtol=1e-12)
    assert min(dts) < 0.003 and max(dts) == pytest.approx(0.03)  # both branches and the cap
    np.testing.assert_allclose(ref, [1.0, 1.0], atol=1e-4)


def test_fire_relaxes_a_lennard_jones_cluster_like_the_reference() -> None:
    x0 = icosahedron(0.08, seed=0)
    grad = torch.func.grad(lennard_jones)(torch.tensor(x0, dtype=F64)).numpy()
    np.testing.assert_allclose(lennard_jones_grad(x0), grad, rtol=1e-10)  # the hand gradient
    kwargs = {"dt_max": 0.05, "n_min": 4, "f_inc": 1.2, "f_dec": 0.4, "alpha_start": 0.2, "f_alpha": 0.98}
    # 150 steps: |F| falls from 10 to 3e-8 with 14 velocity resets; later the forces reach
    # rounding level and the sign of the power is noise, so trajectories may part there
    x, dts, _ = run_fire(lennard_jones, x0, 150, lr=0.005, **kwargs)
    ref, ref_dts = fire_reference(
        lennard_jones_grad, x0, 0.005, 150, dt_max=0.05, n_min=4, f_inc=1.2, f_dec=0.4, a_start=0.2, f_a=0.98
    )
    np.testing.assert_allclose(x.detach().numpy(), ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(dts, ref_dts, rtol=1e-12)
    assert sum(b < a for a, b in itertools.pairwise(dts)) >= 10
    assert float(lennard_jones(x.detach())) == pytest.approx(-44.326801, abs=1e-6)  # LJ13's minimum
    assert np.abs(lennard_jones_grad(ref)).max() < 1e-6


def test_fire_state_dict_groups_and_validation() -> None:
    x0 = np.array([-1.2, 1.0])
    full, _, _ = run_fire(rosenbrock, x0, 80, lr=0.003)
    part, _, opt = run_fire(rosenbrock, x0, 40, lr=0.003)
    saved = copy.deepcopy(opt.state_dict())
    x = torch.nn.Parameter(part.detach().clone())
    again = FIRE([x], lr=0.003)
    again.load_state_dict(saved)
    for _ in range(40):
        again.zero_grad()
        rosenbrock(x).backward()
        again.step()
    assert torch.equal(x, full)
    # two groups: two controllers, each as if alone
    a = torch.nn.Parameter(torch.tensor([3.0], dtype=F64))
    b = torch.nn.Parameter(torch.tensor([-1.2, 1.0], dtype=F64))
    two = FIRE([{"params": [a], "lr": 0.1}, {"params": [b]}], lr=0.003)
    for _ in range(100):
        two.zero_grad()
        ((a * a).sum() + rosenbrock(b)).backward()
        two.step()
    alone, _, _ = run_fire(rosenbrock, x0, 100, lr=0.003)
    assert torch.equal(b, alone) and two.param_groups[0]["dt_max"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="`lr` must be > 0, got 0"):
        FIRE([a], lr=0)
    with pytest.raises(ValueError, match="`dt_max` must be >= `lr`"):
        FIRE([a], lr=0.1, dt_max=0.01)
    with pytest.raises(TypeError, match="`lr` must be a real number"):
        FIRE([a], lr="fast")
    with pytest.raises(ValueError, match="`dt_max` must be >= `lr`"):
        two.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0, "dt_max": 0.5})
    assert len(two.param_groups) == 2
    with pytest.raises(ValueError, match=r"`f_dec` must be < 1, got 1\.5"):
        FIRE([a], lr=0.1, f_dec=1.5)
    with pytest.raises(ValueError, match=r"`n_min` must be >= 0, got -1"):
        FIRE([a], lr=0.1, n_min=-1)
    with pytest.raises(ValueError, match=r"`f_inc` must be >= 1, got 0\.9"):
        FIRE([a], lr=0.1, f_inc=0.9)
    with pytest.raises(ValueError, match=r"`alpha_start` must be <= 1, got 2\.0"):
        FIRE([a], lr=0.1, alpha_start=2.0)
    with pytest.raises(ValueError, match=r"`f_alpha` must be > 0, got 0\.0"):
        FIRE([a], lr=0.1, f_alpha=0.0)


# ---------------------------------------------------------------------------------- with the tracker


@pytest.mark.parametrize(
    ("name", "rule", "every"),
    [
        ("heavy_ball", "gradient", 1),
        ("dampening_wd", "gradient", 1),
        ("nesterov_foreach", "gradient", 1),
        ("adamw", "gradient", 1),
        ("rmsprop_centered_wd", "speed", 1),
        ("adam", "function", 1),
        ("heavy_ball", "gradient", 2),
        ("adam", "gradient", 3),
    ],
)
def test_tracker_books_each_restart_and_the_ledger_closes(name: str, rule: str, every: int) -> None:
    from inertia.track import InertiaTracker

    cls, kwargs = OPTIMIZERS[name]
    problem = Problem(seed=1)
    params = problem.params()
    wrapped = EnergyRestart(cls(params, **kwargs), rule=rule)
    tracker = InertiaTracker(wrapped, every=every)
    assert tracker.optimizer is wrapped.optimizer
    thetas = [flat(params)]
    for _ in range(120):
        wrapped.zero_grad()
        loss = problem.loss(params)
        loss.backward()
        wrapped.step(loss=loss.detach())
        tracker.record(loss)
        thetas.append(flat(params))
    tracker.close()
    hist = tracker.history.set_index("step")
    ledger = hist.iloc[1:]
    terms = ["schedule", "metric", "friction", "numerical", "decay", "curvature", "restart"]
    scale = ledger[terms].abs().max(axis=1).combine(ledger["inertia"].abs(), max)
    assert (ledger["residual"].abs() / scale).max() < 1e-11
    booked = [k for k in ledger.index if ledger.loc[k, "restart"] != 0.0]
    expected = [k + 1 for k in wrapped.restarts if (k + 1) % every == 0 and k + 1 < 120]
    assert booked == expected and len(booked) >= 2
    assert (ledger.loc[booked, "kinetic"] == 0.0).all()
    # without the restart term the ledger would not close: the column carries real energy
    assert (ledger.loc[booked, "restart"].abs() / scale[booked]).max() > 1e-2
    if name == "heavy_ball":  # K_{k+1} = |theta_{k+1} - theta_k|^2 / (2 lr), from the displacement
        lr = kwargs["lr"]
        removed = [float(np.sum((thetas[k] - thetas[k - 1]) ** 2)) / (2 * lr) for k in booked]
        np.testing.assert_allclose(-ledger.loc[booked, "restart"], removed, rtol=1e-10)
    assert not wrapped._restart_hooks  # close() removed the tracker's hook


def test_tracker_without_restarts_books_zero() -> None:
    from inertia.track import InertiaTracker

    problem = Problem(seed=1)
    params = problem.params()
    opt = torch.optim.SGD(params, lr=0.004, momentum=0.95)
    tracker = InertiaTracker(opt)
    for _ in range(20):
        opt.zero_grad()
        loss = problem.loss(params)
        loss.backward()
        opt.step()
        tracker.record(loss)
    hist = tracker.history
    assert math.isnan(hist["restart"].iloc[0]) and (hist["restart"].iloc[1:] == 0.0).all()
