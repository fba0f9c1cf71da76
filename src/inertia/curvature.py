"""Curvature of a real loss: Hessian-vector products, top eigenvalues and stability thresholds.

The Hessian ``H = d^2 L / d theta^2`` of a network's loss is never formed: it is applied to a
vector by a Hessian-vector product (HVP), and its top eigenvalues come from Krylov methods on
that product.

* HVP (:class:`HessianOperator`, :func:`hvp`), two ways, chosen by ``mode``:

  - ``"double_backward"`` (the default, measured faster: ``benchmarks/curvature.py``):
    ``H u = d/d theta <grad L(theta), u>``, the gradient's graph built once
    (``create_graph=True``) and differentiated again for each ``u``;
  - ``"forward_over_reverse"``: ``H u = d/de grad L(theta + e u)`` at ``e = 0``
    (``torch.func.jvp`` of ``torch.func.grad`` through ``torch.func.functional_call``); needs a
    loss built by :func:`model_loss`, since a plain closure cannot be re-evaluated at other
    parameters.

* Top eigenvalues (:func:`top_eigenvalues`): Lanczos with full reorthogonalisation (default;
  the ``k`` algebraically largest Ritz values, stopped when every Ritz residual bound
  ``|beta_m s_{m,i}| <= tol |theta_i|``) or power iteration with deflation (the ``k`` largest
  in *magnitude*, stopped when ``|lambda_new - lambda_old| <= tol |lambda_new|``).

* Preconditioned sharpness: ``lambda_max(P^{-1/2} H P^{-1/2})`` (the spectrum of ``P^{-1} H``)
  with the diagonal ``P`` of an adaptive optimizer read from its state by the tracker's own
  mappings (:meth:`inertia.track.Mapping.preconditioner`): Adam/AdamW
  ``P = (1 - beta1^t) (sqrt(s / (1 - beta2^t)) + eps)`` (the step is ``theta -= eta P^{-1} m``),
  RMSprop ``P = sqrt(s) + eps`` (centered: ``sqrt(s - a^2) + eps``); SGD: ``P = I``.

* Stability thresholds (:func:`stability_threshold`) of the linearised optimizer on a quadratic
  mode of curvature ``lambda`` (THEORY.md section 7), from each group's current learning rate
  ``eta``. Every form is a two-term recursion ``b <- mu b + c lambda theta``,
  ``theta <- theta - eta (a lambda theta + n b)``, stable iff ``eta lambda < x*`` where
  ``1 + tr A + det A = 0`` at ``eta lambda = x*`` (Jury's conditions; the other two hold):

  ===========================================  ==========================================
  gradient descent (``momentum = 0``)          ``2 / eta``
  heavy ball (``b <- mu b + (1 - tau) g``)     ``2 (1 + mu) / ((1 - tau) eta)``
  Nesterov, PyTorch form                       ``2 (1 + mu) / ((1 + 2 mu) eta)``
  (``b <- mu b + g``, ``theta -= eta (g + mu b)``)
  Adam / AdamW (preconditioned, ``P`` above)   ``(2 + 2 beta1) / ((1 - beta1) eta)``
  RMSprop (preconditioned), momentum ``mu``    ``2 (1 + mu) / eta`` (``2 / eta`` without)
  ===========================================  ==========================================

  Nesterov: with ``A = [[1 - x (1 + mu), -eta mu^2], [lambda, mu]]`` (``x = eta lambda``),
  ``tr A = 1 + mu - x (1 + mu)`` and ``det A = mu (1 - x)``, so ``1 + tr + det = 0`` at
  ``x* = 2 (1 + mu) / (1 + 2 mu)`` (``1.357`` for ``mu = 0.9``, against ``3.8`` for heavy
  ball). Adam is heavy ball with dampening ``tau = 1 - beta1`` in the metric ``P``
  (Cohen et al., arXiv 2207.14484: ``38 / eta`` for ``beta1 = 0.9``). Optimizers without a
  derived threshold raise :class:`NoThresholdError`.

Distributed. Each rank computes the HVP of its own batch and the products are averaged with
**one** ``all_reduce`` per product (the whole flattened vector): the operator is the Hessian of
the mean of the ranks' losses (the full-batch mean for equal local batches and a mean
criterion). The Krylov vectors are full-length and the same on every rank, so dot products and
norms need no collective.

* DDP: build the loss on the local module (:func:`model_loss` unwraps
  ``DistributedDataParallel``): DDP's gradient hooks must not see the second backward.
* FSDP2 (``fully_shard``; the parameters are DTensors sharded on dim 0): pass them as they are.
  The products are taken w.r.t. the *unsharded* parameters (:mod:`inertia._fsdp`): the FSDP2
  modules are unsharded once per operator by FSDP2's own all-gather (one per ``fully_shard``
  group), the loss is evaluated with FSDP2's hooks passive (its activation-checkpointing
  recompute state: no reshard, no gradient reduce-scatter), the gradient graph is kept for all
  products, and :meth:`HessianOperator.release` reshards. A preconditioner read from the sharded
  optimizer state is gathered once by one ``all_gather_into_tensor``. Counted per product: one
  ``all_reduce``; per operator: FSDP2's all-gathers (one per group) and, with a preconditioner,
  one ``all_gather_into_tensor``. Memory: the full parameters and the gradient graph of the
  local batch while the operator lives, plus ``max_iter`` full-length Lanczos vectors (``k + 2`` for
  power iteration). ``mode="forward_over_reverse"`` is refused (``torch.func.jvp`` through
  FSDP2's forward hooks gives wrong products in torch 2.13). With FSDP2's mixed precision the
  products run in its ``param_dtype``.

Example:
    >>> import torch
    >>> from inertia import curvature
    >>> w = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
    >>> a = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    >>> curvature.top_eigenvalues(lambda: 0.5 * (a * w * w).sum(), [w], k=2).round(8).tolist()
    [3.0, 2.0]
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inertia._fsdp import Unsharded, full_tensors, is_dtensor

__all__ = [
    "HVP_MODES",
    "METHODS",
    "HessianOperator",
    "ModelLoss",
    "NoThresholdError",
    "Spectrum",
    "eigenvalues",
    "hvp",
    "lanczos",
    "model_loss",
    "power_iteration",
    "preconditioner",
    "stability_threshold",
    "top_eigenvalues",
]

#: the ways to compute a Hessian-vector product (:class:`HessianOperator`)
HVP_MODES = ("double_backward", "forward_over_reverse")
#: the eigenvalue methods of :func:`top_eigenvalues`
METHODS = ("lanczos", "power")
#: above this many parameters :func:`eigenvalues` refuses to form the dense Hessian
DENSE_LIMIT = 6000

_SDPA_HINT = (
    "double backward (needed for Hessian-vector products) is not implemented for an operation "
    "of this model{op}. If it is scaled_dot_product_attention, select the math kernel around "
    "the curvature call: `with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH): ...` "
    "(the flash and memory-efficient kernels have no double backward). Original error: {err}"
)


class NoThresholdError(ValueError):
    """The optimizer (or one of its settings) has no derived stability threshold."""


# --------------------------------------------------------------------------------------------
# losses


class ModelLoss:
    """``L(theta) = sum_b w_b criterion(model(x_b), y_b)`` over one batch or a loader, with the
    weights ``w_b = n_b / N`` (``n_b`` examples of ``N``): the mean over all examples when the
    criterion is a mean.

    Built by :func:`model_loss`. Calling it evaluates the whole loss (with its graph);
    :meth:`batches` yields ``(w_b, closure_b)`` so that an HVP over a loader holds one batch's
    graph at a time. Every evaluation runs with the module in training mode (``train=True``, the
    default: batch norm uses batch statistics, dropout is on) or in eval mode (``train=False``:
    running statistics, no dropout; this changes the Hessian), restores the module's mode and
    buffers (batch-norm running statistics are not updated) and runs under a forked RNG seeded
    with ``seed``, so that dropout draws the same masks in every product (the operator is then
    one fixed symmetric matrix) and the caller's RNG is untouched.
    """

    def __init__(
        self, model: Any, criterion: Callable[..., Any], data: Any, *, train: bool = True, seed: int = 0
    ) -> None:
        import torch

        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(criterion):
            raise TypeError(f"`criterion` must be callable, got {type(criterion).__name__}")
        if not isinstance(train, bool):
            raise TypeError(f"`train` must be True or False, got {train!r}")
        # DDP: differentiate the local module; the products are all-reduced by the operator
        self.model: Any = model.module if type(model).__name__ == "DistributedDataParallel" else model
        self.criterion = criterion
        self.train = train
        self.seed = int(seed)
        self._single = _is_batch(data)
        self.data = data
        if not self._single:
            self.n_examples = sum(_batch_size(b) for b in data)
            if self.n_examples == 0:
                raise ValueError("`data` must hold at least one example, got an empty loader")

    @property
    def params(self) -> list[Any]:
        """The parameters that require a gradient (frozen ones are constants of the loss)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def _device(self) -> Any:
        return next(self.model.parameters()).device

    def _eval(self, batch: Any, params: dict[str, Any] | None = None) -> Any:
        import torch

        x, y = batch
        device = self._device()
        x = tuple(t.to(device) for t in x) if isinstance(x, (tuple, list)) else x.to(device)
        y = y.to(device)
        was_training = self.model.training
        # copies of the buffers take the batch-norm updates; the module's own stay untouched
        replaced = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        replaced.update(params or {})
        self.model.train(self.train)
        try:
            with torch.random.fork_rng(devices=_cuda_devices()):
                torch.manual_seed(self.seed)
                args = x if isinstance(x, tuple) else (x,)
                out = torch.func.functional_call(self.model, replaced, args)
                return self.criterion(out, y)
        finally:
            self.model.train(was_training)

    def batches(self) -> Iterable[tuple[float, Callable[..., Any]]]:
        """``(w_b, closure_b)`` per batch; ``closure_b(params=None)`` evaluates that batch's loss
        (at ``params``, a name -> tensor dict for ``torch.func.functional_call``, if given)."""
        if self._single:
            yield 1.0, lambda params=None: self._eval(self.data, params)
            return
        for b in self.data:
            yield _batch_size(b) / self.n_examples, lambda params=None, b=b: self._eval(b, params)

    def __call__(self) -> Any:
        total = None
        for w, f in self.batches():
            term = f() if w == 1.0 else w * f()
            total = term if total is None else total + term
        return total


