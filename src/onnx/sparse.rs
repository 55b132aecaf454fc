//! Sparse initializers: `--sparse-storage` writes float weights as `SparseTensorProto` where that
//! is smaller, and [`densify_graph`] turns them back into dense tensors for runtimes that do not
//! read them (tract).
//!
//! A `SparseTensorProto` holds `values` (`[NNZ]`, the tensor's element type, named after the
//! tensor), `indices` and the dense `dims`. The ONNX spec allows two index layouts, both int64
//! (`onnx.checker` refuses other types) and in ascending order: coordinates `[NNZ, rank]`, or
//! linear (row-major) positions `[NNZ]`. Indices are written as `int64_data`, whose packed
//! varints take 1 to 3 bytes for the sizes of real layers instead of `raw_data`'s 8, and
//! [`to_sparse_storage`] picks, per initializer, whichever of dense, linear and coordinate
//! encodes smallest (measured, not estimated). At 50 % zeros a float32 weight with linear
//! indices under 2²¹ costs about (4 + 3)/2 = 3.5 bytes per element against dense's 4.
//!
//! Only the exact zero `+0.0` is left out: `−0.0` and NaN are stored as values, so the dense
//! tensor comes back bit for bit (each conversion is checked so before it is kept). Left dense:
//! initializers that are graph inputs (overridable defaults), held in external data, not
//! float32, scalars, and every initializer of a model below IR version 6 (which has no
//! `sparse_initializer`). Only the top-level graph is converted; [`densify_graph`] reads every
//! graph and `Constant`'s `sparse_value` too.

use bytes::Bytes;
use prost::Message;

use super::dtype;
use super::proto::tensor_proto::DataType;
use super::proto::{GraphProto, ModelProto, NodeProto, SparseTensorProto, TensorProto};
use super::visit::subgraphs_mut;
use crate::error::{Error, Result};

/// The first IR version with `sparse_initializer`.
pub const SPARSE_IR_VERSION: i64 = 6;

/// How a sparse tensor's indices are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexForm {
    /// `[NNZ]` row-major positions.
    Linear,
    /// `[NNZ, rank]` coordinates.
    Coordinates,
}

/// One initializer stored sparse.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SparseLine {
    /// The initializer's name.
    pub name: String,
    /// Its dense dims.
    pub dims: Vec<i64>,
    /// Stored values.
    pub nnz: u64,
    /// Elements of the dense tensor.
    pub elements: u64,
    /// Encoded size of the dense `TensorProto`.
    pub dense_bytes: u64,
    /// Encoded size of the `SparseTensorProto` written instead.
    pub sparse_bytes: u64,
    /// The index layout chosen.
    pub form: IndexForm,
}

/// What [`to_sparse_storage`] did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SparseStorage {
    /// Initializers now stored sparse, in graph order.
    pub converted: Vec<SparseLine>,
    /// float32 initializers looked at and kept dense because sparse would not be smaller.
    pub kept_dense: usize,
    /// Why nothing was looked at (the IR version), when so.
    pub note: Option<String>,
}

impl SparseStorage {
    /// Bytes saved in the encoded graph.
    pub fn saved(&self) -> u64 {
        self.converted
            .iter()
            .map(|l| l.dense_bytes.saturating_sub(l.sparse_bytes))
            .sum()
    }

    /// The report: one line per converted initializer and a total.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(n) = &self.note {
            s.push_str(&format!("sparse storage: {n}\n"));
            return s;
        }
        for l in &self.converted {
            let dims: Vec<String> = l.dims.iter().map(|d| d.to_string()).collect();
            s.push_str(&format!(
                "sparse storage: `{}` float32[{}]: {} of {} values stored, {} → {} bytes ({} indices)\n",
                l.name,
                dims.join(","),
                l.nnz,
                l.elements,
                l.dense_bytes,
                l.sparse_bytes,
                match l.form {
                    IndexForm::Linear => "linear",
                    IndexForm::Coordinates => "coordinate",
                }
            ));
        }
        s.push_str(&format!(
            "sparse storage: {} initializer{} stored sparse, {} bytes saved; {} float32 initializer{} kept dense (not smaller sparse)\n",
            self.converted.len(),
            if self.converted.len() == 1 { "" } else { "s" },
            self.saved(),
            self.kept_dense,
            if self.kept_dense == 1 { "" } else { "s" },
        ));
        s
    }
}

