#!/usr/bin/env python3
"""A small, honest reproduction of the paper's salient-span-masking claim (issue 14, item 10).

Roberts et al. (2020) found that continuing T5's pre-training with salient span masking (SSM,
after REALM) before fine-tuning helps closed-book QA more than further span corruption. This
script tests the mechanism on invented facts, where nothing leaks in from real-world knowledge:

1. It generates N synthetic people (names from syllables) with four attributes each (birth year,
   birth city, occupation, employer) and writes a pre-training corpus of paraphrased sentences
   about them, one sentence per line, as cbqa's spans JSON lines ({"text", "spans"}: code-point
   offsets), the attribute values and the person's name marked as salient spans (an NER tagger
   would mark the name too; REALM masks it).
2. It writes QA pairs (NQ-open JSON lines) about those attributes, split by person: people A for
   fine-tuning, people B for the test, whose facts the model can only have seen in pre-training.
3. It runs cbqa for three arms from the same `cbqa init` (same weights, same tokenizer):
   (a) no pre-training, (b) span corruption, (c) SSM, with the same pre-training steps and token
   budget, then the same fine-tuning on A, and evaluates exact match on B (the claim) and on A's
   fine-tuning questions (that fine-tuning worked). After pre-training it also probes B's facts
   in the objective's own mask format (did pre-training store them at all?). A fourth arm,
   span-corruption-fresh, gives span corruption new chunks and masks on every pass (cbqa draws
   them once per run; see ARM_OBJECTIVES).

Stdlib + numpy only; every draw comes from a generator seeded by --seed. The results, commands
and reading: eval/results/ssm-reproduction.md.

    python scripts/ssm_reproduction.py --out runs/ssm            # a, b, c (~20 min on 2 idle
                                                                 # cores by the pilot; 54 loaded)
    python scripts/ssm_reproduction.py --out /tmp/s --smoke      # tiny corpus, a few steps each
    python scripts/ssm_reproduction.py --out /tmp/s --data-only  # corpus and QA files only
"""

import argparse
import csv
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np

SYLLABLES = [
    "ka", "lo", "mi", "ren", "tas", "vo", "bel", "dru", "fen", "gor", "hal", "jin", "kor",
    "lum", "mar", "nel", "or", "pim", "quo", "ras", "sel", "tur", "ul", "vek", "wen", "yar",
    "zim", "ba", "di", "ek", "fa", "gu", "ho", "ix", "ju", "ne",
]
CITY_SUFFIXES = ["ton", "burg", "ford", "vale", "mouth", "stad", "holm", "wick"]
EMPLOYER_KINDS = ["Works", "Mills", "Company", "Foundry", "Press", "Bank", "Shipyard"]
OCCUPATIONS = [
    "painter", "chemist", "carpenter", "sailor", "teacher", "surgeon", "baker", "poet",
    "architect", "lawyer", "farmer", "weaver", "astronomer", "banker", "composer", "miner",
    "printer", "jeweller", "botanist", "engineer",
]
YEARS = [str(y) for y in range(1850, 1950)]
ATTRIBUTES = ["year", "city", "occupation", "employer"]

# Sentence templates per attribute: {n} the person's name, {v} the value. Two paraphrases each,
# plus one sentence that states three attributes at once.
SENTENCES = {
    "year": ["{n} was born in {v}.", "In {v}, {n} was born."],
    "city": ["{n} grew up in {v}.", "The hometown of {n} is {v}."],
    "occupation": ["{n} worked as a {v}.", "By profession, {n} was a {v}."],
    "employer": ["{n} was employed by {v}.", "For many years {n} worked at {v}."],
}
COMBINED = "{n}, a {occupation} from {city}, was born in {year}."
# Question templates: worded unlike any corpus sentence, one drawn per (person, attribute).
QUESTIONS = {
    "year": ["In what year was {n} born?", "When was {n} born?"],
    "city": ["Where did {n} grow up?", "Which town is {n} from?"],
    "occupation": ["What was {n}'s job?", "What did {n} do for a living?"],
    "employer": ["Which company employed {n}?", "Who did {n} work for?"],
}
SSM_MARKERS = "nem: _X_"  # the SSM input's prefix and mask, so the tokenizer has pieces for them


def invented_word(rng, syllables):
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables)).capitalize()