def model_loss(
    model: Any, criterion: Callable[..., Any], data: Any, *, train: bool = True, seed: int = 0
) -> ModelLoss:
    """The loss of ``model`` on a batch ``(x, y)`` or on a loader of such batches.

    ``L = sum_b (n_b / N) criterion(model(x_b), y_b)`` (the dataset mean for a mean criterion);
    ``x`` may be a tuple of inputs (``model(*x)``); batches are moved to the parameters' device.

    Args:
        model: an ``nn.Module`` (a ``DistributedDataParallel`` wrapper is unwrapped).
        criterion: ``criterion(output, target) -> scalar tensor``.
        data: one batch ``(x, y)`` or an iterable of batches (re-iterated for every product).
        train: evaluate in training mode (default; batch norm's batch statistics, dropout on)
            or in eval mode (``False``). Mode and buffers are restored after each evaluation.
        seed: the RNG seed of every evaluation (dropout masks are the same in every product).

    Example:
        >>> import torch
        >>> from inertia import curvature
        >>> net = torch.nn.Linear(3, 1).double()
        >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
        >>> f = curvature.model_loss(net, torch.nn.functional.mse_loss, (x, y))
        >>> curvature.top_eigenvalues(f, list(net.parameters()), k=1).shape
        (1,)
    """
    return ModelLoss(model, criterion, data, train=train, seed=seed)


