"""Make SentencePiece model directories shaped like the paper's hub checkpoints, and encode texts
with transformers' own T5 tokenizers, for the tests of cbqa's spiece.model loader.

    python scripts/make_spiece_fixture.py train TEXTS.json VOCAB_SIZE EXTRA_IDS CHARACTER_COVERAGE OUT_DIR
    python scripts/make_spiece_fixture.py encode MODEL_DIR TEXTS.json OUT.json
    python scripts/make_spiece_fixture.py bad MODEL_DIR TEXTS.json OUT_DIR

`train` trains a Unigram SentencePiece model with T5's settings (nmt_nfkc normalisation,
<pad>=0, </s>=1, <unk>=2, no <s>) on the strings of TEXTS.json (a JSON list), keeping the
characters that cover CHARACTER_COVERAGE of the text (sentencepiece's default is 0.9995; a
vocabulary of a few hundred pieces needs less, the rest become <unk>), and saves it through
the slow `T5Tokenizer(vocab_file=...).save_pretrained`, as the hub checkpoints ship it
(spiece.model, tokenizer_config.json, special_tokens_map.json, no tokenizer.json):
  OUT_DIR/legacy/     legacy=True
  OUT_DIR/nolegacy/   legacy=False
  OUT_DIR/bare/       spiece.model alone (every setting at T5Tokenizer's default)
  OUT_DIR/old/        spiece.model with the tokenizer_config.json of transformers < 4.34 (as
                      the 2020 hub checkpoints have it: the sentinels listed in
                      additional_special_tokens, no added_tokens_decoder, no legacy key)

`encode` loads MODEL_DIR with `T5TokenizerFast.from_pretrained` (converted from the slow
tokenizer, since there is no tokenizer.json) and with the slow `T5Tokenizer` (sentencepiece
itself), encodes every text with the special tokens, and writes
{"fast": [[id, ...], ...], "slow": [[id, ...], ...], "fast_json": the fast tokenizer's JSON}.

`bad` writes broken copies of MODEL_DIR (its tokenizer_config.json beside each spiece.model),
edited with sentencepiece's own protobuf module:
  random/        4096 seeded random bytes
  truncated/     the first half of spiece.model
  empty/         the model with every piece removed
  bpe/           a real BPE model trained on TEXTS.json
  unk_control/   trainer_spec.unk_id = 0 (a CONTROL piece, <pad>)
  swapped/       <pad> and <unk> swapped, ids and types consistent (a valid model, not T5's ids)
  charsmap/      normalizer_spec.precompiled_charsmap cut to 100 bytes
  trie/          64 units of the charsmap's trie overwritten with seeded random values
"""

import json
import os
import random
import shutil
import sys
import tempfile

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2
from transformers import T5Tokenizer, T5TokenizerFast


def train_spm(texts_path, tmp, vocab_size, model_type="unigram", coverage=0.9995):
    """Train with T5's settings in `tmp`; returns the path of the .model file."""
    with open(texts_path, encoding="utf-8") as f:
        texts = json.load(f)
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        for t in texts:
            t = " ".join(t.split())
            if t:
                f.write(t + "\n")
    prefix = os.path.join(tmp, "spiece")
    spm.SentencePieceTrainer.train(
        input=corpus,
        model_prefix=prefix,
        model_type=model_type,
        vocab_size=int(vocab_size),
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        normalization_rule_name="nmt_nfkc",
        character_coverage=float(coverage),
        num_threads=1,
        minloglevel=2,
    )
    return prefix + ".model"


def train(texts_path, vocab_size, extra_ids, coverage, out_dir):
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = train_spm(texts_path, tmp, vocab_size, coverage=coverage)
        for name, legacy in [("legacy", True), ("nolegacy", False)]:
            tok = T5Tokenizer(vocab_file=vocab_file, extra_ids=int(extra_ids), legacy=legacy)
            tok.save_pretrained(os.path.join(out_dir, name))
        bare = os.path.join(out_dir, "bare")
        os.makedirs(bare, exist_ok=True)
        shutil.copy(vocab_file, os.path.join(bare, "spiece.model"))
        write_old_style(vocab_file, int(extra_ids), os.path.join(out_dir, "old"))
    for name in ["legacy", "nolegacy", "bare", "old"]:
        d = os.path.join(out_dir, name)
        assert not os.path.exists(os.path.join(d, "tokenizer.json")), d
        assert os.path.exists(os.path.join(d, "spiece.model")), d


