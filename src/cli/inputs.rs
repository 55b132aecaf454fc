//! The data a model runs on: the input sets of verification (files, `--input-shape`,
//! `--input NAME=VALUE`, seeded random values), the calibration inputs (loaded up front, so that
//! a folder that yields nothing stops the run before any work) and the layers whose calibration
//! failed (a warning on stderr; the report counts them).

use std::path::{Path, PathBuf};

use super::args::VerifyInputArgs;
use crate::error::{Error, Result};
use crate::onnx::proto::ModelProto;
use crate::rewrite::RunReport;
use crate::verify::{given, inputs, InputSet};

/// Loads every `--calibration` path once: a path that does not exist, or that yields no input
/// set, is an error before any rule runs (the rules load the sets again when they read them).
pub(super) fn check_calibration(paths: &[PathBuf], model: &ModelProto) -> Result<()> {
    for p in paths {
        if !p.exists() {
            return Err(Error::Usage(format!(
                "calibration inputs `{}` do not exist",
                p.display()
            )));
        }
        let sets = crate::verify::load_inputs(p, model)?;
        if sets.is_empty() {
            return Err(Error::Usage(format!(
                "calibration inputs `{}` hold no input set (expected test_data_set_N folders, .npz or .npy files)",
                p.display()
            )));
        }
        for set in &sets {
            check_declared(model, set)?;
        }
    }
    Ok(())
}

/// Refuses a set whose tensor contradicts its input's declared rank or fixed sizes.
fn check_declared(model: &ModelProto, set: &InputSet) -> Result<()> {
    for vi in inputs::model_inputs(model) {
        let name = vi.name.as_deref().unwrap_or("");
        let (Some(t), Some(decl)) = (set.get(name), inputs::declared_shape(vi)) else {
            continue;
        };
        let fits = decl.len() == t.rank()
            && decl
                .iter()
                .zip(t.shape())
                .all(|(d, &s)| !matches!(d, inputs::DeclaredDim::Fixed(f) if *f != s));
        if !fits {
            let dims: Vec<String> = decl
                .iter()
                .map(|d| match d {
                    inputs::DeclaredDim::Fixed(f) => f.to_string(),
                    inputs::DeclaredDim::Symbol(s) => s.clone(),
                    inputs::DeclaredDim::Unknown => "?".into(),
                })
                .collect();
            return Err(Error::Usage(format!(
                "input `{name}` of calibration set `{}` has shape {:?} but the model declares [{}]",
                set.label,
                t.shape(),
                dims.join(", ")
            )));
        }
    }
    Ok(())
}

/// Warns on stderr when the calibration failed for some layers (they were left as they were):
/// how many, and the first reason.
pub(super) fn warn_calibration_failures(report: &RunReport) {
    let failed = report.calibration_failures();
    if let Some(first) = failed.first() {
        let n = failed.len();
        errln!(
            "warning: calibration failed for {n} layer{}, left unchanged (first: {} `{}`: {})",
            if n == 1 { "" } else { "s" },
            first.op,
            first.node,
            first.reason
        );
    }
}

/// The input sets a model runs on (verification, and the `--budget` search's measurements):
/// `--inputs` (whose tensors must have the shapes any `--input-shape` gives), else one set of
/// seeded random values when `--input-shape` or `--input` is given, else the `test_data_set_*`
/// folders beside the model, else seeded random values (see
/// [`crate::verify::inputs::resolve_input_shapes`] for the sizes of symbolic dims). Every
/// `--input NAME=VALUE` then replaces that input in every set.
pub fn input_sets(
    model: &ModelProto,
    model_path: &Path,
    args: &VerifyInputArgs,
) -> Result<Vec<InputSet>> {
    let shapes = inputs::parse_input_shapes(&args.input_shape)?;
    let given = given::parse_given(&args.input_values)?;
    let mut sets = if let Some(p) = &args.inputs {
        if !p.exists() {
            return Err(Error::Usage(format!(
                "inputs `{}` do not exist",
                p.display()
            )));
        }
        let sets = inputs::load_inputs(p, model)?;
        let unchanged: Vec<(String, Vec<usize>)> = shapes
            .iter()
            .filter(|(n, _)| !given.iter().any(|g| g.name == *n))
            .cloned()
            .collect();
        inputs::check_input_shapes(model, &sets, &unchanged)?;
        sets
    } else if let Some(dir) = beside(model_path).filter(|_| shapes.is_empty() && given.is_empty()) {
        inputs::load_test_data_sets(&dir, model)?
    } else {
        // The given values' shapes bind their symbols for the random inputs around them.
        let mut all = shapes.clone();
        for (n, s) in given::given_shapes(model, &given, &shapes)? {
            if !all.iter().any(|(m, _)| *m == n) {
                all.push((n, s));
            }
        }
        vec![inputs::random_inputs(model, &all, args.seed)?]
    };
    given::apply_given(model, &mut sets, &given, &shapes)?;
    Ok(sets)
}