def _is_batch(data: Any) -> bool:
    import torch

    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and isinstance(data[1], torch.Tensor)
        and (isinstance(data[0], torch.Tensor) or isinstance(data[0], (tuple, list)))
    )


def _batch_size(batch: Any) -> int:
    if not _is_batch(batch):
        raise TypeError(f"each batch must be a pair (inputs, targets) of tensors, got {type(batch).__name__}")
    return int(batch[1].shape[0])


def _cuda_devices() -> list[int]:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


# --------------------------------------------------------------------------------------------
# the operator


class HessianOperator:
    """``u -> H u`` (optionally ``P^{-1/2} H P^{-1/2} u``) on flat vectors of all ``params``.

    Args:
        loss_fn: ``loss_fn() -> scalar tensor`` (a closure over ``params``) or a
            :class:`ModelLoss` (:func:`model_loss`: a batch or a loader).
        params: the tensors to differentiate (those with ``requires_grad=False`` are frozen and
            left out); their concatenation is the flat vector.
        mode: ``"double_backward"`` or ``"forward_over_reverse"`` (:data:`HVP_MODES`).
        preconditioner: ``None``, an optimizer (``P`` from its state, see :func:`preconditioner`)
            or a list of positive tensors shaped like ``params`` (``P``'s diagonal).
        shift: per-parameter scalars ``s_i`` added to the Hessian, ``(H + diag(s)) u`` (the
            Hessian of a coupled weight decay ``s/2 ||theta||^2``); ``sign = -1`` negates ``H``
            (an optimizer that maximises).
        process_group: ``torch.distributed`` group over which products are averaged (default:
            the world when a process group is initialised; ``False``: never reduce). Under DDP and
            FSDP2 (DTensor ``params``: see the module docstring) the data-parallel ranks.

    Attributes:
        n_hvp: Hessian-vector products computed so far.
        n_collectives: all-reduces issued (one per product when distributed).
    """

    def __init__(
        self,
        loss_fn: Callable[[], Any] | ModelLoss,
        params: Sequence[Any],
        *,
        mode: str = "double_backward",
        preconditioner: Any = None,
        shift: Sequence[float] | None = None,
        sign: float = 1.0,
        process_group: Any = None,
    ) -> None:
        import torch

        if mode not in HVP_MODES:
            raise ValueError(f"`mode` must be one of {HVP_MODES}, got {mode!r}")
        if not callable(loss_fn):
            raise TypeError(f"`loss_fn` must be callable (loss_fn() -> scalar tensor), got {loss_fn!r}")
        params = list(params)
        if not params:
            raise ValueError("`params` must hold at least one tensor, got none")
        for i, p in enumerate(params):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"`params[{i}]` must be a torch.Tensor, got {type(p).__name__}")
        keep = [i for i, p in enumerate(params) if p.requires_grad]
        if not keep:
            raise ValueError("`params` has no tensor with requires_grad=True (all frozen)")
        if mode == "forward_over_reverse" and not isinstance(loss_fn, ModelLoss):
            raise ValueError(
                "`mode='forward_over_reverse'` needs a loss built by curvature.model_loss(model, "
                "criterion, data) (a plain closure cannot be evaluated at other parameters); "
                "use mode='double_backward' for a closure"
            )
        self.params = [params[i] for i in keep]
        # FSDP2: products are taken w.r.t. the unsharded parameters behind the DTensors
        self._fsdp = Unsharded(self.params) if any(is_dtensor(p) for p in self.params) else None
        if self._fsdp is not None and mode == "forward_over_reverse":
            raise NotImplementedError(
                "`mode='forward_over_reverse'` is not supported for FSDP2 (fully_shard) parameters: "
                "torch.func.jvp through FSDP2's forward hooks gives wrong products in torch 2.13; "
                "use mode='double_backward' (the default)"
            )
        self.loss_fn = loss_fn
        self.mode = mode
        dtypes = {p.dtype for p in self.params}
        self.dtype = functools_reduce_promote(dtypes)
        self.device = self.params[0].device
        self.sizes = [p.numel() for p in self.params]
        self.n = sum(self.sizes)
        self.sign = float(sign)
        self.shift = None
        if shift is not None:
            full = list(shift)
            if len(full) != len(params):
                raise ValueError(
                    f"`shift` must have one value per parameter ({len(params)}), got {len(full)}"
                )
            if any(full[i] != 0.0 for i in keep):
                self.shift = torch.cat(
                    [
                        torch.full((params[i].numel(),), float(full[i]), dtype=self.dtype, device=self.device)
                        for i in keep
                    ]
                )
        self.inv_sqrt_p = None
        if preconditioner is not None:
            diag = _preconditioner_diag(preconditioner, params)
            self.inv_sqrt_p = self._flat([diag[i] for i in keep]).rsqrt()
        self.group, self.world = _group(process_group)
        self.n_hvp = 0
        self.n_collectives = 0
        self._grads: Any = None  # the gradient's graph, kept for reuse (one batch, double backward)
        if mode == "forward_over_reverse":
            owner = loss_fn.model  # type: ignore[union-attr]
            by_id = {id(p): name for name, p in owner.named_parameters()}
            missing = [i for i, p in enumerate(self.params) if id(p) not in by_id]
            if missing:
                raise ValueError("`params` must be parameters of the model_loss's model")
            self._names = [by_id[id(p)] for p in self.params]

    # -- flat vectors

    def _flat(self, tensors: Sequence[Any]) -> Any:
        """One flat vector of full tensors (DTensors are gathered: :func:`inertia._fsdp.full_tensors`,
        one collective)."""
        import torch

        if any(is_dtensor(t) for t in tensors):
            tensors = full_tensors(tensors)
        return torch.cat([t.reshape(-1).to(device=self.device, dtype=self.dtype) for t in tensors])

    def _unflat(self, flat: Any, like: Sequence[Any] | None = None) -> list[Any]:
        out = []
        for p, chunk in zip(like or self.params, flat.split(self.sizes), strict=True):
            out.append(chunk.view(tuple(p.shape)).to(device=p.device, dtype=p.dtype))
        return out

    def _targets(self) -> list[Any]:
        """The tensors differentiated: :attr:`params`, or under FSDP2 the unsharded parameters
        (gathered once, kept until :meth:`release`)."""
        return self.params if self._fsdp is None else self._fsdp.gather()

    def _forward(self) -> Any:
        return contextlib.nullcontext() if self._fsdp is None else self._fsdp.plain_forward()

    # -- products

    def _hvp_double_backward(self, u: list[Any]) -> list[Any]:
        import torch

        targets = self._targets()
        if isinstance(self.loss_fn, ModelLoss) and not self.loss_fn._single:
            total = None
            for w, f in self.loss_fn.batches():
                grads = self._graph(f)
                hv = _grad(grads, targets, u, retain_graph=False)
                total = (
                    [w * h for h in hv]
                    if total is None
                    else [t + w * h for t, h in zip(total, hv, strict=True)]
                )
            assert total is not None
            return total
        if self._grads is None:
            f = (
                self.loss_fn
                if not isinstance(self.loss_fn, ModelLoss)
                else next(iter(self.loss_fn.batches()))[1]
            )
            self._grads = self._graph(f)
        with torch.enable_grad():
            return _grad(self._grads, targets, u, retain_graph=True)

    def _graph(self, f: Callable[[], Any]) -> Any:
        import torch

        targets = self._targets()
        with torch.enable_grad(), torch.random.fork_rng(devices=_cuda_devices()), self._forward():
            loss = f()
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError(f"`loss_fn()` must return a scalar tensor, got {loss!r}")
            if not loss.requires_grad:
                raise ValueError("`loss_fn()` returned a loss that does not depend on `params`")
            grads = torch.autograd.grad(loss.reshape(()), targets, create_graph=True, allow_unused=True)
        if all(g is None for g in grads):
            raise ValueError("`loss_fn()` returned a loss that does not depend on `params`")
        return [torch.zeros_like(p) if g is None else g for p, g in zip(targets, grads, strict=True)]

    def _hvp_forward_over_reverse(self, u: list[Any]) -> list[Any]:
        import torch

        model_loss_ = self.loss_fn
        assert isinstance(model_loss_, ModelLoss)
        total = None
        primals = tuple(p.detach() for p in self.params)
        for w, f in model_loss_.batches():

            def loss_of(*theta: Any, f: Any = f) -> Any:
                return f(dict(zip(self._names, theta, strict=True)))

            grad_fn = torch.func.grad(loss_of, argnums=tuple(range(len(primals))))
            try:
                hv = torch.func.jvp(grad_fn, primals, tuple(u))[1]
            except (RuntimeError, NotImplementedError) as exc:
                raise _explain(exc) from exc
            hv = [h.detach() for h in hv]
            total = (
                [w * h for h in hv] if total is None else [t + w * h for t, h in zip(total, hv, strict=True)]
            )
        assert total is not None
        return total

    def hessian(self, flat: Any) -> Any:
        """``sign H u`` for a flat vector ``u`` (no preconditioner, no shift): one product, one
        all-reduce when distributed."""
        u = self._unflat(flat, self._targets())
        if self.mode == "double_backward":
            hv = self._hvp_double_backward(u)
        else:
            hv = self._hvp_forward_over_reverse(u)
        out = self._flat([h.detach() for h in hv])
        self.n_hvp += 1
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(out, group=self.group)
            out = out / self.world
            self.n_collectives += 1
        return out if self.sign == 1.0 else self.sign * out

    def matvec(self, flat: Any) -> Any:
        """``A u`` for a flat vector ``u`` (length :attr:`n`):
        ``A = P^{-1/2} (sign H + diag(shift)) P^{-1/2}``."""
        x = flat if self.inv_sqrt_p is None else flat * self.inv_sqrt_p
        out = self.hessian(x)
        if self.shift is not None:
            out = out + self.shift * x
        return out if self.inv_sqrt_p is None else out * self.inv_sqrt_p

    __call__ = matvec

    def release(self) -> None:
        """Drop the kept gradient graph (it is rebuilt on the next product); under FSDP2 reshard
        the parameters gathered for the products."""
        self._grads = None
        if self._fsdp is not None:
            self._fsdp.release()


