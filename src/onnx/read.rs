//! Reading a graph file back, the one way the crate does it: the file is memory-mapped and
//! decoded into "head" messages that declare only a graph's inputs, outputs and initializer
//! headers (name, type, dims, external-data entries). prost skips every field a message does not
//! declare without copying it, so the node lists and the bytes of inline initializers are never
//! read into memory: a reader finds a model's external initializers or its input and output names
//! at the cost of a scan, whatever the size of the graph. Field numbers are those of
//! [`super::proto`] (`onnx/onnx.proto`).

use super::proto::StringStringEntryProto;
use crate::error::{Error, Result};
use memmap2::Mmap;
use prost::Message;
use std::path::Path;

/// `ModelProto` with only its graph.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ModelHead {
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphHead>,
}

/// `GraphProto` with only its initializer headers, inputs and outputs (not its nodes).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct GraphHead {
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<InitializerHead>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueName>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueName>,
}

/// `ValueInfoProto` with only its name.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ValueName {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
}

/// `TensorProto` without its data: enough to find an external initializer's bytes.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct InitializerHead {
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, optional, tag = "2")]
    pub data_type: Option<i32>,
    #[prost(string, optional, tag = "8")]
    pub name: Option<String>,
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    #[prost(int32, optional, tag = "14")]
    pub data_location: Option<i32>,
}

/// The head of the graph file at `path` (see the module docs for what is and is not read).
pub(crate) fn read_head(path: &Path) -> Result<ModelHead> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    // SAFETY: read-only mapping of a graph file, only parsed, then unmapped before returning.
    // The exporter never rewrites a graph in place (exports are written to a temporary
    // directory and renamed).
    let bytes = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("map", path, e))?;
    ModelHead::decode(&bytes[..]).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("not an ONNX model: {e}"),
    })
}