/// Stores every float32 initializer of `model`'s top-level graph whose sparse form encodes
/// smaller as a `sparse_initializer` (see the module documentation). Positions are kept: the
/// sparse initializers follow the graph's existing ones in the order of the initializers they
/// replace.
pub fn to_sparse_storage(model: &mut ModelProto) -> SparseStorage {
    let mut out = SparseStorage::default();
    let ir = model.ir_version.unwrap_or(0);
    if ir < SPARSE_IR_VERSION {
        out.note = Some(format!(
            "the model's IR version {ir} has no sparse_initializer (it needs {SPARSE_IR_VERSION}); every initializer stays dense"
        ));
        return out;
    }
    let Some(g) = model.graph.as_mut() else {
        return out;
    };
    let inputs: std::collections::HashSet<String> =
        g.input.iter().filter_map(|i| i.name.clone()).collect();
    let mut kept = Vec::with_capacity(g.initializer.len());
    for t in std::mem::take(&mut g.initializer) {
        let eligible = t.data_type == Some(DataType::Float as i32)
            && !t.dims.is_empty()
            && t.segment.is_none()
            && !super::external::is_external(&t)
            && !inputs.contains(t.name.as_deref().unwrap_or(""));
        if !eligible {
            kept.push(t);
            continue;
        }
        match sparse_form(&t) {
            Some((s, form)) => {
                let sparse_bytes = s.encoded_len() as u64;
                out.converted.push(SparseLine {
                    name: t.name.clone().unwrap_or_default(),
                    dims: t.dims.clone(),
                    nnz: s.values.as_ref().map_or(0, |v| v.dims[0] as u64),
                    elements: dtype::numel(&t.dims).unwrap_or(0),
                    dense_bytes: t.encoded_len() as u64,
                    sparse_bytes,
                    form,
                });
                g.sparse_initializer.push(s);
            }
            None => {
                out.kept_dense += 1;
                kept.push(t);
            }
        }
    }
    g.initializer = kept;
    out
}

/// The smallest sparse encoding of the float32 tensor `t` and its index layout, when it encodes
/// smaller than `t` and densifies back to `t`'s very bits; else `None`.
fn sparse_form(t: &TensorProto) -> Option<(SparseTensorProto, IndexForm)> {
    let (width, bytes) = element_bytes(t).ok()?;
    if width != 4 {
        return None;
    }
    let dims: Vec<u64> = t.dims.iter().map(|d| *d as u64).collect();
    let mut positions = Vec::new();
    let mut values = Vec::new();
    for (i, c) in bytes.chunks_exact(4).enumerate() {
        if c != [0, 0, 0, 0] {
            positions.push(i as i64);
            values.extend_from_slice(c);
        }
    }
    let nnz = positions.len() as i64;
    let values = TensorProto {
        name: t.name.clone(),
        dims: vec![nnz],
        data_type: Some(DataType::Float as i32),
        raw_data: Some(Bytes::from(values)),
        doc_string: t.doc_string.clone(),
        ..Default::default()
    };
    let indices = |dims: Vec<i64>, data: Vec<i64>| TensorProto {
        name: Some(format!("{}_indices", t.name.as_deref().unwrap_or(""))),
        dims,
        data_type: Some(DataType::Int64 as i32),
        int64_data: data,
        ..Default::default()
    };
    let make = |ix: TensorProto| SparseTensorProto {
        values: Some(values.clone()),
        indices: Some(ix),
        dims: t.dims.clone(),
    };
    let linear = make(indices(vec![nnz], positions.clone()));
    let rank = dims.len();
    let mut coords = Vec::with_capacity(positions.len() * rank);
    for &p in &positions {
        let mut rest = p as u64;
        let start = coords.len();
        coords.resize(start + rank, 0);
        for (a, d) in dims.iter().enumerate().rev() {
            coords[start + a] = (rest % d) as i64;
            rest /= d;
        }
    }
    let coordinates = make(indices(vec![nnz, rank as i64], coords));
    let (best, form) = if coordinates.encoded_len() < linear.encoded_len() {
        (coordinates, IndexForm::Coordinates)
    } else {
        (linear, IndexForm::Linear)
    };
    if best.encoded_len() >= t.encoded_len() {
        return None;
    }
    // The conversion is kept only if it gives back the very bits it was made from.
    let back = to_dense(&best).ok()?;
    (element_bytes(&back).ok()? == (4, bytes)).then_some((best, form))
}

