//! A small builder for tiny models in code: fixtures, tests and examples.
//!
//! ```
//! use onnx_slim::ir::builder::{attr_i, seeded_f32, ModelBuilder};
//! use onnx_slim::onnx::proto::tensor_proto::DataType;
//!
//! let mut b = ModelBuilder::new(17);
//! b.input_sym("x", DataType::Float, &["N".into(), 4.into()])
//!     .initializer_f32("w", seeded_f32(&[4, 2], 1))
//!     .node("MatMul", &["x", "w"], &["y"], vec![])
//!     .node("Softmax", &["y"], &["z"], vec![attr_i("axis", -1)])
//!     .output_sym("z", DataType::Float, &["N".into(), 2.into()]);
//! let model = b.build();
//! assert_eq!(model.graph.unwrap().node.len(), 2);
//! ```
//!
//! Everything is deterministic: the same calls always give the same `ModelProto`, hence the same
//! bytes once encoded.

use bytes::Bytes;
use ndarray::{ArrayD, IxDyn};

use crate::ir::tensor;
use crate::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    SparseTensorProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Known(i64),
    /// A named symbolic size (`dim_param`), e.g. `N`.
    Sym(String),
    /// Neither a value nor a name.
    Unknown,
}

impl From<i64> for Dim {
    fn from(v: i64) -> Dim {
        Dim::Known(v)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Dim {
        Dim::Sym(s.to_string())
    }
}

/// A tensor type: element type and, if `dims` is `Some`, a shape.
pub fn tensor_type(dtype: DataType, dims: Option<&[Dim]>) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(dtype as i32),
            shape: dims.map(shape_proto),
        })),
        ..Default::default()
    }
}

/// A `TensorShapeProto` from dims.
pub fn shape_proto(dims: &[Dim]) -> TensorShapeProto {
    use tensor_shape_proto::{dimension::Value, Dimension};
    TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: match d {
                    Dim::Known(v) => Some(Value::DimValue(*v)),
                    Dim::Sym(s) => Some(Value::DimParam(s.clone())),
                    Dim::Unknown => None,
                },
                ..Default::default()
            })
            .collect(),
    }
}

/// A declared tensor value `name` with element type `dtype` and shape `dims`.
pub fn value_info(name: &str, dtype: DataType, dims: &[Dim]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(tensor_type(dtype, Some(dims))),
        ..Default::default()
    }
}

fn fixed_dims(dims: &[i64]) -> Vec<Dim> {
    dims.iter()
        .map(|&d| if d < 0 { Dim::Unknown } else { Dim::Known(d) })
        .collect()
}

/// Deterministic pseudo-random `f32` values, uniform in `[-1, 1)`, from a xorshift64* generator.
/// The same `shape` and `seed` always give the same array, on every platform.
pub fn seeded_f32(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    // splitmix64 of the seed, so small seeds still start far apart; never zero.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let mut state = (z ^ (z >> 31)) | 1;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            // 24 random bits → exactly representable in f32, in [0, 1); then to [-1, 1).
            ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), data).expect("shape and data agree")
}

/// A float32 tensor named `name` (raw little-endian data).
pub fn tensor_f32(name: &str, a: &ArrayD<f32>) -> TensorProto {
    tensor::from_f32(name, a)
}

/// An int64 tensor named `name` (raw little-endian data).
pub fn tensor_i64(name: &str, a: &ArrayD<i64>) -> TensorProto {
    tensor::from_i64(name, a)
}

/// A 1-D int64 tensor named `name`.
pub fn tensor_i64_1d(name: &str, v: &[i64]) -> TensorProto {
    tensor::from_i64(
        name,
        &ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).expect("1-d"),
    )
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(ty as i32),
        ..Default::default()
    }
}

/// An `INT` attribute.
pub fn attr_i(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, AttributeType::Int)
    }
}

/// A `FLOAT` attribute.
pub fn attr_f(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: Some(v),
        ..attr(name, AttributeType::Float)
    }
}

/// A `STRING` attribute (any bytes; UTF-8 text with `s.as_bytes()`).
pub fn attr_s(name: &str, v: &[u8]) -> AttributeProto {
    AttributeProto {
        s: Some(Bytes::copy_from_slice(v)),
        ..attr(name, AttributeType::String)
    }
}

/// A `TENSOR` attribute.
pub fn attr_t(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(t),
        ..attr(name, AttributeType::Tensor)
    }
}

/// A `GRAPH` attribute.
pub fn attr_g(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        g: Some(g),
        ..attr(name, AttributeType::Graph)
    }
}

/// A `SPARSE_TENSOR` attribute.
pub fn attr_sparse(name: &str, s: SparseTensorProto) -> AttributeProto {
    AttributeProto {
        sparse_tensor: Some(s),
        ..attr(name, AttributeType::SparseTensor)
    }
}

