//! `--quantize-tolerance`: each weight's own output error, measured once and cached.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use super::find::{weight_name, Candidate};
use super::{scheme, Quantize};
use crate::ir::Model;
use crate::onnx::proto::TensorProto;
use crate::rewrite::{Config, Match, Rule};

/// Seed of the random input set used when no `--calibration` is given.
pub const TOLERANCE_SEED: u64 = 0;

/// A measured output error, or why it could not be measured.
type Measured = std::result::Result<f64, String>;

/// Output errors by [`error_key`]: `find` runs again after every round of patches, and a weight
/// kept in float must not be measured again.
static ERRORS: Mutex<BTreeMap<u64, Measured>> = Mutex::new(BTreeMap::new());

/// Every key measured, in order (to test that nothing is measured twice).
#[cfg(test)]
pub(super) static MEASURED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

pub(super) fn error_text(e: f64) -> String {
    if e == 0.0 {
        "0".into()
    } else if e.is_infinite() {
        "∞ (a NaN, an infinity or a changed shape)".into()
    } else {
        format!("{e:.2e}")
    }
}

fn hash_bytes(h: &mut impl Hasher, t: &TensorProto) {
    t.data_type.hash(h);
    t.dims.hash(h);
    match &t.raw_data {
        Some(r) if !r.is_empty() => r.as_ref().hash(h),
        _ => t.float_data.iter().for_each(|f| f.to_bits().hash(h)),
    }
}

/// What a measured error depends on: the weight (contents and name), how it is quantized, where
/// it is read, the inputs measured on, and the model's opset and interface. Stable across the
/// patches of one run, so that a weight is measured once.
pub(super) fn error_key(model: &Model, config: &Config, c: &Candidate) -> u64 {
    let g = &model.graph;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Some(t) = g.const_tensor(c.weight) {
        hash_bytes(&mut h, t);
    }
    weight_name(g, c.weight).hash(&mut h);
    scheme(&config.quantize, c).hash(&mut h);
    for (reader, slot) in g.consumers(c.weight) {
        (g.node(reader).label(), g.node(reader).op_type(), slot).hash(&mut h);
    }
    config.calibration.hash(&mut h);
    TOLERANCE_SEED.hash(&mut h);
    model.opset("").hash(&mut h);
    for id in g.inputs() {
        g.node(id).label().hash(&mut h);
    }
    for (_, vi) in g.outputs() {
        vi.name.hash(&mut h);
    }
    h.finish()
}

pub(super) fn cached_error(key: u64) -> Option<Measured> {
    ERRORS.lock().ok()?.get(&key).cloned()
}

/// The output error of each planned weight quantized alone, from the cache or measured: the
/// model as it is runs once in tract on the input sets, then, per weight not cached yet, a copy
/// with that weight's own patch (built by [`Quantize::rewrite`]) runs on the same sets, through
/// the verifier's runner; the error is [`crate::verify::relative_l2_error`] against the first
/// run, the largest over the sets.
pub(super) fn output_errors(
    rule: &Quantize,
    model: &Model,
    config: &Config,
    planned: &[(Match, Candidate)],
) -> Vec<Measured> {
    let keys: Vec<u64> = planned
        .iter()
        .map(|(_, c)| error_key(model, config, c))
        .collect();
    let missing: Vec<usize> = (0..planned.len())
        .filter(|i| cached_error(keys[*i]).is_none())
        .collect();
    if !missing.is_empty() {
        #[cfg(test)]
        if let Ok(mut m) = MEASURED.lock() {
            m.extend(missing.iter().map(|i| keys[*i]));
        }
        let measured = measure(rule, model, config, planned, &missing);
        if let Ok(mut cache) = ERRORS.lock() {
            for (i, e) in missing.iter().zip(measured) {
                cache.insert(keys[*i], e);
            }
        }
    }
    keys.iter()
        .map(|k| cached_error(*k).unwrap_or_else(|| Err("the error cache is unavailable".into())))
        .collect()
}

fn measure(
    rule: &Quantize,
    model: &Model,
    config: &Config,
    planned: &[(Match, Candidate)],
    which: &[usize],
) -> Vec<Measured> {
    let proto = model.to_proto();
    let sets = if config.calibration.is_empty() {
        crate::verify::random_inputs(&proto, &[], TOLERANCE_SEED).map(|s| vec![s])
    } else {
        crate::calibrate::load_sets(&config.calibration, &proto)
    };
    let base = sets.and_then(|sets| {
        let out = crate::verify::segment::run_many_within(
            &proto,
            &sets,
            config.memory_limit(),
            "original",
        )?;
        Ok((sets, out))
    });
    let (sets, base) = match base {
        Ok(v) => v,
        Err(e) if config.calibration.is_empty() => {
            return which.iter().map(|_| Err(e.to_string())).collect()
        }
        Err(e) => {
            return which
                .iter()
                .map(|_| Err(crate::calibrate::failed(&e)))
                .collect()
        }
    };
    which
        .iter()
        .map(|&i| {
            let m = &planned[i].0;
            let patch = rule.rewrite(model, m, config).map_err(|e| e.to_string())?;
            let mut copy = model.clone();
            patch.apply(&mut copy.graph).map_err(|e| e.to_string())?;
            let outs = crate::verify::segment::run_many_within(
                &copy.to_proto(),
                &sets,
                config.memory_limit(),
                "quantized",
            )
            .map_err(|e| e.to_string())?;
            Ok(base
                .iter()
                .zip(&outs)
                .map(|(a, b)| crate::verify::relative_l2_error(a, b))
                .fold(0.0, f64::max))
        })
        .collect()
}
