//! The quantization grid: codes, scales and zero points of a float weight.

use bytes::Bytes;

use super::WeightType;
use crate::onnx::proto::{tensor_proto::DataType, TensorProto};

/// The quantized weight: integer codes, scales and zero points, and the weight they give back.
pub(super) struct Quantized {
    /// One code per element (int8 and int4 as two's complement bytes), row-major.
    pub(super) codes: Vec<u8>,
    /// One scale per group (see [`Groups`]), row-major in the scale's shape.
    pub(super) scales: Vec<f32>,
    pub(super) zero_points: Vec<u8>,
    pub(super) rel_error: f64,
    /// Whether `scales` are float16 values (see [`quantize_groups`]).
    pub(super) half: bool,
}

/// The smallest normal float16: scales below it would lose precision as float16.
const F16_MIN_NORMAL: f32 = 6.103_515_6e-5;
/// The largest finite float16.
const F16_MAX: f32 = 65504.0;

/// How elements share a scale: one group for the tensor, one per index of `axis`, or one per
/// block of `block` consecutive indices of `axis` (then the scales have the weight's shape with
/// `dims[axis]` replaced by `ceil(dims[axis] / block)`, as `DequantizeLinear`'s `block_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Groups {
    Tensor,
    Channel(usize),
    Block { axis: usize, block: usize },
}

impl Groups {
    /// `(number of groups, group of element i)` for a weight of `dims`.
    fn index(self, dims: &[usize]) -> (usize, impl Fn(usize) -> usize) {
        let (axis, block) = match self {
            Groups::Tensor => (None, 1),
            Groups::Channel(a) => (Some(a), 1),
            Groups::Block { axis, block } => (Some(axis), block.max(1)),
        };
        let (outer, d, inner) = match axis {
            Some(a) => (
                dims[..a].iter().product::<usize>(),
                dims[a],
                dims[a + 1..].iter().product::<usize>().max(1),
            ),
            None => (1, 1, dims.iter().product::<usize>().max(1)),
        };
        let nb = d.div_ceil(block).max(1);
        let per_channel = matches!(self, Groups::Channel(_));
        let n = match self {
            Groups::Tensor => 1,
            Groups::Channel(_) => d,
            Groups::Block { .. } => outer * nb * inner,
        };
        let f = move |i: usize| {
            if axis.is_none() {
                return 0;
            }
            let di = (i / inner) % d.max(1);
            if per_channel {
                return di;
            }
            let o = i / (inner * d.max(1));
            (o * nb + di / block) * inner + i % inner
        };
        (n.max(1), f)
    }

    /// The scales' dims for a weight of `dims`: `[]` per tensor, `[C]` per channel, the
    /// weight's dims with the blocked axis shrunk per block.
    pub(super) fn scale_dims(self, dims: &[i64]) -> Vec<i64> {
        match self {
            Groups::Tensor => vec![],
            Groups::Channel(a) => vec![dims[a]],
            Groups::Block { axis, block } => {
                let mut d = dims.to_vec();
                d[axis] = (d[axis].max(0) as usize).div_ceil(block.max(1)).max(1) as i64;
                d
            }
        }
    }
}

/// Quantizes `w` (row-major, `dims`) along `axis` (or as one tensor).
#[cfg(test)]
pub(super) fn quantize(
    w: &[f32],
    dims: &[usize],
    axis: Option<usize>,
    ty: WeightType,
) -> Quantized {
    let groups = axis.map_or(Groups::Tensor, Groups::Channel);
    quantize_groups(w, dims, groups, ty, false)
}

