//! Shape, dtype and small-value inference over the top-level graph, for rules that need to know
//! more than the file declares.
//!
//! Dimensions are either known integers or symbols. A symbol stands for one unknown size: the same
//! symbol twice means the same size (graph inputs sharing a `dim_param`, a dimension copied through
//! an op); unrelated unknowns get fresh symbols. Small integer tensors (shapes and indices, at most
//! [`MAX_VALUE_LEN`] elements, rank ≤ 1) also carry their *value*, element by element, so that
//! `Gather(Shape(x), 1)` is known when dimension 1 of `x` is, even if other dimensions are not.
//!
//! Inference starts from graph inputs (their declared types, which are the contract) and constant
//! tensors, and follows the ops it knows; it never trusts the declared shapes of graph outputs
//! (exporters get them wrong). For ops it does not know it falls back to `value_info`, keeping
//! only the dtype and rank when the declaration disagrees with nothing. Anything unsure is
//! "unknown", never guessed.

use std::collections::HashMap;

use crate::ir::{tensor, Graph, NodeId, NodeKind, ValueRef};
use crate::onnx::proto::{tensor_proto::DataType, type_proto, ValueInfoProto};

/// Longest integer tensor whose value is tracked.
pub const MAX_VALUE_LEN: usize = 64;

/// One dimension, or one element of a tracked integer value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A known size.
    K(i64),
    /// An unknown size; equal symbols are equal sizes.
    S(u32),
}

impl Dim {
    /// The known value.
    pub fn known(self) -> Option<i64> {
        match self {
            Dim::K(v) => Some(v),
            Dim::S(_) => None,
        }
    }
}

/// What is known about one value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fact {
    /// ONNX element type.
    pub dtype: Option<i32>,
    /// Dimensions, if the rank is known.
    pub shape: Option<Vec<Dim>>,
    /// Elements of a small integer tensor (row-major), if tracked.
    pub value: Option<Vec<Dim>>,
    /// Whether the shape was taken from `value_info` rather than inferred.
    pub declared: bool,
}

impl Fact {
    /// All dimensions known.
    pub fn static_shape(&self) -> Option<Vec<i64>> {
        self.shape.as_ref()?.iter().map(|d| d.known()).collect()
    }

    /// All elements known.
    pub fn known_value(&self) -> Option<Vec<i64>> {
        self.value.as_ref()?.iter().map(|d| d.known()).collect()
    }

    /// The rank, if known.
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }
}

/// Facts for every value of a graph.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    map: HashMap<ValueRef, Fact>,
    next_sym: u32,
    syms: HashMap<String, u32>,
}

const UNKNOWN: Fact = Fact {
    dtype: None,
    shape: None,
    value: None,
    declared: false,
};

fn is_int(dt: i32) -> bool {
    use DataType::*;
    [
        Int64, Int32, Int16, Int8, Uint64, Uint32, Uint16, Uint8, Bool,
    ]
    .iter()
    .any(|d| *d as i32 == dt)
}

impl Facts {
    /// What is known about `v` (an empty fact if nothing).
    pub fn get(&self, v: ValueRef) -> &Fact {
        self.map.get(&v).unwrap_or(&UNKNOWN)
    }

    fn fresh(&mut self) -> Dim {
        self.next_sym += 1;
        Dim::S(self.next_sym)
    }

    fn sym(&mut self, name: &str) -> Dim {
        if let Some(s) = self.syms.get(name) {
            return Dim::S(*s);
        }
        self.next_sym += 1;
        self.syms.insert(name.to_string(), self.next_sym);
        Dim::S(self.next_sym)
    }

