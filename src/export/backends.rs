//! The runtimes an export is validated in, behind one small trait: ONNX Runtime (through `ort`,
//! the library loaded at run time) and tract (pure Rust).

// Without either runtime feature only the shared types remain (validation then refuses to run).
#![cfg_attr(
    not(any(feature = "ort", feature = "tract")),
    allow(dead_code, unused_imports)
)]

use crate::error::{Error, Result};
use crate::onnx::read::io_names;
use ndarray::ArrayD;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A named graph input.
pub(crate) enum Feed {
    I64(ArrayD<i64>),
    F32(ArrayD<f32>),
    Bool(ArrayD<bool>),
}

pub(crate) type Feeds = Vec<(String, Feed)>;

/// A runtime that runs one graph file on named inputs and returns its float outputs by name.
pub(crate) trait Backend {
    fn name(&self) -> &'static str;
    fn run(&mut self, path: &Path, feeds: &Feeds) -> Result<HashMap<String, ArrayD<f32>>>;
}

fn runtime_err(runtime: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Export {
        path: path.to_path_buf(),
        msg: format!("{runtime} cannot run the graph: {e}"),
    }
}

#[cfg(feature = "ort")]
pub(crate) struct OrtBackend {
    pub env: ort::environment::Environment,
    pub sessions: HashMap<PathBuf, ort::session::Session>,
}

#[cfg(feature = "ort")]
impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        "onnxruntime"
    }

    fn run(&mut self, path: &Path, feeds: &Feeds) -> Result<HashMap<String, ArrayD<f32>>> {
        use ort::session::{Session, SessionInputValue};
        use ort::value::Tensor;
        let err = |e: ort::Error| runtime_err("ONNX Runtime", path, e);
        if !self.sessions.contains_key(path) {
            let session = Session::builder(&self.env)
                .map_err(err)?
                .commit_from_file(path)
                .map_err(err)?;
            self.sessions.insert(path.to_path_buf(), session);
        }
        let (_, outputs) = io_names(path)?;
        let session = self
            .sessions
            .get_mut(path)
            .ok_or_else(|| runtime_err("ONNX Runtime", path, "no session"))?;
        let mut inputs: Vec<(String, SessionInputValue)> = Vec::new();
        for (name, feed) in feeds {
            let v: SessionInputValue = match feed {
                Feed::I64(a) => Tensor::from_array(a.clone()).map_err(err)?.into(),
                Feed::F32(a) => Tensor::from_array(a.clone()).map_err(err)?.into(),
                Feed::Bool(a) => Tensor::from_array(a.clone()).map_err(err)?.into(),
            };
            inputs.push((name.clone(), v));
        }
        let out = session.run(inputs).map_err(err)?;
        let mut map = HashMap::new();
        for name in outputs {
            let v = out
                .get(&name)
                .ok_or_else(|| runtime_err("ONNX Runtime", path, format!("no output {name}")))?;
            let a = v.try_extract_array::<f32>().map_err(err)?.to_owned();
            map.insert(name, a);
        }
        Ok(map)
    }
}

#[cfg(feature = "tract")]
pub(crate) struct TractBackend;

#[cfg(feature = "tract")]
impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    /// Loads the graph with the concrete input shapes of this run and optimizes it.
    fn run(&mut self, path: &Path, feeds: &Feeds) -> Result<HashMap<String, ArrayD<f32>>> {
        use tract_onnx::prelude::*;
        let err = |e: TractError| runtime_err("tract", path, format!("{e:?}"));
        let (inputs, outputs) = io_names(path)?;
        let mut model = tract_onnx::onnx().model_for_path(path).map_err(err)?;
        let mut values: TVec<TValue> = TVec::new();
        for (i, name) in inputs.iter().enumerate() {
            let feed = feeds
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, f)| f)
                .ok_or_else(|| runtime_err("tract", path, format!("no value for input {name}")))?;
            let t: Tensor = match feed {
                Feed::I64(a) => a.clone().into(),
                Feed::F32(a) => a.clone().into(),
                Feed::Bool(a) => a.clone().into(),
            };
            model
                .set_input_fact(i, InferenceFact::dt_shape(t.datum_type(), t.shape()))
                .map_err(err)?;
            values.push(t.into_tvalue());
        }
        let plan = model
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        let out = plan.run(values).map_err(err)?;
        let mut map = HashMap::new();
        for (name, v) in outputs.into_iter().zip(out) {
            let a = v.to_plain_array_view::<f32>().map_err(err)?.to_owned();
            map.insert(name, a);
        }
        Ok(map)
    }
}
