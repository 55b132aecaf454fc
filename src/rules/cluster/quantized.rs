//! `cluster` on weights already quantized: the int8/uint8 tensor `q` a `DequantizeLinear`
//! reads, where its output feeds Conv, ConvTranspose, MatMul or Gemm (directly, or through the
//! `Mul` by constant scales of `quantize`'s spelling below opset 13).
//!
//! The integers are clustered by the same one-dimensional k-means as float weights, on
//! `q − z` (`z` the zero point of the value's channel), so the fixed zero centroid is the zero
//! point: every `q = z` (real zero) comes back exactly `z`. The centroids are rounded to
//! integers, `z` added back and clamped to the type's range, and every value takes its nearest
//! rounded centroid. The graph becomes
//!
//! ```text
//! q_codes:uint8 → [Gather(cluster_nibbles) → Reshape] → Cast(int32) → [Add(offsets)]
//!   → Gather(q_codebook:int8|uint8) → q → DequantizeLinear(q, scale, zero point) (unchanged)
//! ```
//!
//! One codebook per tensor, or per channel along the `DequantizeLinear`'s `axis` when
//! `--cluster-granularity channel` and the scale is per channel; per-channel zero points that
//! differ force per-channel codebooks (the codebook holds `z`-shifted integers). Only where
//! smaller: int8 codes one per byte never are, so in practice at most 16 centroids per codebook
//! (codes packed two per byte). A tensor that takes at most `k` distinct integers (per codebook)
//! is reproduced exactly. int4/uint4 weights are left (their codes are 4-bit already).

use super::{emit_decoding, packs, raw_tensor, relative_error, ClusterConfig, PACK_MIN_ELEMENTS};
use crate::error::{Error, Result};
use crate::ir::{tensor, Graph, Model, NodeId, ValueRef};
use crate::onnx::proto::tensor_proto::DataType;
use crate::rewrite::{Findings, Match, Patch};

/// The ops whose weight a clustered `DequantizeLinear` may feed.
const READERS: &[&str] = &["Conv", "ConvTranspose", "MatMul", "Gemm"];

/// How one quantized weight is clustered.
pub(super) struct QPlan {
    /// The integer tensor.
    q: ValueRef,
    /// The `DequantizeLinear`'s channel axis when the codebooks are per channel.
    axis: Option<usize>,
    channels: usize,
    inner: usize,
    /// Zero point per codebook channel (one entry when per tensor).
    zero: Vec<i64>,
    /// Scale per element's channel along `scale_axis` (for the weight error).
    scales: Vec<f32>,
    scale_inner: usize,
    note: Option<String>,
}

fn range(dt: i32) -> Option<(i64, i64)> {
    match DataType::try_from(dt).ok()? {
        DataType::Int8 => Some((-128, 127)),
        DataType::Uint8 => Some((0, 255)),
        _ => None,
    }
}

/// Whether `id`'s output reaches only weight-reading ops, directly or through one `Mul` by a
/// constant (`quantize`'s per-channel spelling below opset 13).
fn feeds_weights(g: &Graph, id: NodeId) -> bool {
    let out = ValueRef { node: id, slot: 0 };
    if g.is_graph_output(out) || g.is_captured(out) {
        return false;
    }
    let readers = g.consumers(out);
    !readers.is_empty()
        && readers.iter().all(|&(r, slot)| {
            let op = g.node(r).op_type();
            if READERS.contains(&op) {
                return slot >= 1 || op == "MatMul";
            }
            if op == "Mul" && g.node(r).domain().is_empty() {
                let other = g.input(r, 1 - slot.min(1));
                let m = ValueRef { node: r, slot: 0 };
                return other.and_then(|c| g.const_tensor(c)).is_some()
                    && !g.is_graph_output(m)
                    && !g.is_captured(m)
                    && !g.consumers(m).is_empty()
                    && g.consumers(m)
                        .iter()
                        .all(|&(rr, _)| READERS.contains(&g.node(rr).op_type()));
            }
            false
        })
}

/// Every `DequantizeLinear` with a constant int8/uint8 weight this rule clusters, as matches;
/// skips (with the reason) where it cannot.
pub(super) fn find(model: &Model, cfg: &ClusterConfig, f: &mut Findings) {
    let g = &model.graph;
    for id in g.ops() {
        let n = g.node(id);
        if n.op_type() != "DequantizeLinear" || !n.domain().is_empty() {
            continue;
        }
        let Some(q) = g.input(id, 0) else { continue };
        if g.const_tensor(q).is_none() || !feeds_weights(g, id) {
            // Activations, or weights already clustered: not ours, silently.
            continue;
        }
        match plan(model, cfg, id) {
            Ok(_) => f.matches.push(Match {
                anchor: id,
                nodes: vec![q.node],
                what: format!("quantized weight `{}`", g.value_name(q)),
            }),
            Err(reason) => f.skip(model, id, reason),
        }
    }
}