def functools_reduce_promote(dtypes: set[Any]) -> Any:
    """The common floating dtype of the parameters (``torch.promote_types`` over all)."""
    import torch

    out = None
    for d in dtypes:
        out = d if out is None else torch.promote_types(out, d)
    if out is None or not out.is_floating_point:
        raise TypeError(f"`params` must be floating-point tensors, got dtypes {sorted(map(str, dtypes))}")
    return out


def _grad(
    outputs: Sequence[Any], inputs: Sequence[Any], grad_outputs: Sequence[Any], retain_graph: bool
) -> list[Any]:
    import torch

    live = [i for i, o in enumerate(outputs) if o.requires_grad]
    if not live:  # the gradient is constant: the Hessian is zero
        return [torch.zeros_like(p) for p in inputs]
    try:
        got = torch.autograd.grad(
            [outputs[i] for i in live],
            list(inputs),
            grad_outputs=[grad_outputs[i] for i in live],
            retain_graph=retain_graph,
            allow_unused=True,
        )
    except (RuntimeError, NotImplementedError) as exc:
        raise _explain(exc) from exc
    return [torch.zeros_like(p) if g is None else g for p, g in zip(inputs, got, strict=True)]


def _explain(exc: BaseException) -> BaseException:
    """A clear error when double backward is missing (flash/efficient attention), else ``exc``."""
    msg = str(exc)
    low = msg.lower()
    if "not implemented" in low or "double backward" in low:
        op = ""
        for word in msg.replace("'", " ").replace('"', " ").split():
            if "attention" in word or word.startswith("aten::"):
                op = f" ({word})"
                break
        return RuntimeError(_SDPA_HINT.format(op=op, err=msg))
    return exc


