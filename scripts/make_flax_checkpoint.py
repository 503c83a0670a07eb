"""Make the committed Flax fixtures (tests/fixtures/flax/) from the PyTorch fixtures.

    python scripts/make_flax_checkpoint.py FIXTURES_DIR OUT_DIR

jax and flax are not in the project venv: run it once from a throwaway venv that has them, with
the project venv's transformers and torch on the path after its own packages, e.g.

    python3 -m venv /tmp/flaxvenv && /tmp/flaxvenv/bin/pip install "jax[cpu]==0.4.38" flax==0.10.2
    PYTHONPATH=/tmp/flaxvenv/lib/python3.11/site-packages:.venv/lib/python3.11/site-packages \
        /tmp/flaxvenv/bin/python scripts/make_flax_checkpoint.py tests/fixtures tests/fixtures/flax

Writes, each with the fixture's config, generation config and tokenizer files:
  t5_v1_0/       FlaxT5ForConditionalGeneration.from_pretrained(from_pt=True).save_pretrained
  t5_v1_1/       the same for the untied, gated fixture (lm_head/kernel)
  t5_v1_1_bf16_sharded/ t5_v1_1 with its params cast to bfloat16 (model.to_bf16), saved in
                 shards of at most 64 KB (flax_model.msgpack.index.json)
  t5_v1_0_chunked/ t5_v1_0 saved with flax's MAX_CHUNK_SIZE lowered to 4 KiB, so every array
                 larger than that is written as a `__msgpack_chunked_array__` (as flax writes
                 arrays over 1 GiB)
and checks that transformers' load_flax_checkpoint_in_pytorch_model reads each back into
T5ForConditionalGeneration equal to the fixture (the bf16 one after its cast to bfloat16).
"""

import os
import shutil
import sys

import flax.serialization
import torch
from transformers import FlaxT5ForConditionalGeneration, T5Config, T5ForConditionalGeneration
from flax.traverse_util import flatten_dict, unflatten_dict
from transformers.modeling_flax_pytorch_utils import load_flax_weights_in_pytorch_model

FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
]


def save(model, src, dst, params=None, max_shard_size="10GB"):
    os.makedirs(dst, exist_ok=True)
    model.save_pretrained(dst, params=params, max_shard_size=max_shard_size)
    # save_pretrained writes its own config.json; keep the fixture's (same keys, its dtype).
    for f in FILES:
        if os.path.exists(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), os.path.join(dst, f))
    shards = sorted(f for f in os.listdir(dst) if f.endswith(".msgpack"))
    assert shards, f"{dst}: no flax_model*.msgpack"
    return shards


def check(src, dst, shards, cast=None):
    """transformers' own Flax-to-PyTorch loader reads dst back equal to the fixture.

    (from_pretrained(from_flax=True) is broken in 4.57: it copies into meta tensors; the loader
    it calls is run here on a model built on the CPU, on the shards merged as flax restores
    them.)"""
    want = T5ForConditionalGeneration.from_pretrained(src).state_dict()
    model = T5ForConditionalGeneration(T5Config.from_pretrained(src))
    state = {}
    for shard in shards:
        with open(os.path.join(dst, shard), "rb") as f:
            state.update(flatten_dict(flax.serialization.msgpack_restore(f.read())))
    load_flax_weights_in_pytorch_model(model, unflatten_dict(state))
    got = model.state_dict()
    for k, v in want.items():
        w = v if cast is None else v.to(cast).to(v.dtype)
        assert torch.equal(got[k], w), f"{dst}: {k} differs"


def main():
    fixtures, out = sys.argv[1], sys.argv[2]
    for name in ["t5_v1_0", "t5_v1_1"]:
        src = os.path.join(fixtures, name)
        model = FlaxT5ForConditionalGeneration.from_pretrained(src, from_pt=True)
        shards = save(model, src, os.path.join(out, name))
        check(src, os.path.join(out, name), shards)
        if name == "t5_v1_1":
            dst = os.path.join(out, name + "_bf16_sharded")
            bf16 = model.to_bf16(model.params)
            shards = save(model, src, dst, params=bf16, max_shard_size="64KB")
            assert len(shards) > 1, shards
            check(src, dst, shards, cast=torch.bfloat16)
        else:
            dst = os.path.join(out, name + "_chunked")
            limit = flax.serialization.MAX_CHUNK_SIZE
            flax.serialization.MAX_CHUNK_SIZE = 4096
            try:
                shards = save(model, src, dst)
            finally:
                flax.serialization.MAX_CHUNK_SIZE = limit
            raw = open(os.path.join(dst, "flax_model.msgpack"), "rb").read()
            assert b"__msgpack_chunked_array__" in raw, "flax wrote no chunked array"
            check(src, dst, shards)


if __name__ == "__main__":
    main()
