//! The shared harness: every rule, alone, on every fixture and every shared model. For each it
//! checks the invariants every rule owes:
//!
//! - a second run finds nothing (the rule reached its fixed point);
//! - the result round-trips decode → IR → encode byte for byte;
//! - tract agrees with the original within the rule's documented tolerance (bit-equal for the
//!   exact rules at 0), on every model except the ones [`NOT_RUNNABLE`] lists;
//! - the encoded model did not grow, and its graph outputs keep their names;
//! - the top-level node count did not grow, except for the rules in [`ADDS_NODES`].
//!
//! It also holds the tests of the one output comparison all tests use (`common/compare.rs`).

mod common;

use std::path::{Path, PathBuf};

use common::compare;

use onnx_slim::ir::Model;
use onnx_slim::onnx::{decode_bytes, decode_file, encode_model, proto::ModelProto};
use onnx_slim::rewrite::{registry, run, Config, DriverOptions, Rule};
use onnx_slim::verify::{self, InputSet, Outputs};

/// Rules whose docs say they trade a node for bytes: `share-transposed` adds a `Transpose`,
/// `lowrank` replaces one product by two, `quantize` adds a `DequantizeLinear` per weight,
/// `cluster` a `Cast` and a `Gather` (and, packed, a `Gather` and a `Reshape`) per weight.
const ADDS_NODES: &[&str] = &["share-transposed", "lowrank", "quantize", "cluster"];

/// At most this many input sets per model, to keep the harness quick.
const MAX_SETS: usize = 2;

/// Models (by file name) whose numerics are not compared, and why; every other fixture and
/// shared model must run in tract. Printed as a skip; a listed model that runs fails the test.
const NOT_RUNNABLE: &[(&str, &str)] = &[(
    "all_attr_types.onnx",
    "exercises the encoder: custom-domain ops (com.example) no runtime has",
)];

fn input_sets(model: &ModelProto, dir: &Path) -> Result<Vec<InputSet>, String> {
    let has_sets = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("test_data_set_")
        });
    let mut sets = if has_sets {
        verify::inputs::load_test_data_sets(dir, model).map_err(|e| e.to_string())?
    } else {
        vec![verify::inputs::random_inputs(model, &[], 0).map_err(|e| e.to_string())?]
    };
    sets.truncate(MAX_SETS);
    Ok(sets)
}

fn output_names(m: &ModelProto) -> Vec<String> {
    m.graph
        .as_ref()
        .map(|g| g.output.iter().filter_map(|o| o.name.clone()).collect())
        .unwrap_or_default()
}

/// Runs `rule` on the model at `path` and records what went wrong, if anything; returns whether
/// outputs were compared (the rule rewrote and the model runs).
fn check(
    rule: &dyn Rule,
    path: &Path,
    runs: Option<&(Vec<InputSet>, Vec<Outputs>)>,
    out: &mut Vec<String>,
) -> bool {
    let name = rule.meta().name;
    let label = format!("{name} on {}", path.display());
    let original = match decode_file(path) {
        Ok(l) => l.model,
        Err(e) => {
            out.push(format!("{label}: cannot load: {e}"));
            return false;
        }
    };
    let config = Config::default();
    let mut model =
        Model::from_proto(original.clone()).expect("fixtures and shared models are valid");
    let first = match run(&mut model, &[rule], &config, &DriverOptions::default()) {
        Ok(r) => r,
        Err(e) => {
            out.push(format!("{label}: the rule failed: {e}"));
            return false;
        }
    };
    match run(&mut model, &[rule], &config, &DriverOptions::default()) {
        Ok(r) if r.patches() == 0 => {}
        Ok(r) => out.push(format!(
            "{label}: a second run applied {} more patches",
            r.patches()
        )),
        Err(e) => out.push(format!("{label}: the second run failed: {e}")),
    }
    let rewritten = model.to_proto();
    let bytes = encode_model(&rewritten);
    let again = decode_bytes(bytes.clone().into(), path)
        .and_then(Model::from_proto)
        .map(|m| encode_model(&m.to_proto()));
    match again {
        Ok(b) if b == bytes => {}
        Ok(_) => out.push(format!(
            "{label}: the result does not round-trip byte for byte"
        )),
        Err(e) => out.push(format!("{label}: the result does not decode: {e}")),
    }
    let before = encode_model(&original).len();
    if bytes.len() > before {
        out.push(format!(
            "{label}: the model grew from {before} to {} bytes",
            bytes.len()
        ));
    }
    let count = |m: &ModelProto| m.graph.as_ref().map_or(0, |g| g.node.len());
    if !ADDS_NODES.contains(&name) && count(&rewritten) > count(&original) {
        out.push(format!(
            "{label}: the node count grew from {} to {}",
            count(&original),
            count(&rewritten)
        ));
    }
    if output_names(&original) != output_names(&rewritten) {
        out.push(format!("{label}: graph output names changed"));
    }
    if first.patches() == 0 {
        return false;
    }
    let Some((sets, a)) = runs else { return false };
    // The rule's own tolerance: 0 for the exact rules, every element equal.
    let tol = rule.tolerance(&config);
    match verify::run_many(&rewritten, sets, "rewritten") {
        Ok(b) => {
            for ((set, a), b) in sets.iter().zip(a.iter()).zip(&b) {
                if let Err(e) = compare::outputs_match(a, b, tol) {
                    out.push(format!("{label} ({}): {e}", set.label));
                }
            }
        }
        Err(e) => out.push(format!("{label}: verification could not run: {e}")),
    }
    true
}