/// The folder beside `model_path` when it holds `test_data_set_*` folders.
fn beside(model_path: &Path) -> Option<PathBuf> {
    let dir = model_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let has_sets = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()).any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("test_data_set_")
                    && e.path().is_dir()
            })
        })
        .unwrap_or(false);
    has_sets.then(|| dir.to_path_buf())
}

/// Checks, before any rewrite, that the model can be given inputs: when they would be random,
/// every dim gets a size (see [`crate::verify::inputs::resolve_input_shapes`]) and every
/// `--input` value fits its input. Loaded inputs are checked when they are loaded.
pub(super) fn check_runnable(
    model: &ModelProto,
    model_path: &Path,
    args: &VerifyInputArgs,
) -> Result<()> {
    let shapes = inputs::parse_input_shapes(&args.input_shape)?;
    let given = given::parse_given(&args.input_values)?;
    let mut all = shapes.clone();
    for (n, s) in given::given_shapes(model, &given, &shapes)? {
        if !all.iter().any(|(m, _)| *m == n) {
            all.push((n, s));
        }
    }
    let random = args.inputs.is_none()
        && (!shapes.is_empty() || !given.is_empty() || beside(model_path).is_none());
    if random {
        inputs::resolve_input_shapes(model, &all)?;
    }
    Ok(())
}

/// Writes `--input-shape` bindings into the declared shapes of `model`'s graph inputs (for
/// `inspect`, whose MACs then count at those sizes): each named input must exist and have the
/// given rank and fixed sizes.
pub(super) fn bind_declared_shapes(model: &mut ModelProto, specs: &[String]) -> Result<()> {
    use crate::onnx::proto::tensor_shape_proto::{dimension, Dimension};
    use crate::onnx::proto::type_proto::Value as TypeValue;
    use crate::onnx::proto::TensorShapeProto;
    let shapes = inputs::parse_input_shapes(specs)?;
    if shapes.is_empty() {
        return Ok(());
    }
    inputs::check_input_shapes(model, &[], &shapes)?;
    let Some(graph) = model.graph.as_mut() else {
        return Ok(());
    };
    for (name, shape) in &shapes {
        let Some(vi) = graph
            .input
            .iter_mut()
            .find(|vi| vi.name.as_deref() == Some(name))
        else {
            continue;
        };
        if let Some(decl) = inputs::declared_shape(vi) {
            if decl.len() != shape.len() {
                return Err(Error::Usage(format!(
                    "`--input-shape {name}=...` has rank {} but input `{name}` has rank {}",
                    shape.len(),
                    decl.len()
                )));
            }
            for (d, &s) in decl.iter().zip(shape) {
                if let inputs::DeclaredDim::Fixed(f) = d {
                    if *f != s {
                        return Err(Error::Usage(format!(
                            "`--input-shape {name}=...` gives {s} where input `{name}` has fixed size {f}"
                        )));
                    }
                }
            }
        }
        if let Some(TypeValue::TensorType(t)) = vi.r#type.as_mut().and_then(|t| t.value.as_mut()) {
            t.shape = Some(TensorShapeProto {
                dim: shape
                    .iter()
                    .map(|&d| Dimension {
                        value: Some(dimension::Value::DimValue(d as i64)),
                        ..Default::default()
                    })
                    .collect(),
            });
        }
    }
    Ok(())
}
