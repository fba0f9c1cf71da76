"""A parameter group's sums in a number of device operations that does not grow with its tensors.

A mapping (:mod:`inertia.track.mapping`) needs a handful of sums over a parameter group, each
``sum_p w_p sum_i a_i b_i`` of element-wise expressions of the gradient, the optimizer state and
the parameters. Taken one parameter tensor at a time they cost one small operation per tensor
and per sum, which on an accelerator is one kernel launch each (a 6-layer transformer with AdamW:
about 2,000 launches per step, the GPU waiting on Python). :func:`reduce_flat` instead works on
*slices*: flat 1-d stretches of at most :func:`slice_size` elements of the whole group, so the
element-wise expressions and the dot products run once per slice, whatever the number of tensors:

* a tensor of at least one slice is cut into views of itself (no copy);
* smaller tensors are packed together into a reusable scratch buffer per column with one
  multi-tensor copy (``torch._foreach_copy_``, one launch per list) into views made once per
  layout; the scratch is reused slice after slice (stream order keeps that safe), so it costs one
  slice of memory per column, not a copy of the model.

The slice is :data:`CHUNK` elements on a CPU (element-wise temporaries stay in cache and are
recycled by the allocator) and :data:`DEVICE_CHUNK` on an accelerator, grown so that a group
never has more than :data:`MAX_SLICES` slices (up to :data:`MAX_CHUNK` elements). The number
of device operations per group is therefore bounded by a constant times
``1 + n_elements / MAX_CHUNK``; it never depends on how the elements are split into tensors.

Accuracy. Each slice's sum is one BLAS dot product (:func:`chunk_dot`) in the operands' dtype;
the slices' dots are converted to float64 and added there. The element-wise values are those of
a per-tensor computation, so only the order of the additions changes: float64 state is exact to
rounding, float32 state has an error of order ``eps_32 log2(slice) |a| |b|`` (pairwise/BLAS
summation), below the float32 rounding of the state itself. bf16/fp16 state (mixed precision) is
converted to float32 slice by slice before the element-wise formulas and the dots, so its sums
carry float32 rounding, not bf16's 8 bits.

Fused sums (:func:`fused_sums`, ``InertiaTracker(fused=True)``): each slice's formulas and sums
run as one ``torch.compile``-d function, so the element-wise expressions are fused with their
reductions (one pass over the slice's columns instead of one per operation); the sums are the
same to rounding, added in the compiled reduction's order.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, ClassVar

__all__ = [
    "CHUNK",
    "DEVICE_CHUNK",
    "MAX_CHUNK",
    "MAX_SLICES",
    "chunk_dot",
    "fused_sums",
    "reduce_flat",
    "slice_size",
]

#: slice length on a CPU: large enough that dispatch is small next to the work, small enough
#: that element-wise temporaries (1 MiB in float32) stay in cache and are recycled by the
#: allocator instead of being mapped fresh on every step. Measured on the 784-512-512-10
#: benchmark (2 cores): 2^16 -> 0.53 ms, 2^17 -> 0.39 ms, 2^18 -> 0.29 ms, 2^20 -> 1.6 ms per reduce
CHUNK = 1 << 18
#: slice length on an accelerator (its allocator caches blocks; one launch per slice and sum)
DEVICE_CHUNK = 1 << 24
#: at most this many slices per group and device/dtype: the slice grows with the group
MAX_SLICES = 8
#: ... but never beyond this many elements (bounds the scratch memory: one slice per column)
MAX_CHUNK = 1 << 26


def slice_size(device: Any, n_elements: int) -> int:
    """Elements per slice for a run of ``n_elements`` on ``device``: :data:`CHUNK` (CPU) or
    :data:`DEVICE_CHUNK`, raised to ``ceil(n_elements / MAX_SLICES)``, capped at :data:`MAX_CHUNK`."""
    base = CHUNK if getattr(device, "type", device) == "cpu" else DEVICE_CHUNK
    return max(base, min(MAX_CHUNK, -(-n_elements // MAX_SLICES)))


def chunk_dot(a: Any, b: Any) -> Any:
    """``sum(a * b)`` in one BLAS pass (``torch.dot``) without temporaries, as a 0-d tensor.

    Both operands are promoted to a common floating dtype first if they differ (16-bit state
    reaches it already in float32: :func:`reduce_flat`).
    """
    import torch

    if a.dtype is b.dtype and a.dtype.is_floating_point and a.dim() == 1 and b.dim() == 1:
        return torch.dot(a, b)  # the common case, without the checks below
    dtype = torch.promote_types(a.dtype, b.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float64
    if a.dtype != dtype:
        a = a.to(dtype)
    if b.dtype != dtype:
        b = a if b is a else b.to(dtype)
    return torch.dot(a.reshape(-1), b.reshape(-1))


def reduce_flat(
    rows: Sequence[tuple[Any, ...]],
    products: Callable[..., dict[str, tuple[Any, ...]]],
    names: Sequence[str],
    like: Any,
    sources: dict[str, tuple[str, float]] | None = None,
    keys: Sequence[Hashable] | None = None,
) -> Any:
    """A mapping's sums over a parameter group, computed on flat slices of the whole group.

    ``rows`` holds one tuple of tensors per parameter (``None`` where a tensor is not needed,
    then in every row). The group is cut into slices (module docstring) separately for each
    device, dtype and ``keys[i]`` (Adam's step count). ``products(key, *columns)`` evaluates the
    mapping's element-wise formulas on one slice and returns the named pairs
    ``{product: (a, b)}`` or ``{product: (a, b, weight)}`` to sum (a slice may omit a product;
    ``weight`` is a Python factor, e.g. a bias correction of that step count).

    Sum ``name`` is ``w * sum(a * b)`` of product ``p`` where ``sources[name] = (p, w)``, else the
    sum of the product called ``name``, else 0. Returns them in the order of ``names`` as one
    float64 tensor on the device of the first slice (``like``'s if there is none), without a host
    sync: all dots are stacked, converted to float64 once and scattered into the result with one
    ``index_add_``. The columns may be views of optimizer state or scratch: ``products`` must
    never write to them.
    """
    import torch

    dest = _destinations(tuple(names), tuple(sources.items()) if sources else ())
    dots: list[Any] = []
    plan: list[tuple[int, int, float]] = []  # (dot, sum, weight)
    fused = _fused_sums() if _FUSED.get() else None
    wanted = frozenset(dest)  # the products some sum needs
    with torch.no_grad():
        for key, cols in _slices(rows, keys):
            cols = [_working_precision(c) for c in cols]
            if fused is not None:
                try:
                    found = fused(products, key, cols, wanted)
                except Exception as exc:  # a backend that cannot compile: the eager path
                    _give_up_fusing(exc)
                    fused = None
                else:
                    for product, value in found.items():
                        plan += [(len(dots), i, v) for i, v in dest[product]]
                        dots.append(value)
                    continue
            for product, pair in products(key, *cols).items():
                targets = dest.get(product)
                if not targets:
                    continue
                w = pair[2] if len(pair) == 3 else 1.0
                plan += [(len(dots), i, v * w) for i, v in targets]
                dots.append(chunk_dot(pair[0], pair[1]))
        f64 = torch.float64
        if not dots:
            return torch.zeros(len(names), dtype=f64, device=like.device)
        device = dots[0].device
        try:
            values = torch.stack(dots).to(f64)
        except RuntimeError:  # a group spread over devices
            values = torch.stack([d.to(device) for d in dots]).to(f64)
        src, dst, weight = _scatter_plan(tuple(plan), str(device))
        # index_add, not a weight matrix: 0 * inf would turn an infinite sum into NaN
        out = torch.zeros(len(names), dtype=f64, device=device)
        return out.index_add_(0, dst, values.index_select(0, src) * weight)


#: whether :func:`reduce_flat` runs each slice's formulas and sums as one compiled function
_FUSED: contextvars.ContextVar[bool] = contextvars.ContextVar("inertia_fused_sums", default=False)


@contextlib.contextmanager
def fused_sums(enabled: bool = True) -> Iterator[None]:
    """Within this block, :func:`reduce_flat` evaluates each slice's element-wise formulas and
    their sums ``w * sum(a * b)`` in one ``torch.compile``-d function (``dynamic=True``: the
    learning rate, the bias corrections and the slice lengths are symbolic, so a schedule does
    not recompile), which fuses them into a few kernels instead of one pass per operation. The
    sums are the same to rounding (a fused reduction adds in another order than BLAS). If
    compiling fails, a warning says why and the eager path is used from then on."""
    token = _FUSED.set(enabled)
    try:
        yield
    finally:
        _FUSED.reset(token)


def _slice_sums(
    products: Callable[..., dict[str, tuple[Any, ...]]],
    key: Hashable,
    cols: list[Any],
    wanted: frozenset[str],
) -> dict[str, Any]:
    """``{product: w * sum(a * b)}`` of one slice, for the products in ``wanted`` (compiled)."""
    out = {}
    for product, pair in products(key, *cols).items():
        if product in wanted:
            value = (pair[0] * pair[1]).sum()
            out[product] = value * pair[2] if len(pair) == 3 else value
    return out


_FUSED_FN: list[Any] = []  # [compiled _slice_sums], or [None] once compiling failed


def _fused_sums() -> Any:
    if not _FUSED_FN:
        import torch

        _FUSED_FN.append(torch.compile(_slice_sums, dynamic=True))
    return _FUSED_FN[0]


def _give_up_fusing(exc: BaseException) -> None:
    _FUSED_FN[:] = [None]
    warnings.warn(
        f"fused sums are not available here ({type(exc).__name__}: {exc}); using the eager sums",
        RuntimeWarning,
        stacklevel=3,
    )


@functools.lru_cache(maxsize=256)
def _destinations(
    names: tuple[str, ...], sources: tuple[tuple[str, tuple[str, float]], ...]
) -> dict[str, list[tuple[int, float]]]:
    """``{product: [(sum index, weight), ...]}`` of :func:`reduce_flat` (built once per mapping)."""
    found = dict(sources)
    dest: dict[str, list[tuple[int, float]]] = {}
    for i, name in enumerate(names):
        product, weight = found.get(name, (name, 1.0))
        dest.setdefault(product, []).append((i, weight))
    return dest


def _working_precision(column: Any) -> Any:
    """bf16/fp16 state as float32 (one copy per column and slice), so that the element-wise
    formulas and the dots run in float32; other columns as they are."""
    return column if column is None or column.dtype.itemsize >= 4 else column.float()


@functools.lru_cache(maxsize=256)
def _scatter_plan(plan: tuple[tuple[int, int, float], ...], device: str) -> tuple[Any, Any, Any]:
    """The gather/scatter indices and weights of :func:`reduce_flat`, built once per layout."""
    import torch

    src, dst, weight = zip(*plan, strict=True)
    return (
        torch.tensor(src, device=device),
        torch.tensor(dst, device=device),
        torch.tensor(weight, dtype=torch.float64, device=device),
    )


class _Scratch:
    """A reusable flat buffer per (device, dtype, column) and its views for each packed layout."""

    buffers: ClassVar[dict[tuple[Any, ...], Any]] = {}
    views: ClassVar[dict[tuple[Any, ...], tuple[Any, list[Any]]]] = {}

    @classmethod
    def views_for(
        cls, device: Any, dtype: Any, column: int, shapes: tuple[Any, ...], size: int
    ) -> tuple[Any, list[Any]]:
        """``(flat, views)``: the packed region of the scratch and one view per shape into it."""
        import torch

        key = (device, dtype, column, shapes)
        found = cls.views.get(key)
        if found is not None:
            return found
        bkey = (device, dtype, column)
        buf = cls.buffers.get(bkey)
        if buf is None or buf.numel() < size:
            buf = torch.empty(size, dtype=dtype, device=device)
            cls.buffers[bkey] = buf
            # views into the replaced buffer would keep it alive: forget them
            cls.views = {k: v for k, v in cls.views.items() if k[:3] != bkey}
        if len(cls.views) > 64:  # layouts come and go (parameters frozen, groups changed)
            cls.views.clear()
        views, start = [], 0
        for shape in shapes:
            n = math.prod(shape)
            views.append(buf[start : start + n].view(shape))
            start += n
        found = (buf[:start], views)
        cls.views[key] = found
        return found


class _Layout:
    """How one group layout is cut into slices (module docstring), built once per layout.

    ``parts`` holds, in order, ``(key, row, start, stop)`` for a slice that is a view of the
    large tensor of row ``row`` and ``(key, rows, columns)`` for a slice packed from the small
    tensors of ``rows`` (``columns``: per column ``None`` or ``(flat, views)`` in the scratch).
    """

    __slots__ = ("parts",)

    def __init__(self, rows: Sequence[tuple[Any, ...]], keys: Sequence[Hashable] | None) -> None:
        runs: dict[tuple[Any, Any, Hashable], list[int]] = {}
        for i, row in enumerate(rows):
            first = next(t for t in row if t is not None)
            dtypes = tuple(None if t is None else t.dtype for t in row)
            runs.setdefault((first.device, dtypes, None if keys is None else keys[i]), []).append(i)
        self.parts: list[tuple[Any, ...]] = []
        for (device, _, key), run in runs.items():
            sizes = [next(t for t in rows[i] if t is not None).numel() for i in run]
            size = slice_size(device, sum(sizes))
            pending: list[int] = []
            filled = 0
            for i, n in zip(run, sizes, strict=True):
                if n >= size:  # a large tensor: slices that are views of it
                    self.parts += [(key, i, start, start + size) for start in range(0, n, size)]
                    continue
                if pending and filled + n > size:
                    self.parts.append(self._packed(key, rows, pending, size))
                    pending, filled = [], 0
                pending.append(i)
                filled += n
            if pending:
                self.parts.append(self._packed(key, rows, pending, size))

    @staticmethod
    def _packed(key: Hashable, rows: Sequence[tuple[Any, ...]], run: list[int], size: int) -> tuple[Any, ...]:
        if len(run) == 1:  # a single small tensor is flattened in place, not copied
            return (key, run[0], 0, None)
        columns: list[Any] = []
        for c, first in enumerate(rows[run[0]]):
            if first is None:
                columns.append(None)
                continue
            shapes = tuple(tuple(rows[i][c].shape) for i in run)
            columns.append(_Scratch.views_for(first.device, first.dtype, c, shapes, size))
        return (key, tuple(run), columns)


#: the layouts seen lately, by :func:`_signature` (layouts come and go: frozen parameters,
#: groups changed, a model moved)
_LAYOUTS: dict[tuple[Any, ...], _Layout] = {}
_MAX_LAYOUTS = 32


def _signature(rows: Sequence[tuple[Any, ...]], keys: Sequence[Hashable] | None) -> tuple[Any, ...]:
    """What a layout depends on: each row's shape, device and column dtypes, and the keys."""
    return (
        None if keys is None else tuple(keys),
        tuple(
            (row[0].shape, row[0].device, *(None if t is None else t.dtype for t in row))
            if row[0] is not None
            else (None, *((t.shape, t.device, t.dtype) if t is not None else None for t in row))
            for row in rows
        ),
    )


def _slices(
    rows: Sequence[tuple[Any, ...]], keys: Sequence[Hashable] | None
) -> Iterator[tuple[Hashable, list[Any]]]:
    """``(key, columns)`` for each slice of the group (module docstring), per device, dtype and
    key; the cut is computed once per layout (:class:`_Layout`), so a step only makes the views
    and the packing copies (one ``torch._foreach_copy_`` per column and packed slice)."""
    import torch

    sig = _signature(rows, keys)
    layout = _LAYOUTS.get(sig)
    if layout is None:
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        layout = _LAYOUTS[sig] = _Layout(rows, keys)
    for part in layout.parts:
        if len(part) == 4:  # a view of one tensor
            key, i, start, stop = part
            yield key, [None if t is None else t.reshape(-1)[start:stop] for t in rows[i]]
            continue
        key, run, columns = part
        out: list[Any] = []
        for c, col in enumerate(columns):
            if col is None:
                out.append(None)
                continue
            flat, views = col
            torch._foreach_copy_(views, [rows[i][c] for i in run])
            out.append(flat)
        yield key, out
