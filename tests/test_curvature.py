"""``inertia.curvature`` against independent references (issue 12, items 1, 2 and 4).

References: exact spectra of quadratics, dense Hessians from ``torch.autograd.functional.hessian``
(of a ``torch.func.functional_call`` of the network, never through the library) and
``numpy.linalg.eigvalsh``; preconditioners recomputed from the optimizer state by hand; the
stability thresholds by simulating the optimizers themselves on a one-dimensional quadratic.
Each test carries a power control: a deliberately wrong variant that the same assertion rejects.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inertia import curvature  # noqa: E402

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    """Tiny networks: one intra-op thread (two threads on a loaded 2-core box are ~30x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))


# ------------------------------------------------------------------ quadratics


def _quadratic(eigs: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    n = len(eigs)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    a = q @ torch.diag(torch.tensor(eigs, dtype=F64)) @ q.T
    w = torch.randn(n, generator=g, dtype=F64).requires_grad_()
    return a, w, np.sort(np.asarray(eigs))[::-1]


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_quadratic_exact(method: str) -> None:
    a, w, exact = _quadratic([10.0, 7.0, 4.0, 2.0, 1.0, 0.5, 0.1, 0.01])

    def f() -> torch.Tensor:
        return 0.5 * w @ a @ w + (w**2).sum() * 0.0

    got = curvature.top_eigenvalues(f, [w], k=3, method=method, tol=1e-13, max_iter=2000)
    assert isinstance(got, np.ndarray) and got.shape == (3,)
    assert list(got) == sorted(got, reverse=True)
    assert rel(got, exact[:3]) < 1e-9
    # power control: a quadratic with a slightly different top eigenvalue is told apart
    assert rel(got, np.array([10.001, 7.0, 4.0])) > 1e-5


def test_indefinite_lanczos_algebraic_power_magnitude() -> None:
    a, w, _ = _quadratic([3.0, 1.0, -5.0, -0.5])

    def f() -> torch.Tensor:
        return 0.5 * w @ a @ w

    lan = curvature.top_eigenvalues(f, [w], k=2)
    assert np.allclose(lan, [3.0, 1.0], rtol=1e-9)
    pw = curvature.top_eigenvalues(f, [w], k=2, method="power", tol=1e-14, max_iter=3000)
    assert np.allclose(pw, [3.0, -5.0], rtol=1e-8)  # largest |lambda|, sorted descending


def test_dense_eigenvalues_and_hvp() -> None:
    a, w, exact = _quadratic([5.0, 3.0, 1.0])

    def f() -> torch.Tensor:
        return 0.5 * w @ a @ w

    assert np.allclose(curvature.eigenvalues(f, [w]), exact, rtol=1e-12)
    v = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    assert torch.allclose(curvature.hvp(f, [w], [v])[0], a @ v, rtol=1e-12)
    # power control: a perturbed matrix and perturbed eigenvalues are caught
    assert not torch.allclose(
        curvature.hvp(f, [w], [v])[0], (a + 1e-6 * torch.eye(3, dtype=F64)) @ v, rtol=1e-12
    )
    assert not np.allclose(curvature.eigenvalues(f, [w]), exact * (1 + 1e-9), rtol=1e-12, atol=0)


def test_lanczos_reports_non_convergence() -> None:
    a, w, _ = _quadratic([float(i) for i in range(1, 41)])

    def f() -> torch.Tensor:
        return 0.5 * w @ a @ w

    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        curvature.top_eigenvalues(f, [w], k=3, max_iter=3, tol=1e-12)


# ------------------------------------------------------------------ small networks


def _mlp(seed: int = 0, dtype: torch.dtype = F64, sizes: tuple[int, ...] = (8, 24, 24, 3)) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (m, n) in enumerate(itertools.pairwise(sizes)):
        layers.append(torch.nn.Linear(m, n))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers).to(dtype)


def _data(n: int = 64, dtype: torch.dtype = F64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def dense_hessian(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str]) -> np.ndarray:
    """The independent reference: ``torch.autograd.functional.hessian`` over the flat vector of
    the parameters ``names`` (the others held fixed)."""
    base = dict(net.named_parameters())
    shapes = [base[n].shape for n in names]
    sizes = [base[n].numel() for n in names]
    flat0 = torch.cat([base[n].detach().reshape(-1) for n in names])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params = {k: v.detach() for k, v in base.items()}
        for n, chunk, s in zip(names, flat.split(sizes), shapes, strict=True):
            params[n] = chunk.view(s)
        out = torch.func.functional_call(net, params, (x,))
        return torch.nn.functional.cross_entropy(out, y)

    h = torch.autograd.functional.hessian(loss, flat0, vectorize=True)
    h = h.detach().to(F64).numpy()
    return 0.5 * (h + h.T)


