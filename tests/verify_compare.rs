//! Comparison metrics on hand-made tensors, and `TensorProto` → tract conversion per dtype.

use bytes::Bytes;
use onnx_slim::onnx::proto::tensor_proto::{DataLocation, DataType};
use onnx_slim::onnx::proto::TensorProto;
use onnx_slim::verify::{compare_outputs, compare_tensors, tensor_from_proto};
use onnx_slim::Error;
use tract_onnx::prelude::{f16, DatumType, Tensor};

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_shape(shape, v).unwrap()
}

#[test]
fn identical_outputs_pass_with_perfect_metrics() {
    let a = t(&[2, 3], &[0.1, 0.7, 0.2, 3.0, -1.0, 2.0]);
    let c = compare_tensors("logits", &a, &a.clone(), 1e-5);
    assert!(c.passed);
    assert!(c.shape_equal);
    assert_eq!(c.elements, 6);
    assert_eq!(c.max_abs_error, Some(0.0));
    assert_eq!(c.max_rel_error, Some(0.0));
    assert!((c.cosine.unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(c.argmax_agreement, Some(1.0));
    assert_eq!(c.mismatched, 0);
}

#[test]
fn perturbation_beyond_tolerance_fails() {
    let a = t(&[4], &[1.0, 2.0, 3.0, 4.0]);
    let b = t(&[4], &[1.0, 2.0, 3.0 + 3.0 * 2e-3, 4.0]);
    let c = compare_tensors("y", &a, &b, 1e-3);
    assert!(!c.passed);
    assert_eq!(c.mismatched, 1);
    assert!((c.max_abs_error.unwrap() - 6e-3).abs() < 1e-6);
    assert!((c.max_rel_error.unwrap() - 6e-3 / 3.006).abs() < 1e-6);
    // within tolerance: passes, metrics still report the difference
    let b = t(&[4], &[1.0, 2.0, 3.0 + 3.0 * 0.5e-3, 4.0]);
    let c = compare_tensors("y", &a, &b, 1e-3);
    assert!(c.passed);
    assert!(c.max_abs_error.unwrap() > 0.0);
}

#[test]
fn tolerance_is_relative_with_an_absolute_floor() {
    // |a| < 1: the bound is tol itself
    let a = t(&[2], &[1e-6, 0.5]);
    assert!(compare_tensors("y", &a, &t(&[2], &[9e-4, 0.5]), 1e-3).passed);
    assert!(!compare_tensors("y", &a, &t(&[2], &[1.2e-3, 0.5]), 1e-3).passed);
    // |a| = 1000: the bound is tol·1000 = 1
    let a = t(&[1], &[1000.0]);
    assert!(compare_tensors("y", &a, &t(&[1], &[1000.9]), 1e-3).passed);
    assert!(!compare_tensors("y", &a, &t(&[1], &[1001.5]), 1e-3).passed);
}

#[test]
fn nan_in_both_is_equal_nan_in_one_is_not() {
    let a = t(&[3], &[f32::NAN, 1.0, f32::INFINITY]);
    let c = compare_tensors("y", &a, &t(&[3], &[f32::NAN, 1.0, f32::INFINITY]), 1e-6);
    assert!(c.passed, "{c}");
    assert_eq!(c.max_abs_error, Some(0.0));
    let c = compare_tensors("y", &a, &t(&[3], &[0.0, 1.0, f32::INFINITY]), 1e-6);
    assert!(!c.passed);
    assert_eq!(c.mismatched, 1);
    assert_eq!(c.max_abs_error, Some(f64::INFINITY));
    let c = compare_tensors("y", &a, &t(&[3], &[f32::NAN, 1.0, f32::NEG_INFINITY]), 1e-6);
    assert!(!c.passed);
}

#[test]
fn argmax_agreement_along_the_last_axis() {
    let a = t(&[4, 3], &[1., 5., 2., 9., 0., 0., 0., 0., 7., 3., 4., 1.]);
    // rows 0 and 2 keep their argmax, rows 1 and 3 change it
    let b = t(&[4, 3], &[1., 5., 2., 0., 9., 0., 0., 0., 7., 3., 1., 4.]);
    let c = compare_tensors("y", &a, &b, 1e-3);
    assert!(!c.passed);
    assert_eq!(c.argmax_agreement, Some(0.5));
    // a single element, or a last axis of 1: n/a
    let s = t(&[1], &[0.5]);
    assert_eq!(compare_tensors("y", &s, &s, 1e-3).argmax_agreement, None);
    let col = t(&[3, 1], &[0.5, 0.2, 0.1]);
    assert_eq!(
        compare_tensors("y", &col, &col, 1e-3).argmax_agreement,
        None
    );
}

#[test]
fn cosine_similarity() {
    let a = t(&[2], &[1.0, 0.0]);
    let b = t(&[2], &[0.0, 1.0]);
    assert!(compare_tensors("y", &a, &b, 1e-3).cosine.unwrap().abs() < 1e-12);
    let b = t(&[2], &[-1.0, 0.0]);
    assert!((compare_tensors("y", &a, &b, 1e-3).cosine.unwrap() + 1.0).abs() < 1e-12);
    let z = t(&[2], &[0.0, 0.0]);
    assert_eq!(compare_tensors("y", &z, &z, 1e-3).cosine, Some(1.0));
}

#[test]
fn integers_bools_and_strings_must_be_exact() {
    let a = Tensor::from_shape(&[3], &[1i64, 2, 3]).unwrap();
    let b = Tensor::from_shape(&[3], &[1i64, 2, 4]).unwrap();
    assert!(compare_tensors("ids", &a, &a.clone(), 0.5).passed);
    let c = compare_tensors("ids", &a, &b, 0.5);
    assert!(
        !c.passed,
        "an integer off by one fails even at tolerance 0.5"
    );
    assert_eq!(c.max_abs_error, Some(1.0));
    let a = Tensor::from_shape(&[2], &[true, false]).unwrap();
    let b = Tensor::from_shape(&[2], &[true, true]).unwrap();
    assert!(compare_tensors("m", &a, &a.clone(), 0.0).passed);
    assert!(!compare_tensors("m", &a, &b, 1.0).passed);
    let a: Tensor = tract_onnx::prelude::tract_ndarray::arr1(&["a".to_string(), "b".to_string()])
        .into_dyn()
        .into();
    let b: Tensor = tract_onnx::prelude::tract_ndarray::arr1(&["a".to_string(), "c".to_string()])
        .into_dyn()
        .into();
    assert!(compare_tensors("s", &a, &a.clone(), 0.0).passed);
    let c = compare_tensors("s", &a, &b, 0.0);
    assert!(!c.passed);
    assert_eq!(c.mismatched, 1);
}

#[test]
fn shape_and_dtype_differences_fail() {
    let a = t(&[1, 4], &[1.0, 2.0, 3.0, 4.0]);
    let b = t(&[4], &[1.0, 2.0, 3.0, 4.0]);
    let c = compare_tensors("y", &a, &b, 1e-3);
    assert!(!c.passed && !c.shape_equal);
    assert!(c.to_string().contains("[1, 4]/[4]"), "{c}");
    let h = a.cast_to::<f16>().unwrap().into_owned();
    let c = compare_tensors("y", &a, &h, 1e-3);
    assert!(!c.passed);
    assert!(c.note.as_deref().unwrap().contains("element types differ"));
}

#[test]
fn outputs_match_by_name_then_by_position() {
    let x = t(&[1], &[1.0]);
    let y = t(&[1], &[2.0]);
    let a = vec![("a".to_string(), x.clone()), ("b".to_string(), y.clone())];
    let swapped = vec![("b".to_string(), y.clone()), ("a".to_string(), x.clone())];
    let cs = compare_outputs(&a, &swapped, 1e-6);
    assert!(cs.iter().all(|c| c.passed));
    let renamed = vec![("p".to_string(), x.clone()), ("q".to_string(), y.clone())];
    let cs = compare_outputs(&a, &renamed, 1e-6);
    assert_eq!(cs[0].output, "a/p");
    assert!(cs.iter().all(|c| c.passed));
    let fewer = vec![("a".to_string(), x)];
    let cs = compare_outputs(&a, &fewer, 1e-6);
    assert_eq!(cs.len(), 2);
    assert!(!cs[1].passed);
}

#[test]
fn comparison_serializes_and_displays_one_row() {
    let a = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = t(&[2, 2], &[1.0, 2.0, 3.0, 4.5]);
    let c = compare_tensors("out", &a, &b, 1e-3);
    let row = c.to_string();
    assert!(!row.contains('\n'));
    assert!(row.contains("out") && row.contains("FAIL"), "{row}");
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["output"], "out");
    assert_eq!(json["passed"], false);
    assert_eq!(json["mismatched"], 1);
}

fn proto(dt: DataType, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: Some("t".into()),
        data_type: Some(dt as i32),
        dims: dims.to_vec(),
        ..Default::default()
    }
}