/// What [`every_rule_on`] found: failures, models whose numerics were compared, and rule ×
/// model pairs whose outputs were compared.
struct Checked {
    failures: Vec<String>,
    runnable: usize,
    compared: usize,
}

fn every_rule_on(models: &[PathBuf]) -> Checked {
    let mut c = Checked {
        failures: Vec::new(),
        runnable: 0,
        compared: 0,
    };
    for path in models {
        let file = common::case_name(path);
        let listed = NOT_RUNNABLE.iter().find(|(n, _)| *n == file);
        let sets = decode_file(path).map_err(|e| e.to_string()).and_then(|l| {
            let sets = input_sets(&l.model, path.parent().expect("a folder"))?;
            let outs = verify::run_many(&l.model, &sets, "original").map_err(|e| e.to_string())?;
            Ok((sets, outs))
        });
        let sets = match (sets, listed) {
            (Ok(s), None) => {
                c.runnable += 1;
                Some(s)
            }
            (Ok(_), Some(_)) => {
                c.failures.push(format!(
                    "{file} runs in tract now: remove it from NOT_RUNNABLE"
                ));
                None
            }
            (Err(e), None) => {
                c.failures
                    .push(format!("{}: tract cannot run it: {e}", path.display()));
                None
            }
            (Err(_), Some((_, why))) => {
                common::skip_loudly(&format!(
                    "SKIPPED: numerics of every rule on {file}: {why} (everything else checked)"
                ));
                None
            }
        };
        for rule in registry::all() {
            if check(rule, path, sets.as_ref(), &mut c.failures) {
                c.compared += 1;
            }
        }
    }
    c
}

#[test]
fn every_rule_keeps_the_invariants_on_every_fixture() {
    let fixtures = common::fixtures();
    let c = every_rule_on(&fixtures);
    assert!(c.failures.is_empty(), "{}", c.failures.join("\n"));
    assert_eq!(
        c.runnable,
        fixtures.len() - NOT_RUNNABLE.len(),
        "fixtures run"
    );
    // Every rule fires on some fixture (below), so at least one comparison per rule; measured:
    // the rule × fixture pairs where the rule rewrote and the fixture runs.
    assert!(c.compared >= registry::all().len());
    // 35 = 23 + sparsify (default 0.5) on the 7 fixtures with a float32 layer kernel + cluster
    // on the 5 whose weights are large enough for codes and a codebook to be smaller.
    assert_eq!(c.compared, 35, "rule × fixture outputs compared");
}

#[test]
fn every_rule_keeps_the_invariants_on_every_shared_model() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let paths: Vec<PathBuf> = models.iter().map(|m| m.join("model.onnx")).collect();
    let c = every_rule_on(&paths);
    assert!(c.failures.is_empty(), "{}", c.failures.join("\n"));
    assert_eq!(c.runnable, 6, "shared models run in tract");
    // 51 = 40 + sparsify on the 5 models whose kernels are initializers (not ppocr's Constants)
    // + cluster on all 6.
    assert_eq!(
        c.compared, 51,
        "rule × shared-model outputs compared (measured)"
    );
}