def write_old_style(vocab_file, extra_ids, out):
    os.makedirs(out, exist_ok=True)
    shutil.copy(vocab_file, os.path.join(out, "spiece.model"))
    specials = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    specials["additional_special_tokens"] = [f"<extra_id_{i}>" for i in range(extra_ids)]
    config = dict(specials, extra_ids=extra_ids, model_max_length=512, name_or_path="t5-small")
    for name, value in [("special_tokens_map.json", specials), ("tokenizer_config.json", config)]:
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            json.dump(value, f)


def encode(model_dir, texts_path, out_path):
    with open(texts_path, encoding="utf-8") as f:
        texts = json.load(f)
    fast = T5TokenizerFast.from_pretrained(model_dir)
    slow = T5Tokenizer.from_pretrained(model_dir)
    out = {
        "fast": fast(texts)["input_ids"],
        "slow": [slow(t)["input_ids"] for t in texts],
        "fast_json": fast.backend_tokenizer.to_str(),
    }
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f)
    os.replace(tmp, out_path)


def bad(model_dir, texts_path, out_dir):
    with open(os.path.join(model_dir, "spiece.model"), "rb") as f:
        good = f.read()

    def write(name, data):
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        shutil.copy(os.path.join(model_dir, "tokenizer_config.json"), d)
        with open(os.path.join(d, "spiece.model"), "wb") as f:
            f.write(data)

    def edited(edit):
        m = model_pb2.ModelProto()
        m.ParseFromString(good)
        edit(m)
        return m.SerializeToString()

    write("random", random.Random(13).randbytes(4096))
    write("truncated", good[: len(good) // 2])
    write("empty", edited(lambda m: m.ClearField("pieces")))
    with tempfile.TemporaryDirectory() as tmp:
        with open(train_spm(texts_path, tmp, 500, "bpe"), "rb") as f:
            write("bpe", f.read())

    def unk_control(m):
        m.trainer_spec.unk_id = 0

    def swapped(m):
        pad, unk = m.pieces[0], m.pieces[2]
        pad.piece, unk.piece = unk.piece, pad.piece
        pad.type, unk.type = unk.type, pad.type
        m.trainer_spec.unk_id, m.trainer_spec.pad_id = 0, 2

    def charsmap(m):
        m.normalizer_spec.precompiled_charsmap = m.normalizer_spec.precompiled_charsmap[:100]

    def trie(m):
        blob = bytearray(m.normalizer_spec.precompiled_charsmap)
        units = int.from_bytes(blob[:4], "little") // 4
        rng = random.Random(13)
        for _ in range(64):
            at = 4 + 4 * rng.randrange(units)
            blob[at : at + 4] = rng.getrandbits(32).to_bytes(4, "little")
        m.normalizer_spec.precompiled_charsmap = bytes(blob)

    write("trie", edited(trie))
    write("unk_control", edited(unk_control))
    write("swapped", edited(swapped))
    write("charsmap", edited(charsmap))
    # The edited models other than `empty` and `charsmap` are still ones sentencepiece loads;
    # prove it, so the tests show cbqa refuses what is not T5's rather than what is unreadable.
    for name in ["swapped", "unk_control"]:
        spm.SentencePieceProcessor(model_file=os.path.join(out_dir, name, "spiece.model"))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "train" and len(args) == 5:
        train(*args)
    elif cmd == "encode" and len(args) == 3:
        encode(*args)
    elif cmd == "bad" and len(args) == 3:
        bad(*args)
    else:
        sys.exit(__doc__)
