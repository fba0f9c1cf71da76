"""The ledger's ``clipping`` term: the work of a change of ``.grad`` between backward and step.

The optimizer applies the gradient it finds in ``.grad`` (``G_applied``); the gradient of the
potential is the one backward left there (``G_raw``). ``clip_grad_norm_``, a tensor hook that
scales, a ``GradScaler``'s unscaling or user code (``p.grad.mul_(0.5)``) may change one into the
other. The mappings book the work of the applied gradient, ``<G_applied, dtheta>``; the ledger
(:func:`inertia.ledger.ledger_row`) books the rest of the change of the losses as::

    clipping  = <G_raw - G_applied, theta_{j+1} - theta_j>
    curvature = V(theta_{j+1}) - V(theta_j) - <G_raw, theta_{j+1} - theta_j>

so ``curvature`` is again the Bregman remainder of ``V`` (never negative for a convex full-batch
loss) and ``curvature + clipping`` is what it was without this term (the residual is unchanged).
``G = grad V`` is the negated loss gradient under ``maximize`` (``clipping`` then takes the
opposite sign of ``<raw - applied, dtheta>``); weight decay adds ``wd theta_j`` to both
gradients and cancels in their difference.

How the raw gradient is seen. A post-accumulate-grad hook on every parameter of the optimizer
(``Tensor.register_post_accumulate_grad_hook``; no module hook) queues one callback per
backward on the autograd engine; that callback queues a second one, which runs after every
callback queued during the backward (DDP's and FSDP's gradient reduction among them), so it sees
the gradient as the optimizer will first find it: the averaged one under DDP, the sum of the
micro-batches after gradient accumulation (the last backward before the step wins). The hooks
exist only during the backward passes before a step the tracker sums (:meth:`ClippingMonitor.arm`:
with ``every > 1`` the other backward passes run without them). It notes
each gradient's identity and version counter and, while capturing, copies all of them into
persistent buffers with one multi-tensor copy (``torch._foreach_copy_``), divided by the
``GradScaler``'s scale at the step (the scale backward used), so unscaling is no change.

At the optimizer's step (its pre-hook, or after the closure of ``optimizer.step(closure)``):

* no gradient changed since the end of backward: ``clipping = 0.0`` exactly, no device work;
* a gradient changed and was captured: ``D = raw - .grad`` (in place) and a copy of ``theta``
  before the step, ``clipping = sign * sum <D, theta_{j+1} - theta_j>`` after it, per parameter
  group, in a number of device operations that does not grow with the number of tensors
  (:func:`inertia.track.reduce.reduce_flat`), kept on the device with the row's other sums;
* a gradient changed and was not captured (``raw_grad="auto"`` before the first change):
  ``clipping`` (and so ``curvature``) is NaN in that row, a warning names the step, and
  capturing starts at the next backward; ``raw_grad=True`` captures from the first backward;
* no backward since the previous step (a tracker made between backward and step): 0.

``raw_grad="auto"`` (default) costs nothing on the device while ``.grad`` is never changed;
with a ``GradScaler`` passed as ``grad_scaler`` (whose unscaling changes every gradient) it
captures from the start. Capturing holds two buffers of the gradients' size (raw, then the
parameters before the step) and costs one copy per backward and a few multi-tensor operations
per step. ``raw_grad=False`` never captures: the change lands in ``curvature``, as before this
term existed (and a ``GradScaler``'s unscaling is then no change either way: the applied
gradient is the unscaled one).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from inertia.track.distributed import local_tensor
from inertia.track.reduce import reduce_flat

__all__ = ["RAW_GRAD", "ClippingMonitor"]

#: the values of ``InertiaTracker(raw_grad=...)``
RAW_GRAD = ("auto", True, False)
#: the state of a step's clipping term before the step's sums exist
ZERO, UNKNOWN, MEASURED = "zero", "unknown", "measured"


def _engine() -> Any:
    from torch.autograd import Variable

    return Variable._execution_engine


class ClippingMonitor:
    """Captures ``.grad`` as backward leaves it and books the work of its later change.

    Args:
        optimizer: the ``torch.optim`` optimizer whose parameters are watched (groups added
            later are picked up by :meth:`arm` after each step).
        raw_grad: ``"auto"``, ``True`` or ``False`` (module docstring).
        grad_scaler: the ``torch.amp.GradScaler`` whose scaled losses are backwarded, or ``None``.
        needed: whether the step about to be taken is summed by the tracker (``every``).
        maximize: the optimizer ascends the loss (``G = -grad``).
    """

    def __init__(
        self,
        optimizer: Any,
        raw_grad: str | bool,
        grad_scaler: Any,
        needed: Callable[[], bool],
        maximize: bool,
    ) -> None:
        self.optimizer = optimizer
        self.raw_grad = raw_grad
        self.scaler = grad_scaler if grad_scaler is not None and grad_scaler.is_enabled() else None
        self.capturing = raw_grad is True or (raw_grad == "auto" and self.scaler is not None)
        self._needed = needed
        self._sign = -1.0 if maximize else 1.0
        self._handles: dict[int, Any] = {}
        self._queued = False
        self._fresh = False  # a backward ended since the last step
        self._captured = False  # ... and its gradients are in the raw buffers
        self._seen: dict[int, tuple[Any, int]] = {}  # id(p) -> (grad, version) at end of backward
        self._raw: dict[int, Any] = {}
        self._theta: dict[int, Any] = {}
        self._pending: Any = None  # the pairs (D, theta before) of the step, per group
        self.state = ZERO  # of the step about to be (or just) taken
        self.warned_step: int | None = None
        self._watch()

    # ------------------------------------------------------------------ hooks

    def _watch(self) -> None:
        """A post-accumulate-grad hook on every parameter that can take a gradient."""
        if self.raw_grad is False:
            return
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in self._handles and p.requires_grad and p.is_leaf:
                    self._handles[id(p)] = p.register_post_accumulate_grad_hook(self._on_grad)

    def arm(self, needed: bool) -> None:
        """Hooks only while they can matter: called after each step with whether the next step
        is summed (``every``); the hooks are registered for the backward passes before such a
        step (parameters of groups added since included) and removed otherwise, so that an
        unsummed step pays no Python call per tensor in its backward (with ``every=10``, 2 of 10
        backward passes are watched)."""
        if needed:
            self._watch()
        elif self._handles:
            for handle in self._handles.values():
                handle.remove()
            self._handles = {}

    def _on_grad(self, _: Any) -> None:
        if not self._queued:
            self._queued = True
            _engine().queue_callback(self._after_callbacks)

    def _after_callbacks(self) -> None:
        # queued from a callback: runs after every callback the backward queued (DDP's reduction)
        _engine().queue_callback(self._end_of_backward)

    def _end_of_backward(self) -> None:
        import torch

        self._queued = False
        if not self._needed():
            self._fresh = self._captured = False
            return
        seen: dict[int, tuple[Any, int]] = {}
        grads, bufs = [], []
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                seen[id(p)] = (g, g._version)
                if self.capturing:
                    g = local_tensor(g)
                    buf = self._raw.get(id(p))
                    if buf is None or buf.shape != g.shape or buf.dtype != g.dtype or buf.device != g.device:
                        buf = self._raw[id(p)] = torch.empty_like(g, memory_format=torch.contiguous_format)
                    grads.append(g)
                    bufs.append(buf)
        if grads:
            with torch.no_grad():
                torch._foreach_copy_(bufs, grads)
        self._seen, self._fresh, self._captured = seen, True, bool(grads)

    # ------------------------------------------------------------------ the step

    def before_step(self, step: int) -> None:
        """Called just before step ``step`` updates the parameters (after any closure): decide
        the step's clipping state and, when it is measured, form ``D`` and copy ``theta``."""
        import torch

        if not self._fresh:
            # no backward since the previous step (or this is the closure's pre-hook call)
            if self._pending is None:
                self.state = ZERO
            return
        self._fresh = False
        seen, self._seen = self._seen, {}
        changed = False
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                s = seen.get(id(p))
                if s is None or s[0] is not g or s[1] != g._version:
                    changed = True
                    break
            if changed:
                break
        self._pending = None
        if not changed:
            self.state = ZERO
            return
        if not self._captured:
            self.state = UNKNOWN
            if self.raw_grad == "auto" and not self.capturing:
                self.capturing = True
                self.warned_step = step
                warnings.warn(
                    f"the gradients changed between backward() and optimizer step {step} "
                    "(clipping, a hook, a GradScaler, user code) before the tracker captured "
                    f"them: row {step + 1}'s `clipping` and `curvature` are NaN; capturing "
                    "from the next backward on. Pass InertiaTracker(..., raw_grad=True) to have "
                    "them from step 0 (and grad_scaler=scaler under torch.amp.GradScaler)",
                    RuntimeWarning,
                    stacklevel=5,
                )
            return
        self._captured = False
        with torch.no_grad():
            pairs: list[list[tuple[Any, Any]]] = []
            raws, grads, thetas, params = [], [], [], []
            for group in self.optimizer.param_groups:
                rows = []
                for p in group["params"]:
                    if p.grad is None:
                        continue  # not stepped: no dtheta
                    g, q = local_tensor(p.grad), local_tensor(p.detach())
                    raw = self._raw.get(id(p))
                    if raw is None or id(p) not in seen or raw.shape != g.shape:
                        # no gradient at the end of backward: the loss's gradient is zero there
                        raw = self._raw[id(p)] = torch.zeros_like(g, memory_format=torch.contiguous_format)
                    theta = self._theta.get(id(p))
                    if theta is None or theta.shape != q.shape or theta.dtype != q.dtype:
                        theta = torch.empty_like(q, memory_format=torch.contiguous_format)
                        self._theta[id(p)] = theta
                    raws.append(raw)
                    grads.append(g)
                    thetas.append(theta)
                    params.append(q)
                    rows.append((raw, theta))
                pairs.append(rows)
            if raws:
                if self.scaler is not None:
                    inv = self.scaler._scale.double().reciprocal().float()  # as unscale_ forms it
                    torch._foreach_mul_(raws, inv)
                torch._foreach_sub_(raws, grads)  # D = raw - applied
                torch._foreach_copy_(thetas, params)
        self._pending = (pairs, thetas, params)
        self.state = MEASURED

    def after_step(self, groups: list[Any]) -> Any:
        """The step's clipping term per parameter group: ``(state, values)`` with ``values`` a
        float64 tensor of one sum per group when ``state`` is ``"measured"``, else ``None``."""
        import torch

        state, pending = self.state, self._pending
        self.state, self._pending = ZERO, None
        if state != MEASURED or pending is None:
            return state, None
        pairs, thetas, params = pending
        with torch.no_grad():
            torch._foreach_sub_(thetas, params)  # theta_j - theta_{j+1} = -dtheta
            sums = []
            weight = -self._sign  # clipping = sign <D, dtheta> = -sign <D, -dtheta>
            for rows, group in zip(pairs, groups, strict=True):
                like = rows[0][0] if rows else local_tensor(group["params"][0])
                sums.append(reduce_flat(rows, _products, ("clipping",), like, {"clipping": ("clip", weight)}))
            device = sums[0].device
            return state, torch.cat([s.to(device) for s in sums])

    def close(self) -> None:
        """Remove the hooks and free the buffers."""
        for handle in self._handles.values():
            handle.remove()
        self._handles = {}
        self._raw, self._theta, self._seen, self._pending = {}, {}, {}, None


def _products(_: Any, d: Any, minus_dtheta: Any) -> dict[str, tuple[Any, ...]]:
    return {"clip": (d, minus_dtheta)}