/// The elements of `t` as little-endian bytes, and the width of one, from `raw_data` or the
/// typed field of its element type. Refuses strings, sub-byte types and external payloads.
fn element_bytes(t: &TensorProto) -> Result<(usize, Vec<u8>)> {
    let name = t.name.clone().unwrap_or_else(|| "<unnamed>".into());
    let dt_id = t.data_type.unwrap_or(0);
    let bad = |reason: String| Error::Tensor {
        name: name.clone(),
        reason,
    };
    let bits = dtype::bits(dt_id)
        .filter(|b| b % 8 == 0)
        .ok_or_else(|| bad(format!("{} values cannot be densified", dtype::name(dt_id))))?;
    let width = (bits / 8) as usize;
    if super::external::is_external(t) {
        return Err(bad("its payload is in external data".into()));
    }
    if let Some(r) = t.raw_data.as_ref().filter(|r| !r.is_empty()) {
        return Ok((width, r.to_vec()));
    }
    use DataType as D;
    let dt = DataType::try_from(dt_id).map_err(|_| bad("unknown element type".into()))?;
    let bytes: Vec<u8> = match dt {
        D::Float | D::Complex64 => t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        D::Double | D::Complex128 => t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        D::Int64 => t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        D::Uint64 => t.uint64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        D::Uint32 => t
            .uint64_data
            .iter()
            .flat_map(|v| (*v as u32).to_le_bytes())
            .collect(),
        _ => t
            .int32_data
            .iter()
            .flat_map(|v| v.to_le_bytes()[..width.min(4)].to_vec())
            .collect(),
    };
    Ok((width, bytes))
}