def _train(
    net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, n: int
) -> None:
    for _ in range(n):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_mlp_top_eigenvalues_equal_dense(method: str) -> None:
    net = _mlp()
    x, y = _data()
    _train(net, torch.optim.SGD(net.parameters(), lr=0.5), x, y, 20)
    names = [n for n, _ in net.named_parameters()]
    assert sum(p.numel() for p in net.parameters()) > 800
    exact = np.linalg.eigvalsh(dense_hessian(net, x, y, names))[::-1]
    f = curvature.model_loss(net, torch.nn.functional.cross_entropy, (x, y))
    k = 3 if method == "lanczos" else 1
    got = curvature.top_eigenvalues(f, list(net.parameters()), k=k, method=method, tol=1e-12, max_iter=3000)
    assert rel(got, exact[:k]) < 1e-6
    # power control: the Hessian in eval-free form of a different batch is told apart
    other = np.linalg.eigvalsh(dense_hessian(net, x[:48], y[:48], names))[::-1]
    assert rel(other[:k], exact[:k]) > 1e-3


def test_closure_loader_and_forward_over_reverse_agree() -> None:
    net = _mlp(sizes=(8, 12, 3))
    x, y = _data()
    ce = torch.nn.functional.cross_entropy
    params = list(net.parameters())
    ref = curvature.top_eigenvalues(lambda: ce(net(x), y), params, k=2, tol=1e-12)
    loader = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    for loss, mode in [
        (curvature.model_loss(net, ce, (x, y)), "forward_over_reverse"),
        (curvature.model_loss(net, ce, loader), "double_backward"),
        (curvature.model_loss(net, ce, loader), "forward_over_reverse"),
    ]:
        got = curvature.top_eigenvalues(loss, params, k=2, tol=1e-12, mode=mode)
        assert rel(got, ref) < 1e-9, mode
    # power control: an unequal split weighted by batches instead of examples is told apart
    uneven = [(x[:8], y[:8]), (x[8:], y[8:])]

    def by_batch() -> torch.Tensor:
        return 0.5 * (ce(net(uneven[0][0]), uneven[0][1]) + ce(net(uneven[1][0]), uneven[1][1]))

    wrong = curvature.top_eigenvalues(by_batch, params, k=2, tol=1e-12)
    right = curvature.top_eigenvalues(curvature.model_loss(net, ce, uneven), params, k=2, tol=1e-12)
    assert rel(right, ref) < 1e-9 and rel(wrong, ref) > 1e-4


def test_groups_frozen_float32() -> None:
    net = _mlp(sizes=(8, 16, 3))
    x, y = _data()
    net[0].bias.requires_grad_(False)
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    exact = np.linalg.eigvalsh(dense_hessian(net, x, y, trainable))[::-1]
    ce = torch.nn.functional.cross_entropy
    got = curvature.top_eigenvalues(lambda: ce(net(x), y), list(net.parameters()), k=2, tol=1e-12)
    assert rel(got, exact[:2]) < 1e-6
    everything = np.linalg.eigvalsh(dense_hessian(net, x, y, [n for n, _ in net.named_parameters()]))[::-1]
    assert rel(everything[:2], exact[:2]) > 1e-6  # power control: the frozen bias matters
    net32 = _mlp(sizes=(8, 16, 3), dtype=torch.float32)
    net32.load_state_dict({k: v.float() for k, v in net.state_dict().items()})
    net32[0].bias.requires_grad_(False)
    x32 = x.float()
    got32 = curvature.top_eigenvalues(lambda: ce(net32(x32), y), list(net32.parameters()), k=2, tol=1e-5)
    assert rel(got32, exact[:2]) < 1e-4
    # power control: float32 is not float64-exact
    assert rel(got32, exact[:2]) > 1e-12


def test_batchnorm_train_eval_switch_restores_everything() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(8, 10),
        torch.nn.BatchNorm1d(10),
        torch.nn.Tanh(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(10, 3),
    ).double()
    x, y = _data()
    _train(net, torch.optim.SGD(net.parameters(), lr=0.1), x, y, 3)
    net.eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    ce = torch.nn.functional.cross_entropy
    tr = curvature.top_eigenvalues(
        curvature.model_loss(net, ce, (x, y)), list(net.parameters()), k=2, tol=1e-10
    )
    tr2 = curvature.top_eigenvalues(
        curvature.model_loss(net, ce, (x, y)), list(net.parameters()), k=2, tol=1e-10
    )
    ev = curvature.top_eigenvalues(
        curvature.model_loss(net, ce, (x, y), train=False), list(net.parameters()), k=2, tol=1e-10
    )
    assert not net.training
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert np.array_equal(tr, tr2)  # same dropout masks in every product: a fixed operator
    net.eval()
    names = [n for n, _ in net.named_parameters()]
    exact_eval = np.linalg.eigvalsh(dense_hessian(net, x, y, names))[::-1]
    assert rel(ev, exact_eval[:2]) < 1e-6
    assert rel(tr, exact_eval[:2]) > 1e-3  # training mode is a different Hessian


