//! How an initializer points into an external-data file: the `location`, `offset` and `length`
//! entries of `TensorProto.external_data`
//! (<https://github.com/onnx/onnx/blob/main/docs/ExternalData.md>). The exporter writes them from
//! a [`StoredTensor`] (through the graph builder) and ONNX Runtime's shared weights read them back
//! with [`entry`], so both sides spell the keys the same way.

use super::proto::StringStringEntryProto;

/// The external-data key of the file name, relative to the graph file's directory.
pub(crate) const LOCATION: &str = "location";
/// The external-data key of the byte offset in the file (absent means 0).
pub(crate) const OFFSET: &str = "offset";
/// The external-data key of the byte length (absent means the length the dims imply).
pub(crate) const LENGTH: &str = "length";

/// A tensor written to the data file: what an initializer needs to point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTensor {
    pub name: String,
    /// ONNX element type ([`super::proto::data_type`]).
    pub elem: i32,
    pub dims: Vec<i64>,
    /// The data file, relative to the graph file's directory.
    pub location: String,
    pub offset: u64,
    pub length: u64,
}

impl StoredTensor {
    /// The `external_data` entries of the initializer, in the order
    /// the exported files have always had them.
    pub fn external_data(&self) -> Vec<StringStringEntryProto> {
        vec![
            StringStringEntryProto::new(LOCATION, self.location.clone()),
            StringStringEntryProto::new(OFFSET, self.offset.to_string()),
            StringStringEntryProto::new(LENGTH, self.length.to_string()),
        ]
    }
}

/// The value of `key` among an initializer's `external_data` entries.
#[cfg_attr(not(feature = "ort"), allow(dead_code))]
pub(crate) fn entry<'a>(entries: &'a [StringStringEntryProto], key: &str) -> Option<&'a str> {
    entries
        .iter()
        .find(|e| e.key.as_deref() == Some(key))
        .and_then(|e| e.value.as_deref())
}