def invented_names(rng, count):
    """`count` distinct "First Last" names, none a substring of another (so a sentence's name
    says which person it is about)."""
    names = set()
    while len(names) < count:
        names.add(f"{invented_word(rng, 2)} {invented_word(rng, int(rng.integers(2, 4)))}")
    ordered = sorted(names)
    rng.shuffle(ordered)
    for a in ordered:
        if any(a != b and a in b for b in ordered):
            return invented_names(rng, count)
    return ordered


def value_pools(rng):
    cities = sorted({invented_word(rng, 2) + str(rng.choice(CITY_SUFFIXES)).lower()
                     for _ in range(40)})
    employers = sorted({f"{invented_word(rng, 2)} {rng.choice(EMPLOYER_KINDS)}" for _ in range(30)})
    return {"year": YEARS, "city": cities, "occupation": OCCUPATIONS, "employer": employers}


def make_people(rng, count):
    pools = value_pools(rng)
    return [{"name": name, **{a: str(rng.choice(pools[a])) for a in ATTRIBUTES}}
            for name in invented_names(rng, count)]


def fill(template, fields, types):
    """Fill `template`'s {fields} left to right; the text and a span (code points, as Python
    slices) for every field whose type is in `types`."""
    text, spans, rest = "", [], template
    while "{" in rest:
        head, tail = rest.split("{", 1)
        key, rest = tail.split("}", 1)
        text += head
        start = len(text)
        text += fields[key]
        spans.append({"start": start, "end": len(text), "type": types[key]})
    return {"text": text + rest, "spans": spans}


SPAN_TYPES = {"n": "PERSON", "year": "DATE", "city": "GPE", "occupation": "OCCUPATION",
              "employer": "ORG"}


def sentences_about(rng, person):
    """The person's sentences (each attribute twice in different words, then once more in a
    combined sentence), in a random order, as they would appear in a biography."""
    out = []
    for attr in ATTRIBUTES:
        for template in SENTENCES[attr]:
            types = {"n": "PERSON", "v": SPAN_TYPES[attr]}
            out.append(fill(template, {"n": person["name"], "v": person[attr]}, types))
    out.append(fill(COMBINED, {"n": person["name"], **person}, SPAN_TYPES))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def questions_about(rng, person):
    return [{"question": str(rng.choice(QUESTIONS[a])).format(n=person["name"]),
             "answer": [person[a]], "attribute": a} for a in ATTRIBUTES]


def repeated_corpus(seed, documents, copies):
    """The corpus `copies` times over, its documents (a person's sentences each) in a new seeded
    order in each copy."""
    rng = np.random.default_rng(seed + 1)
    return [s for _ in range(copies) for i in rng.permutation(len(documents))
            for s in documents[i]]


def make_dataset(seed, people_count):
    """Corpus (all people, grouped by person), QA about people A (fine-tuning) and B (test)."""
    rng = np.random.default_rng(seed)
    people = make_people(rng, people_count)
    half = people_count // 2
    documents = [sentences_about(rng, p) for p in people]
    corpus = [s for doc in documents for s in doc]
    qa_a = [q for p in people[:half] for q in questions_about(rng, p)]
    qa_b = [q for p in people[half:] for q in questions_about(rng, p)]
    return {"people_a": [p["name"] for p in people[:half]],
            "people_b": [p["name"] for p in people[half:]],
            "documents": documents, "corpus": corpus, "qa_a": qa_a, "qa_b": qa_b,
            "probes_b": [probe for p in people[half:] for probe in probes_about(p)]}


# The mask each objective's pre-training examples put where a value was: SSM's "nem: ... _X_"
# (mask_salient_spans), span corruption's first sentinel.
PROBE_MASKS = {"ssm": ("nem: ", "_X_"), "span-corruption": ("", "<extra_id_0>")}


def probes_about(person):
    """A memorisation probe per attribute: the first corpus sentence stating it, the value cut
    out; as text before and after the value, so each objective masks it its own way."""
    out = []
    for attr in ATTRIBUTES:
        doc = fill(SENTENCES[attr][0], {"n": person["name"], "v": person[attr]},
                   {"n": "PERSON", "v": SPAN_TYPES[attr]})
        value = next(s for s in doc["spans"] if s["type"] == SPAN_TYPES[attr])
        out.append({"before": doc["text"][:value["start"]], "after": doc["text"][value["end"]:],
                    "answer": [person[attr]], "attribute": attr})
    return out


