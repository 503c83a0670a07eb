"""Make PyTorch pickle checkpoints of a committed fixture, for the tests of cbqa's pickle reader.

    python scripts/make_pickle_checkpoints.py FIXTURE_DIR OUT_DIR

Writes, each with the fixture's tokenizer files:
  zip/     save_pretrained(safe_serialization=False)             (pytorch_model.bin)
  shard/   the same with a small max_shard_size                  (pytorch_model.bin.index.json)
  bf16/    the model in bfloat16, plus bf16_reference.safetensors (torch's own bf16 values)
  fp16/    the same in float16, with fp16_reference.safetensors
  offset/  torch.save of the state dict with shared.weight a view at storage offset 7
  strided/ torch.save of the state dict with shared.weight a transposed (non-contiguous) view
  legacy/  torch.save(_use_new_zipfile_serialization=False) of the state dict (pre-1.6 format)
  params/  torch.save of dict(named_parameters()): nn.Parameter values (_rebuild_parameter)
  attrs/   torch.save of the state dict with a Python attribute on every tensor, which torch
           pickles through torch._tensor._rebuild_from_type_v2
  extra_int/ torch.save of the state dict plus tensors no T5 has, of dtypes no T5 weight has:
           `encoder.position_ids` (int64, LongStorage) and `decoder.causal_mask` (bool)
  int64/   torch.save of the state dict with shared.weight as int64 (LongStorage)
  float64/ the same with shared.weight as float64 (DoubleStorage)
and hostile variants of zip/ (same config and tokenizer):
  evil/        data.pkl replaced by a pickle that REDUCEs os.system("touch OUT_DIR/evil_ran");
               the payload is first proven live with pickle.loads and its marker removed
  truncated/   pytorch_model.bin cut in half
  short/       the storage entry data/0 cut to 4 bytes
  hugelen/     the first BINUNICODE of data.pkl declaring 0xfffffff0 bytes
  legacy_cut/  legacy/'s file cut one byte into the first storage's data
  legacy_nocount/ legacy/'s file cut four bytes into the first storage's element count
"""

import io
import os
import pickle
import pickletools
import shutil
import struct
import sys
import zipfile

import torch
from safetensors.torch import save_file
from transformers import T5ForConditionalGeneration

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def copy_tokenizer(src, dst):
    for f in TOKENIZER_FILES:
        if os.path.exists(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), os.path.join(dst, f))


