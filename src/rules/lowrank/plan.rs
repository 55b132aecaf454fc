//! Planning of `lowrank`: the factors of each weight (cached, since `find` runs after every
//! patch) and, with `--calibration`, the Gram matrices of the layers' real inputs (captured once
//! per model and layer).

use super::layer::*;
use super::*;

// Planning (cached: `find` runs after every patch)

/// A factorisation ready to apply, or the reason there is none.
pub(super) type Plan = std::result::Result<Arc<Factors>, String>;

/// A fast 64-bit hash (FxHash-style) of a byte slice.
pub(crate) fn fx(bytes: &[u8], mut h: u64) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    for b in chunks.remainder() {
        h = (h.rotate_left(5) ^ *b as u64).wrapping_mul(K);
    }
    h
}

pub(crate) fn weight_hash(t: &TensorProto) -> u64 {
    let mut h = fx(&t.data_type.unwrap_or(0).to_le_bytes(), 0);
    for d in &t.dims {
        h = fx(&d.to_le_bytes(), h);
    }
    match &t.raw_data {
        Some(r) if !r.is_empty() => fx(r, h),
        _ => {
            let mut raw = Vec::with_capacity(t.float_data.len() * 4);
            for f in &t.float_data {
                raw.extend_from_slice(&f.to_le_bytes());
            }
            fx(&raw, h)
        }
    }
}

pub(super) static PLANS: Mutex<BTreeMap<u64, Plan>> = Mutex::new(BTreeMap::new());
pub(super) static PLAN_BYTES: Mutex<usize> = Mutex::new(0);
/// Cached factors beyond this many bytes are dropped (they are recomputed on demand).
pub(super) const PLAN_CACHE_BYTES: usize = 1 << 30;

/// The weight as the `K × N` matrix being factored (transposed when its output axis comes first).
pub(super) fn weight_matrix(t: &TensorProto, layer: &Layer) -> Result<Array2<f32>> {
    let w = tensor::to_f32(t)?;
    let rows = layer.dims[0].max(0) as usize;
    let cols = w.len() / rows.max(1);
    let w2 = w
        .into_shape_with_order((rows, cols))
        .map_err(|e| Error::Tensor {
            name: t.name.clone().unwrap_or_default(),
            reason: e.to_string(),
        })?;
    Ok(if layer.out_axis == 0 {
        w2.t().as_standard_layout().to_owned()
    } else {
        w2
    })
}

pub(super) fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

/// Plans `layer`: factors (cached by weight content, options and calibration) or why not.
pub(super) fn plan(
    g: &Graph,
    layer: &Layer,
    gram: Option<&CalibGram>,
    cfg: &LowrankConfig,
) -> Plan {
    let t = constant(g, layer.weight).ok_or("weight is not constant")?;
    let mut key = weight_hash(t);
    key = fx(
        format!("{:?}|{:?}|{}", layer.form, cfg, layer.k).as_bytes(),
        key,
    );
    if let Some(cg) = gram {
        key = fx(&cg.key.to_le_bytes(), key);
    }
    if let Some(p) = PLANS.lock().expect("plan cache").get(&key) {
        return p.clone();
    }
    let planned = compute_plan(t, layer, gram, cfg);
    let bytes = planned
        .as_ref()
        .map(|f| 4 * (f.a.len() + f.b.len()))
        .unwrap_or(64);
    let mut total = PLAN_BYTES.lock().expect("plan cache size");
    let mut plans = PLANS.lock().expect("plan cache");
    if *total + bytes > PLAN_CACHE_BYTES {
        plans.clear();
        *total = 0;
    }
    *total += bytes;
    plans.insert(key, planned.clone());
    planned
}