def probe_questions(probes, objective):
    prefix, mask = PROBE_MASKS[objective]
    return [{"question": prefix + p["before"] + mask + p["after"], "answer": p["answer"],
             "attribute": p["attribute"]} for p in probes]


def person_of(question, names):
    found = [n for n in names if n in question]
    if len(found) != 1:
        raise AssertionError(f"question {question!r} names {len(found)} people, not 1")
    return found[0]


def check_split(data):
    """The invariants the experiment rests on; an AssertionError says which one failed.
    - no person is in both A and B, and every question names exactly one person of its side;
    - every answer is the text of a salient span of a corpus sentence about that person;
    - no sentence names two people (so the corpus says nothing about B through A's sentences)."""
    a, b = set(data["people_a"]), set(data["people_b"])
    if a & b:
        raise AssertionError(f"people in both A and B: {sorted(a & b)[:5]}")
    names = sorted(a | b)
    span_texts = {}
    for doc in data["corpus"]:
        who = [n for n in names if n in doc["text"]]
        if len(who) != 1:
            raise AssertionError(f"sentence {doc['text']!r} names {len(who)} people, not 1")
        for s in doc["spans"]:
            span_texts.setdefault(who[0], set()).add(doc["text"][s["start"]:s["end"]])
    for side, people in (("qa_a", a), ("qa_b", b)):
        for q in data[side]:
            who = person_of(q["question"], names)
            if who not in people:
                raise AssertionError(f"{side} asks about {who}, who is not on its side")
            if q["answer"][0] not in span_texts.get(who, set()):
                raise AssertionError(f"answer {q['answer'][0]!r} to {q['question']!r} is no "
                                     f"salient span of a sentence about {who}")


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_dataset(data, out, seed, copies):
    """The files cbqa reads: corpus.jsonl (spans), qa_a.jsonl, qa_b.jsonl (NQ-open; the extra
    "attribute" key is ignored by cbqa, used for the per-attribute table), tokenizer_text.jsonl
    (what `cbqa init --train-tokenizer` learns pieces from)."""
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "corpus.jsonl", data["corpus"])
    if copies:
        write_jsonl(out / "corpus_repeated.jsonl", repeated_corpus(seed, data["documents"], copies))
    write_jsonl(out / "qa_a.jsonl", data["qa_a"])
    write_jsonl(out / "qa_b.jsonl", data["qa_b"])
    for objective in PROBE_MASKS:
        write_jsonl(out / f"probe_{objective}_b.jsonl",
                    probe_questions(data["probes_b"], objective))
    write_jsonl(out / "people.jsonl", [{"name": n, "side": side}
                                       for side in ("a", "b") for n in data[f"people_{side}"]])
    # cbqa init trains its tokenizer on QA JSON lines only: the corpus goes in as "questions".
    text = [{"question": d["text"], "answer": [d["text"][d["spans"][0]["start"]:
                                                          d["spans"][0]["end"]]]}
            for d in data["corpus"]]
    text += [{"question": q["question"], "answer": q["answer"]} for q in data["qa_a"]]
    text.append({"question": SSM_MARKERS, "answer": ["_X_"]})
    write_jsonl(out / "tokenizer_text.jsonl", text)


# ---- running cbqa ---------------------------------------------------------------------------

def run_cbqa(cbqa, args, log, nice):
    """Run one cbqa command (under `nice -n 10` unless nice is False), appending the command and
    its output to `log`; its wall time in seconds. A failure stops the script with the output."""
    cmd = (["nice", "-n", "10"] if nice else []) + [str(cbqa)] + [str(a) for a in args]
    start = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - start
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(cmd)}\n# {wall:.1f} s, exit {p.returncode}\n{p.stdout}{p.stderr}\n")
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return wall


def last_checkpoint(run_dir):
    state = json.loads((run_dir / "state.json").read_text())
    return run_dir / state["last"]