/// The dense tensor `s` stands for: `values` scattered to `indices` over zeros, named after
/// `values`. Refuses indices out of range, of the wrong shape, or repeated.
pub fn to_dense(s: &SparseTensorProto) -> Result<TensorProto> {
    let values = s.values.as_ref().ok_or_else(|| Error::Tensor {
        name: "<unnamed sparse tensor>".into(),
        reason: "a sparse tensor without values".into(),
    })?;
    let name = values.name.clone().unwrap_or_else(|| "<unnamed>".into());
    let bad = |reason: String| Error::Tensor {
        name: name.clone(),
        reason,
    };
    let indices = s
        .indices
        .as_ref()
        .ok_or_else(|| bad("a sparse tensor without indices".into()))?;
    let n = dtype::numel(&s.dims)
        .filter(|_| s.dims.iter().all(|d| *d >= 0))
        .ok_or_else(|| bad(format!("sparse dims {:?} are not a tensor shape", s.dims)))?;
    let (width, vals) = element_bytes(values)?;
    if values.dims.len() != 1 {
        return Err(bad(format!(
            "sparse values have dims {:?}, not [NNZ]",
            values.dims
        )));
    }
    let nnz = values.dims[0].max(0) as usize;
    if vals.len() != nnz * width {
        return Err(bad(format!(
            "sparse values hold {} bytes for {nnz} values",
            vals.len()
        )));
    }
    let ix = crate::ir::tensor::to_i64(indices)?;
    let ix: Vec<i64> = ix.iter().copied().collect();
    let rank = s.dims.len();
    let linear: Vec<u64> = match indices.dims.as_slice() {
        [k] if *k as usize == nnz => ix.iter().map(|&i| i as u64).collect(),
        [k, r] if *k as usize == nnz && *r as usize == rank => ix
            .chunks_exact(rank.max(1))
            .map(|c| {
                c.iter().zip(&s.dims).try_fold(0u64, |acc, (&i, &d)| {
                    (0..d)
                        .contains(&i)
                        .then(|| acc * d as u64 + i as u64)
                        .ok_or(())
                })
            })
            .map(|r| r.unwrap_or(u64::MAX))
            .collect(),
        other => {
            return Err(bad(format!(
                "sparse indices have dims {other:?}, not [{nnz}] or [{nnz}, {rank}]"
            )))
        }
    };
    let total = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(width))
        .ok_or_else(|| bad(format!("{n} elements do not fit in memory")))?;
    let mut dense = vec![0u8; total];
    let mut set = vec![false; n as usize];
    for (k, &p) in linear.iter().enumerate() {
        if p >= n {
            return Err(bad(format!(
                "sparse index {k} is outside dims {:?}",
                s.dims
            )));
        }
        let p = p as usize;
        if std::mem::replace(&mut set[p], true) {
            return Err(bad(format!("sparse index {k} repeats position {p}")));
        }
        dense[p * width..(p + 1) * width].copy_from_slice(&vals[k * width..(k + 1) * width]);
    }
    Ok(TensorProto {
        name: values.name.clone(),
        dims: s.dims.clone(),
        data_type: values.data_type,
        raw_data: Some(Bytes::from(dense)),
        doc_string: values.doc_string.clone(),
        ..Default::default()
    })
}

/// Replaces every sparse initializer of `graph` and of its subgraphs by the dense initializer
/// it stands for, and every `Constant`'s `sparse_value` by a dense `value`; returns how many.
pub fn densify_graph(graph: &mut GraphProto) -> Result<usize> {
    let mut n = 0;
    for s in std::mem::take(&mut graph.sparse_initializer) {
        graph.initializer.push(to_dense(&s)?);
        n += 1;
    }
    for node in &mut graph.node {
        n += densify_constant(node)?;
        for sub in subgraphs_mut(node) {
            n += densify_graph(sub)?;
        }
    }
    Ok(n)
}

