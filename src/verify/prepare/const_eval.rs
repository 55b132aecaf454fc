//! The small constant evaluator that computes `If` conditions from constants and input shapes.

use std::collections::HashMap;

use tract_onnx::prelude::{DatumType, Tensor};

use super::SMALL_INPUT;
use crate::onnx::proto::{AttributeProto, GraphProto, NodeProto, TensorProto};
use crate::verify::inputs::{datum_type_of, tensor_from_proto, InputSet};

/// Constants (initializers, `Constant` nodes, results) with at most this many elements are
/// tracked by the constant evaluator.
const SMALL_CONST: usize = 64;

/// A small constant known to the evaluator.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Val {
    shape: Vec<usize>,
    data: Data,
}

#[derive(Debug, Clone, PartialEq)]
enum Data {
    F(Vec<f64>),
    I(Vec<i64>),
    B(Vec<bool>),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
            Data::B(v) => v.len(),
        }
    }
    fn f(&self, i: usize) -> f64 {
        match self {
            Data::F(v) => v[i],
            Data::I(v) => v[i] as f64,
            Data::B(v) => v[i] as u8 as f64,
        }
    }
    fn i(&self, i: usize) -> i64 {
        match self {
            Data::F(v) => v[i] as i64,
            Data::I(v) => v[i],
            Data::B(v) => v[i] as i64,
        }
    }
    fn b(&self, i: usize) -> bool {
        match self {
            Data::F(v) => v[i] != 0.0,
            Data::I(v) => v[i] != 0,
            Data::B(v) => v[i],
        }
    }
    fn pick(&self, idx: &[usize]) -> Data {
        match self {
            Data::F(v) => Data::F(idx.iter().map(|&i| v[i]).collect()),
            Data::I(v) => Data::I(idx.iter().map(|&i| v[i]).collect()),
            Data::B(v) => Data::B(idx.iter().map(|&i| v[i]).collect()),
        }
    }
    fn concat(parts: &[&Data]) -> Option<Data> {
        let first = parts.first()?;
        Some(match first {
            Data::F(_) => Data::F(
                parts
                    .iter()
                    .flat_map(|p| (0..p.len()).map(move |i| p.f(i)))
                    .collect(),
            ),
            Data::I(_) => Data::I(
                parts
                    .iter()
                    .flat_map(|p| (0..p.len()).map(move |i| p.i(i)))
                    .collect(),
            ),
            Data::B(_) => Data::B(
                parts
                    .iter()
                    .flat_map(|p| (0..p.len()).map(move |i| p.b(i)))
                    .collect(),
            ),
        })
    }
}

impl Val {
    fn new(shape: Vec<usize>, data: Data) -> Option<Val> {
        (numel(&shape) == Some(data.len())).then_some(Val { shape, data })
    }
    fn len(&self) -> usize {
        self.data.len()
    }
    /// The truth of a one-element value.
    pub(crate) fn truth(&self) -> Option<bool> {
        (self.len() == 1).then(|| self.data.b(0))
    }
    fn ints(&self) -> Option<Vec<i64>> {
        match &self.data {
            Data::I(v) => Some(v.clone()),
            _ => None,
        }
    }
    pub(crate) fn from_tensor(t: &Tensor) -> Option<Val> {
        if t.len() > SMALL_CONST {
            return None;
        }
        let shape = t.shape().to_vec();
        let data = match t.datum_type() {
            DatumType::Bool => Data::B(
                t.to_plain_array_view::<bool>()
                    .ok()?
                    .iter()
                    .copied()
                    .collect(),
            ),
            dt if dt.is_float() => Data::F(
                t.cast_to::<f64>()
                    .ok()?
                    .to_plain_array_view::<f64>()
                    .ok()?
                    .iter()
                    .copied()
                    .collect(),
            ),
            dt if dt.is_integer() => Data::I(
                t.cast_to::<i64>()
                    .ok()?
                    .to_plain_array_view::<i64>()
                    .ok()?
                    .iter()
                    .copied()
                    .collect(),
            ),
            _ => return None,
        };
        Val::new(shape, data)
    }
    fn from_proto(t: &TensorProto) -> Option<Val> {
        let n: i64 = t.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d))?;
        if !(0..=SMALL_CONST as i64).contains(&n) {
            return None;
        }
        Val::from_tensor(&tensor_from_proto(t).ok()?)
    }
    fn cast(&self, to: i32) -> Option<Val> {
        let dt = datum_type_of(to, "").ok()?;
        let n = self.len();
        let data = if dt == DatumType::Bool {
            Data::B((0..n).map(|i| self.data.b(i)).collect())
        } else if dt.is_float() {
            Data::F((0..n).map(|i| self.data.f(i)).collect())
        } else if dt.is_integer() {
            Data::I((0..n).map(|i| self.data.i(i)).collect())
        } else {
            return None;
        };
        Val::new(self.shape.clone(), data)
    }
    fn reshaped(&self, shape: Vec<usize>) -> Option<Val> {
        Val::new(shape, self.data.clone())
    }
}