# ------------------------------------------------------------------ preconditioned sharpness


def _by_hand_p(opt: torch.optim.Optimizer, p: torch.Tensor) -> torch.Tensor:
    st, g = opt.state[p], opt.param_groups[0]
    if isinstance(opt, torch.optim.RMSprop):
        s = st["square_avg"] - (st["grad_avg"] ** 2 if g["centered"] else 0.0)
        return torch.sqrt(s) + g["eps"]
    b1, b2 = g["betas"]
    t = float(st["step"])
    s = st["max_exp_avg_sq"] if g["amsgrad"] else st["exp_avg_sq"]
    return (1 - b1**t) * (torch.sqrt(s / (1 - b2**t)) + g["eps"])


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.Adam(ps, lr=0.01),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, amsgrad=True),
        lambda ps: torch.optim.RMSprop(ps, lr=0.003, momentum=0.5, centered=True),
        lambda ps: torch.optim.RMSprop(ps, lr=0.003),
    ],
)
def test_preconditioned_equals_explicit(make: object) -> None:
    net = _mlp(sizes=(8, 16, 3))
    x, y = _data()
    opt = make(net.parameters())  # type: ignore[operator]
    _train(net, opt, x, y, 5)
    names = [n for n, _ in net.named_parameters()]
    h = dense_hessian(net, x, y, names)
    d = torch.cat([_by_hand_p(opt, p).reshape(-1) for p in net.parameters()]).numpy()
    s = 1.0 / np.sqrt(d)
    exact = np.linalg.eigvalsh(s[:, None] * h * s[None, :])[::-1]
    ce = torch.nn.functional.cross_entropy
    got = curvature.top_eigenvalues(
        lambda: ce(net(x), y), list(net.parameters()), k=2, preconditioner=opt, tol=1e-12
    )
    assert rel(got, exact[:2]) < 1e-6
    lists = curvature.top_eigenvalues(
        lambda: ce(net(x), y),
        list(net.parameters()),
        k=2,
        preconditioner=curvature.preconditioner(opt),
        tol=1e-12,
    )
    assert rel(lists, exact[:2]) < 1e-9
    # power control: P^{-1} on one side only (or no P) is a different number
    assert rel(np.linalg.eigvalsh(h)[::-1][:2], exact[:2]) > 1e-2


def test_sgd_preconditioner_is_identity() -> None:
    w = torch.ones(3, dtype=F64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    a = torch.tensor([4.0, 2.0, 1.0], dtype=F64)
    (0.5 * (a * w * w).sum()).backward()
    opt.step()
    got = curvature.top_eigenvalues(lambda: 0.5 * (a * w * w).sum(), [w], k=1, preconditioner=opt)
    assert np.allclose(got, [4.0], rtol=1e-10)
    # power control: an Adam state on the same parameter does precondition (a different number)
    adam = torch.optim.Adam([w], lr=0.1)
    adam.step()
    pre = curvature.top_eigenvalues(lambda: 0.5 * (a * w * w).sum(), [w], k=1, preconditioner=adam)
    assert not np.allclose(pre, [4.0], rtol=1e-3)


# ------------------------------------------------------------------ thresholds


def _run_1d(make: object, lam: float, n: int = 400) -> float:
    """``|theta|`` after ``n`` steps of the optimizer on ``L = lam/2 theta^2`` from 1."""
    w = torch.ones(1, dtype=F64, requires_grad=True)
    opt = make([w])  # type: ignore[operator]
    for _ in range(n):
        opt.zero_grad()
        (0.5 * lam * w * w).sum().backward()
        opt.step()
    out = float(w.detach().abs())
    return out if math.isfinite(out) else math.inf


@pytest.mark.parametrize(
    ("make", "formula"),
    [
        (lambda ps: torch.optim.SGD(ps, lr=0.1), 2 / 0.1),
        (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), 2 * 1.9 / 0.1),
        (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.5, dampening=0.3), 2 * 1.5 / (0.7 * 0.1)),
        (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True), 2 * 1.9 / (2.8 * 0.1)),
        (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.3, nesterov=True), 2 * 1.3 / (1.6 * 0.05)),
    ],
)
def test_sgd_thresholds_are_exact(make: object, formula: float) -> None:
    w = torch.zeros(1, requires_grad=True)
    thr = curvature.stability_threshold(make([w]))  # type: ignore[operator]
    assert thr == pytest.approx(formula, rel=1e-14)
    # the optimizer itself: stable just below, unstable just above (1 % either side)
    assert _run_1d(make, 0.99 * thr, 3000) < 1.0
    assert _run_1d(make, 1.01 * thr, 3000) > 1e3
    # power control: heavy ball's threshold for Nesterov (or the reverse) is wrong somewhere
    if thr < 20:
        assert _run_1d(make, 1.05 * thr * 1.2, 3000) > 1e3