fn densify_constant(node: &mut NodeProto) -> Result<usize> {
    if node.op_type.as_deref() != Some("Constant") {
        return Ok(0);
    }
    let mut n = 0;
    for a in &mut node.attribute {
        if a.name.as_deref() == Some("sparse_value") {
            if let Some(s) = a.sparse_tensor.take() {
                a.t = Some(to_dense(&s)?);
                a.name = Some("value".into());
                a.r#type = Some(super::proto::attribute_proto::AttributeType::Tensor as i32);
                n += 1;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_tensor(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            raw_data: Some(Bytes::from(
                v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
            )),
            ..Default::default()
        }
    }

    fn model(ts: Vec<TensorProto>, ir: i64) -> ModelProto {
        ModelProto {
            ir_version: Some(ir),
            graph: Some(GraphProto {
                initializer: ts,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sparse_storage_round_trips_bit_for_bit_keeping_negative_zero_and_nan() {
        let mut v = vec![0.0f32; 400];
        v[3] = -0.0;
        v[17] = f32::NAN;
        v[399] = 2.5;
        v[200] = -1.0e-30;
        let t = f32_tensor("w", &[20, 20], &v);
        let mut m = model(vec![t.clone()], 8);
        let r = to_sparse_storage(&mut m);
        assert_eq!(r.converted.len(), 1);
        assert_eq!(
            r.converted[0].nnz, 4,
            "−0.0 and NaN are values, +0.0 is not"
        );
        let g = m.graph.as_mut().unwrap();
        assert!(g.initializer.is_empty());
        assert!(r.converted[0].sparse_bytes < r.converted[0].dense_bytes);
        densify_graph(g).unwrap();
        assert_eq!(g.initializer[0].raw_data, t.raw_data);
        assert_eq!(g.initializer[0].dims, t.dims);
        assert_eq!(g.initializer[0].name, t.name);
    }

    #[test]
    fn sparse_storage_pays_from_about_43_percent_zeros_at_3_5_bytes_per_element_at_half() {
        // [512, 512]: 262,144 elements, linear indices mostly in [2^14, 2^21): 3 varint bytes.
        let n = 512 * 512;
        let with_zeros = |pct: usize| {
            let v: Vec<f32> = (0..n)
                .map(|p| if p % 100 < pct { 0.0 } else { 1.0 + p as f32 })
                .collect();
            let mut m = model(vec![f32_tensor("w", &[512, 512], &v)], 8);
            to_sparse_storage(&mut m)
        };
        let half = with_zeros(50);
        assert_eq!(half.converted.len(), 1);
        assert_eq!(half.converted[0].form, IndexForm::Linear);
        let per = half.converted[0].sparse_bytes as f64 / n as f64;
        assert!((3.4..3.6).contains(&per), "{per} bytes per element");
        assert_eq!(with_zeros(42).converted.len(), 0, "42 % zeros stays dense");
        assert_eq!(with_zeros(44).converted.len(), 1, "44 % zeros goes sparse");
    }

    #[test]
    fn dense_stays_dense_and_old_ir_versions_are_left_alone() {
        let dense = f32_tensor("d", &[64], &[1.0; 64]);
        let mut m = model(vec![dense], 8);
        let r = to_sparse_storage(&mut m);
        assert_eq!((r.converted.len(), r.kept_dense), (0, 1));
        let mut m = model(vec![f32_tensor("z", &[64], &[0.0; 64])], 5);
        let r = to_sparse_storage(&mut m);
        assert!(r.note.is_some());
        assert_eq!(m.graph.unwrap().initializer.len(), 1);
    }

    #[test]
    fn coordinates_and_linear_indices_both_densify_and_bad_indices_are_refused() {
        let values = f32_tensor("s", &[2], &[1.0, 2.0]);
        let ix = |dims: Vec<i64>, v: Vec<i64>| TensorProto {
            dims,
            data_type: Some(DataType::Int64 as i32),
            int64_data: v,
            ..Default::default()
        };
        let s = |i| SparseTensorProto {
            values: Some(values.clone()),
            indices: Some(i),
            dims: vec![2, 3],
        };
        let want: Vec<u8> = [0.0f32, 1.0, 0.0, 0.0, 0.0, 2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let a = to_dense(&s(ix(vec![2], vec![1, 5]))).unwrap();
        let b = to_dense(&s(ix(vec![2, 2], vec![0, 1, 1, 2]))).unwrap();
        assert_eq!(a.raw_data.as_deref(), Some(&want[..]));
        assert_eq!(b.raw_data.as_deref(), Some(&want[..]));
        for (i, why) in [
            (ix(vec![2], vec![1, 6]), "outside"),
            (ix(vec![2], vec![1, -1]), "outside"),
            (ix(vec![2, 2], vec![0, 3, 1, 2]), "outside"),
            (ix(vec![2], vec![5, 5]), "repeats"),
            (ix(vec![3], vec![0, 1, 2]), "not [2]"),
        ] {
            let e = to_dense(&s(i)).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("`s`"), "{e}");
        }
    }
}