    fn from_info(&mut self, info: &ValueInfoProto) -> Fact {
        let Some(type_proto::Value::TensorType(t)) =
            info.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Fact::default();
        };
        use crate::onnx::proto::tensor_shape_proto::dimension::Value as DV;
        let shape = t.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    // 0 is taken as unknown: some exporters write it for a free dim.
                    Some(DV::DimValue(v)) if *v > 0 => Dim::K(*v),
                    Some(DV::DimParam(p)) if !p.is_empty() => self.sym(p),
                    _ => self.fresh(),
                })
                .collect()
        });
        Fact {
            dtype: t.elem_type.filter(|d| *d != 0),
            shape,
            value: None,
            declared: true,
        }
    }

    /// Infers facts for every value of `g`.
    pub fn infer(g: &Graph) -> Facts {
        let mut f = Facts::default();
        let declared: HashMap<&str, &ValueInfoProto> = g
            .value_infos()
            .iter()
            .filter_map(|vi| Some((vi.name.as_deref()?, vi)))
            .collect();
        for id in g.topo_order() {
            let node = g.node(id);
            match &node.kind {
                NodeKind::Input { info, default } => {
                    let mut fact = f.from_info(info);
                    fact.declared = false;
                    if default.is_some() {
                        // Overridable: only the dtype and rank are sure.
                        if let Some(s) = fact.shape.as_mut() {
                            for d in s.iter_mut() {
                                *d = f.fresh();
                            }
                        }
                    }
                    f.map.insert(ValueRef { node: id, slot: 0 }, fact);
                }
                NodeKind::Initializer(_) | NodeKind::SparseInitializer(_) => {
                    let v = ValueRef { node: id, slot: 0 };
                    let fact = match g.const_tensor(v) {
                        Some(t) => const_fact(t),
                        None => Fact::default(),
                    };
                    f.map.insert(v, fact);
                }
                NodeKind::Op(_) => {
                    let outs = f.infer_op(g, id);
                    for (slot, mut fact) in outs.into_iter().enumerate() {
                        let v = ValueRef { node: id, slot };
                        if fact.shape.is_none() || fact.dtype.is_none() {
                            if let Some(info) = declared.get(g.value_name(v)) {
                                let d = f.from_info(info);
                                if fact.shape.is_none() && d.shape.is_some() {
                                    fact.shape = d.shape;
                                    fact.declared = true;
                                }
                                if fact.dtype.is_none() {
                                    fact.dtype = d.dtype;
                                }
                            }
                        }
                        f.map.insert(v, fact);
                    }
                }
            }
        }
        f
    }

    fn infer_op(&mut self, g: &Graph, id: NodeId) -> Vec<Fact> {
        let node = g.node(id);
        let n_out = node.num_outputs();
        let mut outs = vec![Fact::default(); n_out];
        if !node.domain().is_empty() {
            return outs;
        }
        if let NodeKind::Op(p) = &node.kind {
            if p.op_type.as_deref() == Some("Constant") {
                if let Some(t) = g.const_tensor(ValueRef { node: id, slot: 0 }) {
                    outs[0] = const_fact(t);
                }
                return outs;
            }
        }
        let ins: Vec<Fact> = g
            .node_inputs(id)
            .iter()
            .map(|i| i.map(|v| self.get(v).clone()).unwrap_or_default())
            .collect();
        let opset = 0; // attributes below are read in an opset-independent way
        let _ = opset;
        let i0 = ins.first().cloned().unwrap_or_default();
        let attr_i = |name: &str| node.attr(name).and_then(|a| a.i);
        let attr_ints = |name: &str| node.attr(name).map(|a| a.ints.clone());
        let in_val = |slot: usize| -> Option<Vec<i64>> { ins.get(slot)?.known_value() };
        let op = node.op_type();
        match op {
            "Identity"
            | "Relu"
            | "Sigmoid"
            | "Tanh"
            | "Exp"
            | "Log"
            | "Sqrt"
            | "Abs"
            | "Neg"
            | "Clip"
            | "HardSigmoid"
            | "HardSwish"
            | "LeakyRelu"
            | "Elu"
            | "Selu"
            | "Softplus"
            | "Softsign"
            | "Erf"
            | "Softmax"
            | "LogSoftmax"
            | "InstanceNormalization"
            | "LRN"
            | "Floor"
            | "Ceil"
            | "Round"
            | "Reciprocal"
            | "Sign"
            | "Sin"
            | "Cos"
            | "Gelu"
            | "Mish"
            | "Celu"
            | "ThresholdedRelu"
            | "Hardmax"
            | "Not"
            | "IsNaN"
            | "IsInf"
            | "Dropout"
            | "BatchNormalization"
            | "LayerNormalization"
            | "CumSum" => {
                outs[0] = Fact {
                    dtype: i0.dtype,
                    shape: i0.shape.clone(),
                    value: None,
                    declared: false,
                };
                if matches!(op, "Not" | "IsNaN" | "IsInf") {
                    outs[0].dtype = Some(DataType::Bool as i32);
                }
                if op == "Identity" {
                    outs[0].value = i0.value.clone();
                }
                if op == "Dropout" && n_out > 1 {
                    outs[1] = Fact {
                        dtype: Some(DataType::Bool as i32),
                        shape: i0.shape.clone(),
                        value: None,
                        declared: false,
                    };
                }
            }
            "Cast" => {
                let to = attr_i("to").map(|t| t as i32);
                outs[0] = Fact {
                    dtype: to,
                    shape: i0.shape.clone(),
                    value: None,
                    declared: false,
                };
                // Integer → integer casts of small values: exact only if no wrap-around.
                if let (Some(to), Some(v)) = (to, &i0.value) {
                    let wide = to == DataType::Int64 as i32 || to == DataType::Int32 as i32;
                    if wide && i0.dtype.is_some_and(is_int) {
                        let fits = v.iter().all(|d| match d {
                            Dim::K(k) => to == DataType::Int64 as i32 || i32::try_from(*k).is_ok(),
                            Dim::S(_) => true,
                        });
                        if fits {
                            outs[0].value = Some(v.clone());
                        }
                    }
                }
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Mod" | "PRelu" | "Equal"
            | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor"
            | "BitShift" | "Sum" | "Mean" | "Where" => {
                let mut shape = ins.first().and_then(|f| f.shape.clone());
                for f in ins.iter().skip(1) {
                    shape = match (shape, &f.shape) {
                        (Some(a), Some(b)) => self.broadcast(&a, b),
                        _ => None,
                    };
                }
                let dtype = match op {
                    "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And"
                    | "Or" | "Xor" => Some(DataType::Bool as i32),
                    "Where" => ins.get(1).and_then(|f| f.dtype),
                    _ => i0.dtype,
                };
                let value = match op {
                    "Add" | "Sub" | "Mul" | "Div" if ins.len() == 2 => {
                        self.arith_value(op, &ins[0], &ins[1], shape.as_deref())
                    }
                    _ => None,
                };
                outs[0] = Fact {
                    dtype,
                    shape,
                    value,
                    declared: false,
                };
            }
            "Shape" => {
                let mut value = None;
                if let Some(s) = &i0.shape {
                    let r = s.len() as i64;
                    let norm = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
                    let start = norm(attr_i("start").unwrap_or(0));
                    let end = norm(attr_i("end").unwrap_or(r));
                    let v: Vec<Dim> = if start < end {
                        s[start..end].to_vec()
                    } else {
                        vec![]
                    };
                    value = Some(v);
                }
                outs[0] = Fact {
                    dtype: Some(DataType::Int64 as i32),
                    shape: value
                        .as_ref()
                        .map(|v: &Vec<Dim>| vec![Dim::K(v.len() as i64)]),
                    value,
                    declared: false,
                };
            }
            "Size" => {
                let value = i0.static_shape().map(|s| vec![Dim::K(s.iter().product())]);
                outs[0] = Fact {
                    dtype: Some(DataType::Int64 as i32),
                    shape: Some(vec![]),
                    value,
                    declared: false,
                };
            }
            "Gather" => {
                let axis = attr_i("axis").unwrap_or(0);
                let idx = ins.get(1).cloned().unwrap_or_default();
                if let (Some(ds), Some(is)) = (&i0.shape, &idx.shape) {
                    let r = ds.len() as i64;
                    let a = if axis < 0 { axis + r } else { axis };
                    if (0..r).contains(&a) {
                        let a = a as usize;
                        let mut s = ds[..a].to_vec();
                        s.extend(is.iter().copied());
                        s.extend(ds[a + 1..].iter().copied());
                        let mut value = None;
                        if let (Some(dv), Some(iv), 1) = (&i0.value, idx.known_value(), ds.len()) {
                            let n = dv.len() as i64;
                            let picked: Option<Vec<Dim>> = iv
                                .iter()
                                .map(|&i| {
                                    let i = if i < 0 { i + n } else { i };
                                    (0..n).contains(&i).then(|| dv[i as usize])
                                })
                                .collect();
                            value = picked;
                        }
                        outs[0] = Fact {
                            dtype: i0.dtype,
                            shape: Some(s),
                            value,
                            declared: false,
                        };
                    }
                }
            }
            "Unsqueeze" | "Squeeze" => {
                let axes = attr_ints("axes").or_else(|| in_val(1));
                let mut shape = None;
                if let Some(s) = &i0.shape {
                    if op == "Unsqueeze" {
                        if let Some(axes) = &axes {
                            let r = (s.len() + axes.len()) as i64;
                            let mut ax: Vec<i64> = axes
                                .iter()
                                .map(|a| if *a < 0 { a + r } else { *a })
                                .collect();
                            ax.sort();
                            ax.dedup();
                            if ax.len() == axes.len() && ax.iter().all(|a| (0..r).contains(a)) {
                                let mut out = Vec::with_capacity(r as usize);
                                let mut it = s.iter();
                                for i in 0..r {
                                    if ax.contains(&i) {
                                        out.push(Dim::K(1));
                                    } else if let Some(d) = it.next() {
                                        out.push(*d);
                                    }
                                }
                                shape = Some(out);
                            }
                        }
                    } else {
                        let r = s.len() as i64;
                        match &axes {
                            Some(axes) => {
                                let ax: Vec<i64> = axes
                                    .iter()
                                    .map(|a| if *a < 0 { a + r } else { *a })
                                    .collect();
                                if ax.iter().all(|a| (0..r).contains(a)) {
                                    shape = Some(
                                        s.iter()
                                            .enumerate()
                                            .filter(|(i, _)| !ax.contains(&(*i as i64)))
                                            .map(|(_, d)| *d)
                                            .collect(),
                                    );
                                }
                            }
                            None => {
                                if s.iter().all(|d| d.known().is_some()) {
                                    shape = Some(
                                        s.iter().copied().filter(|d| *d != Dim::K(1)).collect(),
                                    );
                                }
                            }
                        }
                    }
                }
                outs[0] = Fact {
                    dtype: i0.dtype,
                    value: if shape.as_ref().is_some_and(|s| s.len() <= 1) {
                        i0.value.clone()
                    } else {
                        None
                    },
                    shape,
                    declared: false,
                };
            }
            "Concat" => {
                let axis = attr_i("axis").unwrap_or(0);
                let shapes: Option<Vec<Vec<Dim>>> = ins.iter().map(|f| f.shape.clone()).collect();
                let mut shape = None;
                if let Some(shapes) = shapes.filter(|s| !s.is_empty()) {
                    let r = shapes[0].len() as i64;
                    let a = if axis < 0 { axis + r } else { axis };
                    if (0..r).contains(&a) && shapes.iter().all(|s| s.len() as i64 == r) {
                        let a = a as usize;
                        let mut out = shapes[0].clone();
                        let sum: Option<i64> = shapes.iter().map(|s| s[a].known()).sum();
                        out[a] = match sum {
                            Some(v) => Dim::K(v),
                            None => self.fresh(),
                        };
                        for d in 0..r as usize {
                            if d != a {
                                for s in &shapes[1..] {
                                    if out[d] != s[d] {
                                        if let Dim::K(_) = s[d] {
                                            out[d] = s[d];
                                        }
                                    }
                                }
                            }
                        }
                        shape = Some(out);
                    }
                }
                let value = if shape.as_ref().is_some_and(|s| s.len() == 1) {
                    let vals: Option<Vec<Vec<Dim>>> = ins.iter().map(|f| f.value.clone()).collect();
                    vals.map(|v| v.concat())
                        .filter(|v| v.len() <= MAX_VALUE_LEN)
                } else {
                    None
                };
                outs[0] = Fact {
                    dtype: i0.dtype,
                    shape,
                    value,
                    declared: false,
                };
            }
            "Reshape" => {
                let allowzero = attr_i("allowzero").unwrap_or(0) != 0;
                let target = ins.get(1).and_then(|f| f.value.clone());
                let mut shape = None;
                if let Some(t) = target {
                    shape = self.reshape(i0.shape.as_deref(), &t, allowzero);
                }
                let value = match (&shape, &i0.value) {
                    (Some(s), Some(v)) if s.len() <= 1 => Some(v.clone()),
                    _ => None,
                };
                outs[0] = Fact {
                    dtype: i0.dtype,
                    shape,
                    value,
                    declared: false,
                };
            }
            "Flatten" => {
                if let Some(s) = &i0.shape {
                    let r = s.len() as i64;
                    let a = attr_i("axis").unwrap_or(1);
                    let a = if a < 0 { a + r } else { a };
                    if (0..=r).contains(&a) {
                        let (x, y) = s.split_at(a as usize);
                        let p = |d: &[Dim], me: &mut Facts| -> Dim {
                            if d.len() == 1 {
                                return d[0];
                            }
                            match d.iter().map(|x| x.known()).product::<Option<i64>>() {
                                Some(v) => Dim::K(v),
                                None => me.fresh(),
                            }
                        };
                        let a = p(x, self);
                        let b = p(y, self);
                        outs[0] = Fact {
                            dtype: i0.dtype,
                            shape: Some(vec![a, b]),
                            value: None,
                            declared: false,
                        };
                    }
                }
            }
            "Transpose" => {
                if let Some(s) = &i0.shape {
                    let perm: Vec<i64> = attr_ints("perm")
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| (0..s.len() as i64).rev().collect());
                    if perm.len() == s.len() && perm.iter().all(|p| (0..s.len() as i64).contains(p))
                    {
                        outs[0] = Fact {
                            dtype: i0.dtype,
                            shape: Some(perm.iter().map(|p| s[*p as usize]).collect()),
                            value: None,
                            declared: false,
                        };
                    }
                }
            }
            "Slice" => {
                outs[0].dtype = i0.dtype;
                if let Some(s) = &i0.shape {
                    let params = if ins.len() >= 3 {
                        match (in_val(1), in_val(2)) {
                            (Some(st), Some(en)) => {
                                let axes = if ins.get(3).is_some_and(|f| f.shape.is_some()) {
                                    in_val(3)
                                } else {
                                    Some((0..st.len() as i64).collect())
                                };
                                let steps = if ins.get(4).is_some_and(|f| f.shape.is_some()) {
                                    in_val(4)
                                } else {
                                    Some(vec![1; st.len()])
                                };
                                axes.zip(steps).map(|(a, p)| (st, en, a, p))
                            }
                            _ => None,
                        }
                    } else {
                        attr_ints("starts").zip(attr_ints("ends")).map(|(st, en)| {
                            let axes = attr_ints("axes")
                                .filter(|a| !a.is_empty())
                                .unwrap_or_else(|| (0..st.len() as i64).collect());
                            let n = st.len();
                            (st, en, axes, vec![1; n])
                        })
                    };
                    if let Some((st, en, axes, steps)) = params {
                        let mut out = s.clone();
                        let mut ok = st.len() == en.len()
                            && axes.len() == st.len()
                            && steps.len() == st.len();
                        let r = s.len() as i64;
                        let mut value = i0.value.clone().filter(|_| s.len() == 1);
                        for i in 0..st.len().min(en.len()).min(axes.len()).min(steps.len()) {
                            let a = if axes[i] < 0 { axes[i] + r } else { axes[i] };
                            if !(0..r).contains(&a) || steps[i] == 0 {
                                ok = false;
                                break;
                            }
                            let a = a as usize;
                            match s[a] {
                                Dim::K(n) => {
                                    let (b, e, step) = slice_bounds(st[i], en[i], steps[i], n);
                                    let len = slice_len(b, e, step);
                                    out[a] = Dim::K(len);
                                    if let Some(v) = value.as_mut() {
                                        let mut nv = Vec::new();
                                        let mut j = b;
                                        for _ in 0..len {
                                            nv.push(v[j as usize]);
                                            j += step;
                                        }
                                        *v = nv;
                                    }
                                }
                                Dim::S(_) => {
                                    value = None;
                                    out[a] = if st[i] == 0 && en[i] >= i64::MAX / 2 && steps[i] == 1
                                    {
                                        s[a]
                                    } else {
                                        self.fresh()
                                    };
                                }
                            }
                        }
                        if ok {
                            outs[0].shape = Some(out);
                            outs[0].value = value;
                        }
                    }
                }
            }
            "Conv" | "MaxPool" | "AveragePool" | "LpPool" => {
                outs[0].dtype = i0.dtype;
                let w = ins.get(1).and_then(|f| f.shape.clone());
                if let Some(s) = &i0.shape {
                    if s.len() >= 3 {
                        let sp = s.len() - 2;
                        let kernel: Option<Vec<i64>> =
                            match op {
                                "Conv" => attr_ints("kernel_shape")
                                    .filter(|k| !k.is_empty())
                                    .or_else(|| {
                                        w.as_ref().and_then(|w| {
                                            w.get(2..)?.iter().map(|d| d.known()).collect()
                                        })
                                    }),
                                _ => attr_ints("kernel_shape"),
                            };
                        let channels = match op {
                            "Conv" => w.as_ref().and_then(|w| w.first().copied()),
                            _ => Some(s[1]),
                        };
                        if let (Some(k), Some(c)) = (kernel.filter(|k| k.len() == sp), channels) {
                            let strides = attr_ints("strides")
                                .filter(|v| !v.is_empty())
                                .unwrap_or(vec![1; sp]);
                            let dil = attr_ints("dilations")
                                .filter(|v| !v.is_empty())
                                .unwrap_or(vec![1; sp]);
                            let pads = attr_ints("pads")
                                .filter(|v| !v.is_empty())
                                .unwrap_or(vec![0; 2 * sp]);
                            let auto = node
                                .attr("auto_pad")
                                .and_then(|a| a.s.as_ref())
                                .map(|b| String::from_utf8_lossy(b).to_string())
                                .unwrap_or_else(|| "NOTSET".into());
                            let ceil = attr_i("ceil_mode").unwrap_or(0) != 0;
                            if strides.len() == sp && dil.len() == sp && pads.len() == 2 * sp {
                                let mut out = vec![s[0], c];
                                for i in 0..sp {
                                    out.push(match s[2 + i] {
                                        Dim::K(n) => {
                                            let ek = dil[i] * (k[i] - 1) + 1;
                                            let st = strides[i].max(1);
                                            let v = match auto.as_str() {
                                                "SAME_UPPER" | "SAME_LOWER" => (n + st - 1) / st,
                                                "VALID" => (n - ek) / st + 1,
                                                _ => {
                                                    let num = n + pads[i] + pads[i + sp] - ek;
                                                    if ceil {
                                                        let mut o = (num + st - 1) / st + 1;
                                                        if (o - 1) * st >= n + pads[i] {
                                                            o -= 1;
                                                        }
                                                        o
                                                    } else {
                                                        num.div_euclid(st) + 1
                                                    }
                                                }
                                            };
                                            Dim::K(v)
                                        }
                                        Dim::S(_) => {
                                            let trivial = k[i] == 1
                                                && strides[i] == 1
                                                && pads[i] == 0
                                                && pads[i + sp] == 0;
                                            if trivial
                                                || auto.starts_with("SAME") && strides[i] == 1
                                            {
                                                s[2 + i]
                                            } else {
                                                self.fresh()
                                            }
                                        }
                                    });
                                }
                                outs[0].shape = Some(out);
                            }
                        }
                    }
                }
            }
            "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
                if let Some(s) = &i0.shape {
                    if s.len() >= 2 {
                        let mut out = s[..2].to_vec();
                        out.extend(std::iter::repeat_n(Dim::K(1), s.len() - 2));
                        outs[0] = Fact {
                            dtype: i0.dtype,
                            shape: Some(out),
                            value: None,
                            declared: false,
                        };
                    }
                }
            }
            "MatMul" => {
                outs[0].dtype = i0.dtype;
                if let (Some(a), Some(b)) = (&i0.shape, ins.get(1).and_then(|f| f.shape.clone())) {
                    if a.len() >= 2 && b.len() >= 2 {
                        let batch = self.broadcast(&a[..a.len() - 2], &b[..b.len() - 2]);
                        if let Some(mut out) = batch {
                            out.push(a[a.len() - 2]);
                            out.push(b[b.len() - 1]);
                            outs[0].shape = Some(out);
                        }
                    } else if a.len() >= 2 && b.len() == 1 {
                        outs[0].shape = Some(a[..a.len() - 1].to_vec());
                    } else if a.len() == 1 && b.len() >= 2 {
                        let mut out = b[..b.len() - 2].to_vec();
                        out.push(b[b.len() - 1]);
                        outs[0].shape = Some(out);
                    }
                }
            }
            "Gemm" => {
                outs[0].dtype = i0.dtype;
                if let (Some(a), Some(b)) = (&i0.shape, ins.get(1).and_then(|f| f.shape.clone())) {
                    if a.len() == 2 && b.len() == 2 {
                        let m = if attr_i("transA").unwrap_or(0) != 0 {
                            a[1]
                        } else {
                            a[0]
                        };
                        let n = if attr_i("transB").unwrap_or(0) != 0 {
                            b[0]
                        } else {
                            b[1]
                        };
                        outs[0].shape = Some(vec![m, n]);
                    }
                }
            }
            "LSTM" | "GRU" | "RNN" => {
                let hidden = attr_i("hidden_size");
                let dirs = node
                    .attr("direction")
                    .and_then(|a| a.s.as_ref())
                    .map(|b| if &b[..] == b"bidirectional" { 2 } else { 1 })
                    .unwrap_or(1);
                let layout = attr_i("layout").unwrap_or(0);
                if let (Some(s), Some(h)) = (&i0.shape, hidden) {
                    if s.len() == 3 && layout == 0 {
                        let (seq, batch) = (s[0], s[1]);
                        let y = vec![seq, Dim::K(dirs), batch, Dim::K(h)];
                        let yh = vec![Dim::K(dirs), batch, Dim::K(h)];
                        for (slot, o) in outs.iter_mut().enumerate() {
                            o.dtype = i0.dtype;
                            o.shape = Some(if slot == 0 { y.clone() } else { yh.clone() });
                        }
                    }
                }
            }
            "ConstantOfShape" => {
                let dtype = node
                    .attr("value")
                    .and_then(|a| a.t.as_ref())
                    .and_then(|t| t.data_type);
                // Without `value` the spec says float32 zeros, but runtimes disagree (tract makes
                // f64): leave the dtype unknown so that no rule leans on it.
                outs[0] = Fact {
                    dtype,
                    shape: ins.first().and_then(|f| f.value.clone()),
                    value: None,
                    declared: false,
                };
            }
            "Expand" => {
                outs[0].dtype = i0.dtype;
                if let (Some(s), Some(t)) = (&i0.shape, ins.get(1).and_then(|f| f.value.clone())) {
                    outs[0].shape = self.broadcast(s, &t);
                }
            }
            "Pad" => {
                outs[0].dtype = i0.dtype;
                let pads = attr_ints("pads").or_else(|| in_val(1));
                if let (Some(s), Some(p)) = (&i0.shape, pads) {
                    let axes = if ins.len() > 3 && ins[3].shape.is_some() {
                        in_val(3)
                    } else {
                        Some((0..s.len() as i64).collect())
                    };
                    if let Some(axes) = axes {
                        let r = s.len() as i64;
                        if p.len() == 2 * axes.len() {
                            let mut out = s.clone();
                            let mut ok = true;
                            for (i, a) in axes.iter().enumerate() {
                                let a = if *a < 0 { a + r } else { *a };
                                if !(0..r).contains(&a) {
                                    ok = false;
                                    break;
                                }
                                let extra = p[i] + p[i + axes.len()];
                                out[a as usize] = match out[a as usize] {
                                    Dim::K(n) => Dim::K(n + extra),
                                    d if extra == 0 => d,
                                    _ => self.fresh(),
                                };
                            }
                            if ok {
                                outs[0].shape = Some(out);
                            }
                        }
                    }
                }
            }
            "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
            | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" | "ArgMax"
            | "ArgMin" => {
                outs[0].dtype = if op.starts_with("Arg") {
                    Some(DataType::Int64 as i32)
                } else {
                    i0.dtype
                };
                let keep = attr_i("keepdims").unwrap_or(1) != 0;
                let axes = if op.starts_with("Arg") {
                    Some(vec![attr_i("axis").unwrap_or(0)])
                } else {
                    attr_ints("axes").or_else(|| {
                        if ins.len() > 1 && ins[1].shape.is_some() {
                            in_val(1)
                        } else {
                            None
                        }
                    })
                };
                if let (Some(s), Some(axes)) = (&i0.shape, axes.filter(|a| !a.is_empty())) {
                    let r = s.len() as i64;
                    let ax: Vec<i64> = axes
                        .iter()
                        .map(|a| if *a < 0 { a + r } else { *a })
                        .collect();
                    if ax.iter().all(|a| (0..r).contains(a)) {
                        let mut out = Vec::new();
                        for (i, d) in s.iter().enumerate() {
                            if ax.contains(&(i as i64)) {
                                if keep {
                                    out.push(Dim::K(1));
                                }
                            } else {
                                out.push(*d);
                            }
                        }
                        outs[0].shape = Some(out);
                    }
                }
            }
            _ => {}
        }
        outs
    }

    /// Broadcast two shapes (numpy rules). `None` if they cannot broadcast.
    fn broadcast(&mut self, a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
        let r = a.len().max(b.len());
        let mut out = Vec::with_capacity(r);
        for i in 0..r {
            let da = (i + a.len())
                .checked_sub(r)
                .map(|j| a[j])
                .unwrap_or(Dim::K(1));
            let db = (i + b.len())
                .checked_sub(r)
                .map(|j| b[j])
                .unwrap_or(Dim::K(1));
            out.push(match (da, db) {
                (x, y) if x == y => x,
                (Dim::K(1), y) => y,
                (x, Dim::K(1)) => x,
                (Dim::K(x), Dim::K(y)) if x != y => return None,
                (Dim::K(x), Dim::S(_)) | (Dim::S(_), Dim::K(x)) => Dim::K(x),
                _ => self.fresh(),
            });
        }
        Some(out)
    }

    fn arith_value(
        &mut self,
        op: &str,
        a: &Fact,
        b: &Fact,
        shape: Option<&[Dim]>,
    ) -> Option<Vec<Dim>> {
        let (va, vb) = (a.value.as_ref()?, b.value.as_ref()?);
        if !a.dtype.is_some_and(is_int) || a.dtype != b.dtype {
            return None;
        }
        let shape = shape?;
        if shape.len() > 1 {
            return None;
        }
        let n = shape.first().and_then(|d| d.known()).unwrap_or(1) as usize;
        if (va.len() != n && va.len() != 1) || (vb.len() != n && vb.len() != 1) {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let x = va[if va.len() == 1 { 0 } else { i }];
            let y = vb[if vb.len() == 1 { 0 } else { i }];
            out.push(match (op, x, y) {
                ("Add", Dim::K(p), Dim::K(q)) => p.checked_add(q).map(Dim::K)?,
                ("Sub", Dim::K(p), Dim::K(q)) => p.checked_sub(q).map(Dim::K)?,
                ("Mul", Dim::K(p), Dim::K(q)) => p.checked_mul(q).map(Dim::K)?,
                ("Div", Dim::K(p), Dim::K(q)) if q != 0 => {
                    // ONNX integer Div truncates toward zero.
                    Dim::K(p.checked_div(q)?)
                }
                ("Add" | "Sub", s @ Dim::S(_), Dim::K(0)) => s,
                ("Add", Dim::K(0), s @ Dim::S(_)) => s,
                ("Mul" | "Div", s @ Dim::S(_), Dim::K(1)) => s,
                ("Mul", Dim::K(1), s @ Dim::S(_)) => s,
                _ => self.fresh(),
            });
        }
        Some(out)
    }

    /// Output shape of Reshape(data of `input` shape, `target`).
    fn reshape(
        &mut self,
        input: Option<&[Dim]>,
        target: &[Dim],
        allowzero: bool,
    ) -> Option<Vec<Dim>> {
        let mut out: Vec<Dim> = Vec::with_capacity(target.len());
        let mut infer_at = None;
        for (i, t) in target.iter().enumerate() {
            match *t {
                Dim::K(0) if !allowzero => out.push(*input?.get(i)?),
                Dim::K(-1) => {
                    if infer_at.is_some() {
                        return None;
                    }
                    infer_at = Some(i);
                    out.push(Dim::K(-1));
                }
                Dim::K(v) if v < 0 => return None,
                d => out.push(d),
            }
        }
        if let Some(at) = infer_at {
            let input = input?;
            // Cancel equal factors between input and the other output dims.
            let mut num: Vec<Dim> = input.to_vec();
            let mut kn: i64 = 1;
            let mut kd: i64 = 1;
            let mut rest_syms: Vec<Dim> = Vec::new();
            for (i, d) in out.iter().enumerate() {
                if i == at {
                    continue;
                }
                match d {
                    Dim::K(v) => kd = kd.checked_mul(*v)?,
                    s => {
                        if let Some(p) = num.iter().position(|x| x == s) {
                            num.remove(p);
                        } else {
                            rest_syms.push(*s);
                        }
                    }
                }
            }
            let mut left_syms = Vec::new();
            for d in num {
                match d {
                    Dim::K(v) => kn = kn.checked_mul(v)?,
                    s => left_syms.push(s),
                }
            }
            out[at] = if rest_syms.is_empty() && left_syms.is_empty() {
                if kd == 0 || kn % kd != 0 {
                    return None;
                }
                Dim::K(kn / kd)
            } else if rest_syms.is_empty() && left_syms.len() == 1 && kn == kd {
                left_syms[0]
            } else {
                self.fresh()
            };
        }
        Some(out)
    }
}