#[test]
fn every_rule_fires_on_some_fixture() {
    let fixtures = common::fixtures();
    let mut silent = Vec::new();
    for rule in registry::all() {
        let fired = fixtures.iter().any(|p| {
            let l = decode_file(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let mut m = Model::from_proto(l.model).expect("fixtures are valid");
            run(
                &mut m,
                &[rule],
                &Config::default(),
                &DriverOptions::default(),
            )
            .map(|r| r.patches() > 0)
            .unwrap_or(false)
        });
        if !fired {
            silent.push(rule.meta().name);
        }
    }
    assert!(silent.is_empty(), "rules no fixture exercises: {silent:?}");
}

// ---------------------------------------------------------------------------------------------
// The comparison every test uses (tests/common/compare.rs) fails where it must.

mod comparison {
    use super::common::compare::{outputs_match, outputs_within_abs, positional};
    use onnx_slim::verify::Outputs;
    use tract_onnx::prelude::Tensor;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_shape(shape, v).expect("shape fits")
    }

    fn one(t: Tensor) -> Outputs {
        positional([t])
    }

    /// Fails at tolerance 0, at a loose tolerance, and under the absolute criterion.
    fn fails(a: &Outputs, b: &Outputs) {
        for tol in [0.0, 1.0] {
            assert!(outputs_match(a, b, tol).is_err(), "passed at {tol}");
        }
        assert!(
            outputs_within_abs(a, b, |_| 1.0).is_err(),
            "passed within 1"
        );
    }

    #[test]
    fn equal_outputs_pass_including_nan_at_the_same_place() {
        let a = one(t(&[3], &[f32::NAN, f32::INFINITY, -1.5]));
        assert_eq!(outputs_match(&a, &a.clone(), 0.0).unwrap().len(), 1);
        assert!(outputs_within_abs(&a, &a.clone(), |_| 0.0).is_ok());
        let near = one(t(&[3], &[f32::NAN, f32::INFINITY, -1.5 + 1e-6]));
        assert!(outputs_match(&a, &near, 1e-5).is_ok());
        assert!(
            outputs_match(&a, &near, 0.0).is_err(),
            "tolerance 0 is exact"
        );
    }

    #[test]
    fn tolerance_0_is_bit_equal_but_any_nan_equals_any_nan() {
        let zero = one(t(&[2], &[0.0, 1.0]));
        let minus_zero = one(t(&[2], &[-0.0, 1.0]));
        assert!(outputs_match(&zero, &minus_zero, 1e-6).is_ok());
        let e = outputs_match(&zero, &minus_zero, 0.0).unwrap_err();
        assert!(
            e.contains("not bit-equal") && e.contains("element 0"),
            "{e}"
        );
        let quiet = one(t(&[1], &[f32::NAN]));
        let payload = one(t(&[1], &[f32::from_bits(f32::NAN.to_bits() | 1)]));
        assert!(outputs_match(&quiet, &payload, 0.0).is_ok());
    }

    #[test]
    fn all_nan_against_finite_fails_both_ways() {
        let nan = one(t(&[2, 2], &[f32::NAN; 4]));
        let finite = one(t(&[2, 2], &[0.0, 1.0, 2.0, 3.0]));
        fails(&nan, &finite);
        fails(&finite, &nan);
    }

    #[test]
    fn nan_in_one_side_fails() {
        let a = one(t(&[3], &[1.0, 2.0, 3.0]));
        let b = one(t(&[3], &[1.0, f32::NAN, 3.0]));
        fails(&a, &b);
        fails(&b, &a);
    }

    #[test]
    fn an_infinity_against_anything_else_fails() {
        let a = one(t(&[2], &[1.0, f32::INFINITY]));
        for other in [f32::NEG_INFINITY, f32::MAX, 0.0, f32::NAN] {
            let b = one(t(&[2], &[1.0, other]));
            fails(&a, &b);
            fails(&b, &a);
        }
    }

    #[test]
    fn a_shape_mismatch_fails_even_with_the_same_values() {
        let a = one(t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]));
        let b = one(t(&[4], &[1.0, 2.0, 3.0, 4.0]));
        fails(&a, &b);
    }

    #[test]
    fn a_dtype_mismatch_fails_even_with_the_same_values() {
        let a = one(t(&[2], &[1.0, 2.0]));
        let b = one(Tensor::from_shape(&[2], &[1.0f64, 2.0]).unwrap());
        fails(&a, &b);
        let i = one(Tensor::from_shape(&[2], &[1i64, 2]).unwrap());
        fails(&a, &i);
    }

    #[test]
    fn a_different_output_count_fails() {
        let x = t(&[2], &[1.0, 2.0]);
        let one_out = positional([x.clone()]);
        let two_out = positional([x.clone(), x.clone()]);
        fails(&one_out, &two_out);
        fails(&two_out, &one_out);
        let none: Outputs = vec![];
        fails(&none, &none);
        fails(&one_out, &none);
    }

    #[test]
    fn integers_must_be_equal_whatever_the_tolerance() {
        let a = one(Tensor::from_shape(&[2], &[1i64, 2]).unwrap());
        let b = one(Tensor::from_shape(&[2], &[1i64, 3]).unwrap());
        fails(&a, &b);
    }
}
