//! The shared harness: every rule, alone, on every fixture and every shared model. For each it
//! checks the invariants every rule owes:
//!
//! - a second run finds nothing (the rule reached its fixed point);
//! - the result round-trips decode → IR → encode byte for byte;
//! - tract agrees with the original within the rule's tolerance (when tract runs the original);
//! - the encoded model did not grow, and its graph outputs keep their names;
//! - the top-level node count did not grow, except for the rules in [`ADDS_NODES`].

mod common;

use std::path::{Path, PathBuf};

use onnx_slim::ir::Model;
use onnx_slim::onnx::{decode_bytes, decode_file, encode_model, proto::ModelProto};
use onnx_slim::rewrite::{registry, run, Config, DriverOptions, Rule};
use onnx_slim::verify::{self, InputSet};

/// Rules whose docs say they trade a node for bytes: `share-transposed` adds a `Transpose`,
/// `lowrank` replaces one product by two.
const ADDS_NODES: &[&str] = &["share-transposed", "lowrank"];

/// At most this many input sets per model, to keep the harness quick.
const MAX_SETS: usize = 2;

fn input_sets(model: &ModelProto, dir: &Path) -> Option<Vec<InputSet>> {
    let has_sets = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("test_data_set_")
        });
    let mut sets = if has_sets {
        verify::inputs::load_test_data_sets(dir, model).ok()?
    } else {
        vec![verify::inputs::random_inputs(model, &[], 0).ok()?]
    };
    sets.truncate(MAX_SETS);
    Some(sets)
}

fn output_names(m: &ModelProto) -> Vec<String> {
    m.graph
        .as_ref()
        .map(|g| g.output.iter().filter_map(|o| o.name.clone()).collect())
        .unwrap_or_default()
}

/// Runs `rule` on the model at `path` and returns what went wrong, if anything.
fn check(rule: &dyn Rule, path: &Path, sets: Option<&[InputSet]>, out: &mut Vec<String>) {
    let name = rule.meta().name;
    let label = format!("{name} on {}", path.display());
    let original = match decode_file(path) {
        Ok(l) => l.model,
        Err(e) => return out.push(format!("{label}: cannot load: {e}")),
    };
    let config = Config::default();
    let mut model =
        Model::from_proto(original.clone()).expect("fixtures and shared models are valid");
    let first = match run(&mut model, &[rule], &config, &DriverOptions::default()) {
        Ok(r) => r,
        Err(e) => return out.push(format!("{label}: the rule failed: {e}")),
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
        return;
    }
    let Some(sets) = sets else { return };
    let tol = rule.tolerance(&config);
    match verify::compare::verify(&original, &rewritten, sets, tol.max(1e-5)) {
        Ok(r) if r.passed => {}
        Ok(r) => out.push(format!("{label}: outputs differ beyond {tol}:\n{r}")),
        Err(e) => out.push(format!("{label}: verification could not run: {e}")),
    }
}

fn every_rule_on(models: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for path in models {
        let original = decode_file(path).map(|l| l.model).ok();
        // Models tract cannot run on their own are still checked for everything else.
        let sets = original.as_ref().and_then(|m| {
            let sets = input_sets(m, path.parent()?)?;
            verify::run_many(m, &sets, "original").ok().map(|_| sets)
        });
        if sets.is_none() {
            eprintln!(
                "note: tract cannot run `{}`; numerics not compared",
                path.display()
            );
        }
        for rule in registry::all() {
            check(rule, path, sets.as_deref(), &mut failures);
        }
    }
    failures
}

#[test]
fn every_rule_keeps_the_invariants_on_every_fixture() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 5, "fixtures missing in {}", dir.display());
    let failures = every_rule_on(&fixtures);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_rule_keeps_the_invariants_on_every_shared_model() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let paths: Vec<PathBuf> = models.iter().map(|m| m.join("model.onnx")).collect();
    let failures = every_rule_on(&paths);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_rule_fires_on_some_fixture() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
    let mut silent = Vec::new();
    for rule in registry::all() {
        let fired = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                let p = e.path();
                if p.extension().is_none_or(|x| x != "onnx") {
                    return false;
                }
                let Ok(l) = decode_file(&p) else { return false };
                let Ok(mut m) = Model::from_proto(l.model) else {
                    return false;
                };
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
