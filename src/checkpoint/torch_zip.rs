//! The zip archive `torch.save` writes (torch ≥ 1.6): `<prefix>/data.pkl` (the state dict,
//! read by [`super::pickle`]) and one entry `<prefix>/data/<key>` per storage; and the legacy
//! format (`_use_new_zipfile_serialization=False`, [`locate_legacy`]): five pickles (magic,
//! version, sys_info, the state dict, the storage keys) followed by each storage as an 8-byte
//! element count and its bytes.
//!
//! Our own small reader of the zip central directory (with zip64), not the `zip` crate: we need
//! only the byte range of each stored entry so tensors can be views into the memory map of the
//! file, and every offset is checked against the file here. Torch stores every entry uncompressed;
//! a compressed one is refused.

use super::pickle::{
    legacy_header, legacy_keys, legacy_state_dict, load_state_dict, StorageRef, TensorRef,
};
use super::{LocateError, Located};
use safetensors::Dtype;
use std::collections::HashMap;

/// A stored (uncompressed) entry: byte range within the file.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
}

fn le16(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("truncated zip structure at offset {at}"))
}
fn le32(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("truncated zip structure at offset {at}"))
}
fn le64(b: &[u8], at: usize) -> Result<u64, String> {
    let s = b
        .get(at..at + 8)
        .ok_or_else(|| format!("truncated zip structure at offset {at}"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}
fn to_usize(v: u64, what: &str, file_len: usize) -> Result<usize, String> {
    usize::try_from(v)
        .ok()
        .filter(|&x| x <= file_len)
        .ok_or_else(|| format!("{what} {v} lies beyond the end of the file ({file_len} bytes)"))
}

/// Whether `bytes` begin like a zip archive (a local file header).
pub(crate) fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// The entries of the archive by name.
fn entries(b: &[u8]) -> Result<HashMap<String, Span>, String> {
    let n = b.len();
    // End of central directory: 22 bytes plus a comment of at most 65535.
    let lo = n.saturating_sub(22 + 65535);
    let eocd = (lo..n.saturating_sub(21))
        .rev()
        .find(|&i| b[i..].starts_with(b"PK\x05\x06"))
        .ok_or("no zip end-of-central-directory record (truncated archive?)")?;
    let mut count = le16(b, eocd + 10)? as u64;
    let mut cd_size = le32(b, eocd + 12)? as u64;
    let mut cd_off = le32(b, eocd + 16)? as u64;
    if count == 0xffff || cd_size == 0xffff_ffff || cd_off == 0xffff_ffff {
        let loc = eocd
            .checked_sub(20)
            .filter(|&l| b[l..].starts_with(b"PK\x06\x07"))
            .ok_or("zip64 archive without a zip64 locator")?;
        let rec = to_usize(le64(b, loc + 8)?, "zip64 record offset", n)?;
        if !b[rec..].starts_with(b"PK\x06\x06") {
            return Err("bad zip64 end-of-central-directory record".into());
        }
        count = le64(b, rec + 32)?;
        cd_size = le64(b, rec + 40)?;
        cd_off = le64(b, rec + 48)?;
    }
    let cd_off = to_usize(cd_off, "central directory offset", n)?;
    let cd_size = to_usize(cd_size, "central directory size", n - cd_off)?;
    if count > (cd_size / 46) as u64 {
        return Err(format!(
            "{count} entries declared in a central directory of {cd_size} bytes"
        ));
    }
    let mut out = HashMap::with_capacity(count as usize);
    let mut p = cd_off;
    for _ in 0..count {
        if le32(b, p)? != 0x0201_4b50 {
            return Err(format!("bad central directory entry at offset {p}"));
        }
        let method = le16(b, p + 10)?;
        let mut csize = le32(b, p + 20)? as u64;
        let mut usize_ = le32(b, p + 24)? as u64;
        let name_len = le16(b, p + 28)? as usize;
        let extra_len = le16(b, p + 30)? as usize;
        let comment_len = le16(b, p + 32)? as usize;
        let mut local = le32(b, p + 42)? as u64;
        let name = b
            .get(p + 46..p + 46 + name_len)
            .ok_or("truncated central directory")?;
        let name = String::from_utf8_lossy(name).into_owned();
        let extra = b
            .get(p + 46 + name_len..p + 46 + name_len + extra_len)
            .ok_or("truncated central directory")?;
        // zip64 extended information: the fields that are 0xffffffff, in this order.
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = le16(extra, e)?;
            let sz = le16(extra, e + 2)? as usize;
            if id == 1 {
                let mut q = e + 4;
                for field in [&mut usize_, &mut csize, &mut local] {
                    if *field == 0xffff_ffff {
                        *field = le64(extra, q)?;
                        q += 8;
                    }
                }
            }
            e += 4 + sz;
        }
        if csize != usize_ || method != 0 {
            return Err(format!(
                "entry `{name}` is compressed (method {method}); torch stores entries uncompressed"
            ));
        }
        let local = to_usize(local, "local header offset", n)?;
        if le32(b, local)? != 0x0403_4b50 {
            return Err(format!(
                "entry `{name}`: bad local header at offset {local}"
            ));
        }
        let start = local + 30 + le16(b, local + 26)? as usize + le16(b, local + 28)? as usize;
        let len = to_usize(csize, &format!("entry `{name}` size"), n)?;
        if start > n || len > n - start {
            return Err(format!(
                "entry `{name}` ({len} bytes at offset {start}) runs past the end of the file \
                 ({n} bytes): truncated archive?"
            ));
        }
        out.insert(name, Span { start, len });
        p += 46 + name_len + extra_len + comment_len;
    }
    Ok(out)
}

/// Read the state dict of a torch zip archive and locate every tensor in `bytes`.
pub(crate) fn locate(bytes: &[u8]) -> Result<Vec<Located>, LocateError> {
    let entries = entries(bytes).map_err(|m| (None, m))?;
    let pkl: Vec<&String> = entries
        .keys()
        .filter(|k| k.ends_with("/data.pkl") && k.matches('/').count() == 1)
        .collect();
    let [pkl] = pkl.as_slice() else {
        return Err((
            None,
            format!(
                "{} `<prefix>/data.pkl` entries, expected one (is this a torch.save archive?)",
                pkl.len()
            ),
        ));
    };
    let prefix = &pkl[..pkl.len() - "data.pkl".len()];
    let span = entries[*pkl];
    let sd = load_state_dict(&bytes[span.start..span.start + span.len])
        .map_err(|m| (None, format!("{pkl}: {m}")))?;
    locate_tensors(sd, |storage| {
        let key = format!("{prefix}data/{}", storage.key);
        entries
            .get(&key)
            .copied()
            .ok_or_else(|| format!("its storage entry `{key}` is not in the archive"))
    })
}

/// Every tensor of a state dict as a byte range of the file, its storage found by `span_of`.
fn locate_tensors(
    sd: Vec<(String, TensorRef)>,
    span_of: impl Fn(&StorageRef) -> Result<Span, String>,
) -> Result<Vec<Located>, LocateError> {
    sd.into_iter()
        .map(|(name, t)| {
            let located =
                span_of(&t.storage)
                    .and_then(|span| view(&t, span))
                    .map(|(start, end)| Located {
                        dtype: t.storage.dtype,
                        shape: t.shape.clone(),
                        start,
                        end,
                        name: name.clone(),
                    });
            located.map_err(|m| (Some(name), m))
        })
        .collect()
}

/// Read a legacy (pre-1.6) torch.save file and locate every tensor in `bytes`.
pub(crate) fn locate_legacy(bytes: &[u8]) -> Result<Vec<Located>, LocateError> {
    let whole = |m: String| (None, m);
    let pos = legacy_header(bytes).map_err(whole)?;
    let (sd, pos) = legacy_state_dict(bytes, pos).map_err(whole)?;
    let (keys, mut pos) = legacy_keys(bytes, pos).map_err(whole)?;
    let mut spans: HashMap<&str, Span> = HashMap::with_capacity(keys.len().min(sd.len()));
    let storages: HashMap<&str, &StorageRef> = sd
        .iter()
        .map(|(_, t)| (t.storage.key.as_str(), &t.storage))
        .collect();
    for key in &keys {
        let storage = storages
            .get(key.as_str())
            .ok_or_else(|| whole(format!("storage key {key} is used by no tensor")))?;
        if spans.contains_key(key.as_str()) {
            return Err(whole(format!("storage key {key} is listed twice")));
        }
        let n = le64(bytes, pos).map_err(|_| {
            whole(format!(
                "storage {key}: truncated at offset {pos} (its element count is missing)"
            ))
        })?;
        pos += 8;
        if n != storage.numel {
            return Err(whole(format!(
                "storage {key}: {n} elements in the file, {} declared in the pickle",
                storage.numel
            )));
        }
        let len = (n as u128) * elem_size(storage.dtype) as u128;
        let left = (bytes.len() - pos) as u128;
        if len > left {
            return Err(whole(format!(
                "storage {key}: {len} bytes declared at offset {pos}, {left} left (truncated file?)"
            )));
        }
        spans.insert(
            key,
            Span {
                start: pos,
                len: len as usize,
            },
        );
        pos += len as usize;
    }
    locate_tensors(sd, |storage| {
        spans
            .get(storage.key.as_str())
            .copied()
            .ok_or_else(|| format!("its storage {} is not among the stored keys", storage.key))
    })
}

/// Bytes per element (safetensors' own table; every storage class the unpickler knows is at
/// least a byte wide).
fn elem_size(d: Dtype) -> usize {
    d.bitsize() / 8
}

/// The byte range of contiguous tensor `t` within its storage entry `span`.
fn view(t: &TensorRef, span: Span) -> Result<(usize, usize), String> {
    let es = elem_size(t.storage.dtype) as u128;
    let storage_bytes = t.storage.numel as u128 * es;
    if storage_bytes > span.len as u128 {
        return Err(format!(
            "storage `{}` declares {} elements ({storage_bytes} bytes) but its entry holds {} bytes",
            t.storage.key, t.storage.numel, span.len
        ));
    }
    // Contiguous (row-major); a dimension of size 1 may carry any stride.
    let mut expect: u128 = 1;
    for (d, (&n, &s)) in t.shape.iter().zip(&t.stride).enumerate().rev() {
        if n != 1 && s as u128 != expect {
            return Err(format!(
                "size {:?} with stride {:?} is not contiguous: dimension {d} has stride {s}, \
                 expected {expect} (row-major); only contiguous tensors are read \
                 (save_pretrained writes parameters so; call .contiguous() on a view before \
                 saving it)",
                t.shape, t.stride
            ));
        }
        // Saturates: a product beyond u128 is far beyond any storage and refused below.
        expect = expect.saturating_mul(n as u128);
    }
    let numel = expect;
    let end = (t.offset as u128).saturating_add(numel);
    if end > t.storage.numel as u128 {
        return Err(format!(
            "elements {}..{end} lie beyond its storage `{}`: the view of size {:?} at offset {} \
             needs at least {end} elements, the storage holds {}",
            t.offset, t.storage.key, t.shape, t.offset, t.storage.numel
        ));
    }
    let start = span.start + (t.offset as u128 * es) as usize;
    Ok((start, start + (numel * es) as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_sizes_are_refused_without_overflow() {
        let t = TensorRef {
            storage: StorageRef {
                dtype: Dtype::F32,
                key: "0".into(),
                numel: 4,
            },
            offset: 1,
            shape: vec![usize::MAX, usize::MAX, usize::MAX],
            stride: vec![0, 0, 1],
        };
        // Not contiguous (stride 0 on a dimension > 1).
        assert!(view(&t, Span { start: 0, len: 16 }).is_err());
        let t = TensorRef {
            shape: vec![1 << 40, 1 << 40, 1],
            stride: vec![1 << 40, 1, 1],
            ..t
        };
        let e = view(&t, Span { start: 0, len: 16 }).unwrap_err();
        assert!(e.contains("beyond its storage"), "{e}");
        let t = TensorRef {
            shape: vec![3],
            stride: vec![1],
            ..t
        };
        assert_eq!(
            view(
                &t,
                Span {
                    start: 100,
                    len: 16
                }
            )
            .unwrap(),
            (104, 116)
        );
    }

    fn tensor(
        dtype: Dtype,
        numel: u64,
        offset: u64,
        shape: &[usize],
        stride: &[usize],
    ) -> TensorRef {
        TensorRef {
            storage: StorageRef {
                dtype,
                key: "3".into(),
                numel,
            },
            offset,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
        }
    }

    #[test]
    fn a_strided_view_names_the_dimension_and_the_expected_stride() {
        // A transposed [2, 3]: strides (1, 2) instead of (3, 1).
        let t = tensor(Dtype::F32, 6, 0, &[2, 3], &[1, 2]);
        let e = view(&t, Span { start: 0, len: 24 }).unwrap_err();
        assert!(
            e.contains("dimension 1 has stride 2, expected 1") && e.contains("[2, 3]"),
            "{e}"
        );
        let t = tensor(Dtype::F32, 6, 0, &[2, 3], &[4, 1]);
        let e = view(&t, Span { start: 0, len: 24 }).unwrap_err();
        assert!(e.contains("dimension 0 has stride 4, expected 3"), "{e}");
        // A dimension of size 1 may carry any stride.
        let t = tensor(Dtype::F32, 6, 0, &[1, 6], &[99, 1]);
        assert_eq!(view(&t, Span { start: 8, len: 24 }).unwrap(), (8, 32));
    }

    #[test]
    fn a_view_longer_than_its_storage_says_needed_and_held() {
        let t = tensor(Dtype::F16, 6, 2, &[2, 3], &[3, 1]);
        let e = view(&t, Span { start: 0, len: 12 }).unwrap_err();
        assert!(
            e.contains("storage `3`")
                && e.contains("needs at least 8 elements, the storage holds 6"),
            "{e}"
        );
        // The storage's own bytes shorter than it declares.
        let t = tensor(Dtype::F16, 6, 0, &[6], &[1]);
        let e = view(&t, Span { start: 0, len: 11 }).unwrap_err();
        assert!(
            e.contains("declares 6 elements (12 bytes) but its entry holds 11 bytes"),
            "{e}"
        );
    }

    #[test]
    fn integer_storages_have_their_own_element_size() {
        let t = tensor(Dtype::I64, 4, 1, &[3], &[1]);
        assert_eq!(view(&t, Span { start: 0, len: 32 }).unwrap(), (8, 32));
        let t = tensor(Dtype::BOOL, 4, 1, &[3], &[1]);
        assert_eq!(view(&t, Span { start: 0, len: 4 }).unwrap(), (1, 4));
    }

    #[test]
    fn neither_zip_nor_legacy_is_named_as_such() {
        let (name, msg) =
            locate_legacy(b"version https://git-lfs.github.com/spec/v1\n").unwrap_err();
        assert!(name.is_none());
        assert!(msg.contains("neither a zip archive nor a legacy"), "{msg}");
        assert!(!is_zip(b"PK\x05\x06"));
    }

    #[test]
    fn an_archive_without_data_pkl_is_refused() {
        // An empty zip: only the end-of-central-directory record.
        let mut z = b"PK\x05\x06".to_vec();
        z.extend([0u8; 18]);
        let (_, msg) = locate(&z).unwrap_err();
        assert!(msg.contains("0 `<prefix>/data.pkl` entries"), "{msg}");
        // Every cut of it is an error too, not a panic.
        for n in 0..z.len() {
            assert!(locate(&z[..n]).is_err());
        }
    }
}
