//! TensorFlow's immutable sorted table (`tensorflow/core/lib/io/table.cc`, `block.cc`,
//! `format.cc`; LevelDB's SSTable format), the file type of a bundle's `.index`.
//!
//! Layout: data blocks, a metaindex block, an index block, and a 48-byte footer (the metaindex
//! and index block handles as varint64 pairs, zero-padded to 40 bytes, then the magic number
//! `0xdb4775248b80fb57` little-endian). Each block is followed by a 5-byte trailer: the
//! compression type (0 none, 1 snappy) and the masked CRC-32C of the block and that byte. A block
//! is a run of prefix-compressed entries (varint32 shared key bytes, unshared key bytes, value
//! length; the key suffix; the value) followed by its restart offsets (fixed32 each) and their
//! count (fixed32). The index block maps a separator key to the handle of each data block.
//!
//! Every offset and length is checked against the bytes at hand before it is used; the result is
//! all entries in file order. Errors are plain messages; the caller adds the file name.

use super::crc32c;

/// `kTableMagicNumber`.
const MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// `Footer::kEncodedLength`: two handles of at most 10 + 10 bytes, and the magic number.
const FOOTER_LEN: usize = 48;
/// `kBlockTrailerSize`: compression type byte and masked CRC.
const TRAILER_LEN: usize = 5;
const NO_COMPRESSION: u8 = 0;
const SNAPPY: u8 = 1;

/// Reads a varint of at most `max_bytes` bytes at `*pos`, advancing it.
fn varint(data: &[u8], pos: &mut usize, max_bytes: usize) -> Result<u64, String> {
    let mut v = 0u64;
    for i in 0..max_bytes {
        let Some(&b) = data.get(*pos) else {
            return Err("varint runs past the end of its block".into());
        };
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(format!("varint longer than {max_bytes} bytes"))
}

fn varint32(data: &[u8], pos: &mut usize) -> Result<usize, String> {
    let v = varint(data, pos, 5)?;
    u32::try_from(v)
        .map(|v| v as usize)
        .map_err(|_| format!("varint32 value {v} exceeds 32 bits"))
}

fn fixed32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// One table entry: the key and a view of its value.
pub(crate) type KeyValue<'a> = (Vec<u8>, &'a [u8]);

/// A block's place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlockHandle {
    offset: u64,
    size: u64,
}

impl BlockHandle {
    fn decode(data: &[u8], pos: &mut usize) -> Result<Self, String> {
        let offset = varint(data, pos, 10)?;
        let size = varint(data, pos, 10)?;
        Ok(BlockHandle { offset, size })
    }
}

/// The metaindex and index block handles, from the footer of `file`.
fn footer(file: &[u8]) -> Result<(BlockHandle, BlockHandle), String> {
    if file.len() < FOOTER_LEN {
        return Err(format!(
            "{} bytes, shorter than a table footer ({FOOTER_LEN} bytes); is it truncated?",
            file.len()
        ));
    }
    let footer = &file[file.len() - FOOTER_LEN..];
    let magic = u64::from(fixed32(footer, 40)) | (u64::from(fixed32(footer, 44)) << 32);
    if magic != MAGIC {
        return Err(format!(
            "bad table magic number {magic:#018x} (expected {MAGIC:#018x}); not a TensorFlow \
             checkpoint index, or truncated"
        ));
    }
    let mut pos = 0;
    let metaindex = BlockHandle::decode(&footer[..40], &mut pos)?;
    let index = BlockHandle::decode(&footer[..40], &mut pos)?;
    Ok((metaindex, index))
}

/// The contents of the block at `handle`, its trailer checked (`what` names it in errors).
fn read_block<'a>(file: &'a [u8], handle: BlockHandle, what: &str) -> Result<&'a [u8], String> {
    let body_end = file.len() - FOOTER_LEN;
    let end = handle
        .offset
        .checked_add(handle.size)
        .and_then(|e| e.checked_add(TRAILER_LEN as u64))
        .filter(|&e| e <= body_end as u64)
        .ok_or_else(|| {
            format!(
                "{what} at offset {} with size {} runs past the table's data ({body_end} bytes); \
                 is the file truncated?",
                handle.offset, handle.size
            )
        })? as usize;
    let start = handle.offset as usize;
    let n = handle.size as usize;
    let block = &file[start..end];
    let stored = crc32c::unmask(fixed32(block, n + 1));
    let actual = crc32c::value(&block[..n + 1]);
    if stored != actual {
        return Err(format!(
            "{what} at offset {start}: block checksum mismatch (stored crc32c {stored:#010x}, \
             computed {actual:#010x}); the file is corrupt"
        ));
    }
    match block[n] {
        NO_COMPRESSION => Ok(&block[..n]),
        SNAPPY => Err(format!(
            "{what} at offset {start} is snappy-compressed; TensorFlow writes bundle indexes \
             uncompressed (tensor_bundle.cc sets kNoCompression), so this is not a tensor bundle \
             index cbqa can read"
        )),
        t => Err(format!(
            "{what} at offset {start}: unknown compression type {t}"
        )),
    }
}

