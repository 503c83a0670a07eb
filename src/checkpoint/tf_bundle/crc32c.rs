//! CRC-32C (Castagnoli), the checksum of TensorFlow's tables and tensor bundles, and TF's "masked"
//! form of it (`tensorflow/core/lib/hash/crc32c.h`: rotate right by 15 bits, add a constant, so a
//! CRC stored inside checksummed data does not checksum to a fixed value).
//!
//! Our own slicing-by-8 table implementation (~40 lines, a few GB/s) rather than a crate: the
//! reader checksums every tensor once at load time, which this speed makes a small part of the
//! load, and the code is short enough to check against the standard's test vectors below.

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82f6_3b78;
/// TF's `kMaskDelta`.
const MASK_DELTA: u32 = 0xa282_ead8;

/// `TABLES[k][b]`: the CRC of byte `b` followed by `k` zero bytes (slicing-by-8).
static TABLES: [[u32; 256]; 8] = build_tables();

const fn build_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut b = 0;
    while b < 256 {
        let mut crc = b as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        t[0][b] = crc;
        b += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut b = 0;
        while b < 256 {
            let prev = t[k - 1][b];
            t[k][b] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            b += 1;
        }
        k += 1;
    }
    t
}

/// The CRC-32C of `data`.
pub(crate) fn value(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        crc = TABLES[7][(lo & 0xff) as usize]
            ^ TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][c[4] as usize]
            ^ TABLES[2][c[5] as usize]
            ^ TABLES[1][c[6] as usize]
            ^ TABLES[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ b as u32) & 0xff) as usize];
    }
    !crc
}

/// TF's `crc32c::Unmask`: the CRC a stored (masked) checksum stands for.
pub(crate) fn unmask(masked: u32) -> u32 {
    let rot = masked.wrapping_sub(MASK_DELTA);
    rot.rotate_left(15)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TF's `crc32c::Mask`, the inverse of `unmask`.
    fn mask(crc: u32) -> u32 {
        crc.rotate_right(15).wrapping_add(MASK_DELTA)
    }

    #[test]
    fn standard_vectors() {
        // RFC 3720 (iSCSI) B.4 and the "123456789" check value of CRC-32C.
        assert_eq!(value(b"123456789"), 0xe306_9283);
        assert_eq!(value(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(value(&[0xffu8; 32]), 0x62a8_ab43);
        let ascending: Vec<u8> = (0u8..32).collect();
        assert_eq!(value(&ascending), 0x46dd_794e);
        let descending: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(value(&descending), 0x113f_db5c);
        assert_eq!(value(b""), 0);
    }

    #[test]
    fn every_length_agrees_with_bitwise() {
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
        for n in 0..data.len() {
            let mut crc = !0u32;
            for &b in &data[..n] {
                crc ^= b as u32;
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ POLY
                    } else {
                        crc >> 1
                    };
                }
            }
            assert_eq!(value(&data[..n]), !crc, "length {n}");
        }
    }

    #[test]
    fn mask_round_trips_and_changes_the_value() {
        for crc in [0u32, 1, 0xe306_9283, u32::MAX] {
            assert_eq!(unmask(mask(crc)), crc);
            assert_ne!(mask(crc), crc);
        }
        // TF's crc32c_test: Mask(crc) != crc, Mask(Mask(crc)) != crc, Unmask(Mask(crc)) == crc.
        let crc = value(b"foo");
        assert_ne!(mask(mask(crc)), crc);
    }
}
