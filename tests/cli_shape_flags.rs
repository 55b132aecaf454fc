//! `--input-shapes NAME:DIMS` (written into the model, a convenience) against `--input-shape
//! NAME=DIMS` (the shape verification runs at, the model unchanged), through the binary: what
//! each does to the written model and to the inputs verification reports, a contradiction
//! between them refused naming both, and each flag given the other's syntax pointing at the
//! other.

mod common;

use std::path::Path;

use common::run::{dir_with, ok, refused};
use onnx_slim::onnx::decode_file;
use onnx_slim::onnx::proto::{tensor_shape_proto::dimension::Value as DimValue, type_proto};

/// The declared dims of graph input 0 of the model at `path`: a size, or `None` for a symbol.
fn input_dims(path: &Path) -> Vec<Option<i64>> {
    let m = decode_file(path).expect("decodes").model;
    let vi = &m.graph.as_ref().expect("graph").input[0];
    let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        panic!("not a tensor: {vi:?}")
    };
    t.shape
        .as_ref()
        .expect("shape")
        .dim
        .iter()
        .map(|d| match d.value {
            Some(DimValue::DimValue(v)) => Some(v),
            _ => None,
        })
        .collect()
}

/// The `inputs...:` line of the verification report.
fn inputs_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.starts_with("inputs"))
        .unwrap_or_else(|| panic!("no inputs line:\n{stdout}"))
}

#[test]
fn input_shapes_writes_the_model_and_verifies_at_it_while_input_shape_only_verifies() {
    // mlp.onnx declares x: [N, 16].
    let d = dir_with(&["mlp.onnx"]);
    assert_eq!(input_dims(&d.path().join("mlp.onnx")), [None, Some(16)]);
    let r = ok(
        d.path(),
        &["mlp.onnx", "fixed.onnx", "--input-shapes", "x:4,16"],
    );
    assert_eq!(
        input_dims(&d.path().join("fixed.onnx")),
        [Some(4), Some(16)]
    );
    assert!(inputs_line(&r.stdout).contains("x [4, 16]"), "{r:?}");

    let r = ok(
        d.path(),
        &["mlp.onnx", "bound.onnx", "--input-shape", "x=3,16"],
    );
    assert_eq!(input_dims(&d.path().join("bound.onnx")), [None, Some(16)]);
    assert!(inputs_line(&r.stdout).contains("x [3, 16]"), "{r:?}");

    // Both at the same shape: redundant, accepted.
    let r = ok(
        d.path(),
        &[
            "mlp.onnx",
            "both.onnx",
            "--input-shapes",
            "x:4,16",
            "--input-shape",
            "x=4,16",
        ],
    );
    assert_eq!(input_dims(&d.path().join("both.onnx")), [Some(4), Some(16)]);
    assert!(inputs_line(&r.stdout).contains("x [4, 16]"), "{r:?}");
}

#[test]
fn input_shape_contradicting_input_shapes_is_refused_naming_both() {
    let d = dir_with(&["mlp.onnx"]);
    for (fixed, bound) in [("x:4,16", "x=2,16"), ("x:4,16", "x=4,16,1")] {
        let e = refused(
            d.path(),
            &[
                "mlp.onnx",
                "out.onnx",
                "--input-shapes",
                fixed,
                "--input-shape",
                bound,
            ],
        );
        assert!(
            e.contains(&format!("`--input-shape {bound}`"))
                && e.contains(&format!("`--input-shapes {fixed}`"))
                && e.contains("written into the model"),
            "{e}"
        );
        assert!(!d.path().join("out.onnx").exists());
    }
    // --rules none verifies nothing, but the contradiction is still refused.
    let e = refused(
        d.path(),
        &[
            "mlp.onnx",
            "out.onnx",
            "--rules",
            "none",
            "--input-shapes",
            "x:4,16",
            "--input-shape",
            "x=2,16",
        ],
    );
    assert!(e.contains("contradicts"), "{e}");
    assert!(!d.path().join("out.onnx").exists());
}

#[test]
fn each_shape_flag_given_the_other_flags_form_names_the_other() {
    let d = dir_with(&["mlp.onnx"]);
    let e = refused(
        d.path(),
        &["mlp.onnx", "out.onnx", "--input-shapes", "x=4,16"],
    );
    assert!(
        e.contains("expected NAME:DIMS") && e.contains("--input-shape,"),
        "{e}"
    );
    for args in [
        &["mlp.onnx", "out.onnx", "--input-shape", "x:4,16"][..],
        &["verify", "mlp.onnx", "mlp.onnx", "--input-shape", "x:4,16"][..],
        &["inspect", "mlp.onnx", "--input-shape", "x:4,16"][..],
    ] {
        let e = refused(d.path(), args);
        assert!(
            e.contains("expected `name=d1,d2,...`") && e.contains("--input-shapes"),
            "{args:?}: {e}"
        );
    }
    assert!(!d.path().join("out.onnx").exists());
}

#[test]
fn help_says_which_shape_flag_changes_the_model() {
    let d = tempfile::tempdir().unwrap();
    let help = ok(d.path(), &["--help"]).stdout;
    let line = |flag: &str| {
        help.lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} not in --help:\n{help}"))
            .to_string()
    };
    let shapes = line("--input-shapes ");
    assert!(
        shapes.contains("Write input shapes into the model")
            && shapes.contains("--input-shape NAME=DIMS"),
        "{shapes}"
    );
    let shape = line("--input-shape ");
    assert!(
        shape.contains("Verification only") && shape.contains("--input-shapes NAME:DIMS"),
        "{shape}"
    );
}
