//! Weights shared by the three ONNX Runtime sessions of an export, mapped once.
//!
//! Left to itself, ONNX Runtime loads every graph's external data on its own: each session maps
//! `model.onnx_data`, pre-packs the MatMul/Gemm weights into buffers of its own, and keeps the
//! mapped pages it has read (the tied embedding is read whole by the LM-head pre-pack and kept
//! for the Gather). The decoder weights end up in memory twice (decoder and decoder-with-past),
//! the embedding six times; on t5-small fp32 the three sessions took 530 MB.
//!
//! Here each data file is mapped once, and every external initializer of every graph is handed
//! to its session as a user-owned initializer (`AddInitializer`) over that mapping. ONNX Runtime
//! then neither copies nor maps the data itself, and it pre-packs shared initializers into the
//! [`PrepackedWeights`](ort::session::builder::PrepackedWeights) container, so the sessions use
//! one packed copy of each weight. Once the sessions are built, [`SharedWeights::release_pages`]
//! drops the mapping's pages from memory: a pre-packed weight is never read again, and what is
//! (the embedding rows a batch gathers, relative position biases, norms) faults back in from the
//! page cache as it is used. Used on the CPU only; GPU sessions load their weights as before.

use crate::error::{Error, Result};
use crate::onnx::external::{entry, LENGTH, LOCATION, OFFSET};
use crate::onnx::proto::{data_type as dt, DATA_LOCATION_EXTERNAL};
use crate::onnx::read::{read_head, InitializerHead};
use memmap2::Mmap;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::sys::ONNXTensorElementDataType as Elem;
use ort::value::DynValue;
use ort::AsPointer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

/// The name this backend's errors and reports carry.
pub(super) const ORT: &str = "onnxruntime";

/// An ONNX Runtime failure while doing `action`, keeping the `ort::Error` as the source (shared
/// with `ort.rs`, which depends on this module and not the other way round).
pub(super) fn fail<E: Into<ort::Error>>(action: impl Into<String>) -> impl FnOnce(E) -> Error {
    let action = action.into();
    move |e| Error::backend(ORT, action, e.into())
}

/// ONNX data type → (ONNX Runtime element type, bytes per element), for the types a T5 export
/// stores; other types are left to ONNX Runtime's own loading.
pub(super) fn element(data_type: i32) -> Option<(Elem, usize)> {
    Some(match data_type {
        dt::FLOAT => (Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4),
        dt::UINT8 => (Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1),
        dt::INT8 => (Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, 1),
        dt::INT32 => (Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, 4),
        dt::INT64 => (Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, 8),
        dt::BOOL => (Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, 1),
        dt::FLOAT16 => (Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, 2),
        dt::DOUBLE => (Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, 8),
        dt::BFLOAT16 => (Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, 2),
        _ => return None,
    })
}

/// A tensor value of shape `dims` over `bytes` bytes at `data`, in `memory`. ONNX Runtime does
/// not take ownership of the data; releasing the value leaves it alone.
///
/// # Safety
/// `data` must be valid for `bytes` bytes, aligned for `elem`, and outlive the value (and every
/// value ONNX Runtime makes of it, such as a run's bound outputs).
pub(super) unsafe fn value_over(
    memory: &MemoryInfo<'static>,
    data: *mut std::ffi::c_void,
    bytes: usize,
    dims: &[i64],
    elem: Elem,
) -> ort::Result<DynValue> {
    let mut ptr: *mut ort::sys::OrtValue = std::ptr::null_mut();
    // SAFETY: as the caller promises; the dims pointer is read during the call only.
    unsafe {
        let status = (ort::api().CreateTensorWithDataAsOrtValue)(
            memory.ptr(),
            data,
            bytes,
            dims.as_ptr(),
            dims.len(),
            elem,
            &mut ptr,
        );
        ort::Error::result_from_status(status)?;
        let ptr = NonNull::new(ptr).ok_or_else(|| ort::Error::new("null OrtValue"))?;
        // The allocator is only recorded with the value (the data is not its to free).
        Ok(DynValue::from_ptr(ptr, Some(&Allocator::default())))
    }
}