/// All (key, value) entries of one block, in order.
fn block_entries<'a>(block: &'a [u8], what: &str) -> Result<Vec<KeyValue<'a>>, String> {
    let bad = |msg: String| format!("{what}: {msg}");
    if block.len() < 4 {
        return Err(bad("shorter than its restart count".into()));
    }
    let restarts = fixed32(block, block.len() - 4) as usize;
    let limit = restarts
        .checked_mul(4)
        .and_then(|r| (block.len() - 4).checked_sub(r))
        .ok_or_else(|| bad(format!("{restarts} restart points do not fit in the block")))?;
    let mut entries = Vec::new();
    let mut key: Vec<u8> = Vec::new();
    let mut pos = 0;
    while pos < limit {
        let shared = varint32(block, &mut pos).map_err(&bad)?;
        let unshared = varint32(block, &mut pos).map_err(&bad)?;
        let value_len = varint32(block, &mut pos).map_err(&bad)?;
        if shared > key.len() {
            return Err(bad(format!(
                "entry at {pos} shares {shared} key bytes with a {}-byte key",
                key.len()
            )));
        }
        let value_start = pos
            .checked_add(unshared)
            .filter(|&v| v <= limit)
            .ok_or_else(|| bad(format!("key of entry at {pos} runs past the entries")))?;
        let value_end = value_start
            .checked_add(value_len)
            .filter(|&v| v <= limit)
            .ok_or_else(|| bad(format!("value of entry at {pos} runs past the entries")))?;
        key.truncate(shared);
        key.extend_from_slice(&block[pos..value_start]);
        entries.push((key.clone(), &block[value_start..value_end]));
        pos = value_end;
    }
    Ok(entries)
}

