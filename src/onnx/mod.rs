//! The ONNX contract between the exporter ([`crate::export`]) and the runtimes
//! ([`crate::runtime`]), spelled once: the protobuf messages ([`proto`]), the directory layout and
//! every input, output and cache name ([`layout`]), how an initializer points into the shared
//! data file, one way to read a graph file back, and the graph builder. The exporter and the
//! runtimes both depend on this module and never on each other, so a name or a file changes here
//! or nowhere.

pub(crate) mod builder;
pub(crate) mod external;
pub mod layout;
pub mod proto;
pub(crate) mod read;

pub use builder::{IR_VERSION, OPSET};
