use super::*;
use crate::config::{expected_tensors, T5Config};

/// Parameters of the 2-D weight matrices whose names pass `keep` (the linear layers; embeddings,
/// norms and position biases excluded).
fn linear_params(cfg: &T5Config, keep: impl Fn(&str) -> bool) -> f64 {
    expected_tensors(cfg)
        .iter()
        .filter(|t| t.shape.len() == 2 && !t.name.contains("relative_attention_bias"))
        .filter(|t| !t.name.starts_with("shared") && t.name != "lm_head.weight")
        .filter(|t| keep(&t.name))
        .map(|t| (t.shape[0] * t.shape[1]) as f64)
        .sum()
}

fn is_cross_kv(name: &str) -> bool {
    name.contains("EncDecAttention.k.") || name.contains("EncDecAttention.v.")
}

fn configs() -> Vec<T5Config> {
    ["t5-small", "t5-v1_1-small"]
        .iter()
        .map(|p| T5Config::preset(p).unwrap())
        .collect()
}

#[test]
fn linear_flops_are_two_per_weight_per_row() {
    for cfg in configs() {
        let b = BatchShape {
            questions: 4,
            input_len: 10,
            steps: 3,
            beams: 2,
        };
        let p = batch_phases(&cfg, Weights::F32, &b);
        let enc = linear_params(&cfg, |n| n.starts_with("encoder."));
        assert_eq!(p.encoder.gemm_flops, 2.0 * 40.0 * enc, "{}", cfg.d_model);
        let cross = linear_params(&cfg, |n| n.starts_with("decoder.") && is_cross_kv(n));
        // cross K/V of every beam row over every encoder position
        assert_eq!(p.cross_kv.gemm_flops, 2.0 * 8.0 * 10.0 * cross);
        let dec = linear_params(&cfg, |n| n.starts_with("decoder.") && !is_cross_kv(n));
        assert_eq!(p.decoder_steps.gemm_flops, 3.0 * 2.0 * 8.0 * dec);
        let head = (cfg.d_model * cfg.vocab_size) as f64;
        assert_eq!(p.lm_head.gemm_flops, 3.0 * 2.0 * 8.0 * head);
    }
}

#[test]
fn weights_are_read_once_per_call_at_their_stored_size() {
    // With no rows, only the weight reads are left.
    let cfg = T5Config::preset("t5-small").unwrap();
    let m = Dims::new(&cfg, Weights::F32);
    let dec = linear_params(&cfg, |n| n.starts_with("decoder.") && !is_cross_kv(n));
    assert_eq!(m.decoder_step(0.0, 7.0, 5.0).bytes, 4.0 * dec);
    let q = Dims::new(&cfg, Weights::Int8);
    assert_eq!(q.decoder_step(0.0, 7.0, 5.0).bytes, dec);
    let enc = linear_params(&cfg, |n| n.starts_with("encoder."));
    assert_eq!(
        Dims::new(&cfg, Weights::F16).encoder(0.0, 0.0).bytes,
        2.0 * enc
    );
}

#[test]
fn the_self_attention_cache_traffic_grows_with_the_step() {
    let cfg = T5Config::preset("t5-small").unwrap();
    let m = Dims::new(&cfg, Weights::F32);
    let (rows, len) = (32.0, 16.0);
    let step = |t: f64| m.decoder_step(rows, len, t);
    // one more past position: the cache is read once more (to append) and written once more, and
    // attention reads one more key and value and scores one more key
    let cache_row = 2.0 * cfg.inner_dim() as f64 * 4.0;
    let layers = cfg.decoder_layers() as f64;
    let heads = cfg.num_heads as f64;
    let per_key = 2.0 * cache_row + cache_row + 4.0 * heads * 4.0;
    let grew = step(5.0).bytes - step(4.0).bytes;
    assert!((grew - layers * rows * per_key).abs() < 1e-6, "{grew}");
    let flops = step(5.0).attn_flops - step(4.0).attn_flops;
    assert_eq!(flops, layers * rows * heads * 4.0 * cfg.d_kv as f64);
}

#[test]
fn the_roofline_is_the_slower_of_compute_and_memory() {
    let limits = Limits {
        threads: 2,
        f32_flops: 100e9,
        int8_ops: 400e9,
        bandwidth: 20e9,
    };
    let compute_bound = Cost {
        gemm_flops: 100e9,
        attn_flops: 0.0,
        bytes: 1e9,
    };
    assert_eq!(compute_bound.roofline_s(&limits, Weights::F32), 1.0);
    assert_eq!(compute_bound.roofline_s(&limits, Weights::Int8), 0.25);
    let memory_bound = Cost {
        gemm_flops: 1e9,
        attn_flops: 1e9,
        bytes: 40e9,
    };
    assert_eq!(memory_bound.roofline_s(&limits, Weights::Int8), 2.0);
}

#[test]
fn batches_are_padded_to_their_longest_question() {
    let qs: Vec<Vec<u32>> = [3, 5, 2, 7, 4].iter().map(|&n| vec![1; n]).collect();
    let b = batches(&qs, 2, 8, 4);
    let lens: Vec<(usize, usize)> = b.iter().map(|b| (b.questions, b.input_len)).collect();
    assert_eq!(lens, [(2, 5), (2, 7), (1, 4)]);
    assert!(b.iter().all(|b| b.steps == 8 && b.beams == 4));
}

#[test]
fn precision_labels_choose_the_weight_size() {
    assert_eq!(Weights::from_precision("fp32"), Weights::F32);
    assert_eq!(Weights::from_precision("fp16"), Weights::F16);
    assert_eq!(Weights::from_precision("int8"), Weights::Int8);
}

#[test]
fn the_triad_measures_a_bandwidth() {
    let bw = triad_bandwidth(2, 1 << 20, 3).unwrap();
    assert!(bw.is_finite() && bw > 1e8, "{bw} bytes/s");
}