def test_adaptive_thresholds_and_groups() -> None:
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    assert curvature.stability_threshold(torch.optim.Adam([a], lr=0.01)) == pytest.approx(3800.0)
    assert curvature.stability_threshold(torch.optim.AdamW([a], lr=0.01, betas=(0.0, 0.99))) == pytest.approx(
        200.0
    )
    assert curvature.stability_threshold(torch.optim.RMSprop([a], lr=0.01)) == pytest.approx(200.0)
    assert curvature.stability_threshold(torch.optim.RMSprop([a], lr=0.01, momentum=0.5)) == pytest.approx(
        300.0
    )
    two = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.2}], lr=0.1)
    assert curvature.stability_threshold(two) == pytest.approx([20.0, 10.0])
    same = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1)
    assert curvature.stability_threshold(same) == pytest.approx(20.0)
    # Adam late in a run is heavy ball with dampening 1 - beta1 in the metric P: simulate the
    # linearised step theta -= eta P^{-1} m with P frozen: threshold exact
    for factor, stable in ((0.99, True), (1.01, False)):
        eta, b1, p_diag = 0.01, 0.9, 3.0
        lam = factor * 3800.0 * p_diag
        theta, m = 1.0, 0.0
        for _ in range(5000):
            m = b1 * m + (1 - b1) * lam * theta
            theta -= eta * m / p_diag
        assert (abs(theta) < 1.0) == stable


def test_no_threshold_and_bad_input() -> None:
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(curvature.NoThresholdError, match="no known stability threshold for Adagrad"):
        curvature.stability_threshold(torch.optim.Adagrad([w], lr=0.1))
    with pytest.raises(curvature.NoThresholdError, match="dampening"):
        curvature.stability_threshold(
            torch.optim.SGD([w], lr=0.1, momentum=0.9, nesterov=False, dampening=1.0)
        )
    with pytest.raises(TypeError, match=r"`optimizer` must be a torch\.optim\.Optimizer"):
        curvature.stability_threshold(object())

    def f() -> torch.Tensor:
        return (w**2).sum()

    with pytest.raises(ValueError, match="`method` must be one of"):
        curvature.top_eigenvalues(f, [w], method="arnoldi")
    with pytest.raises(ValueError, match="`k` must be <= the number of trainable parameters"):
        curvature.top_eigenvalues(f, [w], k=3)
    with pytest.raises(ValueError, match="`k` must be an integer >= 1, got 0"):
        curvature.top_eigenvalues(f, [w], k=0)
    with pytest.raises(ValueError, match="`tol` must be a finite number > 0"):
        curvature.top_eigenvalues(f, [w], tol=-1.0)
    with pytest.raises(ValueError, match="`max_iter` must be an integer >= 1"):
        curvature.top_eigenvalues(f, [w], max_iter=0)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        curvature.top_eigenvalues(f, [w], mode="finite_differences")
    with pytest.raises(
        ValueError, match=r"forward_over_reverse.*needs a loss built by curvature\.model_loss"
    ):
        curvature.top_eigenvalues(f, [w], mode="forward_over_reverse")
    with pytest.raises(ValueError, match="no tensor with requires_grad=True"):
        curvature.top_eigenvalues(f, [torch.zeros(2)])
    with pytest.raises(ValueError, match="does not depend on `params`"):
        curvature.top_eigenvalues(lambda: torch.tensor(1.0, requires_grad=True) * 2, [w])
    with pytest.raises(ValueError, match="must return a scalar tensor"):
        curvature.top_eigenvalues(lambda: w * 2, [w])
    with pytest.raises(ValueError, match=r"`preconditioner\[0\]` must be positive"):
        curvature.top_eigenvalues(f, [w], preconditioner=[torch.tensor([1.0, -1.0])])


def test_flash_attention_error_names_the_kernel() -> None:
    torch.manual_seed(0)
    q = torch.randn(1, 2, 6, 4, requires_grad=True)

    def f() -> torch.Tensor:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q).square().sum()

    try:
        f()
    except RuntimeError:
        pytest.skip("no flash attention kernel on this build")
    with pytest.raises(RuntimeError, match=r"SDPBackend\.MATH"):
        curvature.top_eigenvalues(f, [q], k=1, max_iter=3)

    def g() -> torch.Tensor:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q).square().sum()

    assert math.isfinite(float(curvature.top_eigenvalues(g, [q], k=1, max_iter=48, tol=1e-6)[0]))
