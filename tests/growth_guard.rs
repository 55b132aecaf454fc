//! The driver's growth guard measures what the encoder writes: for the first patch of every rule
//! on every fixture (and shared model, when present), `Graph::encoded_delta` equals the change in
//! the encoded graph's size, byte for byte.

mod common;

use std::path::PathBuf;

use onnx_slim::ir::Model;
use onnx_slim::onnx::decode_file;
use onnx_slim::rewrite::{registry, Config};
use prost::Message;

fn models() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.extend(
        common::shared_models()
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.join("model.onnx")),
    );
    v.sort();
    v
}

#[test]
fn encoded_delta_is_the_change_in_encoded_size() {
    let config = Config::default();
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in models() {
        let model = Model::from_proto(decode_file(&path).unwrap().model).unwrap();
        let before = model.graph.to_proto().encoded_len() as i64;
        for rule in registry::all() {
            let Some(m) = rule.find(&model, &config).matches.into_iter().next() else {
                continue;
            };
            let Ok(patch) = rule.rewrite(&model, &m, &config) else {
                continue;
            };
            let mut g = model.graph.clone();
            if patch.apply(&mut g).is_err() {
                continue;
            }
            let estimate = g.encoded_delta(&model.graph);
            let real = g.to_proto().encoded_len() as i64 - before;
            checked += 1;
            if estimate != real {
                failures.push(format!(
                    "{} on {}: estimated {estimate} bytes, encoded {real}",
                    rule.meta().name,
                    path.display()
                ));
            }
        }
    }
    assert!(checked >= 10, "only {checked} patches checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