/// Normalised (begin, end, step) of one Slice axis of length `n`, as the ONNX spec clamps them.
pub fn slice_bounds(start: i64, end: i64, step: i64, n: i64) -> (i64, i64, i64) {
    let adj = |x: i64| if x < 0 { x.saturating_add(n) } else { x };
    let (mut b, mut e) = (adj(start), adj(end));
    if step > 0 {
        b = b.clamp(0, n);
        e = e.clamp(0, n);
    } else {
        b = b.clamp(0, n - 1);
        e = e.clamp(-1, n - 1);
    }
    (b, e, step)
}

/// Number of elements a normalised slice takes.
pub fn slice_len(b: i64, e: i64, step: i64) -> i64 {
    if step > 0 {
        if e > b {
            (e - b + step - 1) / step
        } else {
            0
        }
    } else if b > e {
        (b - e + (-step) - 1) / (-step)
    } else {
        0
    }
}

fn const_fact(t: &crate::onnx::proto::TensorProto) -> Fact {
    let dtype = t.data_type.filter(|d| *d != 0);
    let value = if dtype.is_some_and(is_int) && t.dims.len() <= 1 {
        tensor::numel(t)
            .filter(|n| *n as usize <= MAX_VALUE_LEN)
            .and_then(|_| tensor::to_i64(t).ok())
            .map(|a| a.iter().map(|v| Dim::K(*v)).collect())
    } else {
        None
    };
    Fact {
        dtype,
        shape: Some(t.dims.iter().map(|d| Dim::K(*d)).collect()),
        value,
        declared: false,
    }
}
