#!/usr/bin/env python3
"""Fine-tune a cbqa checkpoint for closed-book QA on several processes (torch.distributed).

    torchrun --nproc_per_node 2 scripts/train_distributed.py --model DIR --train FILE --out DIR \\
        [--steps N] [--backend gloo|nccl] [--fsdp]

`cbqa train`'s recipe, for runs one device cannot hold: the same examples (read by cbqa's own
reader, blank answers dropped, the first answer as target, `prefix + question` and the answer
tokenized with the model's tokenizer and cut to --max-input-len / --max-target-len keeping
`</s>`), effective batches of at most --batch-tokens input+target tokens, the loss summed over
target tokens and divided by the effective batch's target-token count, transformers' Adafactor
with cbqa's settings (lr 1e-3 constant, eps (1e-30, 1e-3), clipping 1.0, decay -0.8, no first
moment, no parameter scaling). Each effective batch is split across the processes (DDP; --fsdp
shards the parameters for models that do not fit one device); the reported loss is the global
token-weighted mean, so it does not depend on the number of processes. The epoch order is a
torch permutation seeded with --seed (not cbqa's ChaCha order): a batch that holds the whole
training set is the same batch as `cbqa train`'s first one, and its loss is cbqa's.

Rank 0 writes `OUT/train_log.csv` (step, loss) and, at the end, `OUT/checkpoint-N` in transformers'
layout (model.safetensors, config, tokenizer files), which `cbqa export` takes.
"""

import argparse
import csv
import os
import shutil

import torch
import torch.distributed as dist

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "spiece.model", "generation_config.json"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a checkpoint directory in transformers' layout")
    p.add_argument("--train", required=True, help="a QA file cbqa reads (NQ-open JSONL, DPR TSV, ...)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-tokens", type=int, default=196_608)
    p.add_argument("--prefix", default="")
    p.add_argument("--max-input-len", type=int, default=512)
    p.add_argument("--max-target-len", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="gloo", help="gloo (CPU) or nccl (GPUs)")
    p.add_argument("--fsdp", action="store_true", help="shard parameters (FSDP) instead of DDP")
    return p.parse_args()


def encode(tok, text, max_len):
    """Token ids of `text` with `</s>`, cut to `max_len` keeping the `</s>` (as cbqa does)."""
    ids = tok(text)["input_ids"]
    if len(ids) > max_len:
        ids = ids[: max_len - 1] + [tok.eos_token_id]
    return ids


def examples(args, tok):
    """(input ids, target ids) of every training example, in file order."""
    import cbqa

    out = []
    for e in cbqa.read_dataset(args.train):
        answers = [a for a in e.answers if a.strip()]
        if not answers:
            raise SystemExit(f"{args.train}: example {e.id} has no non-blank answer")
        out.append((encode(tok, args.prefix + e.question, args.max_input_len),
                    encode(tok, answers[0], args.max_target_len)))
    return out


def epoch_batches(data, seed, epoch, budget):
    """A seeded permutation cut into effective batches of at most `budget` tokens."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(data), generator=g).tolist()
    batches, cur, used = [], [], 0
    for i in order:
        t = len(data[i][0]) + len(data[i][1])
        if cur and used + t > budget:
            batches.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += t
    if cur:
        batches.append(cur)
    return batches


def collate(rows, pad):
    """Padded input ids, attention mask and labels (-100 past each target)."""
    li = max(len(r[0]) for r in rows)
    lt = max(len(r[1]) for r in rows)
    ids = torch.tensor([r[0] + [pad] * (li - len(r[0])) for r in rows])
    mask = torch.tensor([[1] * len(r[0]) + [0] * (li - len(r[0])) for r in rows])
    labels = torch.tensor([r[1] + [-100] * (lt - len(r[1])) for r in rows])
    return ids, mask, labels


def step_loss(model, rows, total_tokens, world, pad):
    """This rank's share of the token-weighted loss (backward done); the global mean loss."""
    if rows:
        ids, mask, labels = collate(rows, pad)
        logits = model(input_ids=ids, attention_mask=mask, labels=labels).logits
        summed = torch.nn.functional.cross_entropy(
            logits.float().view(-1, logits.size(-1)), labels.view(-1),
            ignore_index=-100, reduction="sum")
    else:  # more ranks than examples: take part in the gradient all-reduce with zero
        summed = sum(p.sum() * 0.0 for p in model.parameters())
    # DDP averages gradients over the ranks; scaling by the world size makes it the global sum.
    (summed * world / total_tokens).backward()
    loss = summed.detach().clone()
    dist.all_reduce(loss)
    return loss.item() / total_tokens


def wrap(model, args):
    if args.fsdp:
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(model)
    return torch.nn.parallel.DistributedDataParallel(model)


def save(model, args, tok_dir, step):
    """`OUT/checkpoint-STEP` in transformers' layout (rank 0 writes; every rank takes part)."""
    inner = model.module
    if args.fsdp:
        from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType

        cfg = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
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


def main():
    args = parse_args()
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    from transformers import AutoTokenizer, T5ForConditionalGeneration
    from transformers.optimization import Adafactor

    tok = AutoTokenizer.from_pretrained(args.model)
    torch.manual_seed(args.seed)
    model = T5ForConditionalGeneration.from_pretrained(args.model, dropout_rate=args.dropout)
    model.train()
    model = wrap(model, args)
    opt = Adafactor(model.parameters(), lr=args.lr, eps=(1e-30, 1e-3), clip_threshold=1.0,
                    decay_rate=-0.8, beta1=None, weight_decay=0.0, scale_parameter=False,
                    relative_step=False, warmup_init=False)
    data = examples(args, tok)
    pad = model.module.config.pad_token_id
    os.makedirs(args.out, exist_ok=True)
    log = []
    epoch, batches = 0, epoch_batches(data, args.seed, 0, args.batch_tokens)
    for step in range(1, args.steps + 1):
        if not batches:
            epoch += 1
            batches = epoch_batches(data, args.seed, epoch, args.batch_tokens)
        batch = batches.pop(0)
        total = sum(len(data[i][1]) for i in batch)
        mine = [data[i] for i in batch[rank::world]]
        opt.zero_grad(set_to_none=True)
        loss = step_loss(model, mine, total, world, pad)
        opt.step()
        log.append((step, epoch, loss))
        if rank == 0:
            print(f"step {step} loss {loss:.6f}", flush=True)
    save(model, args, args.model, args.steps)
    if rank == 0:
        with open(os.path.join(args.out, "train_log.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "epoch", "loss"])
            w.writerows((s, e, repr(l)) for s, e, l in log)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
