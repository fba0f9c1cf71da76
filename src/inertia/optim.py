"""Optimizers that use the energy: momentum restarts driven by the ledger, and FIRE (needs torch).

Notation (THEORY.md, :mod:`inertia.track.mapping`): optimizer step ``k`` takes ``theta_k`` to
``theta_{k+1}`` with the gradient ``g_k`` it used; the velocity that reached ``theta_{k+1}`` is
``v_{k+1}`` with ``theta_{k+1} - theta_k = dt_k v_{k+1}`` for heavy ball (and
``dt_k M_k^{-1} p_{k+1}`` in a preconditioner's metric), its kinetic energy
``K_{k+1} = 1/2 v^T M v``, the potential ``V = L + wd/2 ||theta||^2`` and the inertia
``I = K + V``. The exact one-step ledger is::

    I_{k+1} - I_k = schedule + metric + friction + numerical + decay + curvature (+ noise)
    curvature     = V(theta_{k+1}) - V(theta_k) - <G_k, theta_{k+1} - theta_k>

so the potential changes by ``V_{k+1} - V_k = <G_k, dtheta_k> + curvature``. For heavy ball the
first term is ``<G_k, dtheta_k> = dt_k <G_k, v_{k+1}> = -dt_k P_k`` with ``P_k = -<G_k, v_{k+1}>``
the *power* of the force ``-G_k`` on the velocity (in a preconditioner's metric the same holds
with ``v = M^{-1} p``). A
**restart** zeroes the momentum between two steps; it is an impulse of friction that removes all
the kinetic energy at once, ``I -> I - K``, booked by the tracker in its ``restart`` column
(``-K``, so the ledger still closes). The next step then starts from rest, as gradient descent
in the optimizer's metric.

Restart rules (:class:`EnergyRestart`), evaluated after every step ``k``:

``"gradient"`` (O'Donoghue & Candes 2015, gradient scheme)
    restart when ``<g_k, theta_{k+1} - theta_k> > 0``, i.e. the power ``-<G_k, v_{k+1}>`` is
    negative: the velocity points uphill and, to first order, the motion is turning kinetic
    energy back into potential energy. The quantity is the ledger's ``<G_k, dtheta_k>``, read
    from the tracker's mapping (:attr:`inertia.track.StepTerms.g_dtheta`): ``G_k`` is the gradient
    of ``V``, which is the gradient the step used for SGD, Adam and RMSprop (with L2 weight decay
    ``grad L + wd theta_k``); for AdamW it includes the decoupled decay's ``wd theta_k`` as well.
``"speed"`` (Su, Boyd & Candes 2016, speed restart)
    restart when the kinetic energy stops growing, ``K_{k+1} < K_k`` (in the optimizer's metric;
    for heavy ball ``||theta_{k+1} - theta_k|| < ||theta_k - theta_{k-1}||`` at a constant step).
``"function"`` (O'Donoghue & Candes 2015, function scheme)
    restart when the loss went up, ``L(theta_{k+1}) > L(theta_k)``. The loss at ``theta_{k+1}``
    is only known when the next gradient is taken, so this rule is checked at the start of step
    ``k + 1`` (from ``step(closure)`` or ``step(loss=...)``) and zeroes the momentum before that
    step uses it: the same place, between the two steps, as the other rules.

Where they provably help, and where they are heuristics:

- *Convex quadratics.* ``L = 1/2 theta^T A theta`` with eigenvalues in ``[lam_min, lam_max]``,
  heavy ball with ``mu`` close to 1: each mode is a damped oscillator
  ``x_{k+1} = (1 + mu - eta lam) x_k - mu x_{k-1}``, and with a momentum tuned for ``lam_max``
  the slow modes are underdamped: their energy falls like ``mu^k`` (about ``1 - sqrt(eta lam_min)``
  per step at best) but oscillates, and the motion spends half of each period climbing. Zeroing
  ``v`` when the power turns negative stops the climb at the turning point of the dominant mode;
  O'Donoghue & Candes prove that restarting Nesterov's method at a fixed interval of order
  ``sqrt(kappa)`` steps recovers the optimal linear rate ``1 - O(1 / sqrt(kappa))`` for a
  strongly convex ``f`` of condition number ``kappa``, and show (an analysis for quadratics
  near the optimum, plus experiments) that the adaptive gradient and function rules find such
  an interval without knowing ``kappa``. Su, Boyd & Candes prove linear convergence, at the
  accelerated order, of the ODE ``x'' + 3/t x' + grad f = 0`` with speed restart on strongly
  convex ``f``. Measured here (the demo's section g, ``kappa = 1e3``, ``mu = 0.99``): plain heavy
  ball needs 1141 steps to ``I < 1e-5 I(0)``, the gradient restart 269, heavy ball tuned with
  ``kappa`` 167.
- *Always true, from the ledger.* A restart never increases ``I`` (it removes ``K >= 0``); the
  gradient rule restarts exactly when the force does negative work, ``<G_k, dtheta_k> > 0``.
  Between restarts the usual ledger holds term by term.
- *Heuristics.* Heavy ball with constant ``mu`` (the proofs are for Nesterov's method and its
  ODE), preconditioned momentum (Adam, RMSprop: the power and ``K`` are measured in a metric
  that changes between steps), non-convex losses, and minibatches (``g_k`` and the losses are
  the batches', so a noisy gradient can trigger a restart; the function rule compares losses of
  two different batches). A restart can also hurt: heavy ball restarts at full momentum ``mu``
  (Nesterov's method restarts its momentum schedule from 0), so a stiff mode can trigger
  restarts over and over ("chatter") and even grow. On a mode with ``eta lam = 0.9`` and
  ``mu = 0.99`` the gradient rule fires every third step, and each such cycle multiplies the mode
  by ``-1.059``, although plain heavy ball is stable up to ``eta lam < 2 (1 + mu)``; keep
  ``eta lam_max`` well below 1 (``min_interval = 20`` brings that mode back near plain heavy
  ball's decay). With AdamW the gradient rule can fire at almost every step: its decoupled step
  is not a descent direction of ``V = L + wd/2 ||theta||^2`` near its fixed point (measured: 394
  restarts in 400 steps on ``logreg_1e4`` of the benchmark). Whether the rules help is an
  empirical question:
  ``benchmarks/optimizers.py`` measures it against tuned baselines.

What a restart resets (the momentum, and only it): SGD's ``momentum_buffer`` (with or without
Nesterov or dampening), RMSprop's ``momentum_buffer``, Adam's and AdamW's first moment
``exp_avg``. The buffers are zeroed in place (same tensors, so foreach/fused steps, sharded
wrappers and CUDA graphs keep working), not deleted: deleting SGD's buffer would make its next
step take ``b = g`` instead of ``(1 - dampening) g``. Adam's second moment ``exp_avg_sq`` (and
``max_exp_avg_sq``) and the step count are kept: the second moment is the metric ``M``, a
curvature estimate the restart has no reason to forget, and the step count drives the bias
corrections of *both* moments, so resetting it would divide the warmed-up second moment by
``1 - beta2`` again. With the step count kept (bias correction ``~1`` after warm-up), Adam's
first moment restarts from ``(1 - beta1) g``: its velocity starts from rest exactly like heavy
ball's. RMSprop's ``square_avg`` and ``grad_avg`` are kept for the same reason.

FIRE (:class:`FIRE`; Bitzek, Koskinen, Gahler, Moseler & Gumbsch 2006) is the
molecular-dynamics relaxer built on the same power test: mix ``v`` towards the force while the
power is positive and grow the step; when the power turns negative, zero ``v`` and halve the step.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from inertia._validate import finite_float, whole_number
from inertia.track.mapping import Mapping, PreStep, mapping_for

__all__ = ["FIRE", "RULES", "EnergyRestart"]

#: the restart rules of :class:`EnergyRestart`
RULES = ("gradient", "speed", "function")

#: the momentum state that a restart zeroes, by optimizer class (``isinstance``), and the
#: hyper-parameter that must be nonzero for that state to exist
_MOMENTUM: tuple[tuple[type, tuple[str, ...], str], ...] = (
    (torch.optim.SGD, ("momentum_buffer",), "momentum"),
    (torch.optim.Adam, ("exp_avg",), "betas"),
    (torch.optim.AdamW, ("exp_avg",), "betas"),
    (torch.optim.RMSprop, ("momentum_buffer",), "momentum"),
)


def _momentum_of(group: dict[str, Any], key: str) -> float:
    value = group[key]
    return float(value[0] if key == "betas" else value)


class EnergyRestart(Optimizer):
    """Wrap a momentum optimizer and zero its momentum when an energy rule fires.

    After each step ``k`` (notation and derivations: :mod:`inertia.optim`) the rule decides
    whether to restart, i.e. zero the momentum state between step ``k`` and step ``k + 1``:

    - ``"gradient"``: ``<g_k, theta_{k+1} - theta_k> > 0`` (negative power);
    - ``"speed"``: ``K_{k+1} < K_k`` (the kinetic energy stopped growing);
    - ``"function"``: ``L(theta_{k+1}) > L(theta_k)`` (needs ``step(closure)`` or
      ``step(loss=...)``, the loss at the parameters the step starts from).

    ``<g_k, dtheta_k>`` and ``K`` are the tracker's (:meth:`inertia.track.Mapping.reduce` and
    :meth:`~inertia.track.Mapping.assemble` of the wrapped optimizer's mapping): the formulas are
    not written a second time. Reading them costs one reduction over the parameters and one host
    synchronisation per step (the rule is a branch on the host).

    The wrapper is a ``torch.optim.Optimizer`` that shares ``param_groups``, ``state`` and
    ``defaults`` with the wrapped optimizer (so learning-rate schedulers, gradient scalers and
    ``add_param_group`` act on both), and its :meth:`state_dict` is the wrapped optimizer's plus
    an ``"energy_restart"`` entry, so either can load the other's checkpoints.
    :class:`inertia.track.InertiaTracker` accepts the wrapper, tracks the wrapped optimizer and
    books each restart in its ``restart`` column.

    Args:
        optimizer: ``torch.optim.SGD`` (momentum > 0, heavy ball or Nesterov, any dampening),
            ``Adam``/``AdamW`` (``betas[0] > 0``) or ``RMSprop`` (momentum > 0), in any form
            (for-loop, foreach, fused); another optimizer with a registered tracker mapping if
            ``momentum_keys`` names its momentum state.
        rule: ``"gradient"``, ``"speed"`` or ``"function"``.
        min_interval: steps that must pass after a restart before the next one (``1``: the rule
            may fire after every step).
        momentum_keys: the per-parameter state entries to zero on a restart (default: from the
            optimizer's class, see :data:`_MOMENTUM`).

    Attributes:
        restarts: the steps ``k`` (0-based, counted by this wrapper) after which the momentum was
            zeroed.
        n_steps: steps taken through the wrapper.

    Example:
        >>> import torch
        >>> from inertia.optim import EnergyRestart
        >>> w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
        >>> lam = torch.tensor([1.0, 100.0], dtype=torch.float64)  # condition number 100
        >>> opt = EnergyRestart(torch.optim.SGD([w], lr=0.005, momentum=0.99), rule="gradient")
        >>> for _ in range(300):
        ...     opt.zero_grad(); loss = 0.5 * (lam * w * w).sum(); loss.backward(); _ = opt.step()
        >>> len(opt.restarts) > 0 and float(w.detach().abs().max()) < 1e-3  # plain heavy ball: 0.15
        True
    """

    def __init__(
        self,
        optimizer: Any,
        rule: str = "gradient",
        *,
        min_interval: int = 1,
        momentum_keys: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"`optimizer` must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if isinstance(optimizer, EnergyRestart):
            raise TypeError("`optimizer` is already an EnergyRestart; wrap the inner optimizer once")
        if rule not in RULES:
            raise ValueError(f"`rule` must be one of {RULES}, got {rule!r}")
        min_interval = whole_number("min_interval", min_interval, minimum=1)
        self.mapping: Mapping = mapping_for(optimizer)  # TypeError listing the supported ones
        if momentum_keys is None:
            found = next((entry for entry in _MOMENTUM if isinstance(optimizer, entry[0])), None)
            if found is None:
                raise TypeError(
                    f"EnergyRestart does not know which state of {type(optimizer).__qualname__} "
                    f"is its momentum; pass `momentum_keys` (e.g. ('momentum_buffer',)). Known: "
                    + ", ".join(f"{c.__name__} -> {k}" for c, k, _ in _MOMENTUM)
                )
            self.momentum_keys, self._momentum_hp = found[1], found[2]
        else:
            if isinstance(momentum_keys, str) or not all(isinstance(k, str) for k in momentum_keys):
                raise TypeError(f"`momentum_keys` must be a sequence of strings, got {momentum_keys!r}")
            self.momentum_keys, self._momentum_hp = tuple(momentum_keys), ""
        self.optimizer = optimizer
        self.rule = rule
        self.min_interval = min_interval
        for i, group in enumerate(optimizer.param_groups):
            self._check_group(group, i)
        # Optimizer.__init__ without re-adding the groups: the hooks and the profiled step
        self._optimizer_step_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_state_dict_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_state_dict_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._patch_step_function()
        self._restart_hooks: OrderedDict[int, Callable[[EnergyRestart, int], None]] = OrderedDict()
        self.restarts: list[int] = []
        self.n_steps = 0
        self._kinetic = 0.0  # K after the last step (after its restart, if any)
        self._loss = math.nan  # the loss at the parameters of the last step (function rule)

    # ------------------------------------------------------------------ shared with the inner

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's parameter groups (the same list)."""
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self) -> Any:
        """The wrapped optimizer's per-parameter state (the same mapping)."""
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:
        """The wrapped optimizer's defaults."""
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def _check_group(self, group: dict[str, Any], index: int) -> None:
        if self._momentum_hp and _momentum_of(group, self._momentum_hp) == 0.0:
            name = type(self.optimizer).__name__
            shown = "betas[0]" if self._momentum_hp == "betas" else self._momentum_hp
            raise ValueError(
                f"EnergyRestart needs a momentum to reset: {name} parameter group {index} has "
                f"{shown} = 0. Supported: SGD with momentum > 0 (heavy ball or Nesterov), "
                f"Adam/AdamW with betas[0] > 0, RMSprop with momentum > 0"
            )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the wrapped optimizer (it must keep a momentum)."""
        self.optimizer.add_param_group(param_group)
        group = self.optimizer.param_groups[-1]
        try:
            self._check_group(group, len(self.optimizer.param_groups) - 1)
        except ValueError:
            self.optimizer.param_groups.pop()
            raise

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The wrapped optimizer's ``zero_grad``."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state dict plus ``"energy_restart"``: the rule, ``n_steps``,
        ``restarts`` and the quantities the rules compare across steps."""
        out = dict(self.optimizer.state_dict())
        out["energy_restart"] = {
            "rule": self.rule,
            "min_interval": self.min_interval,
            "n_steps": self.n_steps,
            "restarts": list(self.restarts),
            "kinetic": self._kinetic,
            "loss": self._loss,
        }
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict from :meth:`state_dict` or from the bare wrapped optimizer (then the
        wrapper starts its own counters afresh). ``ValueError`` if it was saved with another rule."""
        ours = state_dict.get("energy_restart")
        inner = {k: v for k, v in state_dict.items() if k != "energy_restart"}
        if ours is not None and ours["rule"] != self.rule:
            raise ValueError(
                f"`state_dict` was saved by EnergyRestart(rule={ours['rule']!r}), "
                f"this one has rule={self.rule!r}"
            )
        self.optimizer.load_state_dict(inner)
        if ours is None:
            self.restarts, self.n_steps, self._kinetic, self._loss = [], 0, 0.0, math.nan
        else:
            self.restarts = [int(k) for k in ours["restarts"]]
            self.n_steps = int(ours["n_steps"])
            self._kinetic, self._loss = float(ours["kinetic"]), float(ours["loss"])

    def __repr__(self) -> str:
        inner = repr(self.optimizer)
        return f"EnergyRestart(rule={self.rule!r}, min_interval={self.min_interval}, optimizer={inner})"

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # ------------------------------------------------------------------ restarts

    def register_restart_hook(self, hook: Callable[[EnergyRestart, int], None]) -> RemovableHandle:
        """Call ``hook(self, k)`` whenever the momentum is zeroed between step ``k`` and ``k + 1``
        (``k`` counted by this wrapper). Returns a handle whose ``remove()`` unregisters it."""
        handle = RemovableHandle(self._restart_hooks)
        self._restart_hooks[handle.id] = hook
        return handle

    def restart(self) -> None:
        """Zero the momentum state now, as the rules do (recorded in :attr:`restarts` as after
        the last step; before the first step there is no momentum and nothing happens)."""
        if self.n_steps == 0:
            return
        with torch.no_grad():
            bufs = [
                st[key]
                for group in self.optimizer.param_groups
                for p in group["params"]
                if (st := self.optimizer.state.get(p))
                for key in self.momentum_keys
                if isinstance(st.get(key), torch.Tensor)
            ]
            if bufs:
                torch._foreach_zero_(bufs)
        k = self.n_steps - 1
        self.restarts.append(k)
        self._kinetic = 0.0
        for hook in list(self._restart_hooks.values()):
            hook(self, k)

    def _may_restart(self) -> bool:
        return self.n_steps > 0 and (
            not self.restarts or self.n_steps - 1 - self.restarts[-1] >= self.min_interval
        )

    def _watch(self) -> tuple[frozenset[int], dict[int, int]]:
        """Before the inner step: the parameters on their first step and the version counters of
        the gradients a step may write into (what :class:`inertia.track.PreStep` needs)."""
        state = self.optimizer.state
        new, versions = [], {}
        for group in self.optimizer.param_groups:
            watch = self.mapping.writes_grad(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if watch:
                    versions[id(p)] = p.grad._version
                if not state.get(p):
                    new.append(id(p))
        return frozenset(new), versions

    def _measure(self, new: frozenset[int], versions: dict[int, int]) -> tuple[float, float]:
        """``(<G_k, dtheta_k>, K_{k+1})`` summed over the groups, from the tracker's mapping."""
        mutated = frozenset(
            id(p)
            for group in self.optimizer.param_groups
            for p in group["params"]
            if p.grad is not None and id(p) in versions and p.grad._version != versions[id(p)]
        )
        pre = PreStep(new=new, mutated=mutated)
        state = self.optimizer.state
        hps, parts = [], []
        with torch.no_grad():
            for group in self.optimizer.param_groups:
                if not any(p.grad is not None for p in group["params"]):
                    continue
                hp = self.mapping.snapshot(group, state)
                hps.append(hp)
                parts.append(self.mapping.reduce(group, state, pre, hp))
            if not parts:
                return 0.0, 0.0
            device = parts[0].device
            values = torch.cat([s.to(device) for s in parts]).tolist()  # the one host sync
        width = len(self.mapping.names)
        g_dtheta = kinetic = 0.0
        for i, hp in enumerate(hps):
            sums = dict(zip(self.mapping.names, values[i * width : (i + 1) * width], strict=True))
            terms = self.mapping.assemble(hp, sums, None, True)  # only prev-free terms are read
            g_dtheta += terms.g_dtheta
            kinetic += terms.kinetic
        return g_dtheta, kinetic

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None) -> Any:
        """One step of the wrapped optimizer, then the restart rule.

        Args:
            closure: re-evaluates the model and returns the loss (run with gradients enabled,
                before the step, as ``torch.optim`` does).
            loss: the loss at the parameters this step starts from, when there is no closure
                (used by ``rule="function"`` only).

        Returns:
            The closure's loss, or ``None`` without a closure.
        """
        out = _evaluate(closure)
        loss = out if loss is None else loss
        if self.rule == "function":
            if loss is None:
                raise ValueError(
                    "rule='function' needs the loss at the parameters this step starts from: "
                    "call step(closure) or step(loss=loss)"
                )
            value = float(loss)
            if value > self._loss and self._may_restart():  # NaN compares False: no restart
                self.restart()
            self._loss = value
            self.optimizer.step()
            self.n_steps += 1
            return out
        new, versions = self._watch()
        self.optimizer.step()
        self.n_steps += 1
        g_dtheta, kinetic = self._measure(new, versions)
        previous, self._kinetic = self._kinetic, kinetic
        fire = g_dtheta > 0.0 if self.rule == "gradient" else kinetic < previous
        if fire and self._may_restart():
            self.restart()
        return out


