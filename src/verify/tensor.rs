//! ONNX `TensorProto`s as tract tensors, and ONNX data types as tract's: what verification,
//! calibration and the input loaders read tensors with.

use tract_onnx::prelude::tract_ndarray::{ArrayD, IxDyn};
use tract_onnx::prelude::{f16, DatumType, Tensor};

use super::inputs::MAX_ELEMENTS;
use crate::error::{Error, Result};
use crate::onnx::proto::tensor_proto::{DataLocation, DataType};
use crate::onnx::proto::TensorProto;

/// The tract element type for an ONNX data type id, or an error naming the type tract lacks.
pub fn datum_type_of(data_type: i32, name: &str) -> Result<DatumType> {
    let dt = DataType::try_from(data_type).map_err(|_| Error::Tensor {
        name: name.to_string(),
        reason: format!("unknown onnx data type id {data_type}"),
    })?;
    Ok(match dt {
        DataType::Float => DatumType::F32,
        DataType::Double => DatumType::F64,
        DataType::Float16 => DatumType::F16,
        DataType::Int8 => DatumType::I8,
        DataType::Int16 => DatumType::I16,
        DataType::Int32 => DatumType::I32,
        DataType::Int64 => DatumType::I64,
        DataType::Uint8 => DatumType::U8,
        DataType::Uint16 => DatumType::U16,
        DataType::Uint32 => DatumType::U32,
        DataType::Uint64 => DatumType::U64,
        DataType::Bool => DatumType::Bool,
        DataType::String => DatumType::String,
        _ => {
            return Err(Error::Tensor {
                name: name.to_string(),
                reason: format!(
                    "element type `{}` is not supported by tract",
                    crate::onnx::dtype::name(data_type)
                ),
            })
        }
    })
}

/// The ONNX data type id of a tract element type, if ONNX has one.
pub fn onnx_type_of(dt: DatumType) -> Option<i32> {
    Some(match dt {
        DatumType::F32 => DataType::Float,
        DatumType::F64 => DataType::Double,
        DatumType::F16 => DataType::Float16,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::Bool => DataType::Bool,
        DatumType::String => DataType::String,
        _ => return None,
    } as i32)
}

pub(super) fn tensor_err(name: &str, reason: impl Into<String>) -> Error {
    Error::Tensor {
        name: name.to_string(),
        reason: reason.into(),
    }
}

pub(super) fn from_vec<T: tract_onnx::prelude::Datum>(
    name: &str,
    shape: &[usize],
    v: Vec<T>,
) -> Result<Tensor> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(v.len()) {
        return Err(tensor_err(
            name,
            format!(
                "holds {} values but its shape {shape:?} needs {}",
                v.len(),
                n.map_or("too many".to_string(), |n| n.to_string())
            ),
        ));
    }
    ArrayD::from_shape_vec(IxDyn(shape), v)
        .map(Tensor::from)
        .map_err(|e| tensor_err(name, e.to_string()))
}

fn le<T, const N: usize>(name: &str, raw: &[u8], f: fn([u8; N]) -> T) -> Result<Vec<T>> {
    if !raw.len().is_multiple_of(N) {
        return Err(tensor_err(
            name,
            format!(
                "raw data of {} bytes is not a whole number of {N}-byte values",
                raw.len()
            ),
        ));
    }
    Ok(raw
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect())
}

