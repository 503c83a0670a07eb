//! T5's relative position buckets as an exact lookup table.
//!
//! HF's `T5Attention._relative_position_bucket`
//! (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/t5/modeling_t5.py>)
//! maps a distance `n` to `n` when it is below `max_exact`, and otherwise to
//! `max_exact + int(log(n / max_exact) / log(max_distance / max_exact) * (num_buckets - max_exact))`,
//! capped at `num_buckets - 1`. Distances are integers and the map is monotone, so it is fully
//! described by its values up to the distance where it reaches the cap. The graphs gather from this
//! table at `min(n, len - 1)`: exact integer work, valid for any sequence length, and identical in
//! every runtime (a `Log` node could round differently in ONNX Runtime, tract and torch right at a
//! bucket boundary, where T5's defaults put several distances: 16, 32 and 64).
//!
//! The float part is computed as torch does it in float32 (`n.float() / max_exact`, `log`, divided
//! by the float32-rounded `math.log(max_distance / max_exact)`, times the bucket count, truncated).

use crate::config::T5Config;
use crate::error::{Error, Result};

/// The bucket of each non-negative distance until the map saturates; the last entry holds for
/// every longer distance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketTable {
    /// Bucket of distance `n` for `n < table.len()`.
    pub table: Vec<i64>,
    /// Added to the bucket when the memory position is after the query (bidirectional only).
    pub forward_offset: i64,
}

impl BucketTable {
    /// The table for the encoder (`bidirectional`) or the decoder (causal).
    pub fn new(cfg: &T5Config, bidirectional: bool) -> Result<Self> {
        let mut nb = cfg.relative_attention_num_buckets as i64;
        let md = cfg.relative_attention_max_distance as i64;
        let forward_offset = if bidirectional {
            nb /= 2;
            nb
        } else {
            0
        };
        let me = nb / 2;
        if me < 1 || md <= me {
            return Err(Error::setting(
                "relative_attention_num_buckets",
                format!(
                    "{} with relative_attention_max_distance {md}: T5's bucketing needs at least \
                     2 exact buckets per direction and max_distance above them (transformers \
                     would compute log(0) or divide by zero)",
                    cfg.relative_attention_num_buckets
                ),
            ));
        }
        let denom = ((md as f64) / (me as f64)).ln() as f32;
        let scale = (nb - me) as f32;
        let mut table = Vec::new();
        // The formula reaches `nb - me` at n = max_distance, so the cap is hit by then.
        for n in 0..=(2 * md + 2) {
            let b = if n < me {
                n
            } else {
                let x = ((n as f32) / (me as f32)).ln() / denom * scale;
                (me + x as i64).min(nb - 1)
            };
            table.push(b);
            if b == nb - 1 && n >= me {
                break;
            }
        }
        Ok(BucketTable {
            table,
            forward_offset,
        })
    }

    /// The bucket of `relative = memory_position - query_position`, as HF computes it.
    pub fn bucket(&self, relative: i64) -> i64 {
        let (base, dist) = if self.forward_offset > 0 {
            (
                if relative > 0 { self.forward_offset } else { 0 },
                relative.abs(),
            )
        } else {
            (0, (-relative).max(0))
        };
        let last = self.table.len() as i64 - 1;
        base + self.table[dist.min(last) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' `_relative_position_bucket` in float64 for comparison; equal to the f32
    /// version away from exact boundaries.
    fn hf_bucket(rel: i64, bidirectional: bool, mut nb: i64, md: i64) -> i64 {
        let mut out = 0;
        let n = if bidirectional {
            nb /= 2;
            if rel > 0 {
                out += nb;
            }
            rel.abs()
        } else {
            (-rel).max(0)
        };
        let me = nb / 2;
        if n < me {
            out + n
        } else {
            let large = me
                + ((n as f64 / me as f64).ln() / (md as f64 / me as f64).ln() * (nb - me) as f64)
                    as i64;
            out + large.min(nb - 1)
        }
    }

    #[test]
    fn table_matches_the_formula_for_any_distance() {
        for (nb, md) in [(32usize, 128usize), (8, 20), (16, 24), (32, 64)] {
            let mut cfg = crate::T5Config::preset("tiny").unwrap();
            cfg.relative_attention_num_buckets = nb;
            cfg.relative_attention_max_distance = md;
            for bidi in [true, false] {
                let t = BucketTable::new(&cfg, bidi).unwrap();
                for rel in -600..600 {
                    assert_eq!(
                        t.bucket(rel),
                        hf_bucket(rel, bidi, nb as i64, md as i64),
                        "nb {nb} md {md} bidi {bidi} rel {rel}"
                    );
                }
            }
        }
    }

    #[test]
    fn degenerate_bucketing_is_refused() {
        let mut cfg = crate::T5Config::preset("tiny").unwrap();
        cfg.relative_attention_num_buckets = 2;
        assert!(BucketTable::new(&cfg, true).is_err());
    }
}
