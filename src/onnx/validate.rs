//! Every tensor of a decoded model checked once against its dims and element type, so that no
//! rule, report or runtime ever sees a tensor whose payload disagrees with its declaration.
//!
//! A tensor is refused when a dim is negative, the element count overflows, `raw_data` is
//! shorter or longer than the dims need, a string tensor uses `raw_data`, or the typed field of
//! its element type (`float_data`, `int32_data`, ...) holds another count than the dims need.
//! Tensors of element types this build does not know, and segmented tensors, are left as they
//! are: their size cannot be told.

use super::dtype;
use super::proto::tensor_proto::DataType;
use super::proto::{ModelProto, TensorProto};
use super::visit::for_each_tensor_mut;
use crate::error::{Error, Result};

/// Checks every tensor of `model` (initializers, sparse values and indices, tensor attributes,
/// subgraphs, functions); the first bad one is an [`Error::Tensor`] naming it.
pub fn validate_tensors(model: &mut ModelProto) -> Result<()> {
    for_each_tensor_mut(model, &mut |t: &mut TensorProto| check(t))
}

/// Checks one tensor (see the module documentation).
pub fn check(t: &TensorProto) -> Result<()> {
    let err = |reason: String| Error::Tensor {
        name: t.name.clone().unwrap_or_else(|| "<unnamed>".into()),
        reason,
    };
    if let Some((i, d)) = t.dims.iter().enumerate().find(|(_, d)| **d < 0) {
        return Err(err(format!("dim {i} is {d}, negative")));
    }
    let n = dtype::numel(&t.dims)
        .ok_or_else(|| err(format!("dims {:?} overflow the element count", t.dims)))?;
    // External payloads are checked when they are read (`external::load_external`).
    if t.segment.is_some() || super::external::is_external(t) {
        return Ok(());
    }
    let data_type = t.data_type.unwrap_or(0);
    let Ok(dt) = DataType::try_from(data_type) else {
        return Ok(());
    };
    if let Some(raw) = t.raw_data.as_ref() {
        if dt == DataType::String {
            return Err(err("a string tensor cannot use raw_data".into()));
        }
        let Some(need) = dtype::byte_len(data_type, &t.dims) else {
            return Ok(());
        };
        let have = raw.len() as u64;
        if have != need {
            let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
            return Err(err(format!(
                "raw_data holds {have} bytes, but {} [{}] needs {need}",
                dtype::name(data_type),
                dims.join(","),
            )));
        }
        return Ok(());
    }
    use DataType as D;
    let (field, have, need) = match dt {
        D::Float => ("float_data", t.float_data.len() as u64, Some(n)),
        D::Complex64 => ("float_data", t.float_data.len() as u64, n.checked_mul(2)),
        D::Double => ("double_data", t.double_data.len() as u64, Some(n)),
        D::Complex128 => ("double_data", t.double_data.len() as u64, n.checked_mul(2)),
        D::Int64 => ("int64_data", t.int64_data.len() as u64, Some(n)),
        D::Uint32 | D::Uint64 => ("uint64_data", t.uint64_data.len() as u64, Some(n)),
        D::String => ("string_data", t.string_data.len() as u64, Some(n)),
        D::Int32
        | D::Int16
        | D::Int8
        | D::Uint16
        | D::Uint8
        | D::Bool
        | D::Float16
        | D::Bfloat16
        | D::Float8e4m3fn
        | D::Float8e4m3fnuz
        | D::Float8e5m2
        | D::Float8e5m2fnuz
        | D::Float8e8m0 => ("int32_data", t.int32_data.len() as u64, Some(n)),
        // Packed sub-byte types and undefined: their typed layout is not checked.
        D::Uint4 | D::Int4 | D::Float4e2m1 | D::Uint2 | D::Int2 | D::Undefined => return Ok(()),
    };
    match need {
        Some(need) if have == need => Ok(()),
        Some(need) => {
            let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
            Err(err(format!(
                "{field} holds {have} values, but {} [{}] needs {need}",
                dtype::name(data_type),
                dims.join(","),
            )))
        }
        None => Err(err(format!("dims {:?} overflow the element count", t.dims))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_tensor(dims: Vec<i64>, raw: usize) -> TensorProto {
        TensorProto {
            name: Some("t".into()),
            dims,
            data_type: Some(DataType::Float as i32),
            raw_data: Some(vec![0u8; raw].into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_tensor_whose_payload_matches_its_dims_passes() {
        assert!(check(&f32_tensor(vec![2, 3], 24)).is_ok());
        assert!(check(&f32_tensor(vec![0, 3], 0)).is_ok());
        let typed = TensorProto {
            dims: vec![2],
            data_type: Some(DataType::Int64 as i32),
            int64_data: vec![1, 2],
            ..Default::default()
        };
        assert!(check(&typed).is_ok());
    }

    #[test]
    fn negative_overflowing_short_long_and_miscounted_tensors_are_refused() {
        let cases = [
            (f32_tensor(vec![2, -3], 0), "dim 1 is -3, negative"),
            (
                f32_tensor(vec![1 << 62, 1 << 62], 0),
                "overflow the element count",
            ),
            (
                f32_tensor(vec![2, 3], 23),
                "raw_data holds 23 bytes, but float32 [2,3] needs 24",
            ),
            (f32_tensor(vec![2, 3], 25), "raw_data holds 25 bytes"),
            (
                TensorProto {
                    dims: vec![3],
                    data_type: Some(DataType::Float as i32),
                    float_data: vec![1.0, 2.0],
                    ..Default::default()
                },
                "float_data holds 2 values, but float32 [3] needs 3",
            ),
            (
                TensorProto {
                    dims: vec![1],
                    data_type: Some(DataType::String as i32),
                    raw_data: Some(vec![b'a'].into()),
                    ..Default::default()
                },
                "a string tensor cannot use raw_data",
            ),
        ];
        for (t, want) in cases {
            let e = check(&t).expect_err(want);
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(want), "{e} lacks {want:?}");
        }
    }
}