/// A `TYPE_PROTO` attribute.
pub fn attr_tp(name: &str, tp: TypeProto) -> AttributeProto {
    AttributeProto {
        tp: Some(tp),
        ..attr(name, AttributeType::TypeProto)
    }
}

/// A `FLOATS` attribute.
pub fn attr_floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        floats: v.to_vec(),
        ..attr(name, AttributeType::Floats)
    }
}

/// An `INTS` attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}

/// A `STRINGS` attribute.
pub fn attr_strings(name: &str, v: &[&[u8]]) -> AttributeProto {
    AttributeProto {
        strings: v.iter().map(|s| Bytes::copy_from_slice(s)).collect(),
        ..attr(name, AttributeType::Strings)
    }
}

/// A `TENSORS` attribute.
pub fn attr_tensors(name: &str, v: Vec<TensorProto>) -> AttributeProto {
    AttributeProto {
        tensors: v,
        ..attr(name, AttributeType::Tensors)
    }
}

/// A `GRAPHS` attribute.
pub fn attr_graphs(name: &str, v: Vec<GraphProto>) -> AttributeProto {
    AttributeProto {
        graphs: v,
        ..attr(name, AttributeType::Graphs)
    }
}

/// A `SPARSE_TENSORS` attribute.
pub fn attr_sparse_tensors(name: &str, v: Vec<SparseTensorProto>) -> AttributeProto {
    AttributeProto {
        sparse_tensors: v,
        ..attr(name, AttributeType::SparseTensors)
    }
}

/// A `TYPE_PROTOS` attribute.
pub fn attr_type_protos(name: &str, v: Vec<TypeProto>) -> AttributeProto {
    AttributeProto {
        type_protos: v,
        ..attr(name, AttributeType::TypeProtos)
    }
}

/// An attribute of a function body that takes its value from the calling node's attribute
/// `ref_name` (`ref_attr_name`), with the declared type `ty`.
pub fn attr_ref(name: &str, ty: AttributeType, ref_name: &str) -> AttributeProto {
    AttributeProto {
        ref_attr_name: Some(ref_name.to_string()),
        ..attr(name, ty)
    }
}

/// Builds a model (or, with [`ModelBuilder::build_graph`], a subgraph) call by call.
///
/// Nodes get deterministic names `<OpType>_<index>` unless named with
/// [`ModelBuilder::node_named`].
#[derive(Debug, Clone)]
pub struct ModelBuilder {
    model: ModelProto,
    graph: GraphProto,
}

impl ModelBuilder {
    /// A model importing the default ONNX domain at `opset`, IR version 8, producer `onnx-slim`.
    pub fn new(opset: i64) -> ModelBuilder {
        ModelBuilder {
            model: ModelProto {
                ir_version: Some(8),
                producer_name: Some("onnx-slim".into()),
                producer_version: Some(env!("CARGO_PKG_VERSION").into()),
                opset_import: vec![OperatorSetIdProto {
                    domain: Some(String::new()),
                    version: Some(opset),
                }],
                ..Default::default()
            },
            graph: GraphProto {
                name: Some("main".into()),
                ..Default::default()
            },
        }
    }

    /// A builder for a subgraph named `name` (finish it with [`ModelBuilder::build_graph`]).
    pub fn subgraph(name: &str) -> ModelBuilder {
        let mut b = ModelBuilder::new(0);
        b.model.opset_import.clear();
        b.graph.name = Some(name.to_string());
        b
    }

    /// Sets the IR version.
    pub fn ir_version(&mut self, v: i64) -> &mut Self {
        self.model.ir_version = Some(v);
        self
    }

    /// Imports `domain` at `version` (replacing an earlier import of the same domain).
    pub fn opset(&mut self, domain: &str, version: i64) -> &mut Self {
        self.model
            .opset_import
            .retain(|o| o.domain.as_deref().unwrap_or("") != domain);
        self.model.opset_import.push(OperatorSetIdProto {
            domain: Some(domain.to_string()),
            version: Some(version),
        });
        self
    }

    /// Sets the producer name and version.
    pub fn producer(&mut self, name: &str, version: &str) -> &mut Self {
        self.model.producer_name = Some(name.to_string());
        self.model.producer_version = Some(version.to_string());
        self
    }

    /// Sets the model's doc string.
    pub fn doc(&mut self, s: &str) -> &mut Self {
        self.model.doc_string = Some(s.to_string());
        self
    }

    /// Sets the graph's name.
    pub fn graph_name(&mut self, s: &str) -> &mut Self {
        self.graph.name = Some(s.to_string());
        self
    }

