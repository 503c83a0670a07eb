#!/usr/bin/env python3
"""Reference optimizer trajectories made by transformers' `Adafactor` and torch's `AdamW`, for
cbqa's optimizer tests (tests/integration/optim.rs).

Writes tests/fixtures/optim/reference.safetensors with
  * a synthetic problem: parameters `syn.{name}.init` of shapes [6,5], [5], [2,3,4] and gradients
    `syn.{name}.grad.{step}` for 3 steps, and the parameters after each step for three optimizers:
    `adafactor_paper` (the paper's settings), `adafactor_full` (relative step, parameter scaling,
    warmup init, first moment, weight decay: every branch of the algorithm) and `adamw`;
  * an end-to-end run on tests/fixtures/t5_v1_1: 3 steps of AdaFactor (paper settings) on the
    fixture model with `labels`, dropout off, and the parameters after the last step
    (`t5.{param name}`), plus the loss of each step (`t5_loss`).

Run: .venv/bin/python scripts/make_optim_fixtures.py
"""
import os

import torch
from safetensors.torch import save_file
from transformers import T5ForConditionalGeneration
from transformers.optimization import Adafactor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
# The paper's settings: constant lr 1e-3, no parameter scaling, no first moment, clipping at 1.0.
PAPER = dict(lr=1e-3, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None,
             weight_decay=0.0, relative_step=False, scale_parameter=False, warmup_init=False)
FULL = dict(lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=0.9,
            weight_decay=0.01, relative_step=True, scale_parameter=True, warmup_init=True)
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def synthetic(out):
    g = torch.Generator().manual_seed(0)
    shapes = {"a": (6, 5), "b": (5,), "c": (2, 3, 4)}
    init = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    grads = [{k: torch.randn(s, generator=g) * (0.1 * (i + 1)) for k, s in shapes.items()} for i in range(STEPS)]
    for k, v in init.items():
        out[f"syn.{k}.init"] = v
        for i in range(STEPS):
            out[f"syn.{k}.grad.{i}"] = grads[i][k]
    for name, make in [("adafactor_paper", lambda ps: Adafactor(ps, **PAPER)),
                       ("adafactor_full", lambda ps: Adafactor(ps, **FULL)),
                       ("adamw", lambda ps: torch.optim.AdamW(ps, **ADAMW, foreach=False))]:
        params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
        opt = make(list(params.values()))
        for i in range(STEPS):
            for k, p in params.items():
                p.grad = grads[i][k].clone()
            opt.step()
            for k, p in params.items():
                out[f"{name}.{k}.{i}"] = p.detach().clone()


def end_to_end(out):
    model = T5ForConditionalGeneration.from_pretrained(os.path.join(ROOT, "tests", "fixtures", "t5_v1_1"))
    model.eval()  # dropout off: the comparison is about the optimizer, not the RNG
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, model.config.vocab_size, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 4:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    labels = torch.randint(3, model.config.vocab_size, (4, 5), generator=g)
    labels[0, 3:] = -100
    labels[2, 4:] = -100
    out["t5_input_ids"], out["t5_attention_mask"], out["t5_labels"] = ids, mask, labels
    opt = Adafactor(model.parameters(), **PAPER)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out["t5_loss"] = torch.tensor(losses)
    for name, p in model.state_dict().items():
        if name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            continue  # aliases of shared.weight
        out[f"t5.{name}"] = p.detach().clone().contiguous()


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    out = {}
    synthetic(out)
    end_to_end(out)
    path = os.path.join(ROOT, "tests", "fixtures", "optim", "reference.safetensors")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata={"format": "pt"})
    print(f"{path}: {len(out)} tensors, t5 losses {out['t5_loss'].tolist()}")


if __name__ == "__main__":
    main()