/// One external initializer: where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Slot {
    file: PathBuf,
    offset: u64,
    len: u64,
    dims: Vec<i64>,
    data_type: i32,
}

/// Data files mapped once, and the ONNX Runtime values over them, for all sessions of a model.
/// Must outlive every session given its values.
pub(crate) struct SharedWeights {
    maps: HashMap<PathBuf, Arc<Mmap>>,
    values: HashMap<Slot, Arc<DynValue>>,
    host: MemoryInfo<'static>,
}

fn bad(path: &Path, name: &str, msg: impl Into<String>) -> Error {
    Error::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        msg: msg.into(),
    }
}

/// Where the external initializer `init` (named `name`) of the graph file `graph` keeps its
/// bytes, and its element type; `None` for initializers ONNX Runtime loads itself (inline data,
/// element types a T5 export does not use, offsets not aligned for the element type).
fn slot_of(
    graph: &Path,
    dir: &Path,
    name: &str,
    init: &InitializerHead,
) -> Result<Option<(Slot, Elem)>> {
    if init.data_location != Some(DATA_LOCATION_EXTERNAL) {
        return Ok(None);
    }
    let Some((elem, size)) = element(init.data_type.unwrap_or(0)) else {
        return Ok(None);
    };
    let get = |key: &str| entry(&init.external_data, key);
    let location =
        get(LOCATION).ok_or_else(|| bad(graph, name, "external data without a location"))?;
    let num = |key: &str| -> Result<Option<u64>> {
        get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    bad(
                        graph,
                        name,
                        format!("external data {key} {v:?} is not a number"),
                    )
                })
            })
            .transpose()
    };
    let offset = num(OFFSET)?.unwrap_or(0);
    if init.dims.iter().any(|&d| d < 0) {
        return Err(bad(graph, name, format!("negative dims {:?}", init.dims)));
    }
    let want = init
        .dims
        .iter()
        .try_fold(size as u64, |n, &d| n.checked_mul(d as u64))
        .ok_or_else(|| bad(graph, name, format!("dims {:?} overflow", init.dims)))?;
    let len = num(LENGTH)?.unwrap_or(want);
    if len != want {
        return Err(bad(
            graph,
            name,
            format!(
                "external data length {len} bytes, but dims {:?} need {want}",
                init.dims
            ),
        ));
    }
    if offset % size as u64 != 0 {
        // Not addressable in place as this element type; ONNX Runtime copies it.
        return Ok(None);
    }
    let slot = Slot {
        file: dir.join(location),
        offset,
        len,
        dims: init.dims.clone(),
        data_type: init.data_type.unwrap_or(0),
    };
    Ok(Some((slot, elem)))
}

impl SharedWeights {
    /// Needs the ONNX Runtime library loaded (see [`crate::native::ort_environment`]).
    pub(crate) fn new() -> Result<Self> {
        let host = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(fail("describe host memory"))?;
        Ok(SharedWeights {
            maps: HashMap::new(),
            values: HashMap::new(),
            host,
        })
    }

    /// The external initializers of the graph file `graph`, as values over the mapped data
    /// files (each mapped once, whichever graph names it). Initializers stored inside the graph
    /// file, and element types a T5 export does not use, are not listed: ONNX Runtime loads
    /// those itself.
    pub(crate) fn for_graph(&mut self, graph: &Path) -> Result<Vec<(String, Arc<DynValue>)>> {
        // Only the initializer headers are read, not the graph's nodes or inline tensor data.
        let model = read_head(graph)?;
        let dir = graph.parent().unwrap_or(Path::new("."));
        let mut out = Vec::new();
        for init in model.graph.map(|g| g.initializer).unwrap_or_default() {
            let name = init.name.clone().unwrap_or_default();
            if let Some((slot, elem)) = slot_of(graph, dir, &name, &init)? {
                let value = self.value_for(graph, &name, slot, elem)?;
                out.push((name, value));
            }
        }
        Ok(out)
    }

