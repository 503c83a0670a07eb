#!/usr/bin/env python3
"""Reference fixtures made by the real implementation (transformers), for cbqa's parity tests.

Creates two tiny random T5 checkpoints in Hugging Face layout, with a Unigram tokenizer trained on
NQ-open questions, and saves transformers' outputs for fixed, padded inputs:

  tests/fixtures/t5_v1_0/   relu FFN, tied embeddings (T5 v1.0 style)
  tests/fixtures/t5_v1_1/   gated-gelu FFN, untied LM head (T5.1.1 style)

Both have d_kv != d_model / num_heads and num_decoder_layers != num_layers, and few relative
position buckets with a short max_distance so the logarithmic buckets are exercised.

Each directory holds config.json, generation_config.json, model.safetensors, tokenizer.json (+ the
tokenizer_config.json / special_tokens_map.json transformers reads) and
  reference.safetensors: input_ids, attention_mask [B,S] (right-padded, mixed lengths),
      encoder_last_hidden_state [B,S,D], decoder_input_ids [B,T], logits [B,T,V],
      greedy_sequences [B,L], beam4_sequences [B*4,L], beam4_scores [B*4]
  reference.json: the questions, the generation settings and the library versions.

Run: .venv/bin/python scripts/make_fixtures.py [--out tests/fixtures] [--data ../shared/data]
Deterministic: same versions, same bytes.
"""
import argparse
import json
import os
import random

import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

QUESTIONS = [
    "who sings does he love me with reba",
    "when was the first robot used in surgery",
    "what is the name of the main character in the movie the hunger games",
    "where does the last name hidalgo come from",
    "how many episodes are in season 7 of the walking dead and when does it come back on",
]
MAX_NEW_TOKENS = 12

VARIANTS = {
    "t5_v1_0": dict(d_model=48, d_kv=20, num_heads=3, d_ff=96, num_layers=2, num_decoder_layers=3,
                    relative_attention_num_buckets=8, relative_attention_max_distance=20,
                    feed_forward_proj="relu", tie_word_embeddings=True, seed=1,
                    initializer_factor=1.3, eos_scale=5.0),
    "t5_v1_1": dict(d_model=40, d_kv=12, num_heads=4, d_ff=72, num_layers=3, num_decoder_layers=2,
                    relative_attention_num_buckets=16, relative_attention_max_distance=24,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False, seed=2,
                    initializer_factor=1.0, eos_scale=2.0),
}


def fresh_cache():
    return EncoderDecoderCache(DynamicCache(), DynamicCache())


def load_questions(data_dir):
    path = os.path.join(data_dir, "nq-open", "NQ-open.dev.jsonl")
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            texts.append(rec["question"])
            texts.extend(rec["answer"])
    return texts


def make_tokenizer(texts, vocab_size):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    assert [tok.token_to_id(t) for t in ("<pad>", "</s>", "<unk>")] == [0, 1, 2]
    return tok


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures"))
    ap.add_argument("--data", default=os.path.join(os.path.dirname(root), "shared", "data"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    random.seed(0)
    raw_tok = make_tokenizer(load_questions(args.data), vocab_size=400)
    vocab = raw_tok.get_vocab_size()
    for name, spec in VARIANTS.items():
        spec = dict(spec)
        seed = spec.pop("seed")
        eos_scale = spec.pop("eos_scale")
        out = os.path.join(args.out, name)
        os.makedirs(out, exist_ok=True)
        torch.manual_seed(seed)
        # A slightly larger initializer_factor (v1.0) and a larger </s> row give varied generations
        # in which some, not all, sequences end early, so early stopping and finished-sequence
        # handling are tested. Both stay well conditioned in fp32 (logits within ~1e-5 of a float64
        # forward): hotter random weights make fp32 itself disagree with float64 by 1e-2 and more,
        # and no two engines could then agree to 1e-4.
        cfg = T5Config(vocab_size=vocab, dropout_rate=0.1, decoder_start_token_id=0, pad_token_id=0,
                       eos_token_id=1, **spec)
        model = T5ForConditionalGeneration(cfg).eval()
        with torch.no_grad():
            model.lm_head.weight[1] *= eos_scale
        model.save_pretrained(out, safe_serialization=True)
        raw_tok.save(os.path.join(out, "tokenizer.json"))
        hf_tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(out, "tokenizer.json"),
                                         pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
        hf_tok.save_pretrained(out)
        # save_pretrained rewrites tokenizer.json; keep the trained one byte for byte.
        raw_tok.save(os.path.join(out, "tokenizer.json"))

        enc = hf_tok(QUESTIONS, padding=True, return_tensors="pt", return_token_type_ids=False)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        g = torch.Generator().manual_seed(seed)
        dec_in = torch.cat([torch.zeros(len(QUESTIONS), 1, dtype=torch.long),
                            torch.randint(3, vocab, (len(QUESTIONS), 6), generator=g)], dim=1)
        with torch.no_grad():
            enc_out = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_in).logits
            # transformers 4.57 sizes its default cache by num_layers (the encoder depth), which
            # breaks generate when the decoder is deeper; a cache that grows as needed avoids it.
            greedy = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS,
                                    do_sample=False, num_beams=1, past_key_values=fresh_cache())
            beam = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS,
                                  do_sample=False, num_beams=4, num_return_sequences=4,
                                  length_penalty=1.0, early_stopping=True, past_key_values=fresh_cache(),
                                  output_scores=True, return_dict_in_generate=True)
        tensors = {
            "input_ids": ids.contiguous(),
            "attention_mask": mask.contiguous(),
            "encoder_last_hidden_state": enc_out.contiguous(),
            "decoder_input_ids": dec_in.contiguous(),
            "logits": logits.contiguous(),
            "greedy_sequences": greedy.contiguous(),
            "beam4_sequences": beam.sequences.contiguous(),
            "beam4_scores": beam.sequences_scores.contiguous(),
        }
        save_file(tensors, os.path.join(out, "reference.safetensors"), metadata={"format": "pt"})
        meta = {
            "questions": QUESTIONS,
            "greedy": {"max_new_tokens": MAX_NEW_TOKENS, "num_beams": 1},
            "beam4": {"max_new_tokens": MAX_NEW_TOKENS, "num_beams": 4, "num_return_sequences": 4,
                      "length_penalty": 1.0, "early_stopping": True},
            "greedy_text": hf_tok.batch_decode(greedy, skip_special_tokens=True),
            "greedy_finished": int(((greedy == 1).sum(1) > 0).sum()),
            "beam4_finished": int(((beam.sequences == 1).sum(1) > 0).sum()),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }
        with open(os.path.join(out, "reference.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
            f.write("\n")
        print(f"{out}: vocab {vocab}, greedy {greedy.shape[1]} tokens, beam {tuple(beam.sequences.shape)}")


if __name__ == "__main__":
    main()
