//! Tokenisation throughput of a T5 tokenizer on real NQ-open questions.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::PathBuf;

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tok = cbqa::tokenizer::load(&root.join("tests/fixtures/t5_v1_0/tokenizer.json"))
        .expect("fixture tokenizer");
    let text =
        std::fs::read_to_string(root.join("eval/demo/nq-open-200.jsonl")).expect("demo data");
    let questions: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["question"].as_str().map(str::to_string))
        .collect();
    let mut g = c.benchmark_group("tokenize");
    g.throughput(Throughput::Elements(questions.len() as u64));
    g.bench_function("nq200_one_by_one", |b| {
        b.iter(|| {
            questions
                .iter()
                .map(|q| tok.encode(q.as_str(), true).map(|e| e.len()).unwrap_or(0))
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
