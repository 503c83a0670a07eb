//! A small ONNX graph builder: values are typed handles ([`Value`]) that only the graph makes,
//! every op gets a fresh, readable output name under the current scope, constants are inline
//! initializers and weights are initializers that point into the shared external-data file.

use super::external::StoredTensor;
use super::proto::{
    attribute_type, data_type, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, DATA_LOCATION_EXTERNAL,
};
use std::collections::{HashMap, HashSet};

/// A value of a graph under construction: a graph input, a node output or an initializer. Only
/// [`Graph`] makes them, so an op can only be given values the graph defines (never a graph
/// output's or a weight's name spelled by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Value(String);

/// One dimension of a graph input or output: fixed, or a named dynamic axis (optimum's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Sym(&'static str),
}

/// A node attribute.
pub(crate) enum Attr {
    Int(&'static str, i64),
    Ints(&'static str, Vec<i64>),
    Graph(&'static str, Box<GraphProto>),
}

impl Attr {
    fn into_proto(self) -> AttributeProto {
        let mut a = AttributeProto::default();
        match self {
            Attr::Int(n, v) => {
                a.name = Some(n.into());
                a.r#type = Some(attribute_type::INT);
                a.i = Some(v);
            }
            Attr::Ints(n, v) => {
                a.name = Some(n.into());
                a.r#type = Some(attribute_type::INTS);
                a.ints = v;
            }
            Attr::Graph(n, g) => {
                a.name = Some(n.into());
                a.r#type = Some(attribute_type::GRAPH);
                a.g = Some(*g);
            }
        }
        a
    }
}

/// A graph under construction.
pub(crate) struct Graph {
    name: String,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    initializer_names: HashSet<String>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    scope: String,
    /// Prefix of every created name, so two `If` branches never define the same name.
    prefix: String,
    counter: usize,
    /// Names already used for values, so scopes can never collide.
    used: HashSet<String>,
    /// Node outputs renamed to the graph output they became (see [`Graph::output`]), so a
    /// `Value` made before the rename still refers to them.
    renamed: HashMap<String, String>,
}

pub(crate) fn value_info(name: &str, elem: i32, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                Dim::Sym(s) => tensor_shape_proto::dimension::Value::DimParam((*s).into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        doc_string: None,
    }
}

/// A tensor value of element type `elem` and unknown rank.
pub(crate) fn value_info_unranked(name: &str, elem: i32) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape: None,
            })),
        }),
        doc_string: None,
    }
}

