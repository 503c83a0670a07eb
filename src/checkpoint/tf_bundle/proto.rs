//! The protobuf messages of a tensor bundle's index, as hand-written `prost` messages.
//!
//! Field numbers and types from `tensorflow/core/protobuf/tensor_bundle.proto`,
//! `framework/tensor_shape.proto`, `framework/tensor_slice.proto`, `framework/versions.proto`
//! and the `DataType` enum of `framework/types.proto` (proto3). Only the fields cbqa reads are
//! declared; the decoder skips the rest.

/// `DataType` values of the tensors cbqa reads.
pub mod data_type {
    pub const DT_FLOAT: i32 = 1;
    pub const DT_BFLOAT16: i32 = 14;
    pub const DT_HALF: i32 = 19;

    /// TF's name of a `DataType` value, for error messages.
    pub fn name(dtype: i32) -> String {
        let known = match dtype {
            0 => "DT_INVALID",
            1 => "DT_FLOAT",
            2 => "DT_DOUBLE",
            3 => "DT_INT32",
            4 => "DT_UINT8",
            5 => "DT_INT16",
            6 => "DT_INT8",
            7 => "DT_STRING",
            9 => "DT_INT64",
            10 => "DT_BOOL",
            14 => "DT_BFLOAT16",
            19 => "DT_HALF",
            20 => "DT_RESOURCE",
            21 => "DT_VARIANT",
            _ => return format!("DataType {dtype}"),
        };
        known.to_string()
    }
}

/// `BundleHeaderProto.Endianness.BIG`.
pub const BIG_ENDIAN: i32 = 1;

/// `VersionDef`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct VersionDef {
    #[prost(int32, tag = "1")]
    pub producer: i32,
    #[prost(int32, tag = "2")]
    pub min_consumer: i32,
    #[prost(int32, repeated, tag = "3")]
    pub bad_consumers: Vec<i32>,
}

/// `BundleHeaderProto`: the value of the index's first key, "".
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct BundleHeaderProto {
    #[prost(int32, tag = "1")]
    pub num_shards: i32,
    #[prost(int32, tag = "2")]
    pub endianness: i32,
    #[prost(message, optional, tag = "3")]
    pub version: Option<VersionDef>,
}

/// `TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Dim {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<Dim>,
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

/// `TensorSliceProto` (its extents are not read: sliced entries are refused).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TensorSliceProto {}

/// `BundleEntryProto`: where one tensor's bytes are and how to check them.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct BundleEntryProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
    #[prost(int32, tag = "3")]
    pub shard_id: i32,
    #[prost(int64, tag = "4")]
    pub offset: i64,
    #[prost(int64, tag = "5")]
    pub size: i64,
    /// The masked CRC-32C of the tensor's bytes.
    #[prost(fixed32, tag = "6")]
    pub crc32c: u32,
    #[prost(message, repeated, tag = "7")]
    pub slices: Vec<TensorSliceProto>,
}