/// Number of elements of `shape`, `None` on overflow.
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// For each position of `out`, the flat index into a tensor of shape `inp` broadcast to it.
fn broadcast_index(out: &[usize], inp: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let off = out.len() - inp.len();
    let mut strides = vec![0usize; inp.len()];
    let mut s = 1;
    for i in (0..inp.len()).rev() {
        strides[i] = if inp[i] == 1 { 0 } else { s };
        s *= inp[i];
    }
    (0..n)
        .map(|mut flat| {
            let mut idx = 0;
            for ax in (0..out.len()).rev() {
                let c = flat % out[ax];
                flat /= out[ax];
                if ax >= off {
                    idx += c * strides[ax - off];
                }
            }
            idx
        })
        .collect()
}

fn binary(a: &Val, b: &Val, op: &str) -> Option<Val> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    if numel(&shape)? > SMALL_CONST {
        return None;
    }
    let ia = broadcast_index(&shape, &a.shape);
    let ib = broadcast_index(&shape, &b.shape);
    let pairs = ia.iter().zip(&ib);
    let floats = matches!(a.data, Data::F(_)) || matches!(b.data, Data::F(_));
    let data = match op {
        "Equal" | "Greater" | "Less" | "GreaterOrEqual" | "LessOrEqual" => Data::B(
            pairs
                .map(|(&i, &j)| {
                    let ord = if floats {
                        a.data.f(i).partial_cmp(&b.data.f(j))
                    } else {
                        Some(a.data.i(i).cmp(&b.data.i(j)))
                    };
                    use std::cmp::Ordering::*;
                    match (op, ord) {
                        (_, None) => false,
                        ("Equal", Some(o)) => o == Equal,
                        ("Greater", Some(o)) => o == Greater,
                        ("Less", Some(o)) => o == Less,
                        ("GreaterOrEqual", Some(o)) => o != Less,
                        (_, Some(o)) => o != Greater,
                    }
                })
                .collect(),
        ),
        "And" | "Or" | "Xor" => Data::B(
            pairs
                .map(|(&i, &j)| {
                    let (x, y) = (a.data.b(i), b.data.b(j));
                    match op {
                        "And" => x && y,
                        "Or" => x || y,
                        _ => x != y,
                    }
                })
                .collect(),
        ),
        "Add" | "Sub" | "Mul" if floats => Data::F(
            pairs
                .map(|(&i, &j)| {
                    let (x, y) = (a.data.f(i), b.data.f(j));
                    match op {
                        "Add" => x + y,
                        "Sub" => x - y,
                        _ => x * y,
                    }
                })
                .collect(),
        ),
        "Add" | "Sub" | "Mul" => Data::I(
            pairs
                .map(|(&i, &j)| {
                    let (x, y) = (a.data.i(i), b.data.i(j));
                    match op {
                        "Add" => x.wrapping_add(y),
                        "Sub" => x.wrapping_sub(y),
                        _ => x.wrapping_mul(y),
                    }
                })
                .collect(),
        ),
        _ => return None,
    };
    Val::new(shape, data)
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).and_then(|a| a.i)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// The constant evaluator over a top-level graph.
pub(super) struct ConstEval<'a> {
    graph: &'a GraphProto,
    vals: HashMap<String, Val>,
    shapes: HashMap<String, Vec<usize>>,
}