/// Decides whether and how the integer weight of `DequantizeLinear` `dq` is clustered.
pub(super) fn plan(
    model: &Model,
    cfg: &ClusterConfig,
    dq: NodeId,
) -> std::result::Result<QPlan, String> {
    let g = &model.graph;
    let q = g
        .input(dq, 0)
        .ok_or_else(|| "no quantized input".to_string())?;
    let name = g.value_name(q).to_string();
    let t = g
        .const_tensor(q)
        .ok_or_else(|| format!("quantized weight `{name}` is not constant"))?;
    let dt = t.data_type.unwrap_or(0);
    if range(dt).is_none() {
        let ty = crate::onnx::dtype::name(dt);
        return Err(format!(
            "quantized weight `{name}` is {ty}: only int8 and uint8 weights are clustered"
        ));
    }
    if !g.read_only_by(q, dq) || g.is_graph_output(q) {
        return Err(format!(
            "quantized weight `{name}` is read by more than its DequantizeLinear"
        ));
    }
    if super::super::util::attr_i(g, dq, "block_size", 0) != 0 {
        return Err(format!("quantized weight `{name}` is block-quantized"));
    }
    let dims: Vec<usize> = t.dims.iter().map(|d| (*d).max(0) as usize).collect();
    let n: usize = dims.iter().product();
    let rank = dims.len();
    let scale = g
        .input(dq, 1)
        .and_then(|s| g.const_tensor(s))
        .ok_or_else(|| format!("the scale of `{name}` is not constant"))?;
    let scales: Vec<f32> = tensor::to_f32(scale)
        .map_err(|e| e.to_string())?
        .iter()
        .copied()
        .collect();
    let zero: Vec<i64> = match g.input(dq, 2) {
        None => vec![0],
        Some(z) => match g.const_tensor(z) {
            Some(zt) => tensor::to_i64(zt)
                .map_err(|e| e.to_string())?
                .iter()
                .copied()
                .collect(),
            None => return Err(format!("the zero point of `{name}` is not constant")),
        },
    };
    let raw_axis = super::super::util::attr_i(g, dq, "axis", 1);
    let dq_axis = if raw_axis < 0 {
        raw_axis + rank as i64
    } else {
        raw_axis
    };
    let per_channel = scales.len() > 1 || zero.len() > 1;
    let dq_axis = match per_channel {
        true if (0..rank as i64).contains(&dq_axis) => Some(dq_axis as usize),
        true => {
            return Err(format!(
                "`{name}`: the DequantizeLinear axis {raw_axis} is out of range"
            ))
        }
        false => None,
    };
    let scale_inner = dq_axis.map_or(n.max(1), |a| dims[a + 1..].iter().product::<usize>().max(1));
    let uniform_zero = zero.iter().all(|z| *z == zero[0]);
    let (mut axis, mut note) = (None, None);
    if let Some(a) = dq_axis {
        if !uniform_zero {
            axis = Some(a);
            if cfg.granularity == super::ClusterGranularity::Tensor {
                note = Some("per channel: the zero points differ by channel".to_string());
            }
        } else if cfg.granularity == super::ClusterGranularity::Channel {
            axis = Some(a);
        }
    } else if cfg.granularity == super::ClusterGranularity::Channel {
        note = Some("per tensor: its scale is per tensor".to_string());
    }
    if axis.is_some() && uniform_zero {
        // As for float weights: a codebook per channel only where the codebooks and offsets
        // cost at most as much as the codes; small channels share one.
        let c = dims[axis.unwrap_or(0)].max(1);
        let per = cfg.k().min((n / c).max(1));
        let codes = if packs(n as u64, per) { n / 2 } else { n };
        if c * (per + 4) > codes {
            axis = None;
            note = Some(format!(
                "per tensor: {} elements per channel, too few to pay for a codebook each",
                n / c
            ));
        }
    }
    let (channels, inner) = match axis {
        Some(a) => (
            dims[a].max(1),
            dims[a + 1..].iter().product::<usize>().max(1),
        ),
        None => (1, n.max(1)),
    };
    let zero = if axis.is_some() {
        if zero.len() == channels {
            zero
        } else {
            vec![zero[0]; channels]
        }
    } else {
        vec![zero[0]]
    };
    let per = cfg.k().min((n / channels).max(1));
    let before = tensor::payload_bytes(t);
    let after = bytes(n as u64, channels, rank, per);
    if after >= before {
        return Err(format!(
            "quantized weight `{name}`: its codes and codebook{} would take {after} bytes, not fewer than its {before}{}",
            if channels > 1 { "s" } else { "" },
            if (n as u64) < PACK_MIN_ELEMENTS || per > 16 {
                " (codes are packed two per byte only at 4 bits, from 2048 elements)"
            } else {
                ""
            }
        ));
    }
    Ok(QPlan {
        q,
        axis,
        channels,
        inner,
        zero,
        scales,
        scale_inner,
        note,
    })
}