def _group(process_group: Any) -> tuple[Any, int]:
    if process_group is False:
        return None, 1
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return None, 1
    if not (dist.is_available() and dist.is_initialized()):
        if process_group not in (None, False):
            raise ValueError("`process_group` was given but torch.distributed is not initialised")
        return None, 1
    return process_group, dist.get_world_size(process_group)


def hvp(
    loss_fn: Callable[[], Any] | ModelLoss,
    params: Sequence[Any],
    v: Sequence[Any],
    *,
    mode: str = "double_backward",
    process_group: Any = None,
) -> list[Any]:
    """``H v`` with ``H = d^2 loss_fn() / d params^2``: a list shaped like the trainable ``params``.

    ``v`` holds one tensor per trainable parameter (those with ``requires_grad``). One product;
    for many, build a :class:`HessianOperator` (it keeps the gradient's graph). Under FSDP2
    (DTensor ``params``) ``v`` and the result are full (unsharded) tensors.

    Example:
        >>> import torch
        >>> from inertia import curvature
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> curvature.hvp(lambda: (w**3).sum(), [w], [torch.ones(2)])[0].tolist()
        [6.0, 12.0]
    """
    op = HessianOperator(loss_fn, params, mode=mode, process_group=process_group)
    if len(v) != len(op.params):
        raise ValueError(f"`v` must have one tensor per trainable parameter ({len(op.params)}), got {len(v)}")
    for i, (a, p) in enumerate(zip(v, op.params, strict=True)):
        if tuple(a.shape) != tuple(p.shape):
            raise ValueError(f"`v[{i}]` must have shape {tuple(p.shape)}, got {tuple(a.shape)}")
    try:
        return op._unflat(op.matvec(op._flat(list(v))))
    finally:
        op.release()


# --------------------------------------------------------------------------------------------
# preconditioner


def preconditioner(optimizer: Any, params: Sequence[Any] | None = None) -> list[Any]:
    """The diagonal ``P`` of ``optimizer``'s step, one tensor per parameter (ones for SGD).

    Read by the tracker's mapping of the optimizer (:meth:`inertia.track.Mapping.preconditioner`):
    Adam/AdamW ``P = (1 - beta1^t) (sqrt(s_t / (1 - beta2^t)) + eps)`` with ``s`` the
    ``exp_avg_sq`` (``max_exp_avg_sq`` with amsgrad) and ``t`` the parameter's step count, so
    that the step is ``theta -= eta P^{-1} m``; RMSprop ``P = sqrt(s) + eps`` (centered:
    ``sqrt(s - a^2) + eps``). A parameter without state yet gets ``P = 1``.

    Args:
        optimizer: a ``torch.optim`` optimizer with a registered mapping.
        params: which parameters (default: all of the optimizer's, group by group).
    """
    diag = _optimizer_diag(optimizer)
    if params is None:
        local = _local(optimizer)
        params = [p for g in local.param_groups for p in g["params"]]
    import torch

    return [diag.get(id(p), torch.ones_like(p)) for p in params]


def _local(optimizer: Any) -> Any:
    return optimizer.optim if type(optimizer).__name__ == "ZeroRedundancyOptimizer" else optimizer