fn raw(mut p: TensorProto, bytes: Vec<u8>) -> TensorProto {
    p.raw_data = Some(Bytes::from(bytes));
    p
}

#[test]
fn tensor_proto_conversion_per_dtype() {
    // float32, raw
    let p = raw(
        proto(DataType::Float, &[2]),
        [0.25f32.to_le_bytes(), 8f32.to_le_bytes()].concat(),
    );
    assert_eq!(
        tensor_from_proto(&p).unwrap(),
        Tensor::from_shape(&[2], &[0.25f32, 8.0]).unwrap()
    );
    // float64, typed
    let mut p = proto(DataType::Double, &[1, 2]);
    p.double_data = vec![1.5, -2.5];
    assert_eq!(
        tensor_from_proto(&p).unwrap(),
        Tensor::from_shape(&[1, 2], &[1.5f64, -2.5]).unwrap()
    );
    // int64, raw and typed
    let p = raw(proto(DataType::Int64, &[]), 16000i64.to_le_bytes().to_vec());
    assert_eq!(tensor_from_proto(&p).unwrap(), Tensor::from(16000i64));
    let mut p = proto(DataType::Int64, &[3]);
    p.int64_data = vec![-1, 0, 1];
    assert_eq!(
        tensor_from_proto(&p).unwrap(),
        Tensor::from_shape(&[3], &[-1i64, 0, 1]).unwrap()
    );
    // int32, uint8, int8, uint16, int16 in int32_data
    let mut p = proto(DataType::Int32, &[2]);
    p.int32_data = vec![7, -7];
    assert_eq!(tensor_from_proto(&p).unwrap().datum_type(), DatumType::I32);
    let mut p = proto(DataType::Uint8, &[2]);
    p.int32_data = vec![0, 255];
    assert_eq!(
        tensor_from_proto(&p).unwrap(),
        Tensor::from_shape(&[2], &[0u8, 255]).unwrap()
    );
    let mut p = proto(DataType::Int8, &[1]);
    p.int32_data = vec![-128];
    assert_eq!(
        tensor_from_proto(&p).unwrap(),
        Tensor::from_shape(&[1], &[-128i8]).unwrap()
    );
    let p = raw(
        proto(DataType::Uint16, &[1]),
        60000u16.to_le_bytes().to_vec(),
    );
    assert_eq!(
        tensor_from_proto(&p).unwrap(),
        Tensor::from_shape(&[1], &[60000u16]).unwrap()
    );
    let mut p = proto(DataType::Int16, &[1]);
    p.int32_data = vec![-300];
    assert_eq!(
        tensor_from_proto(&p).unwrap(),
        Tensor::from_shape(&[1], &[-300i16]).unwrap()
    );
    // uint32 and uint64 in uint64_data
    let mut p = proto(DataType::Uint64, &[1]);
    p.uint64_data = vec![u64::MAX];
    assert_eq!(
        tensor_from_proto(&p).unwrap(),
        Tensor::from_shape(&[1], &[u64::MAX]).unwrap()
    );
    let mut p = proto(DataType::Uint32, &[1]);
    p.uint64_data = vec![4_000_000_000];
    assert_eq!(
        tensor_from_proto(&p).unwrap(),
        Tensor::from_shape(&[1], &[4_000_000_000u32]).unwrap()
    );
    // bool, raw bytes
    let p = raw(proto(DataType::Bool, &[3]), vec![1, 0, 1]);
    assert_eq!(
        tensor_from_proto(&p).unwrap(),
        Tensor::from_shape(&[3], &[true, false, true]).unwrap()
    );
    // float16, raw and in int32_data
    let h = [f16::from_f32(0.5), f16::from_f32(-2.0)];
    let p = raw(
        proto(DataType::Float16, &[2]),
        h.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
    );
    assert_eq!(
        tensor_from_proto(&p).unwrap(),
        Tensor::from_shape(&[2], &h).unwrap()
    );
    let mut p = proto(DataType::Float16, &[2]);
    p.int32_data = h.iter().map(|x| x.to_bits() as i32).collect();
    assert_eq!(
        tensor_from_proto(&p).unwrap(),
        Tensor::from_shape(&[2], &h).unwrap()
    );
    // string
    let mut p = proto(DataType::String, &[2]);
    p.string_data = vec![Bytes::from_static(b"yes"), Bytes::from_static(b"no")];
    let s = tensor_from_proto(&p).unwrap();
    assert_eq!(s.datum_type(), DatumType::String);
    assert_eq!(
        s.to_plain_array_view::<String>()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["yes".to_string(), "no".to_string()]
    );
    // empty tensor
    let p = proto(DataType::Float, &[0, 3]);
    assert_eq!(tensor_from_proto(&p).unwrap().shape(), &[0, 3]);
}

