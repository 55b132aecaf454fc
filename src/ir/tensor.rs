//! Reading and writing tensor contents for rules: ONNX tensors as ndarray arrays.

use bytes::Bytes;
use ndarray::{ArrayD, IxDyn};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::onnx::dtype;
use crate::onnx::proto::{tensor_proto::DataType, TensorProto};

fn err(t: &TensorProto, reason: impl Into<String>) -> Error {
    Error::Tensor {
        name: t.name.clone().unwrap_or_default(),
        reason: reason.into(),
    }
}

fn shape(t: &TensorProto) -> Result<Vec<usize>> {
    dtype::numel(&t.dims).ok_or_else(|| err(t, "negative or overflowing dims"))?;
    Ok(t.dims.iter().map(|d| *d as usize).collect())
}

/// Number of elements, or `None` for negative or overflowing dims.
pub fn numel(t: &TensorProto) -> Option<u64> {
    dtype::numel(&t.dims)
}

/// Bytes the tensor's payload takes in the file (raw or typed fields).
pub fn payload_bytes(t: &TensorProto) -> u64 {
    let raw = t.raw_data.as_ref().map_or(0, |r| r.len() as u64);
    raw + 4 * t.float_data.len() as u64
        + 4 * t.int32_data.len() as u64
        + 8 * t.int64_data.len() as u64
        + 8 * t.double_data.len() as u64
        + 8 * t.uint64_data.len() as u64
        + t.string_data.iter().map(|s| s.len() as u64).sum::<u64>()
}

/// A short content hash (first 8 hex digits of sha256 over dtype, dims and payload fields).
pub fn content_hash(t: &TensorProto) -> String {
    let mut h = Sha256::new();
    h.update(t.data_type.unwrap_or(0).to_le_bytes());
    for d in &t.dims {
        h.update(d.to_le_bytes());
    }
    if let Some(r) = &t.raw_data {
        h.update(r);
    }
    for f in &t.float_data {
        h.update(f.to_le_bytes());
    }
    for f in &t.int32_data {
        h.update(f.to_le_bytes());
    }
    for f in &t.int64_data {
        h.update(f.to_le_bytes());
    }
    for f in &t.double_data {
        h.update(f.to_le_bytes());
    }
    for f in &t.uint64_data {
        h.update(f.to_le_bytes());
    }
    for s in &t.string_data {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s);
    }
    let d = h.finalize();
    d.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

fn raw_checked<'a>(t: &'a TensorProto, width: usize, n: usize) -> Result<Option<&'a [u8]>> {
    match &t.raw_data {
        Some(r) if !r.is_empty() || n == 0 => {
            if r.len() != n * width {
                return Err(err(
                    t,
                    format!("raw data has {} bytes, dims need {}", r.len(), n * width),
                ));
            }
            Ok(Some(r))
        }
        _ => Ok(None),
    }
}

/// The tensor as `f32`, converting from float32, float64 and float16. Other types are refused.
pub fn to_f32(t: &TensorProto) -> Result<ArrayD<f32>> {
    let shape = shape(t)?;
    let n: usize = shape.iter().product();
    let dt = t.data_type.unwrap_or(0);
    let data: Vec<f32> = if dt == DataType::Float as i32 {
        match raw_checked(t, 4, n)? {
            Some(r) => r
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            None => t.float_data.clone(),
        }
    } else if dt == DataType::Double as i32 {
        match raw_checked(t, 8, n)? {
            Some(r) => r
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            None => t.double_data.iter().map(|d| *d as f32).collect(),
        }
    } else if dt == DataType::Float16 as i32 {
        match raw_checked(t, 2, n)? {
            Some(r) => r
                .chunks_exact(2)
                .map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            None => t
                .int32_data
                .iter()
                .map(|b| half_to_f32(*b as u16))
                .collect(),
        }
    } else {
        return Err(err(
            t,
            format!("expected a float tensor, got {}", dtype::name(dt)),
        ));
    };
    if data.len() != n {
        return Err(err(t, format!("has {} values, dims need {n}", data.len())));
    }
    ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| err(t, e.to_string()))
}

/// The tensor as `i64`, converting from any integer type and bool.
pub fn to_i64(t: &TensorProto) -> Result<ArrayD<i64>> {
    let shape = shape(t)?;
    let n: usize = shape.iter().product();
    let dt = DataType::try_from(t.data_type.unwrap_or(0)).map_err(|_| err(t, "unknown dtype"))?;
    use DataType::*;
    let width = match dt {
        Int64 | Uint64 => 8,
        Int32 | Uint32 => 4,
        Int16 | Uint16 => 2,
        Int8 | Uint8 | Bool => 1,
        _ => {
            return Err(err(
                t,
                format!("expected an integer tensor, got {}", dtype::name(dt as i32)),
            ))
        }
    };
    let data: Vec<i64> = match raw_checked(t, width, n)? {
        Some(r) => r
            .chunks_exact(width)
            .map(|c| match dt {
                Int64 | Uint64 => {
                    i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                }
                Int32 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
                Uint32 => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
                Int16 => i16::from_le_bytes([c[0], c[1]]) as i64,
                Uint16 => u16::from_le_bytes([c[0], c[1]]) as i64,
                Int8 => c[0] as i8 as i64,
                _ => c[0] as i64,
            })
            .collect(),
        None => match dt {
            Int64 => t.int64_data.clone(),
            Uint64 => t.uint64_data.iter().map(|v| *v as i64).collect(),
            _ => t.int32_data.iter().map(|v| *v as i64).collect(),
        },
    };
    if data.len() != n {
        return Err(err(t, format!("has {} values, dims need {n}", data.len())));
    }
    ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| err(t, e.to_string()))
}

/// A float32 tensor named `name` holding `a`, stored as raw little-endian bytes.
pub fn from_f32(name: &str, a: &ArrayD<f32>) -> TensorProto {
    let mut raw = Vec::with_capacity(a.len() * 4);
    for v in a.iter() {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        name: Some(name.to_string()),
        dims: a.shape().iter().map(|d| *d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// An int64 tensor named `name` holding `a`, stored as raw little-endian bytes.
pub fn from_i64(name: &str, a: &ArrayD<i64>) -> TensorProto {
    let mut raw = Vec::with_capacity(a.len() * 8);
    for v in a.iter() {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        name: Some(name.to_string()),
        dims: a.shape().iter().map(|d| *d as i64).collect(),
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// IEEE half → f32.
pub fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) & 1) as u32;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if frac == 0 {
            sign << 31
        } else {
            // subnormal
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            (sign << 31) | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
    } else if exp == 0x1f {
        (sign << 31) | (0xff << 23) | (frac << 13)
    } else {
        (sign << 31) | ((exp + 127 - 15) << 23) | (frac << 13)
    };
    f32::from_bits(bits)
}