impl Graph {
    pub fn new(name: &str) -> Self {
        Graph {
            name: name.into(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            initializer_names: HashSet::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            scope: String::new(),
            prefix: String::new(),
            counter: 0,
            used: HashSet::new(),
            renamed: HashMap::new(),
        }
    }

    /// A graph whose created names all start with `prefix` (for an `If` branch).
    pub fn with_prefix(name: &str, prefix: &str) -> Self {
        Graph {
            prefix: prefix.into(),
            ..Graph::new(name)
        }
    }

    /// Prefix of the names of the values created from now on (e.g. `/decoder/block.2/ff`).
    pub fn set_scope(&mut self, scope: impl Into<String>) {
        self.scope = scope.into();
    }

    /// A new value named after `hint` under the current scope (for a node's outputs).
    pub fn fresh(&mut self, hint: &str) -> Value {
        loop {
            self.counter += 1;
            let name = format!("{}{}/{hint}_{}", self.prefix, self.scope, self.counter);
            if self.used.insert(name.clone()) {
                return Value(name);
            }
        }
    }

    /// The value called `name` (a graph output a node writes directly, as the merged decoder's
    /// `If` does).
    pub fn named(&mut self, name: &str) -> Value {
        self.used.insert(name.into());
        Value(name.into())
    }

    /// Declare a graph input.
    pub fn input(&mut self, name: &str, elem: i32, dims: &[Dim]) -> Value {
        self.used.insert(name.into());
        self.inputs.push(value_info(name, elem, dims));
        Value(name.into())
    }

    /// Declare a graph input of any rank.
    pub fn input_unranked(&mut self, name: &str, elem: i32) -> Value {
        self.used.insert(name.into());
        self.inputs.push(value_info_unranked(name, elem));
        Value(name.into())
    }

    /// Expose `value` as graph output `name`, of any rank.
    pub fn output_unranked(&mut self, value: &Value, name: &str, elem: i32) {
        self.output(value, name, elem, &[]);
        if let Some(last) = self.outputs.last_mut() {
            *last = value_info_unranked(name, elem);
        }
    }

    /// Expose `value` as graph output `name`. A value a node of this graph writes is renamed
    /// `name` in that node and its readers; anything else (a graph input, an initializer, an outer
    /// scope's value, a value already exposed under another name) goes through an Identity node,
    /// which copies it.
    pub fn output(&mut self, value: &Value, name: &str, elem: i32, dims: &[Dim]) {
        let source = self.resolve(&value.0).to_string();
        if source != name && !self.rename_node_output(&source, name) {
            self.used.insert(name.into());
            self.nodes.push(NodeProto {
                input: vec![source],
                output: vec![name.into()],
                name: Some(format!("{name}/Identity")),
                op_type: Some("Identity".into()),
                ..Default::default()
            });
        }
        self.outputs.push(value_info(name, elem, dims));
    }

    /// The current name of a value (a node output renamed to a graph output since).
    fn resolve<'a>(&'a self, name: &'a str) -> &'a str {
        self.renamed.get(name).map_or(name, String::as_str)
    }

    /// Rename the value `old`, written by a node of this graph and not yet a graph output, to
    /// `new` wherever it appears; false (nothing changed) otherwise, and also in a graph with
    /// subgraphs (an `If`), whose bodies may read `old` by name.
    fn rename_node_output(&mut self, old: &str, new: &str) -> bool {
        let is_output = self.outputs.iter().any(|o| o.name.as_deref() == Some(old));
        let written_here = self.nodes.iter().any(|n| n.output.iter().any(|o| o == old));
        let has_subgraphs = self
            .nodes
            .iter()
            .any(|n| n.attribute.iter().any(|a| a.g.is_some()));
        if is_output || !written_here || has_subgraphs {
            return false;
        }
        for n in &mut self.nodes {
            for v in n.input.iter_mut().chain(n.output.iter_mut()) {
                if v == old {
                    *v = new.to_string();
                }
            }
        }
        self.used.insert(new.into());
        self.renamed.insert(old.into(), new.into());
        true
    }

    /// Add a node with one output and return the output.
    pub fn op(&mut self, op_type: &str, inputs: &[&Value], attrs: Vec<Attr>) -> Value {
        let out = self.fresh(op_type);
        self.node(op_type, inputs, &[&out], attrs);
        out
    }

    /// Add a node with several outputs (made with [`Graph::fresh`] or [`Graph::named`]).
    pub fn node(&mut self, op_type: &str, inputs: &[&Value], outputs: &[&Value], attrs: Vec<Attr>) {
        let name = format!(
            "{}{}/{op_type}_node_{}",
            self.prefix,
            self.scope,
            self.nodes.len()
        );
        self.nodes.push(NodeProto {
            input: inputs
                .iter()
                .map(|v| self.resolve(&v.0).to_string())
                .collect(),
            output: outputs.iter().map(|v| v.0.clone()).collect(),
            name: Some(name),
            op_type: Some(op_type.into()),
            attribute: attrs.into_iter().map(Attr::into_proto).collect(),
            ..Default::default()
        });
    }

    /// A constant initializer of element type `elem` held inline (little-endian `raw` bytes).
    pub fn constant(&mut self, hint: &str, elem: i32, dims: &[usize], raw: Vec<u8>) -> Value {
        self.inline(hint, elem, dims, raw)
    }

    fn inline(&mut self, hint: &str, elem: i32, dims: &[usize], raw: Vec<u8>) -> Value {
        let value = self.fresh(hint);
        self.initializer_names.insert(value.0.clone());
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(elem),
            name: Some(value.0.clone()),
            raw_data: Some(raw),
            ..Default::default()
        });
        value
    }

    /// An int64 constant of the given shape (`&[]` for a scalar).
    pub fn const_i64(&mut self, values: &[i64], dims: &[usize]) -> Value {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.inline("const_i64", data_type::INT64, dims, raw)
    }

    /// A 1-D int64 constant.
    pub fn ints(&mut self, values: &[i64]) -> Value {
        self.const_i64(values, &[values.len()])
    }

    /// A scalar int64 constant.
    pub fn scalar_i64(&mut self, v: i64) -> Value {
        self.const_i64(&[v], &[])
    }

    /// A scalar float constant of element type `elem` (FLOAT or FLOAT16).
    pub fn scalar_f(&mut self, v: f32, elem: i32) -> Value {
        let raw = if elem == data_type::FLOAT16 {
            half::f16::from_f32(v).to_le_bytes().to_vec()
        } else {
            v.to_le_bytes().to_vec()
        };
        self.inline("const_f", elem, &[], raw)
    }

    /// An initializer stored in the external-data file (added once per graph).
    pub fn weight(&mut self, t: &StoredTensor) -> Value {
        if self.initializer_names.insert(t.name.clone()) {
            self.used.insert(t.name.clone());
            self.initializers.push(TensorProto {
                dims: t.dims.clone(),
                data_type: Some(t.elem),
                name: Some(t.name.clone()),
                external_data: t.external_data(),
                data_location: Some(DATA_LOCATION_EXTERNAL),
                ..Default::default()
            });
        }
        Value(t.name.clone())
    }

    /// The graph as a protobuf message (for the top level or an `If` branch).
    pub fn into_proto(self) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: Some(self.name),
            initializer: self.initializers,
            doc_string: None,
            input: self.inputs,
            output: self.outputs,
            value_info: Vec::new(),
        }
    }

    /// Split off the initializers (to hoist a branch's weights into the parent graph).
    pub fn take_initializers(&mut self) -> Vec<TensorProto> {
        self.initializer_names.clear();
        std::mem::take(&mut self.initializers)
    }

    /// Add initializers taken from another graph, skipping names already present.
    pub fn add_initializers(&mut self, list: Vec<TensorProto>) {
        for t in list {
            let name = t.name.clone().unwrap_or_default();
            if self.initializer_names.insert(name) {
                self.initializers.push(t);
            }
        }
    }
}

