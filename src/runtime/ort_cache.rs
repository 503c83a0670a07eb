//! Decoding outputs written in place, in host memory: self-attention caches and logits.
//!
//! Every decoder step returns a state's self-attention cache one position longer (t5-small: 12
//! tensors `[rows, 8, len + 1, 64]`), and a beam step gathers it once more into its new row
//! order. Left to ONNX Runtime, each of those outputs is a fresh heap block a little larger than
//! the one freed the step before; under glibc's malloc the growing blocks of several decode
//! loops fragment the heap, and peak RSS grows well past the live memory.
//!
//! Here a state owns two [`CacheBlock`]s of anonymous mapped memory, each holding every
//! self-attention tensor of the state at a fixed stride. A step reads the cache from one block
//! and ONNX Runtime writes the next cache into the other (the outputs are bound to views of it);
//! a row selection gathers from one into the other alike; then the two swap. A block is made
//! with room for 64 more positions than asked for, so it is made about once per 64 steps; pages
//! of the room not yet written cost no memory, and a dropped block goes back to the system at
//! once (a mapping, not a heap block). Blocks live in host memory only: on a GPU, ONNX Runtime
//! allocates the caches on the device as before.
//!
//! Safety rests on one invariant: a state's tensor values that view a block are dropped before
//! the block. [`SelfCacheBlocks`] is declared after the cache in the state (fields drop in
//! order), the values a run replaces are dropped while their block is still held, and a block
//! is only written again, as the spare, after the values viewing it were replaced.
//!
//! Alike, a step's logits are written into the vector the step returns ([`LogitsTarget`]), and
//! [`trim_heap`] gives the C heap's free pages back (`OrtSeq2Seq::release_unused_memory`).

use super::ort_weights::{element, value_over};
use super::Logits;
use crate::error::{Error, Result};
use memmap2::{MmapMut, MmapOptions};
use ort::memory::MemoryInfo;
use ort::value::DynValue;

/// Positions of room a new block gets beyond the cache length asked for.
const ROOM: usize = 64;
/// Tensors start at page boundaries.
const PAGE: usize = 4096;

/// Anonymous memory holding `tensors` tensors of at most `stride` bytes each.
pub(super) struct CacheBlock {
    map: MmapMut,
    tensors: usize,
    stride: usize,
}

impl CacheBlock {
    /// A block for `tensors` tensors of shape `dims` (`[rows, heads, len, d]`) and element
    /// size `elem_size`, with [`ROOM`] more positions on the length axis.
    fn new(tensors: usize, dims: [usize; 4], elem_size: usize) -> Result<Self> {
        let [rows, heads, len, d] = dims;
        let stride = (rows * heads * (len + ROOM) * d * elem_size).div_ceil(PAGE) * PAGE;
        let map = MmapOptions::new()
            .len((stride * tensors).max(PAGE))
            .map_anon()
            .map_err(|e| {
                Error::input(
                    "decoding state",
                    format!(
                        "map {} MB for the self-attention caches: {e}",
                        (stride * tensors) >> 20
                    ),
                )
            })?;
        Ok(CacheBlock {
            map,
            tensors,
            stride,
        })
    }

    /// Whether `tensors` tensors of `bytes` bytes each fit.
    fn fits(&self, tensors: usize, bytes: usize) -> bool {
        tensors <= self.tensors && bytes <= self.stride
    }
}

/// The two blocks of a state: the one its self-attention values view (none before the second
/// step, or after a join, when ONNX Runtime allocated them) and the spare, written next.
#[derive(Default)]
pub(super) struct SelfCacheBlocks {
    current: Option<CacheBlock>,
    spare: Option<CacheBlock>,
}

/// Where the next self-attention cache of a state goes: views of a block, one per tensor, to
/// bind as the outputs of a run. [`SelfCacheBlocks::advance`] takes it back after the run.
pub(super) struct CacheTarget {
    block: CacheBlock,
    pub(super) views: Vec<DynValue>,
}