    /// Sets the graph's doc string.
    pub fn graph_doc(&mut self, s: &str) -> &mut Self {
        self.graph.doc_string = Some(s.to_string());
        self
    }

    /// Adds a model metadata entry.
    pub fn metadata(&mut self, key: &str, value: &str) -> &mut Self {
        self.model.metadata_props.push(StringStringEntryProto {
            key: Some(key.to_string()),
            value: Some(value.to_string()),
        });
        self
    }

    /// Adds a model-local function.
    pub fn function(&mut self, f: FunctionProto) -> &mut Self {
        self.model.functions.push(f);
        self
    }

    /// Adds a graph input with fixed dims; a negative dim is unknown (`?`).
    pub fn input(&mut self, name: &str, dtype: DataType, dims: &[i64]) -> &mut Self {
        self.input_sym(name, dtype, &fixed_dims(dims))
    }

    /// Adds a graph input whose dims may be symbolic.
    pub fn input_sym(&mut self, name: &str, dtype: DataType, dims: &[Dim]) -> &mut Self {
        self.graph.input.push(value_info(name, dtype, dims));
        self
    }

    /// Adds a graph input declared by a full `ValueInfoProto`.
    pub fn input_info(&mut self, info: ValueInfoProto) -> &mut Self {
        self.graph.input.push(info);
        self
    }

    /// Adds a graph output with fixed dims; a negative dim is unknown (`?`).
    pub fn output(&mut self, name: &str, dtype: DataType, dims: &[i64]) -> &mut Self {
        self.output_sym(name, dtype, &fixed_dims(dims))
    }

    /// Adds a graph output whose dims may be symbolic.
    pub fn output_sym(&mut self, name: &str, dtype: DataType, dims: &[Dim]) -> &mut Self {
        self.graph.output.push(value_info(name, dtype, dims));
        self
    }

    /// Adds a graph output declared by a full `ValueInfoProto`.
    pub fn output_info(&mut self, info: ValueInfoProto) -> &mut Self {
        self.graph.output.push(info);
        self
    }

    /// Adds a `value_info` entry.
    pub fn value_info(&mut self, info: ValueInfoProto) -> &mut Self {
        self.graph.value_info.push(info);
        self
    }

    /// Adds a float32 initializer.
    pub fn initializer_f32(&mut self, name: &str, a: ArrayD<f32>) -> &mut Self {
        self.initializer(tensor_f32(name, &a))
    }

    /// Adds an int64 initializer.
    pub fn initializer_i64(&mut self, name: &str, a: ArrayD<i64>) -> &mut Self {
        self.initializer(tensor_i64(name, &a))
    }

    /// Adds any initializer.
    pub fn initializer(&mut self, t: TensorProto) -> &mut Self {
        self.graph.initializer.push(t);
        self
    }

    /// Adds a sparse initializer.
    pub fn sparse_initializer(&mut self, s: SparseTensorProto) -> &mut Self {
        self.graph.sparse_initializer.push(s);
        self
    }

    /// Adds a node of the default domain, named `<op_type>_<index>`. Use `""` for an omitted
    /// optional input.
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> &mut Self {
        let name = format!("{op_type}_{}", self.graph.node.len());
        self.node_in("", &name, op_type, inputs, outputs, attrs)
    }

    /// Adds a node of the default domain with an explicit name.
    pub fn node_named(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> &mut Self {
        self.node_in("", name, op_type, inputs, outputs, attrs)
    }

    /// Adds a node of `domain` (`""` for the default domain) with an explicit name.
    pub fn node_in(
        &mut self,
        domain: &str,
        name: &str,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> &mut Self {
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(name.to_string()),
            op_type: Some(op_type.to_string()),
            domain: (!domain.is_empty()).then(|| domain.to_string()),
            attribute: attrs,
            ..Default::default()
        });
        self
    }

    /// Adds a fully specified node.
    pub fn node_proto(&mut self, n: NodeProto) -> &mut Self {
        self.graph.node.push(n);
        self
    }

    /// The last node added, to set fields the helpers do not cover (doc string, metadata, ...).
    pub fn last_node(&mut self) -> Option<&mut NodeProto> {
        self.graph.node.last_mut()
    }

    /// The model, for fields the helpers do not cover.
    pub fn model_mut(&mut self) -> &mut ModelProto {
        &mut self.model
    }

    /// The graph, for fields the helpers do not cover.
    pub fn graph_mut(&mut self) -> &mut GraphProto {
        &mut self.graph
    }

    /// The finished model.
    pub fn build(&self) -> ModelProto {
        let mut m = self.model.clone();
        m.graph = Some(self.graph.clone());
        m
    }

    /// The finished graph alone (for `If`/`Loop`/`Scan` bodies and graph attributes).
    pub fn build_graph(&self) -> GraphProto {
        self.graph.clone()
    }
}