class FIRE(Optimizer):
    """The Fast Inertial Relaxation Engine (Bitzek et al., Phys. Rev. Lett. 97, 170201, 2006).

    Unit mass, force ``F = -grad L``, power ``P = <F, v>`` (``= -dV/dt``). Each step, per
    parameter group (the textbook algorithm when all parameters are in one group), with the
    group's time step ``dt``, mixing ``alpha`` and count ``n_positive`` of steps since the power
    was last negative::

        if P > 0:   v <- (1 - alpha) v + alpha |v| F / |F|
                    if n_positive > n_min: dt <- min(f_inc dt, dt_max); alpha <- f_alpha alpha
                    n_positive <- n_positive + 1
        else:       v <- 0; dt <- f_dec dt; alpha <- alpha_start; n_positive <- 0
        v <- v + dt F;   theta <- theta + dt v          (semi-implicit Euler, as in ASE)

    The power test is skipped on the group's first step (``v = 0``, nothing to test). In the
    project's variables this is heavy ball with a variable step and no friction between
    restarts: the kinetic energy ``K = 1/2 |v|^2`` is kept while the force does positive work, and
    removed at once (a restart, as in :class:`EnergyRestart`) when it does negative work; the
    mixing turns the velocity towards the force without changing ``|v|``.

    Args:
        params: parameters or parameter groups.
        lr: the initial time step ``dt_0 > 0``. It is a time step, not a learning rate: the first
            displacement is ``-dt_0^2 g`` (heavy ball's learning rate is ``dt^2``).
        dt_max: the largest time step (default ``10 * lr``, per parameter group).
        n_min: positive-power steps before ``dt`` may grow.
        f_inc: growth factor of ``dt`` (``> 1``).
        f_dec: shrink factor of ``dt`` on negative power (in ``(0, 1)``).
        alpha_start: initial and reset mixing (in ``[0, 1]``).
        f_alpha: decay of the mixing (in ``(0, 1]``).

    The controller's state lives in each parameter group (``dt``, ``alpha``, ``n_positive``), so
    :meth:`state_dict` round-trips it; the velocity is per parameter (``state[p]["v"]``).

    Example:
        >>> import torch
        >>> from inertia.optim import FIRE
        >>> x = torch.nn.Parameter(torch.tensor([-1.2, 1.0], dtype=torch.float64))
        >>> opt = FIRE([x], lr=0.003)
        >>> for _ in range(1000):
        ...     opt.zero_grad(); loss = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        ...     loss.backward(); _ = opt.step()
        >>> bool(torch.allclose(x, torch.ones(2, dtype=torch.float64), atol=1e-6))
        True
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        *,
        dt_max: float | None = None,
        n_min: int = 5,
        f_inc: float = 1.1,
        f_dec: float = 0.5,
        alpha_start: float = 0.1,
        f_alpha: float = 0.99,
    ) -> None:
        lr = finite_float("lr", lr, minimum=0.0, strict=True)
        if dt_max is not None:
            dt_max = finite_float("dt_max", dt_max, minimum=0.0, strict=True)
        n_min = whole_number("n_min", n_min)
        f_inc = finite_float("f_inc", f_inc, minimum=1.0)
        _below("f_dec", finite_float("f_dec", f_dec, minimum=0.0, strict=True), 1.0, strict=True)
        _below("alpha_start", finite_float("alpha_start", alpha_start, minimum=0.0), 1.0)
        _below("f_alpha", finite_float("f_alpha", f_alpha, minimum=0.0, strict=True), 1.0)
        defaults = {
            "lr": float(lr),
            "dt_max": dt_max,
            "n_min": n_min,
            "f_inc": float(f_inc),
            "f_dec": float(f_dec),
            "alpha_start": float(alpha_start),
            "f_alpha": float(f_alpha),
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its controller starts at ``dt = lr``, ``alpha = alpha_start``, and its
        ``dt_max`` defaults to ``10 * lr`` of the group."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            finite_float("lr", group["lr"], minimum=0.0, strict=True)
            if group["dt_max"] is None:
                group["dt_max"] = 10.0 * float(group["lr"])
            finite_float("dt_max", group["dt_max"], minimum=0.0, strict=True)
            if group["dt_max"] < group["lr"]:
                raise ValueError(
                    f"`dt_max` must be >= `lr` (the initial step {group['lr']}), got {group['dt_max']}"
                )
        except ValueError:
            self.param_groups.pop()
            raise
        group.setdefault("dt", group["lr"])
        group.setdefault("alpha", group["alpha_start"])
        group.setdefault("n_positive", 0)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One FIRE step of every group (formulas in the class docstring).

        Args:
            closure: re-evaluates the model and returns the loss (run with gradients enabled).

        Returns:
            The closure's loss, or ``None`` without a closure.
        """
        loss = _evaluate(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p.grad.is_sparse:
                    raise ValueError("FIRE does not support sparse gradients")
            forces = [-p.grad for p in params]
            started = all("v" in self.state[p] for p in params)
            vs = [self.state[p].setdefault("v", torch.zeros_like(p)) for p in params]
            if started:
                power, ff, vv = _sums(forces, vs)
                if power > 0.0:
                    if ff > 0.0:
                        scale = group["alpha"] * math.sqrt(vv / ff)
                        torch._foreach_mul_(vs, 1.0 - group["alpha"])
                        torch._foreach_add_(vs, forces, alpha=scale)
                    if group["n_positive"] > group["n_min"]:
                        group["dt"] = min(group["dt"] * group["f_inc"], group["dt_max"])
                        group["alpha"] *= group["f_alpha"]
                    group["n_positive"] += 1
                else:
                    torch._foreach_zero_(vs)
                    group["dt"] *= group["f_dec"]
                    group["alpha"] = group["alpha_start"]
                    group["n_positive"] = 0
            dt = group["dt"]
            torch._foreach_add_(vs, forces, alpha=dt)
            torch._foreach_add_(params, vs, alpha=dt)
        return loss


def _sums(forces: list[Any], vs: list[Any]) -> tuple[float, float, float]:
    """``(<F, v>, |F|^2, |v|^2)`` over a group, in float64, with one host transfer."""
    dots = [torch.stack([torch.dot(f.reshape(-1), v.reshape(-1)) for f, v in zip(forces, vs, strict=True)])]
    dots.append(torch.stack([torch.dot(f.reshape(-1), f.reshape(-1)) for f in forces]))
    dots.append(torch.stack([torch.dot(v.reshape(-1), v.reshape(-1)) for v in vs]))
    power, ff, vv = torch.stack([d.to(torch.float64).sum() for d in dots]).tolist()
    return power, ff, vv


def _below(name: str, value: float, bound: float, strict: bool = False) -> None:
    if value > bound or (strict and value == bound):
        raise ValueError(f"`{name}` must be {'<' if strict else '<='} {bound:g}, got {value!r}")


def _evaluate(closure: Callable[[], Any] | None) -> Any:
    """The closure's loss, evaluated with gradients enabled (``None`` without a closure)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()