/// Payload bytes of the clustered form: codes, one-byte codebooks, channel offsets and, when
/// packed, the `Reshape` target.
fn bytes(n: u64, channels: usize, rank: usize, per: usize) -> u64 {
    let packed = packs(n, per);
    let codes = if packed { n / 2 } else { n };
    let offsets = if channels > 1 { 4 * channels as u64 } else { 0 };
    codes + (channels * per) as u64 + offsets + if packed { 8 * rank as u64 } else { 0 }
}

/// The rewrite of the match anchored at `DequantizeLinear` `dq` (see the module docs).
pub(super) fn rewrite(model: &Model, cfg: &ClusterConfig, dq: NodeId, what: &str) -> Result<Patch> {
    let g = &model.graph;
    let fail = |reason: String| Error::Rule {
        rule: "cluster".into(),
        reason,
    };
    let plan = plan(model, cfg, dq).map_err(fail)?;
    let q = plan.q;
    let t = g
        .const_tensor(q)
        .ok_or_else(|| fail("the weight is not constant".into()))?;
    let dt = t.data_type.unwrap_or(0);
    let (lo, hi) = range(dt).ok_or_else(|| fail("not int8 or uint8".into()))?;
    let ints: Vec<i64> = tensor::to_i64(t)?.iter().copied().collect();
    let (channels, inner) = (plan.channels, plan.inner);
    let ch = |i: usize| {
        if channels == 1 {
            0
        } else {
            (i / inner) % channels
        }
    };
    let k = cfg.k();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); channels];
    for i in 0..ints.len() {
        members[ch(i)].push(i);
    }
    let mut codes = vec![0u8; ints.len()];
    let mut books: Vec<Vec<i64>> = Vec::with_capacity(channels);
    for (c, idx) in members.iter().enumerate() {
        let z = plan.zero[c];
        // Shifted by the zero point: k-means fixes a centroid at 0, i.e. at `z`.
        let vals: Vec<f32> = idx.iter().map(|&i| (ints[i] - z) as f32).collect();
        let cb = super::cluster(&vals, k);
        let mut book: Vec<i64> = cb
            .centroids
            .iter()
            .map(|c| (c.round() as i64 + z).clamp(lo, hi))
            .collect();
        book.sort_unstable();
        book.dedup();
        for &i in idx {
            let v = ints[i];
            let j = book.partition_point(|b| *b < v);
            let best = match j {
                0 => 0,
                j if j == book.len() => j - 1,
                j if v - book[j - 1] <= book[j] - v => j - 1,
                j => j,
            };
            codes[i] = best as u8;
        }
        books.push(book);
    }
    let per = books.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut flat: Vec<u8> = Vec::with_capacity(per * channels);
    for b in &books {
        let start = flat.len();
        flat.extend(b.iter().map(|v| *v as u8));
        // Unused entries repeat the last centroid (no code points at them).
        let last = flat.last().copied().unwrap_or(0);
        flat.resize(start + per, last);
    }
    // Weight error in real units: scale · (q − z).
    let scale_of = |i: usize| {
        let s = &plan.scales;
        if s.len() == 1 {
            s[0]
        } else {
            s[(i / plan.scale_inner) % s.len()]
        }
    };
    let real = |i: usize, v: i64| scale_of(i) * (v - plan.zero[ch(i)]) as f32;
    let original: Vec<f32> = ints.iter().enumerate().map(|(i, v)| real(i, *v)).collect();
    let decoded = codes
        .iter()
        .enumerate()
        .map(|(i, c)| real(i, books[ch(i)][*c as usize]));
    let rel_error = relative_error(&original, decoded);
    let n = ints.len() as u64;
    let name = g.value_name(q).to_string();
    let packed = packs(n, per);
    let dims = t.dims.clone();
    let mut p = Patch::new(String::new(), Some(dq));
    let ty = DataType::try_from(dt).unwrap_or(DataType::Int8);
    let book = raw_tensor(
        &format!("{name}_codebook"),
        vec![flat.len() as i64],
        ty,
        flat,
    );
    let out = emit_decoding(g, &mut p, &name, &dims, codes, packed, plan.axis, per, book);
    p.shunt(q, out);
    p.keep_name(q, out);
    p.remove(q.node);
    let before = tensor::payload_bytes(t);
    let after = bytes(n, channels, dims.len(), per);
    let scheme = match plan.axis {
        Some(a) => format!(
            "{}-bit per channel (axis {a}), {per} centroids each",
            cfg.bits
        ),
        None => format!("{}-bit per tensor, {per} centroids", cfg.bits),
    };
    let mut notes: Vec<String> = plan.note.into_iter().collect();
    notes.push(format!(
        "{} codebook, the zero point kept exactly",
        crate::onnx::dtype::name(dt)
    ));
    if rel_error == 0.0 {
        notes.push("exact: every value is a centroid".into());
    }
    p.description = format!(
        "{what}: {} {scheme}, {}, {before} → {after} bytes, weight error {:.3} % ({})",
        super::shape_text(&dims),
        if packed {
            "codes packed two per byte"
        } else {
            "codes one per byte"
        },
        rel_error * 100.0,
        notes.join("; ")
    );
    Ok(p)
}
