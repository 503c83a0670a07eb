//! One encoder pass and one decoder step, per backend, on a cbqa export of the T5.1.1 fixture
//! (batch 8, 16 input tokens). Run `cargo bench --bench runtime`.

use cbqa::runtime::{EncoderInput, OnnxDir, Seq2Seq};
use criterion::{criterion_group, criterion_main, Criterion};
use std::path::PathBuf;

fn input() -> EncoderInput {
    let seqs: Vec<Vec<u32>> = (0..8u32)
        .map(|b| {
            (0..16u32)
                .map(|i| 3 + (b * 31 + i * 7) % 300)
                .chain([1])
                .collect()
        })
        .collect();
    EncoderInput::from_sequences(&seqs, 0)
}

fn bench_backend<B: Seq2Seq>(c: &mut Criterion, name: &str, backend: &B) {
    let inp = input();
    c.bench_function(&format!("{name}/encoder_pass_b8_s17"), |b| {
        b.iter(|| backend.encode(&inp).map(|s| backend.rows(&s)).unwrap_or(0))
    });
    // a state four steps in, then time one more step
    let start = || {
        let mut s = backend.encode(&inp).expect("encode");
        for _ in 0..4 {
            s = backend.step(s, &[5; 8]).expect("step").1;
        }
        s
    };
    c.bench_function(&format!("{name}/decoder_step_b8_past4"), |b| {
        b.iter_batched(
            start,
            |s| backend.step(s, &[5; 8]).map(|(l, _)| l.rows).unwrap_or(0),
            criterion::BatchSize::SmallInput,
        )
    });
}

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target").join("bench-exports").join("t5_v1_1");
    if !out.join(cbqa::export::DECODER_WITH_PAST).exists() {
        let mut opts = cbqa::export::ExportOptions::new(root.join("tests/fixtures/t5_v1_1"), &out);
        opts.force = true;
        cbqa::export::export(&opts).expect("export the fixture");
    }
    let dir = OnnxDir::open(&out).expect("export dir");
    let ort = cbqa::runtime::ort::OrtSeq2Seq::load(&dir, &Default::default()).expect("ort");
    bench_backend(c, "ort", &ort);
    let tract = cbqa::runtime::tract::TractSeq2Seq::load(&dir).expect("tract");
    bench_backend(c, "tract", &tract);
}

criterion_group!(benches, bench);
criterion_main!(benches);