/// Converts an ONNX `TensorProto` into a tract [`Tensor`].
///
/// Reads `raw_data` (little endian) when present, else the typed field the ONNX spec assigns to the
/// type: `float_data`, `double_data`, `int64_data`, `uint64_data`, `string_data`, and `int32_data`
/// for int32, uint32 (per the spec, uint32 lives in `uint64_data`, but both are accepted), int8,
/// int16, uint8, uint16, bool and float16 (as bit patterns). Element types tract lacks (bfloat16,
/// float8, int4, complex, ...) and external data are errors naming the tensor and the type.
pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor> {
    let name = t.name.as_deref().unwrap_or("<unnamed>");
    let data_type = t.data_type.unwrap_or(0);
    let dt = datum_type_of(data_type, name)?;
    if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
        return Err(tensor_err(
            name,
            "its data is stored externally; load the model with its external data first",
        ));
    }
    if t.segment.is_some() {
        return Err(tensor_err(name, "segmented tensors are not supported"));
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    let mut numel: u64 = 1;
    for &d in &t.dims {
        if d < 0 {
            return Err(tensor_err(name, format!("negative dimension {d}")));
        }
        numel = numel
            .checked_mul(d as u64)
            .filter(|n| *n <= MAX_ELEMENTS)
            .ok_or_else(|| tensor_err(name, format!("absurd shape {:?}", t.dims)))?;
        shape.push(d as usize);
    }
    if let Some(raw) = t.raw_data.as_ref().filter(|r| !r.is_empty() || numel == 0) {
        let raw: &[u8] = raw;
        let elem = match dt {
            DatumType::String => {
                return Err(tensor_err(name, "string tensors cannot use raw_data"))
            }
            DatumType::Bool | DatumType::I8 | DatumType::U8 => 1,
            DatumType::I16 | DatumType::U16 | DatumType::F16 => 2,
            DatumType::I32 | DatumType::U32 | DatumType::F32 => 4,
            _ => 8,
        };
        if raw.len() as u64 != numel * elem {
            return Err(tensor_err(
                name,
                format!(
                    "raw data holds {} bytes but shape {:?} of {} needs {}",
                    raw.len(),
                    t.dims,
                    crate::onnx::dtype::name(data_type),
                    numel * elem
                ),
            ));
        }
        return match dt {
            DatumType::F32 => from_vec(name, &shape, le(name, raw, f32::from_le_bytes)?),
            DatumType::F64 => from_vec(name, &shape, le(name, raw, f64::from_le_bytes)?),
            DatumType::F16 => from_vec(
                name,
                &shape,
                le(name, raw, |b: [u8; 2]| {
                    f16::from_bits(u16::from_le_bytes(b))
                })?,
            ),
            DatumType::I8 => from_vec(name, &shape, le(name, raw, i8::from_le_bytes)?),
            DatumType::I16 => from_vec(name, &shape, le(name, raw, i16::from_le_bytes)?),
            DatumType::I32 => from_vec(name, &shape, le(name, raw, i32::from_le_bytes)?),
            DatumType::I64 => from_vec(name, &shape, le(name, raw, i64::from_le_bytes)?),
            DatumType::U8 => from_vec(name, &shape, raw.to_vec()),
            DatumType::U16 => from_vec(name, &shape, le(name, raw, u16::from_le_bytes)?),
            DatumType::U32 => from_vec(name, &shape, le(name, raw, u32::from_le_bytes)?),
            DatumType::U64 => from_vec(name, &shape, le(name, raw, u64::from_le_bytes)?),
            DatumType::Bool => from_vec(name, &shape, raw.iter().map(|&b| b != 0).collect()),
            other => Err(tensor_err(name, format!("cannot read {other:?} raw data"))),
        };
    }
    let i32s = &t.int32_data;
    match dt {
        DatumType::F32 => from_vec(name, &shape, t.float_data.clone()),
        DatumType::F64 => from_vec(name, &shape, t.double_data.clone()),
        DatumType::I64 => from_vec(name, &shape, t.int64_data.clone()),
        DatumType::U64 => from_vec(name, &shape, t.uint64_data.clone()),
        DatumType::I32 => from_vec(name, &shape, i32s.clone()),
        DatumType::U32 if !t.uint64_data.is_empty() => from_vec(
            name,
            &shape,
            t.uint64_data.iter().map(|&x| x as u32).collect(),
        ),
        DatumType::U32 => from_vec(name, &shape, i32s.iter().map(|&x| x as u32).collect()),
        DatumType::I16 => from_vec(name, &shape, i32s.iter().map(|&x| x as i16).collect()),
        DatumType::U16 => from_vec(name, &shape, i32s.iter().map(|&x| x as u16).collect()),
        DatumType::I8 => from_vec(name, &shape, i32s.iter().map(|&x| x as i8).collect()),
        DatumType::U8 => from_vec(name, &shape, i32s.iter().map(|&x| x as u8).collect()),
        DatumType::Bool => from_vec(name, &shape, i32s.iter().map(|&x| x != 0).collect()),
        DatumType::F16 => from_vec(
            name,
            &shape,
            i32s.iter().map(|&x| f16::from_bits(x as u16)).collect(),
        ),
        DatumType::String => {
            let v = t
                .string_data
                .iter()
                .map(|b| {
                    String::from_utf8(b.to_vec())
                        .map_err(|_| tensor_err(name, "a string element is not valid utf-8"))
                })
                .collect::<Result<Vec<String>>>()?;
            from_vec(name, &shape, v)
        }
        other => Err(tensor_err(name, format!("cannot read {other:?} data"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dt: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            name: Some("t".into()),
            data_type: Some(dt as i32),
            dims: dims.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn float_from_raw_and_typed() {
        let mut p = proto(DataType::Float, &[2]);
        p.raw_data = Some(bytes::Bytes::from(
            [1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat(),
        ));
        let t = tensor_from_proto(&p).unwrap();
        assert_eq!(t, Tensor::from_shape(&[2], &[1.5f32, -2.0]).unwrap());
        let mut p = proto(DataType::Float, &[1, 2]);
        p.float_data = vec![3.0, 4.0];
        let t = tensor_from_proto(&p).unwrap();
        assert_eq!(t.shape(), &[1, 2]);
    }

    #[test]
    fn int32_data_carries_small_types() {
        let mut p = proto(DataType::Float16, &[2]);
        p.int32_data = vec![
            f16::from_f32(0.5).to_bits() as i32,
            f16::ONE.to_bits() as i32,
        ];
        let t = tensor_from_proto(&p).unwrap();
        assert_eq!(t.datum_type(), DatumType::F16);
        let mut p = proto(DataType::Bool, &[3]);
        p.int32_data = vec![1, 0, 1];
        let t = tensor_from_proto(&p).unwrap();
        assert_eq!(t, Tensor::from_shape(&[3], &[true, false, true]).unwrap());
        let mut p = proto(DataType::Int8, &[]);
        p.int32_data = vec![-3];
        assert_eq!(tensor_from_proto(&p).unwrap(), Tensor::from(-3i8));
    }

    #[test]
    fn wrong_sizes_and_missing_types_are_errors() {
        let mut p = proto(DataType::Int64, &[3]);
        p.int64_data = vec![1, 2];
        assert!(tensor_from_proto(&p).is_err());
        let mut p = proto(DataType::Int32, &[2]);
        p.raw_data = Some(bytes::Bytes::from_static(&[0, 0, 0]));
        assert!(tensor_from_proto(&p).is_err());
        let p = proto(DataType::Float8e4m3fn, &[1]);
        let e = tensor_from_proto(&p).unwrap_err().to_string();
        assert!(e.contains("float8e4m3fn"), "{e}");
        let p = proto(DataType::Bfloat16, &[1]);
        assert!(tensor_from_proto(&p)
            .unwrap_err()
            .to_string()
            .contains("bfloat16"));
    }
}