pub(super) fn compute_plan(
    t: &TensorProto,
    layer: &Layer,
    gram: Option<&CalibGram>,
    cfg: &LowrankConfig,
) -> Plan {
    let w = weight_matrix(t, layer).map_err(|e| e.to_string())?;
    let whitener = match gram {
        Some(cg) => match &cg.gram {
            Ok(gm) => Some(Whitener::new(gm, cfg.ridge).map_err(|e| format!("calibration: {e}"))?),
            Err(e) => return Err(calibrate::failed(e)),
        },
        None => None,
    };
    let (mode, tolerance) = cfg.effective(whitener.is_some());
    let req = rank::request(layer.k, layer.n, mode, tolerance, cfg.min_saving);
    let (k, n) = (layer.k, layer.n);
    let params = k * n;
    let why = cfg.describe(whitener.is_some());
    match linalg::low_rank(w.view(), whitener.as_ref(), &req) {
        Outcome::Factored(f) => Ok(Arc::new(f)),
        Outcome::Zero => Err(format!("{}: the weight is all zeros", layer.shape_text())),
        Outcome::TooHigh {
            needed,
            error_at_max,
        } => {
            let err_kind = if whitener.is_some() {
                "calibration output error"
            } else {
                "weight error"
            };
            let max = req.max_rank;
            let at_max = if max == 0 {
                String::new()
            } else {
                format!("; at rank {max} the {err_kind} would be {error_at_max:.4}")
            };
            let fixed_too_high = req.fixed.is_some_and(|f| f >= k.min(n));
            Err(match needed {
                Some(_) if fixed_too_high => format!(
                    "{} (K={k}, N={n}): {why} is not below min(K, N) = {}",
                    layer.shape_text(),
                    k.min(n)
                ),
                Some(r) if r >= k.min(n) => format!(
                    "{} (K={k}, N={n}): {why} needs full rank {r}{at_max}",
                    layer.shape_text()
                ),
                Some(r) => {
                    let saving = 1.0 - (r * (k + n)) as f64 / params as f64;
                    let effect = if saving >= 0.0 {
                        format!("saves {} of {params} parameters", pct(saving))
                    } else {
                        format!("adds {} to {params} parameters", pct(-saving))
                    };
                    format!(
                        "{} (K={k}, N={n}): rank {r} for {why} {effect}, not more than --lowrank-min-saving {}{at_max}",
                        layer.shape_text(),
                        pct(cfg.min_saving),
                    )
                }
                None => format!(
                    "{} (K={k}, N={n}): {why} needs a rank above {max}, the most that saves {}{at_max}",
                    layer.shape_text(),
                    pct(cfg.min_saving),
                ),
            })
        }
    }
}

// Calibration (cached: activations are captured once per model and layer)

/// A layer's Gram matrix `XᵀX` on the calibration data, or why there is none.
#[derive(Debug)]
pub(super) struct CalibGram {
    pub(super) key: u64,
    pub(super) gram: std::result::Result<Gram, String>,
}

pub(super) static GRAMS: Mutex<BTreeMap<u64, Arc<CalibGram>>> = Mutex::new(BTreeMap::new());

pub(super) fn gram_key(g: &Graph, layer: &Layer, config: &Config) -> u64 {
    let t = constant(g, layer.weight).expect("candidate weight");
    let mut h = weight_hash(t);
    let paths: Vec<String> = config
        .calibration
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    h = fx(
        format!(
            "{}|{}|{:?}|{:?}",
            paths.join(";"),
            g.node(layer.node).label(),
            layer.sampling(g),
            layer.form
        )
        .as_bytes(),
        h,
    );
    h
}

/// Gram matrices for `layers` (same order), capturing what is not cached yet in one tract run
/// of the model as it is now (the original, on the first call).
pub(super) fn calibration_grams(
    model: &Model,
    layers: &[Layer],
    config: &Config,
) -> Vec<Arc<CalibGram>> {
    let g = &model.graph;
    let keys: Vec<u64> = layers.iter().map(|l| gram_key(g, l, config)).collect();
    let missing: Vec<usize> = {
        let cache = GRAMS.lock().expect("gram cache");
        (0..layers.len())
            .filter(|i| !cache.contains_key(&keys[*i]))
            .collect()
    };
    if !missing.is_empty() {
        let results = capture_grams(model, layers, &missing, config);
        let mut cache = GRAMS.lock().expect("gram cache");
        for (i, r) in missing.iter().zip(results) {
            cache.insert(
                keys[*i],
                Arc::new(CalibGram {
                    key: keys[*i],
                    gram: r,
                }),
            );
        }
    }
    let cache = GRAMS.lock().expect("gram cache");
    keys.iter().map(|k| cache[k].clone()).collect()
}

pub(super) fn capture_grams(
    model: &Model,
    layers: &[Layer],
    which: &[usize],
    config: &Config,
) -> Vec<std::result::Result<Gram, String>> {
    let g = &model.graph;
    let proto = model.to_proto();
    let mut names: Vec<String> = Vec::new();
    for &i in which {
        let n = g.value_name(layers[i].act).to_string();
        if layers[i].k <= MAX_CALIBRATION_K && !names.contains(&n) {
            names.push(n);
        }
    }
    let captured = calibrate::load_sets(&config.calibration, &proto)
        .and_then(|sets| calibrate::capture(&proto, &names, &sets, config.memory_limit()));
    let captured = match captured {
        Ok(c) => c,
        Err(e) => return which.iter().map(|_| Err(e.to_string())).collect(),
    };
    which
        .iter()
        .map(|&i| {
            let l = &layers[i];
            if l.k > MAX_CALIBRATION_K {
                return Err(format!(
                    "K = {} is wider than {MAX_CALIBRATION_K}, too wide for a Gram matrix",
                    l.k
                ));
            }
            let name = g.value_name(l.act);
            let sampling = l.sampling(g);
            let mut gram = Gram::new(l.k);
            for set in &captured {
                let act = set
                    .get(name)
                    .ok_or_else(|| format!("`{name}` was not captured"))?;
                calibrate::gram(&mut gram, act, &sampling).map_err(|e| e.to_string())?;
            }
            Ok(gram)
        })
        .collect()
}