def trainer_flags(cfg, steps):
    return ["--device", "cpu", "--threads", cfg.threads, "--optimizer", "adamw", "--dropout", "0",
            "--max-steps", steps, "--save-every-minutes", "0", "--log-every", max(1, steps // 10),
            "--seed", cfg.seed]


# Each arm's objective and corpus file. cbqa draws span corruption's chunks and masks once, when
# it builds the examples, and repeats them every epoch; "span-corruption-fresh" reads the corpus
# repeated (people in a new order each copy), so each pass over the facts has new chunks and
# masks, as T5's one pass over C4 has.
ARM_OBJECTIVES = {"ssm": ("ssm", "corpus.jsonl"),
                  "span-corruption": ("span-corruption", "corpus.jsonl"),
                  "span-corruption-fresh": ("span-corruption", "corpus_repeated.jsonl")}


def pretrain_args(cfg, init, arm, out):
    objective, corpus = ARM_OBJECTIVES[arm]
    return (["pretrain", "--model", init, "--corpus", cfg.out / "data" / corpus,
             "--objective", objective, "--out", out, "--inputs-length", cfg.inputs_length,
             "--lr", cfg.pretrain_lr, "--batch-tokens", cfg.batch_tokens]
            + trainer_flags(cfg, cfg.pretrain_steps))


def finetune_args(cfg, model, out):
    """Fine-tuning on A; the trainer's dev EM on B every quarter of the run is only the curve
    (the table's EM is the last checkpoint's, never the best one, which would select on B)."""
    data = cfg.out / "data"
    return (["train", "--model", model, "--train", data / "qa_a.jsonl",
             "--dev", data / "qa_b.jsonl",
             "--eval-every", max(1, cfg.finetune_steps // 4), "--eval-max-new-tokens", 16,
             "--out", out, "--lr", cfg.finetune_lr, "--batch-tokens", cfg.finetune_batch_tokens]
            + trainer_flags(cfg, cfg.finetune_steps))


def eval_args(cfg, model, data, out, limit):
    return ["eval", "--model", model, "--backend", "tch", "--data", data, "--out", out,
            "--threads", cfg.threads, "--batch-size", 64, "--max-new-tokens", 16,
            "--limit", limit]


def train_log(run_dir):
    """The rows of a run's train_log.csv (step, epoch, loss, lr, tokens_per_s, dev_em, ...)."""
    with open(run_dir / "train_log.csv", newline="") as f:
        return list(csv.DictReader(f))


def run_facts(run_dir):
    """What the table says about a training run: epochs reached, last loss, the dev-EM curve."""
    rows = train_log(run_dir)
    curve = [(int(r["step"]), float(r["dev_em"])) for r in rows if r["dev_em"]]
    return {"epochs": int(rows[-1]["epoch"]) + 1, "last_loss": float(rows[-1]["loss"]),
            "dev_em_curve": curve}


def read_predictions(eval_dir):
    with open(eval_dir / "predictions.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run_arm(cfg, cbqa, init, arm, log):
    """One arm: pre-training (unless "none") and its probe, fine-tuning on A, EM on B and on A;
    its walls (s), EMs, per-attribute EMs and the runs' losses."""
    arm_dir = cfg.out / arm
    result = {"arm": arm, "walls": {}, "probe_b": None, "pretrain": None}
    model = init if arm == "none" else pretrain_and_probe(cfg, cbqa, init, arm, log, result)
    result["walls"]["finetune"] = run_cbqa(
        cbqa, finetune_args(cfg, model, arm_dir / "finetune"), log, cfg.nice)
    result["finetune"] = run_facts(arm_dir / "finetune")
    tuned = last_checkpoint(arm_dir / "finetune")
    for side in ("b", "a"):
        evaluate_side(cfg, cbqa, tuned, side, arm_dir, log, result)
    return result


def pretrain_and_probe(cfg, cbqa, init, arm, log, result):
    """Pre-train with objective `arm`, then ask the checkpoint B's facts in the objective's own
    mask format (did pre-training store them at all?); the checkpoint."""
    run_dir = cfg.out / arm / "pretrain"
    result["walls"]["pretrain"] = run_cbqa(cbqa, pretrain_args(cfg, init, arm, run_dir), log,
                                           cfg.nice)
    result["pretrain"] = run_facts(run_dir)
    model = last_checkpoint(run_dir)
    probes = cfg.out / "data" / f"probe_{ARM_OBJECTIVES[arm][0]}_b.jsonl"
    run_cbqa(cbqa, eval_args(cfg, model, probes, cfg.out / arm / "probe_b", len(cfg.qa_b)), log,
             cfg.nice)
    result["probe_b"] = probe_recall(read_predictions(cfg.out / arm / "probe_b"))
    return model


def evaluate_side(cfg, cbqa, tuned, side, arm_dir, log, result):
    """EM of the fine-tuned checkpoint on B (all) or A (the first --a-eval fine-tuned questions)."""
    questions = cfg.qa_b if side == "b" else cfg.qa_a[:cfg.a_eval]
    out = arm_dir / f"eval_{side}"
    result["walls"][f"eval_{side}"] = run_cbqa(
        cbqa, eval_args(cfg, tuned, cfg.out / "data" / f"qa_{side}.jsonl", out, len(questions)),
        log, cfg.nice)
    result[f"em_{side}"], result[f"by_attr_{side}"] = score(read_predictions(out), questions)


def score(predictions, questions):
    """EM (0-100) over cbqa's predictions.csv rows, overall and per attribute."""
    attr_of = {q["question"]: q["attribute"] for q in questions}
    hits = {a: [] for a in ATTRIBUTES}
    for row in predictions:
        hits[attr_of[row["question"]]].append(float(row["em"]))
    every = [h for a in ATTRIBUTES for h in hits[a]]
    return (100 * np.mean(every),
            {a: 100 * np.mean(h) if h else float("nan") for a, h in hits.items()})


def probe_recall(predictions):
    """Percent of probes whose prediction starts with the value. Not EM: decoding drops the
    sentinels, so a span-corruption model's fill of <extra_id_0> runs on into the spans it
    would put after <extra_id_1>. The values need no normalisation beyond lower case (no
    punctuation or articles), which is what SQuAD's does to them."""
    hits = [row["normalized_prediction"].startswith(json.loads(row["references"])[0].lower())
            for row in predictions]
    return 100 * float(np.mean(hits))


def majority_em(data):
    """EM of always answering the most common A answer per attribute (the chance floor)."""
    ems = []
    for q in data["qa_b"]:
        same = [p["answer"][0] for p in data["qa_a"] if p["attribute"] == q["attribute"]]
        values, counts = np.unique(same, return_counts=True)
        ems.append(values[np.argmax(counts)] == q["answer"][0])
    return 100 * float(np.mean(ems))


# ---- the report -----------------------------------------------------------------------------

def cpu_facts():
    model = next((ln.split(":", 1)[1].strip() for ln in
                  subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                  if ln.startswith("Model name")), platform.processor())
    flags = set(pathlib.Path("/proc/cpuinfo").read_text().split())
    wanted = ["avx512f", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"]
    return model, {f: f in flags for f in wanted}, os.cpu_count()


def results_table(results, floor):
    lines = ["| arm | EM on B (facts only pre-trained) | EM on A (fine-tuned questions) | "
             "B: year | B: city | B: occupation | B: employer | after pre-training: B's facts "
             "filled in its own mask format (starts with the value) "
             "| pre-training: epochs, last loss "
             "| fine-tuning: last loss, EM on B along it (step: EM) "
             "| wall: pre-train / fine-tune / eval |", "|---" * 11 + "|"]
    for r in results:
        lines.append("| " + " | ".join(result_cells(r)) + " |")
    lines.append(f"| majority answer per attribute (chance floor) | {floor:.1f} "
                 + "| " * 9 + "|")
    return "\n".join(lines)


def result_cells(r):
    w, pre, fine = r["walls"], r["pretrain"], r["finetune"]
    curve = ", ".join(f"{step}: {em:.1f}" for step, em in fine["dev_em_curve"])
    return [r["arm"], f"{r['em_b']:.1f}", f"{r['em_a']:.1f}",
            *(f"{r['by_attr_b'][a]:.1f}" for a in ATTRIBUTES),
            "none" if r["probe_b"] is None else f"{r['probe_b']:.1f}",
            f"{pre['epochs']}, {pre['last_loss']:.3f}" if pre else "none",
            f"{fine['last_loss']:.3f}; {curve}",
            f"{w.get('pretrain', 0):.0f} s / {w['finetune']:.0f} s / "
            f"{w['eval_a'] + w['eval_b']:.0f} s"]


def write_summary(cfg, results, floor, total_wall):
    """results.json and commands.log stay in --out; summary.md is the table, the settings and
    the CPU, for eval/results/ssm-reproduction.md."""
    model, flags, cores = cpu_facts()
    (cfg.out / "results.json").write_text(json.dumps(
        {"results": results, "majority_em_b": floor, "settings": settings_of(cfg),
         "cpu": {"model": model, "flags": flags, "cores": cores}, "total_wall_s": total_wall},
        indent=2, default=float))
    text = [results_table(results, floor), "",
            f"CPU: {model}, {cores} cores visible; " +
            ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in flags.items()),
            f"Total wall time: {total_wall / 60:.1f} min", "",
            "Settings: " + json.dumps(settings_of(cfg))]
    (cfg.out / "summary.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


def settings_of(cfg):
    keys = ["seed", "people", "pretrain_steps", "finetune_steps", "batch_tokens",
            "finetune_batch_tokens", "pretrain_lr", "finetune_lr", "inputs_length", "vocab_size",
            "extra_ids", "preset", "threads", "a_eval", "smoke"]
    return {k: getattr(cfg, k) for k in keys}


# ---- main -----------------------------------------------------------------------------------

FULL = {"people": 100, "pretrain_steps": 450, "finetune_steps": 40, "batch_tokens": 4000,
        "finetune_batch_tokens": 2000, "vocab_size": 1024, "a_eval": 300}
SMOKE = {"people": 12, "pretrain_steps": 2, "finetune_steps": 1, "batch_tokens": 600,
         "finetune_batch_tokens": 300, "vocab_size": 300, "a_eval": 16}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=pathlib.Path, required=True, help="work directory (all runs)")
    p.add_argument("--cbqa", type=pathlib.Path, default=os.environ.get("CBQA_BIN"),
                   help="the cbqa binary, built with libtorch (default: $CBQA_BIN)")
    p.add_argument("--smoke", action="store_true", help="tiny corpus, a few steps per arm")
    p.add_argument("--data-only", action="store_true", help="write and check the data, no runs")
    p.add_argument("--arms", default="none,span-corruption,ssm",
                   help="comma-separated: none, span-corruption, ssm, span-corruption-fresh")
    p.add_argument("--fresh-copies", type=int, default=120,
                   help="span-corruption-fresh: copies of the corpus (about the epochs the "
                        "pre-training steps make, so no chunk repeats)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain-lr", type=float, default=3e-3)
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--inputs-length", type=int, default=128)
    p.add_argument("--extra-ids", type=int, default=32)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-nice", dest="nice", action="store_false")
    for k, v in FULL.items():
        p.add_argument("--" + k.replace("_", "-"), type=int, default=None,
                       help=f"default {v} ({SMOKE[k]} with --smoke)")
    cfg = p.parse_args(argv)
    for k, v in (SMOKE if cfg.smoke else FULL).items():
        if getattr(cfg, k) is None:
            setattr(cfg, k, v)
    return cfg


def init_model(cfg, cbqa, log):
    init = cfg.out / "init"
    run_cbqa(cbqa, ["init", "--out", init, "--preset", cfg.preset, "--train-tokenizer",
                    cfg.out / "data" / "tokenizer_text.jsonl", "--vocab-size", cfg.vocab_size,
                    "--extra-ids", cfg.extra_ids, "--seed", cfg.seed], log, cfg.nice)
    return init


def main(argv=None):
    cfg = parse_args(argv)
    data = make_dataset(cfg.seed, cfg.people)
    check_split(data)
    copies = cfg.fresh_copies if "span-corruption-fresh" in cfg.arms.split(",") else 0
    write_dataset(data, cfg.out / "data", cfg.seed, copies)
    cfg.qa_a, cfg.qa_b = data["qa_a"], data["qa_b"]
    print(f"data: {len(data['corpus'])} sentences, {len(data['qa_a'])} QA on A, "
          f"{len(data['qa_b'])} on B; split invariants hold")
    if cfg.data_only:
        return
    if cfg.cbqa is None or not cfg.cbqa.exists():
        sys.exit(f"cbqa binary {cfg.cbqa} not found: build it (cargo build --release, default "
                 "features, libtorch) and pass --cbqa or set CBQA_BIN")
    log, start = cfg.out / "commands.log", time.monotonic()
    init = init_model(cfg, cbqa=cfg.cbqa, log=log)
    results = []
    for arm in cfg.arms.split(","):
        results.append(run_arm(cfg, cfg.cbqa, init, arm, log))
        print(f"{arm}: EM B {results[-1]['em_b']:.1f}, EM A {results[-1]['em_a']:.1f}, "
              f"walls {results[-1]['walls']}", flush=True)
    write_summary(cfg, results, majority_em(data), time.monotonic() - start)


if __name__ == "__main__":
    main()
