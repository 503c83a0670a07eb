#!/usr/bin/env python3
"""Train a cbqa checkpoint on the examples cbqa exported, on several processes (torch.distributed).

    cbqa train --model DIR --train FILE --out RUN --max-steps 1000 --export-examples EX
    torchrun --nproc_per_node 2 scripts/train_distributed.py --examples EX --out DIR \\
        [--model DIR] [--steps N] [--backend gloo|nccl] [--fsdp] [--micro-batch-tokens N]

`cbqa train`'s (or `cbqa pretrain`'s) run, for models and batches one device cannot hold. The
data is what `--export-examples` wrote (format in `src/train/export_examples.rs`; read here by
`CbqaExamples` and `read_batches`, without cbqa): the processed, tokenized examples and the
effective batches in cbqa's order, epoch by epoch, with its seed, mixture draws and answer draws.
The recipe is the run's (`manifest.json`'s settings): each step is one exported batch, its loss
the cross-entropy summed over the batch's target tokens divided by their count, the optimizer
transformers' Adafactor with cbqa's settings (lr constant, eps (1e-30, 1e-3), clipping 1.0,
decay -0.8, no first moment, no parameter scaling) or torch's AdamW with cbqa's (betas 0.9/0.999,
eps 1e-8, weight decay 0.01), dropout and lr from the run unless given.

Each rank takes its share of every batch (items rank, rank + world, ...), not whole batches
round-robin: so the effective batch, the number of steps and the optimizer's trajectory are cbqa's
whatever the number of processes, and the reported loss (the global token-weighted mean) is
cbqa's loss of that step. A rank's share is cut into micro-batches of at most
--micro-batch-tokens padded tokens (cbqa's rule: sorted by length), gradients accumulated without
synchronisation until the last one. DDP by default; --fsdp shards parameters (FSDP) for models
that do not fit one device — only ever run on the CPU with gloo here; note that FSDP hands the
optimizer flattened shards, so Adafactor's factored moments and per-tensor update clipping
become per shard (the forward pass and the loss are unchanged, the updates are not cbqa's).
Dropout masks are torch's (seeded by the run's seed), not cbqa's.

Rank 0 writes `OUT/train_log.csv` (step, epoch, loss) and `OUT/checkpoint-N` (every --save-every
steps and at the end) in transformers' layout (model.safetensors, config, tokenizer files), which
`cbqa export` takes.
"""

import argparse
import csv
import json
import os
import shutil
from contextlib import nullcontext

import torch
import torch.distributed as dist

FORMAT, FORMAT_VERSION = "cbqa-examples", 1
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "spiece.model", "generation_config.json"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", required=True, help="a directory of `cbqa train --export-examples`")
    p.add_argument("--out", required=True)
    p.add_argument("--model", help="the checkpoint to start from [default: the manifest's model]")
    p.add_argument("--steps", type=int, help="[default: the run's steps (the manifest's)]")
    p.add_argument("--lr", type=float, help="[default: the run's]")
    p.add_argument("--dropout", type=float, help="[default: the run's]")
    p.add_argument("--micro-batch-tokens", type=int, help="[default: the run's]")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: at the end)")
    p.add_argument("--backend", default="gloo", help="gloo (CPU) or nccl (GPUs)")
    p.add_argument("--fsdp", action="store_true", help="shard parameters (FSDP) instead of DDP")
    return p.parse_args()