impl<'a> ConstEval<'a> {
    pub(super) fn new(graph: &'a GraphProto, inputs: &InputSet) -> Self {
        let mut vals = HashMap::new();
        let mut shapes = HashMap::new();
        for t in &graph.initializer {
            let Some(name) = t.name.clone() else { continue };
            if t.dims.iter().all(|&d| d >= 0) {
                shapes.insert(name.clone(), t.dims.iter().map(|&d| d as usize).collect());
            }
            if let Some(v) = Val::from_proto(t) {
                vals.insert(name, v);
            }
        }
        for (name, t) in &inputs.tensors {
            shapes.insert(name.clone(), t.shape().to_vec());
            if t.len() <= SMALL_INPUT {
                if let Some(v) = Val::from_tensor(t) {
                    vals.insert(name.clone(), v);
                } else {
                    vals.remove(name);
                }
            } else {
                vals.remove(name);
            }
        }
        ConstEval {
            graph,
            vals,
            shapes,
        }
    }

    pub(super) fn run(mut self) -> HashMap<String, Val> {
        for node in &self.graph.node {
            if !matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
                continue;
            }
            if let Some(outs) = self.eval(node) {
                for (name, v) in node.output.iter().zip(outs) {
                    if name.is_empty() {
                        continue;
                    }
                    self.shapes.insert(name.clone(), v.shape.clone());
                    self.vals.insert(name.clone(), v);
                }
            }
        }
        self.vals
    }

    fn input(&self, node: &NodeProto, i: usize) -> Option<&Val> {
        node.input
            .get(i)
            .filter(|n| !n.is_empty())
            .and_then(|n| self.vals.get(n))
    }

    fn axes(&self, node: &NodeProto) -> Option<Option<Vec<i64>>> {
        if let Some(a) = attr_ints(node, "axes") {
            return Some(Some(a));
        }
        match node.input.get(1).filter(|n| !n.is_empty()) {
            Some(_) => Some(Some(self.input(node, 1)?.ints()?)),
            None => Some(None),
        }
    }

    fn eval(&self, node: &NodeProto) -> Option<Vec<Val>> {
        let op = node.op_type.as_deref()?;
        let one = |v: Option<Val>| v.map(|v| vec![v]);
        match op {
            "Constant" => one(self.constant(node)),
            "Identity" => one(self.input(node, 0).cloned()),
            "Cast" => one(self.input(node, 0)?.cast(attr_i(node, "to")? as i32)),
            "Not" => {
                let a = self.input(node, 0)?;
                one(Val::new(
                    a.shape.clone(),
                    Data::B((0..a.len()).map(|i| !a.data.b(i)).collect()),
                ))
            }
            "Equal" | "Greater" | "Less" | "GreaterOrEqual" | "LessOrEqual" | "And" | "Or"
            | "Xor" | "Add" | "Sub" | "Mul" => {
                one(binary(self.input(node, 0)?, self.input(node, 1)?, op))
            }
            "Shape" => {
                let shape = self.shapes.get(node.input.first()?)?;
                let r = shape.len() as i64;
                let clamp = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
                let start = clamp(attr_i(node, "start").unwrap_or(0));
                let end = clamp(attr_i(node, "end").unwrap_or(r));
                let dims: Vec<i64> = shape
                    .get(start..end.max(start))?
                    .iter()
                    .map(|&d| d as i64)
                    .collect();
                one(Val::new(vec![dims.len()], Data::I(dims)))
            }
            "Size" => {
                let shape = self.shapes.get(node.input.first()?)?;
                one(Val::new(vec![], Data::I(vec![numel(shape)? as i64])))
            }
            "Gather" => one(self.gather(node)),
            "Unsqueeze" => {
                let a = self.input(node, 0)?;
                let axes = self.axes(node)??;
                let r = a.shape.len() + axes.len();
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&x| norm_axis(x, r))
                    .collect::<Option<_>>()?;
                axes.sort_unstable();
                let mut shape = a.shape.clone();
                for ax in axes {
                    if ax > shape.len() {
                        return None;
                    }
                    shape.insert(ax, 1);
                }
                one(a.reshaped(shape))
            }
            "Squeeze" => {
                let a = self.input(node, 0)?;
                let shape = match self.axes(node)? {
                    None => a.shape.iter().copied().filter(|&d| d != 1).collect(),
                    Some(axes) => {
                        let axes: Vec<usize> = axes
                            .iter()
                            .map(|&x| norm_axis(x, a.shape.len()))
                            .collect::<Option<_>>()?;
                        if axes.iter().any(|&ax| a.shape[ax] != 1) {
                            return None;
                        }
                        a.shape
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| !axes.contains(i))
                            .map(|(_, &d)| d)
                            .collect()
                    }
                };
                one(a.reshaped(shape))
            }
            "Reshape" => {
                let a = self.input(node, 0)?;
                let spec = self.input(node, 1)?.ints()?;
                let allowzero = attr_i(node, "allowzero").unwrap_or(0) != 0;
                let mut shape = Vec::with_capacity(spec.len());
                let mut infer = None;
                for (i, &d) in spec.iter().enumerate() {
                    match d {
                        0 if !allowzero => shape.push(*a.shape.get(i)?),
                        -1 if infer.is_none() => {
                            infer = Some(i);
                            shape.push(1);
                        }
                        d if d >= 0 => shape.push(d as usize),
                        _ => return None,
                    }
                }
                if let Some(i) = infer {
                    let known: usize = numel(&shape)?;
                    if known == 0 || a.len() % known != 0 {
                        return None;
                    }
                    shape[i] = a.len() / known;
                }
                one(a.reshaped(shape))
            }
            "Concat" => {
                let parts: Vec<&Val> = (0..node.input.len())
                    .map(|i| self.input(node, i))
                    .collect::<Option<_>>()?;
                if parts.iter().any(|p| p.shape.len() != 1) {
                    return None;
                }
                norm_axis(attr_i(node, "axis").unwrap_or(0), 1)?;
                let data: Vec<&Data> = parts.iter().map(|p| &p.data).collect();
                let d = Data::concat(&data)?;
                one(Val::new(vec![d.len()], d))
            }
            "ConstantOfShape" => {
                let shape: Vec<usize> = self
                    .input(node, 0)?
                    .ints()?
                    .iter()
                    .map(|&d| usize::try_from(d).ok())
                    .collect::<Option<_>>()?;
                let n: usize = numel(&shape)?;
                if n > SMALL_CONST {
                    return None;
                }
                let value = match attr(node, "value").and_then(|a| a.t.as_ref()) {
                    Some(t) => Val::from_proto(t)?,
                    None => Val::new(vec![1], Data::F(vec![0.0]))?,
                };
                if value.len() != 1 {
                    return None;
                }
                let idx = vec![0usize; n];
                one(Val::new(shape, value.data.pick(&idx)))
            }
            _ => None,
        }
    }

    fn constant(&self, node: &NodeProto) -> Option<Val> {
        let a = node.attribute.first()?;
        match a.name.as_deref()? {
            "value" => Val::from_proto(a.t.as_ref()?),
            "value_float" => Val::new(vec![], Data::F(vec![a.f? as f64])),
            "value_int" => Val::new(vec![], Data::I(vec![a.i?])),
            "value_floats" if a.floats.len() <= SMALL_CONST => Val::new(
                vec![a.floats.len()],
                Data::F(a.floats.iter().map(|&x| x as f64).collect()),
            ),
            "value_ints" if a.ints.len() <= SMALL_CONST => {
                Val::new(vec![a.ints.len()], Data::I(a.ints.clone()))
            }
            _ => None,
        }
    }

    fn gather(&self, node: &NodeProto) -> Option<Val> {
        let data = self.input(node, 0)?;
        let idx = self.input(node, 1)?;
        let indices = idx.ints()?;
        let rank = data.shape.len();
        let axis = norm_axis(attr_i(node, "axis").unwrap_or(0), rank)?;
        let dim = data.shape[axis] as i64;
        let outer: usize = data.shape[..axis].iter().product();
        let inner: usize = data.shape[axis + 1..].iter().product();
        let mut picks = Vec::new();
        for o in 0..outer {
            for &k in &indices {
                let k = if k < 0 { k + dim } else { k };
                if !(0..dim).contains(&k) {
                    return None;
                }
                let base = (o * dim as usize + k as usize) * inner;
                picks.extend(base..base + inner);
            }
        }
        let mut shape = data.shape[..axis].to_vec();
        shape.extend(&idx.shape);
        shape.extend(&data.shape[axis + 1..]);
        Val::new(shape, data.data.pick(&picks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::attribute_proto::AttributeType;
    use crate::onnx::proto::tensor_proto::DataType;

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(format!("{op}_{}", outputs[0])),
            ..Default::default()
        }
    }

    fn int_attr(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            i: Some(v),
            r#type: Some(AttributeType::Int as i32),
            ..Default::default()
        }
    }

    fn const_ints(out: &str, v: &[i64], dims: &[i64]) -> NodeProto {
        let mut n = node("Constant", &[], &[out]);
        n.attribute.push(AttributeProto {
            name: Some("value".into()),
            r#type: Some(AttributeType::Tensor as i32),
            t: Some(TensorProto {
                dims: dims.to_vec(),
                data_type: Some(DataType::Int64 as i32),
                int64_data: v.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        });
        n
    }

    #[test]
    fn evaluates_shape_gather_equal() {
        let mut gather = node("Gather", &["shape", "zero"], &["dim0"]);
        gather.attribute.push(int_attr("axis", 0));
        let graph = GraphProto {
            node: vec![
                node("Shape", &["x"], &["shape"]),
                const_ints("zero", &[-1], &[]),
                gather,
                const_ints("four", &[4], &[]),
                node("Equal", &["dim0", "four"], &["eq"]),
                node("Not", &["eq"], &["neq"]),
                {
                    let mut c = node("Cast", &["dim0"], &["dimf"]);
                    c.attribute.push(int_attr("to", DataType::Float as i64));
                    c
                },
                node("Unsqueeze", &["dim0", "axes"], &["u"]),
                const_ints("axes", &[0], &[1]),
            ],
            ..Default::default()
        };
        let inputs = InputSet::new(
            "t",
            vec![("x".into(), Tensor::zero::<f32>(&[2, 4]).unwrap())],
        );
        let vals = ConstEval::new(&graph, &inputs).run();
        assert_eq!(vals["dim0"].ints(), Some(vec![4]));
        assert_eq!(vals["eq"].truth(), Some(true));
        assert_eq!(vals["neq"].truth(), Some(false));
        assert_eq!(vals["dimf"].data, Data::F(vec![4.0]));
        // Unsqueeze before its axes constant: unknown, and no panic.
        assert!(!vals.contains_key("u"));
    }

    #[test]
    fn broadcasting_index() {
        assert_eq!(broadcast_shape(&[2, 1], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_index(&[2, 3], &[3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_index(&[2, 3], &[2, 1]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_shape(&[2], &[3]), None);
    }
}