impl SelfCacheBlocks {
    /// Views for `tensors` tensors of shape `dims` and ONNX element type `data_type`, in host
    /// memory `host`: in the spare block if it is large enough (no value views it: the values
    /// that did were replaced when it became the spare),
    /// else in a new block. None for element types without a fixed size (ONNX Runtime then
    /// allocates the outputs itself).
    pub(super) fn target(
        &mut self,
        host: &MemoryInfo<'static>,
        tensors: usize,
        dims: [usize; 4],
        data_type: i32,
    ) -> Result<Option<CacheTarget>> {
        let Some((elem, elem_size)) = element(data_type) else {
            return Ok(None);
        };
        let bytes = dims.iter().product::<usize>() * elem_size;
        let block = match self.spare.take() {
            Some(spare) if spare.fits(tensors, bytes) => spare,
            _ => CacheBlock::new(tensors, dims, elem_size)?,
        };
        let shape: Vec<i64> = dims.iter().map(|&n| n as i64).collect();
        let base = block.map.as_ptr().cast_mut();
        let views = (0..tensors)
            .map(|i| {
                // SAFETY: tensor i's `bytes` lie inside the mapping (`fits`, or made to fit),
                // page aligned; the views are dropped before the block (see the module docs),
                // and nothing else refers to the block while they are written.
                unsafe { value_over(host, base.add(i * block.stride).cast(), bytes, &shape, elem) }
                    .map_err(|e| {
                        Error::backend(super::ort_weights::ORT, "view the self-attention cache", e)
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(CacheTarget { block, views }))
    }

    /// After a run wrote into `target` and the state's values were replaced by its outputs:
    /// the target is the current block, the one before it the spare.
    pub(super) fn advance(&mut self, target: CacheTarget) {
        let CacheTarget { block, views } = target;
        drop(views);
        self.spare = self.current.replace(block);
    }
}

/// Return the free memory inside the C heap to the system (glibc's `malloc_trim`: the free top
/// of each arena, and the whole free pages within). ONNX Runtime allocates every output and
/// intermediate tensor with `malloc`; the blocks of different sizes that steps free leave free
/// pages between live blocks that otherwise stay resident. No-op on other C libraries.
pub(super) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it locks each arena.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A step's logits (`[rows, 1, vocab]` fp32), written by ONNX Runtime straight into the vector
/// the step hands on as its [`Logits`]: no output of ONNX Runtime's own, no copy (4 MB each
/// step and decode loop at 32 rows of t5's 32128-token vocabulary).
pub(super) struct LogitsTarget {
    /// Capacity `rows × vocab`, length 0 until the run wrote it (see [`LogitsTarget::finish`]).
    data: Vec<f32>,
    rows: usize,
    vocab: usize,
    /// The tensor over `data` to bind as the `logits` output; taken by the run.
    pub(super) view: Option<DynValue>,
}

impl LogitsTarget {
    pub(super) fn new(host: &MemoryInfo<'static>, rows: usize, vocab: usize) -> Result<Self> {
        let n = rows * vocab;
        let mut data: Vec<f32> = Vec::with_capacity(n.max(1));
        let shape = [rows as i64, 1, vocab as i64];
        // SAFETY: the buffer holds `n` f32 (aligned, allocated above) and does not move or free
        // while the view or any value ONNX Runtime makes of it lives: `finish` drops those
        // before it gives the vector away, and a dropped target drops the view first (field
        // order does not matter: the view never frees the data).
        let view = unsafe {
            value_over(
                host,
                data.as_mut_ptr().cast(),
                n * 4,
                &shape,
                ort::sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
            )
        }
        .map_err(|e| Error::backend(super::ort_weights::ORT, "view the logits buffer", e))?;
        Ok(LogitsTarget {
            data,
            rows,
            vocab,
            view: Some(view),
        })
    }

    /// The logits, given the value the run returned for them: the buffer itself when ONNX
    /// Runtime wrote into it with the expected shape, otherwise (it placed the output elsewhere)
    /// read out of what it returned, `read(value)`.
    pub(super) fn finish(
        mut self,
        returned: DynValue,
        read: impl FnOnce(&DynValue) -> Result<Logits>,
    ) -> Result<Logits> {
        let written = match returned.try_extract_tensor::<f32>() {
            Ok((shape, data)) => {
                data.as_ptr() == self.data.as_ptr()
                    && shape[..] == [self.rows as i64, 1, self.vocab as i64]
            }
            Err(_) => false,
        };
        if !written {
            return read(&returned);
        }
        drop(returned);
        drop(self.view.take());
        // SAFETY: ONNX Runtime wrote the whole `[rows, 1, vocab]` output into the buffer (its
        // returned value is a tensor of that shape over this buffer), and no value views it now.
        unsafe { self.data.set_len(self.rows * self.vocab) };
        Ok(Logits {
            data: std::mem::take(&mut self.data),
            rows: self.rows,
            vocab: self.vocab,
        })
    }
}
