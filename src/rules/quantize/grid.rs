//! The quantization grid: codes, scales and zero points of a float weight.

use bytes::Bytes;

use super::WeightType;
use crate::onnx::proto::{tensor_proto::DataType, TensorProto};

/// The quantized weight: integer codes, scales and zero points, and the weight they give back.
pub(super) struct Quantized {
    pub(super) codes: Vec<u8>,
    pub(super) scales: Vec<f32>,
    pub(super) zero_points: Vec<u8>,
    pub(super) rel_error: f64,
}

/// Quantizes `w` (row-major, `dims`) along `axis` (or as one tensor).
pub(super) fn quantize(w: &[f32], dims: &[usize], axis: Option<usize>, ty: WeightType) -> Quantized {
    let (channels, inner) = match axis {
        Some(a) => (dims[a], dims[a + 1..].iter().product::<usize>().max(1)),
        None => (1, w.len().max(1)),
    };
    let channel_of = |i: usize| match axis {
        Some(_) => (i / inner) % channels,
        None => 0,
    };
    let mut lo = vec![0f32; channels];
    let mut hi = vec![0f32; channels];
    for (i, &v) in w.iter().enumerate() {
        let c = channel_of(i);
        if v.is_finite() {
            lo[c] = lo[c].min(v);
            hi[c] = hi[c].max(v);
        }
    }
    let (scales, zero_points): (Vec<f32>, Vec<u8>) = (0..channels)
        .map(|c| match ty {
            WeightType::Int8 => {
                let m = lo[c].abs().max(hi[c].abs());
                (if m > 0.0 { m / 127.0 } else { 1.0 }, 0u8)
            }
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
    let mut codes = Vec::with_capacity(w.len());
    let (mut err2, mut norm2) = (0f64, 0f64);
    for (i, &v) in w.iter().enumerate() {
        let c = channel_of(i);
        let s = scales[c];
        let (q, back) = match ty {
            WeightType::Int8 => {
                let q = (v / s).round().clamp(-127.0, 127.0);
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
    }
}

pub(super) fn int_tensor(name: String, dims: Vec<i64>, data: Vec<u8>, ty: WeightType) -> TensorProto {
    TensorProto {
        name: Some(name),
        dims,
        data_type: Some(match ty {
            WeightType::Int8 => DataType::Int8 as i32,
            WeightType::Uint8 => DataType::Uint8 as i32,
        }),
        raw_data: Some(Bytes::from(data)),
        ..Default::default()
    }
}