def _optimizer_diag(optimizer: Any) -> dict[int, Any]:
    from inertia.track.mapping import mapping_for  # torch.optim knowledge lives in track/

    local = _local(optimizer)
    if not hasattr(local, "param_groups"):
        raise TypeError(
            f"`preconditioner` must be an optimizer or a list of tensors, got {type(optimizer).__name__}"
        )
    mapping = mapping_for(local)
    out: dict[int, Any] = {}
    for group in local.param_groups:
        for p, d in zip(group["params"], mapping.preconditioner(group, local.state), strict=True):
            if d is not None:
                out[id(p)] = d
    return out


def _preconditioner_diag(pre: Any, params: Sequence[Any]) -> list[Any]:
    import torch

    if isinstance(pre, (list, tuple)):
        if len(pre) != len(params):
            raise ValueError(
                f"`preconditioner` must have one tensor per parameter ({len(params)}), got {len(pre)}"
            )
        diag = [torch.as_tensor(d) for d in pre]
    else:
        by_id = _optimizer_diag(pre)
        diag = [by_id.get(id(p), torch.ones_like(p)) for p in params]
    if any(is_dtensor(d) for d in diag):  # FSDP2: P from the sharded state, gathered once
        diag = full_tensors(diag)
    for i, (d, p) in enumerate(zip(diag, params, strict=True)):
        if d.shape != p.shape:
            raise ValueError(f"`preconditioner[{i}]` must have shape {tuple(p.shape)}, got {tuple(d.shape)}")
        if not bool(torch.all(d > 0)):
            raise ValueError(f"`preconditioner[{i}]` must be positive everywhere")
    return diag


# --------------------------------------------------------------------------------------------
# eigenvalues


@dataclass(frozen=True)
class Spectrum:
    """Result of :func:`lanczos` / :func:`power_iteration`.

    ``values``: the eigenvalue estimates, descending; ``residuals``: ``||A y - lambda y||``
    bounds (Lanczos) or the last relative changes (power); ``n_iter``: iterations (one
    Hessian-vector product each, plus one for power's final Rayleigh quotient per value);
    ``converged``: whether every value met ``tol``; ``vectors``: unit eigenvector estimates as
    flat tensors (rows), in the order of ``values``.
    """

    values: np.ndarray
    residuals: np.ndarray
    n_iter: int
    converged: bool
    vectors: Any = None


def _start(n: int, seed: int, dtype: Any, device: Any) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    return v / v.norm()


def lanczos(
    matvec: Callable[[Any], Any],
    n: int,
    k: int = 1,
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
    seed: int = 0,
    dtype: Any = None,
    device: Any = None,
    v0: Any = None,
) -> Spectrum:
    """The ``k`` algebraically largest eigenvalues of a symmetric operator by Lanczos with full
    reorthogonalisation.

    ``beta_{j+1} q_{j+1} = A q_j - alpha_j q_j - beta_j q_{j-1}`` with ``alpha_j = q_j^T A q_j``,
    the new vector orthogonalised twice against all previous ones (classical Gram-Schmidt),
    and the tridiagonal ``T_m`` diagonalised after each step. Ritz value ``theta_i`` with
    eigenvector ``s_i`` of ``T_m`` has the residual ``||A y_i - theta_i y_i|| = |beta_{m+1} s_{m,i}|``;
    stops when that is ``<= tol max(|theta_i|, tiny)`` for the top ``k``, on an invariant
    subspace (``beta`` at rounding level: the values are exact), or after ``max_iter``
    products (a ``RuntimeWarning`` then). The start vector is ``v0`` (e.g. the previous top
    eigenvector: a warm start) or a seeded Gaussian (the same on every rank).
    """
    import torch

    dtype = dtype or torch.float64
    q = _start(n, seed, dtype, device)
    if v0 is not None:
        v0 = v0.reshape(-1).to(device=q.device, dtype=dtype)
        if v0.numel() != n:
            raise ValueError(f"`v0` must have {n} entries, got {v0.numel()}")
        q = v0 + 1e-3 * float(v0.norm()) * q  # a little of every direction
        q = q / q.norm()
    # the Lanczos vectors as rows of one matrix, grown by doubling (no per-step copy of all)
    basis = torch.empty((min(16, n + 1), n), dtype=dtype, device=q.device)
    basis[0] = q
    alphas: list[float] = []
    betas: list[float] = []
    w_prev_beta = 0.0
    values = np.zeros(0)
    res = np.zeros(0)
    vecs = np.zeros((1, 1))
    converged = False
    m = 0
    scale = 0.0
    for m in range(1, max_iter + 1):
        w = matvec(basis[m - 1])
        alpha = float(torch.dot(w, basis[m - 1]))
        w = w - alpha * basis[m - 1]
        if m > 1:
            w = w - w_prev_beta * basis[m - 2]
        q_mat = basis[:m]
        for _ in range(2):
            w = w - q_mat.T @ (q_mat @ w)
        beta = float(w.norm())
        alphas.append(alpha)
        ritz, s = _tridiagonal_eigh(alphas, betas)
        order = np.argsort(ritz)[::-1][:k]
        values, vecs = ritz[order], s[:, order]
        res = np.abs(beta * s[-1, order])
        scale = max(scale, float(np.max(np.abs(ritz))))
        floor = np.finfo(np.float64).tiny
        if len(values) >= k and np.all(res <= tol * np.maximum(np.abs(values), floor)):
            converged = True
            break
        if beta <= 1e3 * float(torch.finfo(dtype).eps) * max(scale, floor) or m >= n:
            converged = len(values) >= k  # invariant subspace: the Ritz values are exact
            break
        betas.append(beta)
        w_prev_beta = beta
        if m == basis.shape[0]:
            grown = torch.empty((min(2 * m, n + 1), n), dtype=dtype, device=q.device)
            grown[:m] = basis
            basis = grown
        basis[m] = w / beta
    if len(values) < k:
        raise ValueError(
            f"the operator has only {len(values)} dimensions reachable from the start; `k` = {k}"
        )
    if not converged:
        warnings.warn(
            f"Lanczos did not reach tol={tol:g} in max_iter={max_iter} products "
            f"(largest relative residual {float(np.max(res / np.maximum(np.abs(values), 1e-300))):.2e})",
            RuntimeWarning,
            stacklevel=3,
        )
    q_mat = basis[: vecs.shape[0]]
    vectors = torch.as_tensor(vecs.T.copy(), dtype=dtype, device=q_mat.device) @ q_mat
    return Spectrum(values=values.copy(), residuals=res, n_iter=m, converged=converged, vectors=vectors)