    /// The value over `slot`, made once per slot.
    fn value_for(
        &mut self,
        graph: &Path,
        name: &str,
        slot: Slot,
        elem: Elem,
    ) -> Result<Arc<DynValue>> {
        if let Some(v) = self.values.get(&slot) {
            return Ok(v.clone());
        }
        let map = self.map(&slot.file)?;
        if slot.offset.saturating_add(slot.len) > map.len() as u64 {
            return Err(bad(
                graph,
                name,
                format!(
                    "external data {}..{} lies past the end of {} ({} bytes)",
                    slot.offset,
                    slot.offset + slot.len,
                    slot.file.display(),
                    map.len()
                ),
            ));
        }
        let value = Arc::new(self.value(&map, &slot, elem).map_err(fail(format!(
            "{}: make initializer {name} over the mapped data",
            graph.display()
        )))?);
        self.values.insert(slot, value.clone());
        Ok(value)
    }

    /// The data file `path`, mapped once.
    fn map(&mut self, path: &Path) -> Result<Arc<Mmap>> {
        if let Some(m) = self.maps.get(path) {
            return Ok(m.clone());
        }
        let f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        // SAFETY: read-only mapping, kept alive as long as any session uses it (the owner drops
        // its sessions first). ONNX Runtime never writes initializers.
        let m = Arc::new(unsafe { Mmap::map(&f) }.map_err(|e| Error::io("map", path, e))?);
        self.maps.insert(path.to_path_buf(), m.clone());
        Ok(m)
    }

    fn value(&self, map: &Mmap, slot: &Slot, elem: Elem) -> ort::Result<DynValue> {
        // An empty tensor still needs a non-null, aligned pointer.
        let data = if slot.len == 0 {
            NonNull::<u64>::dangling().as_ptr().cast()
        } else {
            // SAFETY: offset + len was checked against the mapping's length.
            unsafe { map.as_ptr().add(slot.offset as usize) }
                .cast_mut()
                .cast()
        };
        // SAFETY: the pointer is valid for `len` bytes, aligned for the element type (checked by
        // the caller; the mapping is page aligned), and outlives the value (see the type docs).
        unsafe { value_over(&self.host, data, slot.len as usize, &slot.dims, elem) }
    }

    /// Drop the mapped pages from this process's memory (they stay in the page cache). Pages
    /// read later fault back in; nothing is lost, as the mappings are read-only file mappings.
    pub(crate) fn release_pages(&self) {
        for map in self.maps.values() {
            // SAFETY: DONTNEED on a read-only shared file mapping only discards page-table
            // entries; the next access reads the same bytes from the file again.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// Run `f` (building a session over these weights) while a helper thread drops the mapped
    /// pages every few milliseconds, then drop them once more. ONNX Runtime reads each weight
    /// once to pre-pack it; without this, every page it read stays resident until the session
    /// is built, on top of the packed copies (t5-small fp32: peak 502 MB while loading the third
    /// session, 287 MB after). A page dropped while it is still being read faults back in from
    /// the page cache, so this costs minor faults, never correctness.
    pub(crate) fn trimming<T>(&self, f: impl FnOnce() -> T) -> T {
        use std::sync::atomic::{AtomicBool, Ordering};
        /// Stops the trimmer when dropped, also when `f` panics (the scope waits for it).
        struct Stop<'a>(&'a AtomicBool, std::thread::Thread);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
                self.1.unpark();
            }
        }
        let done = AtomicBool::new(false);
        let out = std::thread::scope(|scope| {
            let trimmer = scope.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    self.release_pages();
                    std::thread::park_timeout(std::time::Duration::from_millis(5));
                }
            });
            let _stop = Stop(&done, trimmer.thread().clone());
            f()
        });
        self.release_pages();
        out
    }

    /// Bytes mapped (the data files' sizes).
    pub(crate) fn mapped_bytes(&self) -> usize {
        self.maps.values().map(|m| m.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_returns_the_result_and_survives_a_panic() {
        crate::native::ort_environment().unwrap();
        let w = SharedWeights::new().unwrap();
        assert_eq!(w.trimming(|| 41 + 1), 42);
        // a panic while building a session stops the trimmer too (the scope would wait forever)
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.trimming(|| -> () { panic!("session build failed") })
        }));
        assert!(r.is_err());
        assert_eq!(w.mapped_bytes(), 0);
    }
}
