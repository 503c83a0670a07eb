//! SentencePiece's `precompiled_charsmap`, checked before the `tokenizers` crate's `Precompiled`
//! normaliser takes it.
//!
//! The blob is a little-endian `u32` (the byte size of the trie), the trie as `u32` units (a
//! Darts-clone double array mapping UTF-8 prefixes to offsets), then the replacement strings,
//! each ending with NUL. `spm_precompiled` (behind `tokenizers::normalizers::Precompiled`) reserves
//! memory for the declared trie size, indexes the array and slices the strings without bounds
//! checks, so a damaged file would make it allocate gigabytes or panic while normalising text.
//! [`precompiled`] first proves that no input can lead it out of bounds.

use std::collections::HashSet;
use tokenizers::normalizers::precompiled::Precompiled;

/// Check `blob` and build the normaliser; the error says what is wrong with the blob.
pub(crate) fn precompiled(blob: &[u8]) -> Result<Precompiled, String> {
    let (units, strings) = split(blob)?;
    check_trie(&units, strings)?;
    Precompiled::from(blob).map_err(|e| format!("precompiled_charsmap: {e}"))
}

/// The trie's units and the replacement strings.
fn split(blob: &[u8]) -> Result<(Vec<usize>, &str), String> {
    let Some((head, rest)) = blob.split_first_chunk::<4>() else {
        return Err(format!(
            "precompiled_charsmap has {} bytes, fewer than its 4-byte header",
            blob.len()
        ));
    };
    let trie_bytes = u32::from_le_bytes(*head) as usize;
    if trie_bytes == 0 || !trie_bytes.is_multiple_of(4) || trie_bytes > rest.len() {
        return Err(format!(
            "precompiled_charsmap declares a trie of {trie_bytes} bytes; expected a positive \
             multiple of 4 within the {} bytes that follow the header",
            rest.len()
        ));
    }
    let (trie, strings) = rest.split_at(trie_bytes);
    let units = trie
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let strings = std::str::from_utf8(strings)
        .map_err(|e| format!("precompiled_charsmap's replacement strings are not UTF-8: {e}"))?;
    Ok((units, strings))
}

// The unit encoding of Darts-clone, as spm_precompiled decodes it.
fn has_leaf(unit: usize) -> bool {
    (unit >> 8) & 1 == 1
}
fn value(unit: usize) -> usize {
    unit & ((1 << 31) - 1)
}
fn label(unit: usize) -> usize {
    unit & ((1 << 31) | 0xFF)
}
fn offset(unit: usize) -> usize {
    (unit >> 10) << ((unit & (1 << 9)) >> 6)
}

/// Walk every state the prefix search can reach: from each, every next byte (1..=255) must land
/// inside the array, and every leaf must point at a character boundary of `strings`.
fn check_trie(units: &[usize], strings: &str) -> Result<(), String> {
    let outside = |pos: usize| {
        format!(
            "precompiled_charsmap's trie points at unit {pos}, outside its {} units",
            units.len()
        )
    };
    let root = offset(units[0]);
    let mut seen = HashSet::from([root]);
    let mut todo = vec![root];
    while let Some(base) = todo.pop() {
        for byte in 1..=255usize {
            let pos = base ^ byte;
            let unit = *units.get(pos).ok_or_else(|| outside(pos))?;
            if label(unit) != byte {
                continue;
            }
            let next = pos ^ offset(unit);
            if has_leaf(unit) {
                let leaf = *units.get(next).ok_or_else(|| outside(next))?;
                let at = value(leaf);
                if !strings.is_char_boundary(at) {
                    let place = if at > strings.len() {
                        "past the end"
                    } else {
                        "inside a character"
                    };
                    return Err(format!(
                        "precompiled_charsmap's trie points at byte {at} of its replacement \
                         strings, {place} (expected the start of a string within their {} \
                         bytes)",
                        strings.len()
                    ));
                }
            }
            if seen.insert(next) {
                todo.push(next);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-entry map "a" → "b": root at unit 0 with base 0 (offset 0); the child for byte
    /// b'a' at unit 0x61 with a leaf whose base is 0x61 ^ offset; the leaf's value is 0.
    fn tiny(leaf_value: u32, strings: &[u8]) -> Vec<u8> {
        let mut units = vec![0u32; 256];
        // child at 0x61: label 0x61, has_leaf, offset 0x61 ^ 0x80 = 0xE1 → next = 0x80.
        units[0x61] = 0x61 | (1 << 8) | (0xE1 << 10);
        units[0x80] = leaf_value;
        let mut blob = ((units.len() * 4) as u32).to_le_bytes().to_vec();
        for u in units {
            blob.extend(u.to_le_bytes());
        }
        blob.extend(strings);
        blob
    }

    #[test]
    fn a_well_formed_map_normalises() {
        use tokenizers::{NormalizedString, Normalizer};
        let p = precompiled(&tiny(0, b"b\0")).unwrap();
        let mut s = NormalizedString::from("cab");
        p.normalize(&mut s).unwrap();
        assert_eq!(s.get(), "cbb");
    }

    #[test]
    fn damaged_maps_are_refused_not_panicking() {
        let short = precompiled(&[1, 0]).unwrap_err();
        assert!(short.contains("fewer than its 4-byte header"), "{short}");
        let huge = precompiled(&[0xF0, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]).unwrap_err();
        assert!(huge.contains("4294967280 bytes"), "{huge}");
        let past = precompiled(&tiny(7, "é\0".as_bytes())).unwrap_err();
        assert!(past.contains("byte 7"), "{past}");
        assert!(past.contains("past the end"), "{past}");
        let mid = precompiled(&tiny(1, "é\0".as_bytes())).unwrap_err();
        assert!(mid.contains("inside a character"), "{mid}");
        let mut small = tiny(0, b"b\0");
        small[..4].copy_from_slice(&(0x70u32 * 4).to_le_bytes());
        small.truncate(4 + 0x70 * 4);
        let out = precompiled(&small).unwrap_err();
        assert!(out.contains("outside its 112 units"), "{out}");
        let bad_utf8 = precompiled(&tiny(0, &[0xFF, 0])).unwrap_err();
        assert!(bad_utf8.contains("not UTF-8"), "{bad_utf8}");
    }

    /// Random damage to the trie is either refused or harmless: whatever passes the check
    /// normalises every short input without panicking.
    #[test]
    fn damaged_tries_that_pass_never_panic() {
        use tokenizers::{NormalizedString, Normalizer};
        let inputs = ["a", "ab", "é", "aé", "\u{1}", "\u{ff}", "e\u{301}", "ä·"];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut refused, mut passed) = (0, 0);
        for _ in 0..3000 {
            let mut blob = tiny(0, "b\0é\0".as_bytes());
            for _ in 0..3 {
                let unit = 4 + 4 * (next() as usize % 256);
                let value = next() as u32 & 0x00FF_FFFF;
                blob[unit..unit + 4].copy_from_slice(&value.to_le_bytes());
            }
            match precompiled(&blob) {
                Err(_) => refused += 1,
                Ok(p) => {
                    passed += 1;
                    for text in inputs {
                        let mut s = NormalizedString::from(text);
                        p.normalize(&mut s).unwrap();
                    }
                }
            }
        }
        assert!(
            refused > 100 && passed > 100,
            "refused {refused}, passed {passed}"
        );
    }
}