def read_json_lines(path):
    """The JSON values of a JSON-lines file; a bad line is an error naming file:line."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{n}: not JSON ({e})") from None


def read_manifest(directory):
    """`manifest.json`, checked to be a cbqa examples export of the version this script reads."""
    path = os.path.join(directory, "manifest.json")
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"{path}: cannot read a cbqa examples manifest ({e}); make the directory "
                         "with `cbqa train --export-examples DIR`") from None
    if m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
        raise SystemExit(f"{path}: format {m.get('format')!r} version {m.get('format_version')!r}, "
                         f"expected {FORMAT!r} version {FORMAT_VERSION}")
    return m


class CbqaExamples(torch.utils.data.Dataset):
    """The examples of a `--export-examples` directory. `ds[(id, answer)]` is
    `(input_ids, target_ids)` of that example with that target; `ds[id]` the example's record
    (`input_ids`, all its `target_ids`, `source`)."""

    def __init__(self, directory):
        self.manifest = read_manifest(directory)
        path = os.path.join(directory, self.manifest["files"]["examples"])
        self.records = []
        for n, r in enumerate(read_json_lines(path), 1):
            if r.get("id") != len(self.records) or not r.get("target_ids"):
                raise SystemExit(f"{path}:{n}: expected example id {len(self.records)} with targets")
            self.records.append(r)
        if len(self.records) != self.manifest["examples"]:
            raise SystemExit(f"{path}: {len(self.records)} examples, the manifest says "
                             f"{self.manifest['examples']}")

    def __len__(self):
        return len(self.records)

    def __getitem__(self, key):
        if isinstance(key, int):
            return self.records[key]
        i, a = key
        r = self.records[i]
        return r["input_ids"], r["target_ids"][a]


def read_batches(directory, dataset):
    """The effective batches of `batches.jsonl` in training order, each item checked against the
    dataset."""
    path = os.path.join(directory, dataset.manifest["files"]["batches"])
    batches = []
    for n, b in enumerate(read_json_lines(path), 1):
        items = [tuple(x) for x in b["items"]]
        for i, a in items:
            if not (0 <= i < len(dataset) and 0 <= a < len(dataset[i]["target_ids"])):
                raise SystemExit(f"{path}:{n}: item {[i, a]} is not in the examples")
        batches.append({"step": b["step"], "epoch": b["epoch"], "items": items,
                        "target_tokens": b["target_tokens"]})
    return batches


def micro_batches(rows, budget):
    """cbqa's micro-batches: sorted by (input, target) length, cut so that
    rows x (longest input + longest target) stays within `budget` padded tokens."""
    out, cur, width_in, width_t = [], [], 0, 0
    for r in sorted(rows, key=lambda r: (len(r[0]), len(r[1]))):
        wi, wt = max(width_in, len(r[0])), max(width_t, len(r[1]))
        if cur and (len(cur) + 1) * (wi + wt) > budget:
            out.append(cur)
            cur, wi, wt = [], len(r[0]), len(r[1])
        cur.append(r)
        width_in, width_t = wi, wt
    return out + [cur] if cur else out


def collate(rows, pad):
    """Padded input ids, attention mask and labels (-100 past each target)."""
    li = max(len(r[0]) for r in rows)
    lt = max(len(r[1]) for r in rows)
    ids = torch.tensor([r[0] + [pad] * (li - len(r[0])) for r in rows])
    mask = torch.tensor([[1] * len(r[0]) + [0] * (li - len(r[0])) for r in rows])
    labels = torch.tensor([r[1] + [-100] * (lt - len(r[1])) for r in rows])
    return ids, mask, labels


def step_loss(model, rows, total_tokens, world, recipe):
    """Forward and backward of this rank's share of a batch, in micro-batches (gradients
    synchronised on the last one only); the global token-weighted mean loss."""
    device = recipe["device"]
    summed = torch.zeros((), device=device)
    parts = [(part, 1.0) for part in micro_batches(rows, recipe["micro_batch_tokens"])]
    # Every rank runs as many forward passes (FSDP gathers the parameters in each): one with
    # fewer micro-batches (or no rows) adds real passes on one `</s>` weighted zero.
    count = torch.tensor(len(parts))
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    eos = [recipe["eos"]]
    parts += [([(eos, eos)], 0.0)] * (int(count) - len(parts))
    for k, (part, weight) in enumerate(parts):
        sync = nullcontext() if k == len(parts) - 1 else model.no_sync()
        with sync, recipe["autocast"]():
            ids, mask, labels = (t.to(device) for t in collate(part, recipe["pad"]))
            logits = model(input_ids=ids, attention_mask=mask, labels=labels).logits
            loss = weight * torch.nn.functional.cross_entropy(
                logits.float().view(-1, logits.size(-1)), labels.view(-1),
                ignore_index=-100, reduction="sum")
            # DDP/FSDP average gradients over the ranks; x world makes it the global sum.
            (loss * world / total_tokens).backward()
        summed += loss.detach()
    dist.all_reduce(summed)
    return summed.item() / total_tokens


def make_optimizer(params, settings, lr):
    """cbqa's optimizer with cbqa's settings (`src/train/adafactor.rs`, `adamw.rs`)."""
    if settings["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    from transformers.optimization import Adafactor

    return Adafactor(params, lr=lr, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8,
                     beta1=None, weight_decay=0.0, scale_parameter=False, relative_step=False,
                     warmup_init=False)


def wrap(model, args, device):
    if args.fsdp:
        from torch.distributed.fsdp import FullyShardedDataParallel

        # An explicit device (the CPU too: FSDP then runs on gloo).
        return FullyShardedDataParallel(model, device_id=device)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def save(model, args, tok_dir, step):
    """`OUT/checkpoint-STEP` in transformers' layout (rank 0 writes; every rank takes part)."""
    inner = model.module
    if args.fsdp:
        from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType

        cfg = FullStateDictConfig(offload_to_cpu=model.compute_device.type != "cpu", rank0_only=True)
        with FullyShardedDataParallel.state_dict_type(model, StateDictType.FULL_STATE_DICT, cfg):
            state = model.state_dict()
    else:
        state = inner.state_dict()
    if dist.get_rank() != 0:
        return
    out = os.path.join(args.out, f"checkpoint-{step}")
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    inner.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    for f in TOKENIZER_FILES:
        src = os.path.join(tok_dir, f)
        if os.path.exists(src) and not os.path.exists(os.path.join(tmp, f)):
            shutil.copy(src, tmp)
    os.replace(tmp, out)