/// Quantizes `w` (row-major, `dims`) with one scale (and zero point) per group. With `half`, the
/// scales are rounded to float16 (and the codes computed from the rounded scales) when none is
/// above float16's largest value; else they stay float32 and `half` is `false` in the result. A
/// scale below float16's smallest normal becomes that normal: its group's values are all below
/// `7 · 6.1e-5` in magnitude and move by at most half of it, `3.1e-5`.
pub(super) fn quantize_groups(
    w: &[f32],
    dims: &[usize],
    groups: Groups,
    ty: WeightType,
    half: bool,
) -> Quantized {
    let (n, group_of) = groups.index(dims);
    let mut lo = vec![0f32; n];
    let mut hi = vec![0f32; n];
    for (i, &v) in w.iter().enumerate() {
        let c = group_of(i);
        if v.is_finite() {
            lo[c] = lo[c].min(v);
            hi[c] = hi[c].max(v);
        }
    }
    let symmetric = |qmax: f32, c: usize| {
        let m = lo[c].abs().max(hi[c].abs());
        (if m > 0.0 { m / qmax } else { 1.0 }, 0u8)
    };
    let (scales, zero_points): (Vec<f32>, Vec<u8>) = (0..n)
        .map(|c| match ty {
            WeightType::Int8 => symmetric(127.0, c),
            WeightType::Int4 => symmetric(7.0, c),
            WeightType::Uint8 => {
                let span = hi[c] - lo[c];
                if span > 0.0 {
                    let s = span / 255.0;
                    let z = (-lo[c] / s).round().clamp(0.0, 255.0);
                    (s, z as u8)
                } else {
                    (1.0, 0u8)
                }
            }
        })
        .unzip();
    let half = half && scales.iter().all(|s| *s <= F16_MAX);
    let scales: Vec<f32> = if half {
        scales
            .iter()
            .map(|s| {
                let s = s.max(F16_MIN_NORMAL);
                crate::ir::tensor::half_to_f32(crate::onnx::dtype::f32_to_f16(s))
            })
            .collect()
    } else {
        scales
    };
    let mut codes = Vec::with_capacity(w.len());
    let (mut err2, mut norm2) = (0f64, 0f64);
    for (i, &v) in w.iter().enumerate() {
        let c = group_of(i);
        let s = scales[c];
        let (q, back) = match ty {
            WeightType::Int8 | WeightType::Int4 => {
                let m = if ty == WeightType::Int8 { 127.0 } else { 7.0 };
                let q = (v / s).round().clamp(-m, m);
                ((q as i8) as u8, q * s)
            }
            WeightType::Uint8 => {
                let z = zero_points[c] as f32;
                let q = ((v / s).round() + z).clamp(0.0, 255.0);
                (q as u8, (q - z) * s)
            }
        };
        codes.push(q);
        err2 += ((v - back) as f64).powi(2);
        norm2 += (v as f64).powi(2);
    }
    let rel_error = if norm2 > 0.0 {
        (err2 / norm2).sqrt()
    } else {
        err2.sqrt()
    };
    Quantized {
        codes,
        scales,
        zero_points,
        rel_error,
        half,
    }
}

/// Packs int4 codes (two's complement in a byte) two per byte, element `2k` in the low nibble of
/// byte `k` and `2k + 1` in its high nibble (ONNX's layout); an odd count leaves the last high
/// nibble 0.
pub(super) fn pack_int4(codes: &[u8]) -> Vec<u8> {
    codes
        .chunks(2)
        .map(|p| (p[0] & 0x0f) | (p.get(1).copied().unwrap_or(0) & 0x0f) << 4)
        .collect()
}

/// The codes as a tensor of `ty` (int4 packed, see [`pack_int4`]).
pub(super) fn int_tensor(
    name: String,
    dims: Vec<i64>,
    data: Vec<u8>,
    ty: WeightType,
) -> TensorProto {
    let (dt, raw) = match ty {
        WeightType::Int8 => (DataType::Int8, data),
        WeightType::Uint8 => (DataType::Uint8, data),
        WeightType::Int4 => (DataType::Int4, pack_int4(&data)),
    };
    TensorProto {
        name: Some(name),
        dims,
        data_type: Some(dt as i32),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}