def rewrite_zip(src, dst, change):
    """Copy the zip archive src to dst, with change(name, bytes) -> bytes applied to each entry."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, change(info.filename, zin.read(info.filename)))


class Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def main():
    fixture, out = sys.argv[1], os.path.abspath(sys.argv[2])
    os.makedirs(out, exist_ok=True)
    model = T5ForConditionalGeneration.from_pretrained(fixture)
    model.save_pretrained(os.path.join(out, "zip"), safe_serialization=False)
    model.save_pretrained(
        os.path.join(out, "shard"), safe_serialization=False, max_shard_size="20KB"
    )
    for tag, dtype in [("bf16", torch.bfloat16), ("fp16", torch.float16)]:
        low = T5ForConditionalGeneration.from_pretrained(fixture).to(dtype)
        low.save_pretrained(os.path.join(out, tag), safe_serialization=False)
        save_file(
            {k: v.clone().contiguous() for k, v in low.state_dict().items()},
            os.path.join(out, f"{tag}_reference.safetensors"),
        )
    sd = model.state_dict()
    w = sd["shared.weight"]
    offset = dict(sd)
    offset["shared.weight"] = torch.cat([torch.zeros(7), w.flatten()])[7:].view(w.shape)
    assert offset["shared.weight"].storage_offset() == 7
    strided = dict(sd)
    strided["shared.weight"] = w.t().contiguous().t()
    assert not strided["shared.weight"].is_contiguous()
    attrs = {k: v.detach().clone() for k, v in sd.items()}
    for v in attrs.values():
        v.note = "an attribute"
    extra_int = dict(sd)
    extra_int["encoder.position_ids"] = torch.arange(8)
    extra_int["decoder.causal_mask"] = torch.ones(3, 3, dtype=torch.bool)
    int64 = dict(sd)
    int64["shared.weight"] = w.to(torch.int64)
    float64 = dict(sd)
    float64["shared.weight"] = w.to(torch.float64)
    for tag, d, zipped in [
        ("extra_int", extra_int, True),
        ("int64", int64, True),
        ("float64", float64, True),
        ("offset", offset, True),
        ("strided", strided, True),
        ("legacy", sd, False),
        ("params", dict(model.named_parameters()), True),
        ("attrs", attrs, True),
    ]:
        os.makedirs(os.path.join(out, tag), exist_ok=True)
        torch.save(
            d,
            os.path.join(out, tag, "pytorch_model.bin"),
            _use_new_zipfile_serialization=zipped,
        )
        shutil.copy(os.path.join(out, "zip", "config.json"), os.path.join(out, tag))
    for d in ["zip", "shard", "bf16", "fp16", "offset", "strided", "legacy", "params", "attrs",
              "extra_int", "int64", "float64"]:
        copy_tokenizer(fixture, os.path.join(out, d))

    good = os.path.join(out, "zip", "pytorch_model.bin")
    with zipfile.ZipFile(os.path.join(out, "attrs", "pytorch_model.bin")) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    assert b"_rebuild_from_type_v2" in pkl, "torch no longer pickles tensor attributes so"

    for d in ["evil", "truncated", "short", "hugelen", "legacy_cut", "legacy_nocount"]:
        os.makedirs(os.path.join(out, d), exist_ok=True)
        shutil.copy(os.path.join(out, "zip", "config.json"), os.path.join(out, d))
        copy_tokenizer(fixture, os.path.join(out, d))

    marker = os.path.join(out, "evil_ran")
    payload = pickle.dumps(Evil("touch " + marker), protocol=2)
    pickle.loads(payload)  # prove the payload runs when unpickled by Python
    assert os.path.exists(marker), "the os.system payload did not run under pickle.loads"
    os.remove(marker)
    rewrite_zip(
        good,
        os.path.join(out, "evil", "pytorch_model.bin"),
        lambda n, b: payload if n.endswith("/data.pkl") else b,
    )

    data = open(good, "rb").read()
    open(os.path.join(out, "truncated", "pytorch_model.bin"), "wb").write(data[: len(data) // 2])

    rewrite_zip(
        good,
        os.path.join(out, "short", "pytorch_model.bin"),
        lambda n, b: b[:4] if n.endswith("/data/0") else b,
    )

    def huge(name, b):
        if not name.endswith("/data.pkl"):
            return b
        pos = next(p for op, _, p in pickletools.genops(b) if op.name == "BINUNICODE")
        return b[: pos + 1] + struct.pack("<I", 0xFFFFFFF0) + b[pos + 5 :]

    rewrite_zip(good, os.path.join(out, "hugelen", "pytorch_model.bin"), huge)

    legacy = open(os.path.join(out, "legacy", "pytorch_model.bin"), "rb").read()
    assert not legacy.startswith(b"PK"), "torch wrote a zip archive for the legacy format"
    # torch orders the storages by key, and a legacy key is a memory address: which storage
    # comes last (and how big it is) changes from run to run, so cut at fixed places in the
    # first one instead of a fixed distance from the end.
    first = legacy_storages_start(legacy)
    open(os.path.join(out, "legacy_cut", "pytorch_model.bin"), "wb").write(legacy[: first + 8 + 1])
    open(os.path.join(out, "legacy_nocount", "pytorch_model.bin"), "wb").write(legacy[: first + 4])


def legacy_storages_start(data):
    """The offset of the first storage (its 8-byte element count) in a legacy torch.save file:
    after its five pickles (magic number, protocol, sys info, the object, the storage keys)."""
    f = io.BytesIO(data)
    for _ in range(5):
        for _ in pickletools.genops(f):
            pass
    return f.tell()


if __name__ == "__main__":
    main()