def _tridiagonal_eigh(alphas: list[float], betas: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of the Lanczos tridiagonal (LAPACK ``stemr`` through SciPy: a dense
    ``numpy.linalg.eigh`` of this tiny matrix costs ~30 ms on a loaded multi-threaded BLAS)."""
    from scipy.linalg import eigh_tridiagonal

    if len(alphas) == 1:
        return np.array(alphas, dtype=np.float64), np.ones((1, 1))
    return eigh_tridiagonal(np.asarray(alphas, dtype=np.float64), np.asarray(betas, dtype=np.float64))


def power_iteration(
    matvec: Callable[[Any], Any],
    n: int,
    k: int = 1,
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
    seed: int = 0,
    dtype: Any = None,
    device: Any = None,
) -> Spectrum:
    """The ``k`` eigenvalues of largest magnitude by power iteration with deflation.

    For ``i = 1..k``: ``u <- A u / ||A u||`` projected off the eigenvectors already found,
    ``lambda = u^T A u``, until ``|lambda_new - lambda_old| <= tol |lambda_new|`` or
    ``max_iter`` products (a ``RuntimeWarning`` then). Converges at the rate
    ``|lambda_{i+1} / lambda_i|``; finds the largest ``|lambda|``, so on an indefinite
    Hessian it may return a negative value (Lanczos returns the algebraic top). Returned in
    descending order.
    """
    import torch

    dtype = dtype or torch.float64
    found: list[Any] = []
    values: list[float] = []
    changes: list[float] = []
    total = 0
    ok = True
    for i in range(k):
        u = _start(n, seed + i, dtype, device)
        lam = math.nan
        change = math.inf
        for _ in range(max_iter):
            for f in found:
                u = u - torch.dot(f, u) * f
            u = u / u.norm()
            au = matvec(u)
            total += 1
            for f in found:
                au = au - torch.dot(f, au) * f
            new = float(torch.dot(u, au))
            change = abs(new - lam)
            lam = new
            norm = au.norm()
            if float(norm) == 0.0:
                change = 0.0
                break
            u = au / norm
            if change <= tol * abs(lam):
                break
        ok = ok and change <= tol * abs(lam)
        found.append(u / u.norm())
        values.append(lam)
        changes.append(change / max(abs(lam), 1e-300))
    if not ok:
        warnings.warn(
            f"power iteration did not reach tol={tol:g} in max_iter={max_iter} products per value",
            RuntimeWarning,
            stacklevel=3,
        )
    order = np.argsort(values)[::-1]
    vectors = torch.stack([found[i] for i in order])
    return Spectrum(
        values=np.asarray(values)[order],
        residuals=np.asarray(changes)[order],
        n_iter=total,
        converged=ok,
        vectors=vectors,
    )


def _check_k(k: int, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be an integer >= 1, got {k!r}")
    if k > n:
        raise ValueError(f"`k` must be <= the number of trainable parameters ({n}), got {k}")


def top_eigenvalues(
    loss_fn: Callable[[], Any] | ModelLoss,
    params: Sequence[Any],
    k: int = 1,
    *,
    method: str = "lanczos",
    tol: float = 1e-6,
    max_iter: int = 100,
    preconditioner: Any = None,
    mode: str = "double_backward",
    seed: int = 0,
    process_group: Any = None,
) -> np.ndarray:
    """The ``k`` largest eigenvalues of ``H = d^2 loss_fn() / d params^2``, descending (NumPy).

    With ``preconditioner`` (an Adam/AdamW/RMSprop/SGD optimizer, or ``P``'s diagonal as a list
    of tensors), those of ``P^{-1/2} H P^{-1/2}`` (the spectrum of ``P^{-1} H``): the
    preconditioned sharpness whose threshold is :func:`stability_threshold`.

    Args:
        loss_fn: ``loss_fn() -> scalar tensor`` or :func:`model_loss` (batch or loader).
        params: the parameters (frozen ones are left out).
        k: how many eigenvalues.
        method: ``"lanczos"`` (algebraic top ``k``, :func:`lanczos`) or ``"power"`` (top ``k`` in
            magnitude, :func:`power_iteration`).
        tol: relative tolerance (Lanczos: Ritz residual; power: change of the estimate).
        max_iter: cap on Hessian-vector products (per eigenvalue for power).
        preconditioner: see above.
        mode: the HVP (:data:`HVP_MODES`).
        seed: seed of the start vector.
        process_group: see :class:`HessianOperator`.

    Example:
        >>> import torch
        >>> from inertia import curvature
        >>> w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        >>> f = lambda: 2.0 * w[0] ** 2 + 0.5 * w[1] ** 2 + w[0] * w[1]
        >>> curvature.top_eigenvalues(f, [w], k=2).round(6).tolist()   # eig [[4, 1], [1, 1]]
        [4.302776, 0.697224]
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    if not (isinstance(tol, (int, float)) and tol > 0 and math.isfinite(tol)):
        raise ValueError(f"`tol` must be a finite number > 0, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"`max_iter` must be an integer >= 1, got {max_iter!r}")
    op = HessianOperator(
        loss_fn, params, mode=mode, preconditioner=preconditioner, process_group=process_group
    )
    _check_k(k, op.n)
    solver = lanczos if method == "lanczos" else power_iteration
    try:
        spec = solver(
            op.matvec, op.n, k, tol=tol, max_iter=max_iter, seed=seed, dtype=op.dtype, device=op.device
        )
    finally:
        op.release()
    return spec.values


def eigenvalues(
    loss_fn: Callable[[], Any] | ModelLoss,
    params: Sequence[Any],
    *,
    preconditioner: Any = None,
    mode: str = "double_backward",
) -> np.ndarray:
    """All eigenvalues of the dense ``H`` (or ``P^{-1/2} H P^{-1/2}``), descending.

    Forms the ``n x n`` matrix column by column from ``n`` Hessian-vector products (``H e_i``),
    symmetrises it, ``(A + A^T)/2``, and calls ``numpy.linalg.eigvalsh``: for small models
    (at most :data:`DENSE_LIMIT` parameters) and tests.
    """
    import torch

    op = HessianOperator(loss_fn, params, mode=mode, preconditioner=preconditioner)
    if op.n > DENSE_LIMIT:
        raise ValueError(f"`params` must have at most {DENSE_LIMIT} entries for a dense Hessian, got {op.n}")
    eye = torch.eye(op.n, dtype=op.dtype, device=op.device)
    try:
        cols = [op.matvec(eye[i]).detach().cpu().to(torch.float64).numpy() for i in range(op.n)]
    finally:
        op.release()
    a = np.stack(cols, axis=1)
    return np.linalg.eigvalsh(0.5 * (a + a.T))[::-1].copy()


# --------------------------------------------------------------------------------------------
# thresholds


def _threshold(opt_name: str, group: dict[str, Any]) -> float:
    lr = float(group["lr"])
    if not lr > 0:
        raise ValueError(f"the learning rate must be > 0 for a stability threshold, got lr={lr}")
    if opt_name == "SGD":
        mu = float(group.get("momentum", 0.0))
        tau = float(group.get("dampening", 0.0))
        if mu == 0.0:
            return 2.0 / lr
        if group.get("nesterov", False):
            if tau != 0.0:
                raise NoThresholdError("Nesterov SGD with dampening != 0 has no derived threshold")
            return 2.0 * (1.0 + mu) / ((1.0 + 2.0 * mu) * lr)
        if tau >= 1.0:
            raise NoThresholdError(f"SGD with dampening={tau} (>= 1) never moves: no threshold")
        return 2.0 * (1.0 + mu) / ((1.0 - tau) * lr)
    if opt_name in ("Adam", "AdamW"):
        b1 = float(group["betas"][0])
        return (2.0 + 2.0 * b1) / ((1.0 - b1) * lr)
    if opt_name == "RMSprop":
        mu = float(group.get("momentum", 0.0))
        return 2.0 * (1.0 + mu) / lr
    raise NoThresholdError(
        f"no known stability threshold for {opt_name}: derived for SGD (plain, heavy ball, "
        "Nesterov), Adam, AdamW and RMSprop"
    )


def stability_threshold(optimizer: Any) -> float | list[float]:
    """The largest stable (preconditioned) sharpness of ``optimizer`` at its current learning rate.

    See the module docstring for each formula (SGD ``2/eta``, heavy ball ``2 (1 + mu)/eta``,
    Nesterov ``2 (1 + mu)/((1 + 2 mu) eta)``, Adam/AdamW ``(2 + 2 beta1)/((1 - beta1) eta)``,
    RMSprop ``2 (1 + mu)/eta``). A float, or a list with one value per parameter group when
    the groups' thresholds differ. Compare with ``top_eigenvalues(..., preconditioner=optimizer)``
    for adaptive methods and with the plain top eigenvalue for SGD.

    Raises:
        NoThresholdError: an optimizer (or option) without a derived threshold.

    Example:
        >>> import torch
        >>> from inertia import curvature
        >>> w = torch.zeros(1, requires_grad=True)
        >>> round(curvature.stability_threshold(torch.optim.SGD([w], lr=0.1, momentum=0.9)), 9)
        38.0
    """
    local = _local(optimizer)
    if not hasattr(local, "param_groups"):
        raise TypeError(f"`optimizer` must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    name = type(local).__name__
    values = [_threshold(name, g) for g in local.param_groups]
    if all(v == values[0] for v in values):
        return values[0]
    return values