/// The ONNX versions we write: opset 17 and IR version 8 (the pair torch.onnx uses for opset 17);
/// ONNX Runtime 1.31 refuses the IR version 14 that onnx 1.23 writes by default.
pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;

/// Wrap a finished graph into a model.
pub(crate) fn model(graph: GraphProto, doc: &str, metadata: &[(&str, String)]) -> ModelProto {
    ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("cbqa".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        domain: None,
        model_version: None,
        doc_string: Some(doc.into()),
        graph: Some(graph),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto::new(k, v.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    fn ops(g: &GraphProto) -> Vec<(&str, Vec<&str>, Vec<&str>)> {
        g.node
            .iter()
            .map(|n| {
                let op = n.op_type.as_deref().unwrap_or("");
                (op, names(&n.input), names(&n.output))
            })
            .collect()
    }

    const N: &[Dim] = &[Dim::Sym("n")];

    /// A graph with input `x` and `y = Relu(x)`.
    fn relu_graph() -> (Graph, Value, Value) {
        let mut g = Graph::new("g");
        let x = g.input("x", data_type::FLOAT, N);
        let y = g.op("Relu", &[&x], vec![]);
        (g, x, y)
    }

    #[test]
    fn a_node_output_becomes_the_graph_output_without_a_copy() {
        let (mut g, _, y) = relu_graph();
        let z = g.op("Neg", &[&y], vec![]);
        g.output(&y, "y", data_type::FLOAT, N);
        // a handle made before the rename still reaches the value
        let w = g.op("Abs", &[&y], vec![]);
        g.output(&z, "z", data_type::FLOAT, N);
        g.output(&w, "w", data_type::FLOAT, N);
        let p = g.into_proto();
        assert_eq!(
            ops(&p),
            vec![
                ("Relu", vec!["x"], vec!["y"]),
                ("Neg", vec!["y"], vec!["z"]),
                ("Abs", vec!["y"], vec!["w"]),
            ]
        );
    }

    #[test]
    fn inputs_and_values_exposed_twice_go_through_identity() {
        let (mut g, x, y) = relu_graph();
        g.output(&x, "x_out", data_type::FLOAT, N);
        g.output(&y, "y", data_type::FLOAT, N);
        g.output(&y, "y_again", data_type::FLOAT, N);
        let p = g.into_proto();
        assert_eq!(
            ops(&p),
            vec![
                ("Relu", vec!["x"], vec!["y"]),
                ("Identity", vec!["x"], vec!["x_out"]),
                ("Identity", vec!["y"], vec!["y_again"]),
            ]
        );
        let outputs: Vec<_> = p.output.iter().filter_map(|o| o.name.as_deref()).collect();
        assert_eq!(outputs, ["x_out", "y", "y_again"]);
    }

    #[test]
    fn a_graph_with_subgraphs_keeps_its_value_names() {
        // an `If` body may read `y` by name, so `y` is copied out, not renamed
        let (mut g, _, y) = relu_graph();
        let body = Graph::new("body").into_proto();
        let c = g.op(
            "Cast",
            &[&y],
            vec![Attr::Graph("then_branch", Box::new(body))],
        );
        g.output(&y, "y_out", data_type::FLOAT, N);
        g.output(&c, "c", data_type::FLOAT, N);
        let p = g.into_proto();
        let names = ops(&p);
        assert_eq!(names[2], ("Identity", vec![y.0.as_str()], vec!["y_out"]));
        assert_eq!(names[3].0, "Identity");
    }
}
