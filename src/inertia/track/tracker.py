"""``InertiaTracker``: computational inertia and its exact ledger, read out of a real optimizer.

Usage::

    tracker = InertiaTracker(optimizer)            # reads optimizer state only; no module hooks
    for x, y in loader:
        optimizer.zero_grad(); loss = loss_fn(model(x), y); loss.backward()
        optimizer.step()
        tracker.record(loss)                        # the loss whose gradient this step used
    df = tracker.history                            # one row per recorded step

Rows. Row ``k`` pairs ``potential = V(theta_k)`` (the loss passed for step ``k`` plus
``wd/2 ||theta_k||^2``) with ``kinetic = K_k``, the kinetic energy of the velocity with which
``theta_k`` was reached (zero at the first step of a fresh optimizer; with ``maximize=True``
the potential is ``-loss``), and
``inertia = kinetic + potential``. Its ledger columns account for ``delta_inertia = I_k - I_{k-1}``,
the change made by optimizer step ``k - 1`` (whose ``lr``, ``dt`` and ``gamma = -ln(mu)/dt`` are in
the same row): ``schedule + metric + friction + numerical + decay + curvature + clipping +
noise``, each computed on its own from optimizer state, gradients and losses
(:mod:`inertia.track.mapping`); ``residual`` is the measured change minus their sum. Row 0 has
no ledger (NaN).

Clipping. ``clipping = <G_raw - G_applied, theta_k - theta_{k-1}>`` books the work of any
change of ``.grad`` between backward and step (``clip_grad_norm_``, hooks, user code), so that
``curvature`` is the Bregman remainder of the loss; the raw gradient is captured by
post-accumulate-grad hooks on the parameters (:mod:`inertia.track.clipping`, option
``raw_grad``), which are removed at :meth:`InertiaTracker.close`.

Restarts (issue 14). Given an :class:`inertia.optim.EnergyRestart` (any optimizer wrapper with
``.optimizer`` and ``register_restart_hook``), the tracker tracks the wrapped optimizer; when the
momentum is zeroed between step ``k - 1`` and step ``k``, row ``k`` reports the kinetic energy
after the restart (``kinetic = 0``) and books what was removed, ``restart = -K_k`` (the energy of
the velocity that reached ``theta_k``), so the ledger still closes; ``restart`` is 0 in every
other row with a ledger.

Modes. ``"cheap"`` (default): no extra forward pass; ``curvature`` is estimated from consecutive
losses, ``V(theta_k) - V(theta_{k-1}) - <G, dtheta>``, so with minibatches it also carries the
batch-to-batch noise and ``noise`` is NaN. ``"exact"``: ``record(loss, closure)`` re-evaluates the
loss on the same batch after the step; then ``curvature`` is the Bregman remainder of that batch's
loss and ``noise = V_next_batch(theta_k) - V_same_batch(theta_k)``. On a full-batch float64
quadratic the residual is rounding error in both modes.

Cost. The sums are taken right after ``optimizer.step()`` by an optimizer step hook, on the
parameters' device, per parameter group in a number of device operations that does not grow with
the number of parameter tensors (:mod:`inertia.track.reduce`). A recorded row stays on the device
until a flush brings ``flush_every`` rows to the host in one transfer (one all-reduce under
``torch.distributed``); on a CPU each row is flushed at once. With ``every = n`` only the two
steps before each recorded row are summed. The row arithmetic is :func:`inertia.ledger.ledger_row`.

Non-interference. Nothing the optimizer or model owns is written; the loss is detached (no
graph is kept); the closure runs under ``torch.no_grad()`` with the RNG state restored.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from inertia.ledger import COLUMNS, StepTerms, ledger_row
from inertia.track.clipping import MEASURED, RAW_GRAD, UNKNOWN, ClippingMonitor
from inertia.track.distributed import (
    LAYOUTS,
    check_layout,
    detect_layout,
    local_view,
    pack_hparams,
    reduce_rows,
    unpack_hparams,
)
from inertia.track.divergence import DivergenceMonitor, DivergenceRule, DivergenceWarning
from inertia.track.mapping import PreStep, mapping_for
from inertia.track.reduce import fused_sums
from inertia.track.sharpness import SHARPNESS_COLUMNS, SharpnessMonitor

__all__ = ["COLUMNS", "InertiaTracker", "NonFiniteError", "Sink"]

log = logging.getLogger(__name__)

_MODES = ("cheap", "exact")
_DEFAULT_RULE = DivergenceRule()
_POLICIES = ("raise", "flag", "stop")
#: rows kept on the device between host reads when the parameters are on an accelerator
DEVICE_FLUSH_EVERY = 32


class NonFiniteError(FloatingPointError):
    """A recorded loss or optimizer state was NaN or infinite (``nan_policy="raise"``)."""


class Sink(Protocol):
    """Where rows go besides :attr:`InertiaTracker.history` (a run directory, TensorBoard)."""

    def write(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass
class _Hook:
    hps: list[dict[str, float]]
    sums: Any  # float64 tensor, all groups concatenated (then the clipping block, if any)
    clip: str = "zero"  # the step's clipping: "zero", "unknown" (NaN) or "measured" (a block)


@dataclass
class _Staged:
    """A recorded row waiting on the device for the next flush."""

    k: int
    losses: Any  # float64 tensor: L_k (, L_{k-1} (, same-batch L_{k-1} at theta_k))
    sums: Any  # float64 tensor: the hooks' sums of ``steps``, concatenated
    steps: list[int]  # the optimizer steps whose sums travel with the row
    hps: dict[int, list[dict[str, float]]]  # their groups' hyper-parameters
    reuse: bool  # step k-2's terms come from the previous row (not transferred again)
    restarted: frozenset[int] = frozenset()  # of steps k-2, k-1, those followed by a restart
    skipped: int = 0  # record() calls without an optimizer step since the previous row (GradScaler)
    clip: dict[int, str] = dataclasses.field(default_factory=dict)  # each step's _Hook.clip


def _as_scalar_tensor(name: str, value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"`{name}` must be a scalar, got a tensor of shape {tuple(value.shape)}")
        return value.detach().reshape(())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    # NumPy scalars and arrays of one element (0-d included), booleans refused
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    if kind in ("f", "i", "u") and getattr(value, "size", None) == 1 and hasattr(value, "item"):
        return torch.tensor(float(value.item()), dtype=torch.float64)
    raise TypeError(
        f"`{name}` must be a scalar tensor, a number or a NumPy scalar, got {type(value).__name__}"
    )


def _check_lr(lr: Any, group: int, step: int | None) -> None:
    """``ValueError`` naming the group (and step) unless ``lr`` is a finite number >= 0."""
    try:
        value = float(lr)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        when = "" if step is None else f" at optimizer step {step}"
        raise ValueError(
            f"`lr` of parameter group {group} must be a finite number >= 0{when} "
            f"(the tracker's dt = sqrt(lr)), got {lr!r}"
        )


# sinks are checked when the tracker is made
def _check_sinks(sinks: Any) -> list[Any]:
    """``sinks`` as a list, each with callable ``write(row)`` and ``close()``, else ``TypeError``.

    A single sink passed bare (``sinks=RunLog(d)``) is refused, and closed first (marked
    ``failed`` if it can be annotated), so that its run directory is not left ``running``.
    """

    def is_sink(x: Any) -> bool:
        return callable(getattr(x, "write", None)) and callable(getattr(x, "close", None))

    if is_sink(sinks):
        if callable(getattr(sinks, "annotate", None)):
            sinks.annotate(
                status="failed", error="TypeError: passed to InertiaTracker as `sinks` without a list"
            )
        sinks.close()
        raise TypeError(
            f"`sinks` must be a list of sinks, got a bare {type(sinks).__name__}; pass sinks=[...] "
            f"(the {type(sinks).__name__} has been closed)"
        )
    if isinstance(sinks, (str, bytes)) or not isinstance(sinks, Iterable):
        raise TypeError(
            f"`sinks` must be a list of sinks (objects with write(row) and close()), got {sinks!r}"
        )
    out = list(sinks)
    for i, sink in enumerate(out):
        if not is_sink(sink):
            raise TypeError(
                f"`sinks[{i}]` must be a sink with write(row) and close() methods (e.g. "
                f"inertia.track.RunLog(path)), got {type(sink).__name__} {sink!r}"
            )
    return out


class InertiaTracker:
    """Track ``I = K + V`` and its exact per-step ledger from a ``torch.optim`` optimizer.

    Args:
        optimizer: a supported optimizer (:data:`inertia.track.MAPPINGS`: SGD, Adam, AdamW,
            RMSprop, in their for-loop, foreach and fused forms), or a
            ``ZeroRedundancyOptimizer`` wrapping one.
        mode: ``"cheap"`` (no extra forward) or ``"exact"`` (``record`` takes a closure).
        every: record every ``every``-th step (rows ``0, every, 2 every, ...``).
        nan_policy: on a non-finite loss or state: ``"raise"`` (:class:`NonFiniteError`, after
            the row is written), ``"flag"`` (write the row with ``finite = False`` and go on) or
            ``"stop"`` (write it, set :attr:`stopped`, ignore later calls).
        sinks: extra destinations for each row (e.g. :class:`inertia.track.RunLog`), written on
            rank 0 only.
        layout: ``"auto"``, ``"local"``, ``"replicated"`` (DDP) or ``"sharded"`` (ZeRO, FSDP2);
            see :mod:`inertia.track.distributed`. ``ValueError`` if a distributed layout has no
            initialised process group, or if DTensor parameters are not sharded once over the
            world (HSDP, tensor parallel) and no ``process_group`` is given.
        process_group: the ``torch.distributed`` group to reduce over (default: the world).
        sharpness_every: add the columns of :data:`inertia.track.SHARPNESS_COLUMNS`: the
            update curvature and threshold on every row, the (preconditioned) top Hessian
            eigenvalue on rows ``n, 2n, ...`` (``record`` then needs a closure at the steps
            before them; a multiple of ``every``). See :mod:`inertia.track.sharpness`.
        warn_ratio: a :class:`~inertia.track.StabilityWarning` once when the sharpness reaches
            this fraction of the stability threshold.
        flush_every: recorded rows kept on the device before they are read to the host
            together (one transfer, one all-reduce under ``torch.distributed``); ``None``: 1
            when every parameter is on a CPU (each row at once, as before), else
            :data:`DEVICE_FLUSH_EVERY`. Rows, sinks and the NaN policy act at each flush, at
            :meth:`flush` and at :meth:`close`: a non-finite step is acted on up to
            ``flush_every - 1`` rows late, and a killed run keeps the rows flushed so far.
        divergence: the rule that flags a blow-up that stays finite
            (:class:`~inertia.track.divergence.DivergenceRule`): the first recorded row that
            meets it raises a :class:`~inertia.track.divergence.DivergenceWarning` naming the
            step and sets :attr:`status` to ``"diverging"`` (tracking goes on); ``None`` turns
            it off.
        raw_grad: capture the gradient as backward leaves it, for the ``clipping`` column
            (:mod:`inertia.track.clipping`): ``"auto"`` (default: no device work while ``.grad``
            is never changed between backward and step; at the first change that row's
            ``clipping`` and ``curvature`` are NaN, a ``RuntimeWarning`` names the step, and
            capturing starts at the next backward; with ``grad_scaler``, from the start),
            ``True`` (from the first backward: one copy of the gradients per backward, two
            buffers of their size) or ``False`` (never: a change lands in ``curvature``).
        grad_scaler: the ``torch.amp.GradScaler`` that scales the losses backwarded, so that the
            raw gradient is divided by the scale backward used (unscaling is no ``clipping``;
            clipping after ``scaler.unscale_`` is).
        fused: evaluate each slice's element-wise formulas and sums ``w * sum(a * b)`` in one
            ``torch.compile``-d function (:func:`inertia.track.reduce.fused_sums`) instead of
            one pass per operation: the same sums to rounding; worth it for the adaptive
            optimizers (Adam's formulas are about 15 passes over the state), not for momentum
            SGD (three dot products). The first steps compile (seconds); a learning rate or
            bias correction that changes does not recompile. Default ``False``.

    Example:
        >>> import torch
        >>> from inertia.track import InertiaTracker
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
        >>> opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
        >>> tracker = InertiaTracker(opt)
        >>> for _ in range(3):
        ...     opt.zero_grad(); loss = 0.5 * (w * w).sum(); loss.backward(); opt.step()
        ...     _ = tracker.record(loss)
        >>> bool(abs(tracker.history["residual"].iloc[1:]).max() < 1e-12)
        True
    """

    def __init__(
        self,
        optimizer: Any,
        *,
        mode: str = "cheap",
        every: int = 1,
        nan_policy: str = "raise",
        sinks: Iterable[Sink] = (),
        layout: str = "auto",
        process_group: Any = None,
        fresh: bool | None = None,
        sharpness_every: int | None = None,
        warn_ratio: float = 0.9,
        flush_every: int | None = None,
        divergence: DivergenceRule | None = _DEFAULT_RULE,
        raw_grad: str | bool = "auto",
        grad_scaler: Any = None,
        fused: bool = False,
    ) -> None:
        sinks = _check_sinks(sinks)  # at construction, not at the first record()
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}, got {mode!r}")
        if nan_policy not in _POLICIES:
            raise ValueError(f"`nan_policy` must be one of {_POLICIES}, got {nan_policy!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"`every` must be an integer >= 1, got {every!r}")
        if flush_every is not None and (
            isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1
        ):
            raise ValueError(f"`flush_every` must be None or an integer >= 1, got {flush_every!r}")
        if not any(raw_grad is v or (isinstance(v, str) and raw_grad == v) for v in RAW_GRAD):
            raise ValueError(f"`raw_grad` must be 'auto', True or False, got {raw_grad!r}")
        if grad_scaler is not None and not (
            callable(getattr(grad_scaler, "is_enabled", None)) and hasattr(grad_scaler, "_scale")
        ):
            raise TypeError(
                f"`grad_scaler` must be a torch.amp.GradScaler or None, got {type(grad_scaler).__name__}"
            )
        if not isinstance(fused, bool):
            raise TypeError(f"`fused` must be True or False, got {fused!r}")
        self.fused = fused
        if layout != "auto" and layout not in LAYOUTS:
            raise ValueError(f"`layout` must be 'auto' or one of {LAYOUTS}, got {layout!r}")
        # a wrapper that zeroes the momentum between steps (inertia.optim.EnergyRestart)
        # is tracked through the optimizer it wraps; each restart is booked in the `restart` column
        self._restarted: set[int] = set()  # the steps j after which the momentum was zeroed
        self._restart_handle: Any = None
        wrapper = None
        if hasattr(optimizer, "register_restart_hook") and hasattr(optimizer, "optimizer"):
            wrapper, optimizer = optimizer, optimizer.optimizer
        local = (
            getattr(optimizer, "optim", None)
            if type(optimizer).__name__ == ("ZeroRedundancyOptimizer")
            else optimizer
        )
        if local is None or not hasattr(local, "register_step_post_hook"):
            raise TypeError(f"`optimizer` must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.mapping = mapping_for(local)
        flags = {bool(g.get("maximize", False)) for g in local.param_groups}
        if len(flags) > 1:
            raise ValueError(
                "`optimizer` mixes parameter groups with maximize=True and False; "
                "the potential (loss or -loss) would be ambiguous"
            )
        self._maximize = flags.pop()
        self.optimizer = optimizer
        self._local = local
        params = [p for g in local.param_groups for p in g["params"]]
        self.layout = detect_layout(optimizer, params) if layout == "auto" else layout
        check_layout(self.layout, params, process_group)
        self.process_group = process_group
        self.mode, self.every, self.nan_policy = mode, every, nan_policy
        if flush_every is None:  # a CPU has no device to wait for: today's row-by-row behaviour
            on_cpu = all(p.device.type == "cpu" for p in params)
            flush_every = 1 if on_cpu else DEVICE_FLUSH_EVERY
        self.flush_every = flush_every
        self.sinks = list(sinks) if self._is_writer() else []
        for i, group in enumerate(local.param_groups):  # a clear error, not sqrt's
            _check_lr(group.get("lr"), i, None)
        # what is tracked, for the run's manifest (the report names the dtype used)
        self.info: dict[str, Any] = {
            "optimizer": type(local).__name__,
            "dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in params}),
            "n_params": int(sum(p.numel() for p in params)),
            "mode": mode,
            "every": every,
            "nan_policy": nan_policy,
            "layout": self.layout,
        }
        for sink in self.sinks:
            describe = getattr(sink, "describe", None)
            if callable(describe):
                describe(self.info)
        if fresh is not None and not isinstance(fresh, bool):
            raise TypeError(f"`fresh` must be True, False or None, got {fresh!r}")
        # an optimizer with no state has not stepped yet, except one that keeps none (SGD
        # without momentum): attaching to that mid-run needs fresh=False
        self.fresh = not self.mapping.has_stepped(local) if fresh is None else fresh
        self.stopped = False
        # how the run ended, handed to sinks with a ``finish(status, error)`` method
        self.status = "running"
        self.error: str | None = None
        self._closed = False
        if divergence is not None and not isinstance(divergence, DivergenceRule):
            raise TypeError(f"`divergence` must be a DivergenceRule or None, got {type(divergence).__name__}")
        self._divergence = None if divergence is None else DivergenceMonitor(divergence)
        self._warned_nonfinite = False
        self._pre = PreStep()
        self._versions: dict[int, int] = {}
        self.rows: list[dict[str, Any]] = []
        self._n_steps = 0
        self._n_records = 0
        self._hooks: dict[int, _Hook] = {}
        self._group_ids: dict[int, tuple[int, ...]] = {}
        self._losses: dict[int, Any] = {}
        self._closures: dict[int, Any] = {}
        self._assembled: dict[int, list[StepTerms]] = {}  # the last row's step terms
        self._staged: list[_Staged] = []  # recorded rows not yet flushed
        self._skipped = 0  # record() calls without a step since the last staged row
        self._skipped_total = 0
        self._terms_step: int | None = None  # the step whose terms the last staged row assembles
        import torch

        self._nan = torch.tensor(math.nan, dtype=torch.float64)  # the loss of a step not seen
        if wrapper is not None:
            self._restart_handle = wrapper.register_restart_hook(self._on_restart)
        self._pre_handle = local.register_step_pre_hook(self._before_step)
        self._handle = local.register_step_post_hook(self._after_step)
        # the raw gradient, for the clipping term (inertia.track.clipping)
        self._clipping = ClippingMonitor(
            local,
            raw_grad,
            grad_scaler,
            lambda: not self.stopped and self._hook_needed(self._n_steps),
            self._maximize,
        )
        # sharpness beside the ledger (inertia.track.sharpness)
        self._sharpness = None
        if sharpness_every is not None:
            self._sharpness = _sharpness_monitor(self, sharpness_every, warn_ratio)

    # ------------------------------------------------------------------ bookkeeping

    def _is_writer(self) -> bool:
        try:
            import torch.distributed as dist

            return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
        except ImportError:  # pragma: no cover
            return True

    def _on_restart(self, optimizer: Any, step: int) -> None:
        # called between two steps: the momentum that reached theta_{n_steps} was zeroed
        j = self._n_steps - 1
        self._restarted = {s for s in self._restarted if s >= j - 2}
        self._restarted.add(j)

    def _recorded(self, k: int) -> bool:
        return k % self.every == 0

    def _hook_needed(self, j: int) -> bool:
        return j == 0 or self._recorded(j + 1) or self._recorded(j + 2)

    def _keep_pre_hook_last(self) -> None:
        """Re-register the step pre-hook if a hook was registered after it, so that it runs
        after the user's step pre-hooks and sees the gradients they leave (a hook that changes
        ``.grad`` there is booked in ``clipping``, from the step after it was registered)."""
        hooks = getattr(self._local, "_optimizer_step_pre_hooks", None)
        if hooks and next(reversed(hooks)) != getattr(self._pre_handle, "id", None):
            self._pre_handle.remove()
            self._pre_handle = self._local.register_step_pre_hook(self._before_step)

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> Any:
        self.note_gradients()
        # ``optimizer.step(closure)`` (Lightning) makes the gradients inside the closure,
        # after this hook; note them again once the closure (backward, unscaling, clipping) is done
        # (``args`` starts with the optimizer itself)
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if callable(closure):
            return args[:1], {**kwargs, "closure": self._noting(closure)}
        return None

    def _noting(self, closure: Callable[[], Any]) -> Callable[[], Any]:
        def wrapped() -> Any:
            out = closure()
            self.note_gradients()
            return out

        return wrapped

    def note_gradients(self) -> None:
        """Take the pre-step bookkeeping now: the gradients in ``.grad`` are the ones the next
        ``optimizer.step()`` applies (after accumulation, unscaling and clipping).

        Called by the step pre-hook, and again after the closure of ``optimizer.step(closure)``;
        call it yourself only if something rewrites ``.grad`` between the pre-hook and the update.
        Python bookkeeping only: which parameters take their first step, and the gradients'
        version counters (a step that writes into ``.grad`` bumps them); and, when a gradient
        changed since backward and was captured, the ``clipping`` term's pre-step copies
        (:meth:`inertia.track.clipping.ClippingMonitor.before_step`).
        """
        if self.stopped or not self._hook_needed(self._n_steps):
            return
        self._clipping.before_step(self._n_steps)
        state = self._local.state
        self._versions = {}
        new = []
        for group in self._local.param_groups:
            watch = self.mapping.writes_grad(group)
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if watch:
                    self._versions[id(p)] = grad._version
                if not state.get(p):
                    new.append(id(p))
        self._pre = PreStep(new=frozenset(new))

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        j = self._n_steps
        self._n_steps += 1
        self._keep_pre_hook_last()
        self._clipping.arm(not self.stopped and self._hook_needed(j + 1))
        if self.stopped or not self._hook_needed(j):
            return
        import torch

        sharded = self.layout == "sharded"
        mutated = (
            frozenset(
                i
                for group in self._local.param_groups
                for p in group["params"]
                if p.grad is not None
                and (i := id(p)) in self._versions
                and p.grad._version != self._versions[i]
            )
            if self._versions
            else frozenset()
        )
        pre = PreStep(new=self._pre.new, mutated=mutated)
        self._pre, self._versions = PreStep(), {}
        hps: list[dict[str, float]] = []
        parts: list[Any] = []
        with torch.no_grad(), fused_sums(self.fused):
            for group in self._local.param_groups:
                # sharded: DTensors seen through their local shards (distributed.local_view)
                view, state = local_view(group, self._local.state) if sharded else (group, self._local.state)
                hp = self.mapping.snapshot(view, state)
                _check_lr(hp.get("lr"), len(hps), j)  # a scheduler may set any value
                hps.append(hp)
                # a group can be empty (ZeRO gives a rank no parameter of a small group)
                parts.append(self.mapping.reduce(view, state, pre, hp) if view["params"] else None)
            clip, clip_sums = self._clipping.after_step(self._local.param_groups)
        device = next((s.device for s in parts if s is not None), None)
        width = len(self.mapping.names)
        sums = [torch.zeros(width, dtype=torch.float64, device=device) if s is None else s for s in parts]
        if clip_sums is not None:
            sums.append(clip_sums.to(device))
        elif self.layout != "local":  # every rank's vector has the same length
            sums.append(torch.zeros(len(parts), dtype=torch.float64, device=device))
        if sharded:  # hyper-parameters this rank cannot know travel in the same all-reduce
            sums.append(pack_hparams(hps, device))
        self._hooks[j] = _Hook(hps, torch.cat(sums), clip)
        # which groups step j had, so that groups added or removed mid-run are paired
        self._group_ids[j] = tuple(id(g) for g in self._local.param_groups)
        for old in [s for s in self._hooks if s < j - 2]:
            del self._hooks[old]
        for old in [s for s in self._group_ids if s < j - 2]:
            del self._group_ids[old]

    # ------------------------------------------------------------------ public API

    def record(self, loss: Any, closure: Callable[[], Any] | None = None) -> dict[str, Any] | None:
        """Record step ``k``: call once right after each ``optimizer.step()``.

        Args:
            loss: the loss whose gradient the step used (scalar tensor or float); it is detached.
            closure: ``"exact"`` mode only: re-evaluates and returns the loss on the *same* batch
                at the new parameters (no backward); run under ``torch.no_grad()`` with the RNG
                state restored, and only when the next recorded row needs it.

        Returns:
            The row of step ``k`` if it is recorded and flushed by this call (always, with
            ``flush_every=1``), else ``None``; rows flushed later appear in :attr:`rows`,
            :attr:`history` and the sinks.
        """
        if self._closed:
            raise RuntimeError(
                "InertiaTracker.record() called after close(): the tracker is closed (its hooks "
                "are removed and its sinks finalised); create a new tracker to go on"
            )
        if self.stopped:
            return None
        k = self._n_records
        if self._n_steps == k:
            # a skipped step (GradScaler found non-finite gradients): no parameter changed
            self._skipped += 1
            if self._skipped_total == 0:
                warnings.warn(
                    "InertiaTracker.record() called without an optimizer.step() since the "
                    "last record (a step skipped, e.g. by GradScaler?): nothing recorded; such "
                    "calls are counted in the next row's `skipped` column (warned once)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            self._skipped_total += 1
            return None
        if self._n_steps != k + 1:
            raise RuntimeError(
                f"InertiaTracker.record() must be called once after every optimizer.step(): "
                f"{self._n_steps} steps but {k} records so far"
            )
        self._losses[k] = _as_scalar_tensor("loss", loss)
        if self.mode == "exact" and self._recorded(k + 1):
            if closure is None:
                raise ValueError(
                    "`closure` is required in mode='exact': it must return the loss "
                    "of the same batch at the parameters after the step"
                )
            self._closures[k] = self._evaluate(closure)
        if self._sharpness is not None:
            self._sharpness.measure(k, closure)
        self._n_records += 1
        for old in [s for s in self._losses if s < k - 1]:
            del self._losses[old]
        for old in [s for s in self._closures if s < k - 1]:
            del self._closures[old]
        if not self._recorded(k):
            return None
        self._stage(k)
        if len(self._staged) < self.flush_every:
            return None
        rows = self.flush()
        return rows[-1] if rows and rows[-1]["step"] == k else None

    def flush(self) -> list[dict[str, Any]]:
        """Bring the staged rows to the host and hand them on; returns them in order.

        One device-to-host transfer for all of them (and, under ``torch.distributed``, one
        all-reduce: call it on every rank). Each row goes to :attr:`rows` and the sinks, then
        the NaN policy acts on it: with ``"raise"`` or ``"stop"`` the rows staged after the
        first non-finite one are dropped. Called by :meth:`record` every ``flush_every`` rows
        and by :meth:`close`.
        """
        if not self._staged:
            return []
        staged, self._staged = self._staged, []
        vecs = reduce_rows([(e.losses, e.sums) for e in staged], self.layout, self.process_group)
        out = []
        for e, vec in zip(staged, vecs, strict=True):
            row = self._row(e, vec)
            if self._sharpness is not None:
                terms = self._assembled.get(e.k - 1)
                hps = e.hps.get(e.k - 1)
                row.update(self._sharpness.columns(e.k, row, terms, hps if terms else None))
            self.rows.append(row)
            out.append(row)
            for sink in self.sinks:
                sink.write(row)
            if self._divergence is not None and self._divergence.update(e.k, row["inertia"], row["finite"]):
                self._on_diverging(e.k)
            if not row["finite"]:
                self._on_nonfinite(e.k)
                if self.stopped:
                    break
        return out

    @property
    def history(self) -> Any:
        """The recorded rows as a pandas DataFrame (columns :data:`COLUMNS`).

        In a single process the staged rows are flushed first; under ``torch.distributed`` it
        holds the rows up to the last flush (:meth:`flush` must be called on every rank).
        """
        import pandas as pd

        if self.layout == "local" and not self.stopped:
            self.flush()

        return pd.DataFrame(self.rows, columns=self.columns)

    @property
    def columns(self) -> list[str]:
        """The row columns: :data:`COLUMNS`, then :data:`SHARPNESS_COLUMNS` with ``sharpness_every``."""
        return list(COLUMNS) + (list(SHARPNESS_COLUMNS) if self._sharpness is not None else [])

    def close(self) -> None:
        """Remove the optimizer's and the parameters' hooks and close the sinks (finalising a run
        directory).

        :attr:`status` becomes ``"complete"`` unless the run was ``"stopped"``
        (``nan_policy="stop"``), ``"failed"`` (a :class:`NonFiniteError`, or an exception leaving
        a ``with`` block; :attr:`error` says which) or ``"diverging"`` (the ``divergence`` rule
        fired); a sink with a ``finish(status, error)`` method (a
        :class:`~inertia.track.RunLog`) is told before it is closed. Calling it again does
        nothing.
        """
        if self._closed:
            return
        try:
            if not self.stopped:
                self.flush()
        finally:
            self._close()

    def _close(self) -> None:
        self._closed = True
        self._handle.remove()
        self._pre_handle.remove()
        self._clipping.close()
        if self._restart_handle is not None:
            self._restart_handle.remove()
        if self._sharpness is not None:
            self._sharpness.close()
        if self.status == "running":
            self.status = "complete"
        for sink in self.sinks:
            finish = getattr(sink, "finish", None)
            if callable(finish):
                finish(self.status, self.error)
            sink.close()

    def __enter__(self) -> InertiaTracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None and self.status != "failed":  # an escaping error fails the run
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
        self.close()

    # ------------------------------------------------------------------ internals

    def _evaluate(self, closure: Callable[[], Any]) -> Any:
        import torch

        devices = []
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            devices = list(range(torch.cuda.device_count()))
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            value = closure()
        return _as_scalar_tensor("closure()", value)

    def _on_diverging(self, k: int) -> None:
        rule = self._divergence.rule if self._divergence is not None else _DEFAULT_RULE
        if self.status == "running":
            self.status = "diverging"
        for sink in self.sinks:
            mark = getattr(sink, "diverging", None)
            if callable(mark):
                mark(k)
        warnings.warn(
            f"the run is diverging at step {k}: its inertia rose at each of the last {rule.window} "
            f"recorded rows, by a factor >= {rule.growth:g}, above where it started "
            f"(inertia.track.divergence; divergence=None turns this off)",
            DivergenceWarning,
            stacklevel=3,
        )

    def _on_nonfinite(self, k: int) -> None:
        msg = f"non-finite loss or optimizer state at step {k}"
        if self.nan_policy == "raise":
            msg += " (nan_policy='raise'; use 'flag' or 'stop' to go on)"
            self.status, self.error = "failed", f"NonFiniteError: {msg}"
            raise NonFiniteError(msg)
        if self.nan_policy == "stop":
            self.stopped = True
            self.status = "stopped"
            log.warning("%s: tracking stopped (nan_policy='stop')", msg)
        elif not self._warned_nonfinite:  # 'flag': once; the rows carry finite=False
            log.warning("%s: flagged (later non-finite rows are flagged without a warning)", msg)
        self._warned_nonfinite = True

    def _stage(self, k: int) -> None:
        """Row ``k``'s losses and sums, gathered on the device until the next flush (no sync)."""
        import torch

        loss_list = [self._losses[k]]
        if k >= 1:
            loss_list.append(self._losses.get(k - 1, self._nan))
            if self.mode == "exact":
                loss_list.append(self._closures.get(k - 1, self._nan))
        steps = [0] if k == 0 else [j for j in (k - 2, k - 1) if j >= 0]
        # step k-2's terms are assembled for the previous row when recording every step: reuse
        # them instead of transferring and assembling its sums again
        reuse = k >= 2 and self._terms_step == k - 2
        steps = [j for j in steps if j in self._hooks and not (j == k - 2 and reuse)]
        self._terms_step = k - 1 if k >= 1 and k - 1 in steps else None
        device = loss_list[0].device
        losses = torch.stack([v.to(device=device, dtype=torch.float64) for v in loss_list])
        sums = (
            torch.cat([self._hooks[j].sums for j in steps])
            if steps
            else torch.zeros(0, dtype=torch.float64, device=device)
        )
        hps = {j: self._hooks[j].hps for j in steps}
        restarted = frozenset(j for j in (k - 2, k - 1) if j in self._restarted)
        clip = {j: self._hooks[j].clip for j in steps}
        self._staged.append(_Staged(k, losses, sums, steps, hps, reuse, restarted, self._skipped, clip))
        self._skipped = 0

    def _merge_hparams(self, vec: list[float], n_loss: int, e: _Staged) -> list[float]:
        """Sharded layout: fill each step's unknown hyper-parameters from the all-reduced block
        that follows its sums (:func:`inertia.track.distributed.unpack_hparams`) and return the
        vector without those blocks."""
        out, pos = vec[:n_loss], n_loss
        for j in e.steps:
            hps = e.hps[j]
            n_sums = len(hps) * len(self.mapping.names) + self._clip_width(e, j)
            n_block = 2 * sum(len(hp) for hp in hps)
            out += vec[pos : pos + n_sums]
            e.hps[j] = unpack_hparams(hps, vec[pos + n_sums : pos + n_sums + n_block])
            pos += n_sums + n_block
        return out

    def _clip_width(self, e: _Staged, j: int) -> int:
        """How many values step ``j``'s clipping block holds in the row's vector: one per group
        when measured, and always under a distributed layout (zeros: equal lengths on all ranks)."""
        return len(e.hps[j]) if e.clip.get(j) == MEASURED or self.layout != "local" else 0

    def _split(self, vec: list[float], e: _Staged) -> dict[int, list[dict[str, float]]]:
        """Each step's sums per group, with the group's ``clipping`` (0, NaN or measured)."""
        names = self.mapping.names
        out, pos = {}, 0
        for j in e.steps:
            groups = []
            for _ in e.hps[j]:
                groups.append(dict(zip(names, vec[pos : pos + len(names)], strict=True)))
                pos += len(names)
            width, state = self._clip_width(e, j), e.clip.get(j)
            for i, group in enumerate(groups):
                measured = vec[pos + i] if state == MEASURED else 0.0
                group["clipping"] = math.nan if state == UNKNOWN else measured
            pos += width
            out[j] = groups
        return out

    def _assemble(
        self, j: int, hps: list[dict[str, float]], sums: list[dict[str, float]], prev: list[StepTerms] | None
    ) -> list[StepTerms]:
        fresh = self.fresh and j == 0
        paired = self._paired(j, prev)
        out = []
        for i, (hp, s) in enumerate(zip(hps, sums, strict=True)):
            if paired:
                terms = self.mapping.assemble(hp, s, *paired[i])
            else:
                terms = self.mapping.assemble(hp, s, None if prev is None else prev[i], fresh)
            clipping = s.get("clipping", 0.0)
            out.append(terms if clipping == 0.0 else dataclasses.replace(terms, clipping=clipping))
        return out

    def _paired(self, j: int, prev: list[StepTerms] | None) -> list[tuple[StepTerms | None, bool]] | None:
        """Issue 9: ``(previous terms, fresh)`` for each group of step ``j`` when the optimizer's
        groups changed since step ``j - 1`` (``add_param_group``, a group removed): a group is
        paired with its own previous terms; a new group starts at rest (``fresh``). ``None``
        when the groups did not change."""
        now, before = self._group_ids.get(j), self._group_ids.get(j - 1)
        if prev is None or now is None or before is None or now == before:
            return None
        by_id = dict(zip(before, prev, strict=True))
        return [(by_id.get(g), g not in by_id) for g in now]

    def _dropped(self, j: int, prev: list[StepTerms] | None) -> float:
        """Issue 9: minus the kinetic energy of the groups step ``j - 1`` had and step ``j`` has
        not (removed from the optimizer: their momentum is gone, booked like a restart)."""
        now, before = self._group_ids.get(j), self._group_ids.get(j - 1)
        if prev is None or now is None or before is None or now == before:
            return 0.0
        return -sum(t.kinetic for g, t in zip(before, prev, strict=True) if g not in set(now))

    def _row(self, e: _Staged, vec: list[float]) -> dict[str, Any]:
        """The row of a staged entry from its host floats (:func:`inertia.ledger.ledger_row`)."""
        k, n_loss = e.k, e.losses.numel()
        # the losses and the optimizer-state sums: NaN/Inf anywhere is a non-finite step (the
        # values stay NaN/Inf in the row; they are never replaced)
        finite = all(math.isfinite(x) for x in vec)
        if self.layout == "sharded":
            vec = self._merge_hparams(vec, n_loss, e)
        by_step = self._split(vec[n_loss:], e)
        first = terms = prev = None
        restart = 0.0
        if k == 0:
            first = self._assemble(0, e.hps[0], by_step[0], None) if 0 in by_step else None
        elif k - 1 in by_step:
            reused = self._assembled.get(k - 2) if e.reuse else None
            prev = reused or (
                self._assemble(k - 2, e.hps[k - 2], by_step[k - 2], None) if k - 2 in by_step else None
            )
            if prev is not None and not reused and k - 2 in e.restarted:
                prev = _at_rest(prev)
            terms = self._assemble(k - 1, e.hps[k - 1], by_step[k - 1], prev)
            restart += self._dropped(k - 1, prev)  # a removed group's kinetic energy
            # a restart after step k-1 removed the kinetic energy that reached theta_k
            if k - 1 in e.restarted:
                restart = -sum(t.kinetic for t in terms)
                terms = _at_rest(terms)
            self._assembled = {k - 1: terms}
        return ledger_row(
            k,
            vec[:n_loss],
            terms,
            prev,
            first=first,
            fresh=self.fresh,
            exact=self.mode == "exact",
            maximize=self._maximize,
            finite=finite,
            restart=restart,
            skipped=e.skipped,
        )


def _at_rest(terms: list[StepTerms]) -> list[StepTerms]:
    """A step's terms after a restart zeroed the momentum it left: no kinetic energy, nothing
    carried forward."""
    return [dataclasses.replace(t, kinetic=0.0, forward=0.0) for t in terms]


def _sharpness_monitor(tracker: InertiaTracker, every: int, warn_ratio: float) -> SharpnessMonitor:
    """Issue 12: the tracker's :class:`~inertia.track.sharpness.SharpnessMonitor`; its sinks must
    take the added columns."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1 or every % tracker.every:
        raise ValueError(
            f"`sharpness_every` must be a positive multiple of `every` ({tracker.every}), got {every!r}"
        )
    for sink in tracker.sinks:
        cols = getattr(sink, "columns", None)
        if cols is not None and not set(SHARPNESS_COLUMNS) <= set(cols):
            raise ValueError(
                "a sink's columns lack the sharpness columns: create it with "
                "columns=inertia.track.COLUMNS + inertia.track.SHARPNESS_COLUMNS"
            )
    return SharpnessMonitor(
        tracker.optimizer,
        tracker.mapping,
        every,
        warn_ratio=warn_ratio,
        exact=tracker.mode == "exact",
        process_group=tracker.process_group,
    )