/// Every (key, value) of the table `file`, in key order, each block's checksum verified.
pub(crate) fn entries(file: &[u8]) -> Result<Vec<KeyValue<'_>>, String> {
    let (metaindex, index_handle) = footer(file)?;
    // Bundles have no filter or stats blocks; the metaindex is only checked, like every block.
    read_block(file, metaindex, "metaindex block")?;
    let index = read_block(file, index_handle, "index block")?;
    let mut out = Vec::new();
    for (i, (_, handle_bytes)) in block_entries(index, "index block")?.into_iter().enumerate() {
        let mut pos = 0;
        let handle = BlockHandle::decode(handle_bytes, &mut pos)
            .map_err(|e| format!("index block entry {i}: bad block handle: {e}"))?;
        let what = format!("data block {i}");
        let block = read_block(file, handle, &what)?;
        out.extend(block_entries(block, &what)?);
    }
    if let Some(w) = out.windows(2).find(|w| w[0].0 >= w[1].0) {
        return Err(format!(
            "keys out of order ({:?} before {:?}); the file is corrupt",
            String::from_utf8_lossy(&w[0].0),
            String::from_utf8_lossy(&w[1].0)
        ));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A block of `entries` with a restart point every `interval` entries (as block_builder.cc).
    fn block(entries: &[(&[u8], &[u8])], interval: usize) -> Vec<u8> {
        let (mut out, mut restarts, mut last): (Vec<u8>, Vec<u32>, &[u8]) = (vec![], vec![], b"");
        for (i, (k, v)) in entries.iter().enumerate() {
            let shared = if i % interval == 0 {
                restarts.push(out.len() as u32);
                0
            } else {
                k.iter().zip(last).take_while(|(a, b)| a == b).count()
            };
            put_varint(&mut out, shared as u64);
            put_varint(&mut out, (k.len() - shared) as u64);
            put_varint(&mut out, v.len() as u64);
            out.extend_from_slice(&k[shared..]);
            out.extend_from_slice(v);
            last = k;
        }
        if restarts.is_empty() {
            restarts.push(0);
        }
        for r in &restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(restarts.len() as u32).to_le_bytes());
        out
    }

    /// Appends `contents` with its trailer to `file`; returns its handle bytes.
    fn append_block(file: &mut Vec<u8>, contents: &[u8], kind: u8) -> Vec<u8> {
        let mut handle = vec![];
        put_varint(&mut handle, file.len() as u64);
        put_varint(&mut handle, contents.len() as u64);
        file.extend_from_slice(contents);
        file.push(kind);
        let crc = crc32c::value(&file[file.len() - contents.len() - 1..]);
        file.extend_from_slice(&crc.rotate_right(15).wrapping_add(0xa282_ead8).to_le_bytes());
        handle
    }

    /// A table of `entries` split into data blocks of `per_block` entries.
    pub(crate) fn table(entries: &[(&[u8], &[u8])], per_block: usize) -> Vec<u8> {
        let mut file = vec![];
        let mut index = vec![];
        let mut handles = vec![];
        for chunk in entries.chunks(per_block) {
            handles.push((
                chunk[chunk.len() - 1].0.to_vec(),
                append_block(&mut file, &block(chunk, 2), 0),
            ));
        }
        for (k, h) in &handles {
            index.push((k.as_slice(), h.as_slice()));
        }
        let meta = append_block(&mut file, &block(&[], 1), 0);
        let idx = append_block(&mut file, &block(&index, 1), 0);
        let mut footer = [meta, idx].concat();
        footer.resize(40, 0);
        footer.extend_from_slice(&MAGIC.to_le_bytes());
        file.extend_from_slice(&footer);
        file
    }

    #[test]
    fn reads_prefix_compressed_entries_over_several_blocks() {
        let keys: Vec<String> = (0..23).map(|i| format!("encoder/block_{i:03}/x")).collect();
        let values: Vec<Vec<u8>> = (0..23).map(|i| vec![i as u8; i]).collect();
        let pairs: Vec<(&[u8], &[u8])> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| (k.as_bytes(), v.as_slice()))
            .collect();
        let file = table(&pairs, 5);
        let got = entries(&file).unwrap();
        assert_eq!(got.len(), 23);
        for ((k, v), (ek, ev)) in got.iter().zip(&pairs) {
            assert_eq!(k.as_slice(), *ek);
            assert_eq!(v, ev);
        }
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_an_error_not_a_panic() {
        let pairs: Vec<(&[u8], &[u8])> =
            vec![(b"", b"h"), (b"a", b"xyz"), (b"ab", b""), (b"b", b"1")];
        let file = table(&pairs, 2);
        for n in 0..file.len() {
            assert!(entries(&file[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x40;
            // The footer's zero padding after the two handles is read by nothing (as in TF).
            let padding = (file.len() - FOOTER_LEN..file.len() - 8).contains(&i)
                && entries(&bad).is_ok_and(|e| e == entries(&file).unwrap());
            assert!(padding || entries(&bad).is_err(), "byte {i} flipped");
        }
    }

    #[test]
    fn snappy_blocks_are_refused_by_name() {
        let mut file = vec![];
        let data = append_block(&mut file, &block(&[(b"k", b"v")], 1), SNAPPY);
        let meta = append_block(&mut file, &block(&[], 1), 0);
        let idx = append_block(&mut file, &block(&[(b"k", &data)], 1), 0);
        let mut footer = [meta, idx].concat();
        footer.resize(40, 0);
        footer.extend_from_slice(&MAGIC.to_le_bytes());
        file.extend_from_slice(&footer);
        let err = entries(&file).unwrap_err();
        assert!(err.contains("snappy-compressed"), "{err}");
    }

    #[test]
    fn varints_are_bounded() {
        let mut pos = 0;
        assert_eq!(varint(&[0xac, 0x02], &mut pos, 5).unwrap(), 300);
        assert_eq!(pos, 2);
        let mut pos = 0;
        assert!(varint(&[0x80; 11], &mut pos, 10).is_err());
        let mut pos = 0;
        assert!(varint32(&[0xff, 0xff, 0xff, 0xff, 0x7f], &mut pos).is_err());
    }
}