def load_model(args, manifest, device):
    """The starting checkpoint, checked against the exported ids, in training mode."""
    from transformers import T5ForConditionalGeneration

    settings = manifest["settings"]
    dropout = settings["dropout"] if args.dropout is None else args.dropout
    path = args.model or manifest["model"]
    model = T5ForConditionalGeneration.from_pretrained(path, dropout_rate=dropout)
    config = model.config
    if config.vocab_size != manifest["vocab_size"] or config.pad_token_id != manifest["pad_id"]:
        raise SystemExit(f"{path}: vocabulary {config.vocab_size} / pad {config.pad_token_id}, but "
                         f"the examples were made for {manifest['vocab_size']} / {manifest['pad_id']}")
    model.to(device).train()
    return model, path


def recipe_of(args, manifest, device):
    """What each step needs besides the model: device, pad id, micro-batch budget, autocast."""
    s = manifest["settings"]
    bf16 = s.get("precision") == "bf16"
    return {
        "device": device,
        "pad": manifest["pad_id"],
        "eos": manifest["eos_id"],
        "micro_batch_tokens": args.micro_batch_tokens or s["micro_batch_tokens"],
        "autocast": (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext,
    }


def steps_of(args, manifest, batches):
    steps = manifest["steps"] if args.steps is None else args.steps
    if not 1 <= steps <= len(batches):
        raise SystemExit(f"--steps {steps}: the examples hold {len(batches)} batches; export more "
                         "epochs with `--export-epochs E` (or `--max-steps`)")
    return steps


def main():
    args = parse_args()
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
                          if args.backend == "nccl" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    data = CbqaExamples(args.examples)
    manifest = data.manifest
    batches = read_batches(args.examples, data)
    steps = steps_of(args, manifest, batches)
    torch.manual_seed(manifest["seed"])
    model, model_path = load_model(args, manifest, device)
    model = wrap(model, args, device)
    lr = manifest["settings"]["lr"] if args.lr is None else args.lr
    opt = make_optimizer(model.parameters(), manifest["settings"], lr)
    recipe = recipe_of(args, manifest, device)
    os.makedirs(args.out, exist_ok=True)
    log = []
    for b in batches[:steps]:
        mine = [data[item] for item in b["items"][rank::world]]
        opt.zero_grad(set_to_none=True)
        loss = step_loss(model, mine, b["target_tokens"], world, recipe)
        opt.step()
        log.append((b["step"], b["epoch"], loss))
        if rank == 0:
            print(f"step {b['step']} loss {loss:.6f}", flush=True)
        if args.save_every and b["step"] % args.save_every == 0 and b["step"] != steps:
            save(model, args, model_path, b["step"])
    save(model, args, model_path, steps)
    if rank == 0:
        with open(os.path.join(args.out, "train_log.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "epoch", "loss"])
            w.writerows((s, e, repr(l)) for s, e, l in log)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
