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
    let mut v = common::fixtures();
    v.extend(
        common::shared_models()
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.join("model.onnx")),
    );
    v
}

#[test]
fn encoded_delta_is_the_change_in_encoded_size() {
    let config = Config::default();
    let models = models();
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in &models {
        let model = Model::from_proto(decode_file(path).unwrap().model).unwrap();
        let before = model.graph.to_proto().encoded_len() as i64;
        for rule in registry::all() {
            let Some(m) = rule.find(&model, &config).matches.into_iter().next() else {
                continue;
            };
            let label = format!("{} on {}", rule.meta().name, path.display());
            // A rule may decline a match when it rewrites it (the driver reports a skip): then
            // nothing is measured, which fails the test (none declines on these models today).
            let patch = match rule.rewrite(&model, &m, &config) {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("{label}: the rule declined its first match: {e}"));
                    continue;
                }
            };
            let mut g = model.graph.clone();
            if let Err(e) = patch.apply(&mut g) {
                failures.push(format!("{label}: its first patch does not apply: {e}"));
                continue;
            }
            let estimate = g.encoded_delta(&model.graph);
            let real = g.to_proto().encoded_len() as i64 - before;
            checked += 1;
            if estimate != real {
                failures.push(format!(
                    "{label}: estimated {estimate} bytes, encoded {real}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!(
        "{checked} first patches measured on {} models",
        models.len()
    );
    // Every rule's first match on every model: measured on the fixtures alone, and with the six
    // shared models. A rule that starts or stops matching somewhere changes these.
    // sparsify (default 0.5) adds 7 fixtures and 5 shared models (not ppocr's Constant kernels);
    // cluster 6 fixtures and all 6 shared models.
    let want = if models.len() > common::FIXTURES.len() {
        (common::FIXTURES.len() + 6, 88)
    } else {
        (common::FIXTURES.len(), 37)
    };
    assert_eq!(
        (models.len(), checked),
        want,
        "models, and first patches measured"
    );
}
