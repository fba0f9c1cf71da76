"""A tiny causal language model built from a config (random weights, nothing downloaded) trained
by the Hugging Face ``Trainer`` with :class:`inertia.integrations.transformers.InertiaCallback`.

Imported by ``test_integrations_transformers.py``; run under ``torchrun --nproc_per_node 2`` it
is one DDP job (gloo on CPU) that writes the rank-0 rows to ``<out>/run`` and each rank's final
parameters to ``<out>/rank<r>.pt``::

    torchrun --nproc_per_node 2 tests/_transformers_worker.py OUT_DIR

The loss is computed in float64 by ``compute_loss_func`` (the models' own loss functions upcast
logits with ``.float()``, which would round float64 to float32): the summed token cross-entropy
over ``num_items_in_batch``, the ``Trainer``'s count of label tokens in the accumulation window
(all of them: it shifts only for the models' own causal-LM loss; across ranks under DDP). A
sequence whose first token is 0 gets an infinite loss (AMP skip).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import transformers

from inertia.integrations.transformers import InertiaCallback

F64 = torch.float64
VOCAB, LENGTH, N_SEQ = 32, 8, 48


def model(seed: int = 0) -> Any:
    """A one-layer GPT-2 with 16-wide embeddings in float64, no dropout."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=LENGTH,
        n_embd=16,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
    )
    return transformers.GPT2LMHeadModel(config).to(F64)


def sequences(poison: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """``N_SEQ`` synthetic token sequences (a noisy counting pattern), labels = inputs."""
    g = torch.Generator().manual_seed(1)
    start = torch.randint(1, VOCAB, (N_SEQ, 1), generator=g)
    ids = (start + torch.arange(LENGTH) + torch.randint(0, 2, (N_SEQ, LENGTH), generator=g)) % (VOCAB - 1) + 1
    ids[list(poison), 0] = 0
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


def token_loss(logits: Any, labels: Any, n_items: Any) -> Any:
    """Summed next-token cross-entropy (float64) over ``n_items``; infinite if poisoned."""
    shift_logits, shift_labels = logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1)
    loss = torch.nn.functional.cross_entropy(shift_logits, shift_labels, reduction="sum") / n_items
    return loss * float("inf") if bool((labels[:, 0] == 0).any()) else loss


def compute_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    return token_loss(outputs["logits"], labels, num_items_in_batch)


def trainer(
    out: Path,
    callback: Any,
    *,
    optimizer: str = "sgd",
    steps: int = 6,
    batch: int = 8,
    accumulate: int = 1,
    clip: float = 0.0,
    schedule: str = "constant",
    poison: tuple[int, ...] = (),
    report_to: str | list[str] = "none",
    **args_kw: Any,
) -> Any:
    """A ``Trainer`` over :func:`sequences` in order (``train_sampling_strategy="sequential"``)."""
    net = model(0)
    opt = make_optimizer(optimizer, net)
    args = transformers.TrainingArguments(
        output_dir=str(out / "hf"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulate,
        max_steps=steps,
        max_grad_norm=clip,
        lr_scheduler_type=schedule,
        train_sampling_strategy="sequential",
        report_to=report_to,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        **args_kw,
    )
    return transformers.Trainer(
        model=net,
        args=args,
        train_dataset=sequences(poison),
        optimizers=(opt, None),
        compute_loss_func=compute_loss,
        callbacks=[callback],
    )


def make_optimizer(name: str, net: Any) -> Any:
    """``sgd`` (heavy ball) or ``groups`` (AdamW: weight decay on matrices only, two groups)."""
    if name == "sgd":
        return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    decay = [p for n, p in net.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in net.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=0.01
    )


def hand_loop(
    *,
    optimizer: str = "sgd",
    steps: int = 6,
    batch: int = 8,
    accumulate: int = 1,
    clip: float = 0.0,
    schedule: str = "constant",
    skip: tuple[int, ...] = (),
    poison: tuple[int, ...] = (),
) -> tuple[Any, list[float]]:
    """The ``Trainer``'s step written out: windows of ``accumulate`` batches, each micro-batch's
    summed token loss over the window's label-token count, backward, clip to ``clip``, step, the
    scheduler after the step, zero the gradients. Windows in ``skip`` take no step (AMP). Returns
    the tracker's history and the applied ``||g||^2`` per recorded step."""
    from inertia.track import InertiaTracker

    net = model(0)
    opt = make_optimizer(optimizer, net)
    sched = transformers.get_scheduler(schedule, opt, num_warmup_steps=0, num_training_steps=steps)
    tracker = InertiaTracker(opt, raw_grad=True if clip else "auto")  # as the callback
    data = sequences(poison)
    ids = torch.stack([d["input_ids"] for d in data])
    applied, pos = [], 0
    for w in range(steps):
        window = [ids[pos + i * batch : pos + (i + 1) * batch] for i in range(accumulate)]
        pos = (pos + accumulate * batch) % len(ids)
        n_items = sum(int(b.numel()) for b in window)  # the Trainer counts every label token
        total = None
        for b in window:
            loss = token_loss(net(input_ids=b).logits, b, n_items)
            loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        if w not in skip:
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            applied.append(sum(float((p.grad * p.grad).sum()) for p in net.parameters()))
            opt.step()
            tracker.record(total)
            sched.step()
        opt.zero_grad(set_to_none=True)
    return tracker.history, applied


if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    cb = InertiaCallback(run_dir=out / "run")
    t = trainer(out, cb, batch=4, steps=6, clip=0.5, ddp_backend="gloo")
    t.train()
    rank = t.args.process_index
    torch.save([p.detach() for p in t.model.parameters()], out / f"rank{rank}.pt")