#[test]
fn tensor_proto_conversion_errors_name_the_problem() {
    for (dt, name) in [
        (DataType::Bfloat16, "bfloat16"),
        (DataType::Float8e4m3fn, "float8e4m3fn"),
        (DataType::Int4, "int4"),
        (DataType::Complex64, "complex64"),
    ] {
        let e = tensor_from_proto(&proto(dt, &[1])).unwrap_err();
        assert!(matches!(e, Error::Tensor { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains(name) && msg.contains("not supported by tract"),
            "{msg}"
        );
    }
    let e = tensor_from_proto(&raw(proto(DataType::Float, &[3]), vec![0; 8])).unwrap_err();
    assert!(e.to_string().contains("needs 12"), "{e}");
    let mut p = proto(DataType::Int64, &[2, 2]);
    p.int64_data = vec![1, 2, 3];
    assert!(tensor_from_proto(&p).is_err());
    let mut p = proto(DataType::Float, &[1]);
    p.data_location = Some(DataLocation::External as i32);
    assert!(tensor_from_proto(&p)
        .unwrap_err()
        .to_string()
        .contains("externally"));
    assert!(tensor_from_proto(&proto(DataType::Float, &[-1])).is_err());
    assert!(tensor_from_proto(&proto(DataType::Float, &[1 << 40, 1 << 40])).is_err());
    let mut p = proto(DataType::Float, &[1]);
    p.data_type = Some(999);
    assert!(tensor_from_proto(&p).is_err());
}
