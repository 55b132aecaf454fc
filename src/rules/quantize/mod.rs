//! `Q001 quantize`: stores float weights as 8- or 4-bit integers read through `DequantizeLinear`
//! (or, in dynamic mode, `MatMulInteger`).
//!
//! **What:** a constant float32 weight `W` that the op table ([`crate::ops::weights`]) names as a
//! kernel, recurrent weight or table — Conv, ConvTranspose, DeformConv, MatMul, Gemm (`B`),
//! LSTM/GRU/RNN (`W` and `R`), Gather's table — becomes `q = round(W / s) + z` stored as int8
//! (symmetric, `z = 0`, `q ∈ [−127, 127]`) or uint8 (asymmetric, the range widened to include 0
//! so that zero stays exactly zero), and `DequantizeLinear(q, s, z)` feeds every reader of `W`
//! under `W`'s own name. The scale is per output channel (one `s` per slice along the op's
//! output-channel axis, `DequantizeLinear`'s `axis`; below opset 13 see below) or per tensor.
//! Biases stay float.
//!
//! **Why:** a weight's bytes drop to a quarter (plus one scale and zero point per channel), the
//! usual first step before deployment; the file is standard ONNX that onnxruntime, TensorRT and
//! tract load, and runtimes that fuse `DequantizeLinear` into the op run integer kernels.
//!
//! **Example:** `y = MatMul(x, W[512,10])` → `W = DequantizeLinear(W_quantized[512,10]:int8,
//! W_scale[10], W_zero_point[10], axis=1)`, `y = MatMul(x, W)`: 20,480 → 5,120 + 50 bytes.
//!
//! **Exact:** no (lossy): each weight moves by at most `s/2`. A weight already on the grid
//! (`W = s·q` with integer `q` and `max |q| = 127` per channel, `s` a power of two) is
//! reproduced bit for bit. The report gives per weight the scheme, bytes before and after and
//! the relative weight error `‖W − Ŵ‖/‖W‖`.
//!
//! **Left alone, with a reason:** weights that are not float32, that are not constant (already
//! behind a `DequantizeLinear`, or computed), excluded by `--quantize-exclude`, too small to pay
//! for their `DequantizeLinear`, graph outputs, or read inside subgraphs other than as weights
//! (a top-level weight the subgraphs read only as weights is quantized per tensor, see
//! `captured.rs`); QLinear*, *Integer and
//! custom-domain quantized ops. Below opset 10 nothing is quantized. A rewrite that would not
//! make the model smaller is refused by the driver.
//!
//! **`--quantize-tolerance X`** keeps in float any weight whose quantization alone moves the
//! model's outputs by more than `X`, measured as the **relative L2 error** `‖a − b‖₂ / ‖a‖₂`
//! ([`crate::verify::relative_l2_error`]) of the worst output on the worst input set, between the
//! model as `find` sees it and a copy with only that weight's patch (built by `rewrite`), both
//! run in tract through the verifier's runner on the `--calibration` inputs (else one input set
//! seeded with [`TOLERANCE_SEED`]). The model runs once per `find` that meets unmeasured weights,
//! and each weight once; errors are cached by weight contents, name, scheme, readers, inputs
//! and the model's interface, so a weight kept in float is not measured again when the driver
//! calls `find` after patches. The skip gives the measured error, each rewrite line the error its
//! weight contributes. A model tract cannot run keeps every weight in float, with the reason.
//! Example: silero_vad with `--quantize-tolerance 0.01 --calibration …/calibration` keeps
//! `model.encoder.2.reparam_conv.weight` (its error 6.49e-2) and the LSTM's `weight_ih` (2.65e-1)
//! in float and quantizes the other five (6.79e-5 to 4.45e-3), and every output stays at
//! cosine ≥ 0.99 (the README's numbers).
//!
//! **Below opset 13** per-channel `DequantizeLinear` (its `axis`) does not exist, and raising the
//! opset would change the meaning of other ops. Per-channel scales are then spelled in ops every
//! opset from 10 has: `W = Mul(DequantizeLinear(q, 1.0, 0), s)` with `s` shaped `[C, 1, …]` to
//! broadcast along the channel axis (`[C,1,1,1]` for a Conv, `[N]` for a MatMul's `[K,N]`);
//! uint8 subtracts its per-channel zero points first, `Mul(Sub(DequantizeLinear(q, 1.0, 0), z), s)`.
//! `DequantizeLinear` by 1 and 0 gives the codes exactly, so this computes what the per-channel
//! `DequantizeLinear` would, bit for bit; the report line says which spelling was used.
//!
//! **int4 and blocks** (`--quantize-weights int4`, `--quantize-granularity block:N`): codes in
//! `[−7, 7]` packed two per byte (ONNX `INT4`, low nibble first), zero point omitted, one scale
//! per channel, per tensor, or per block of `N` consecutive elements along the weight's input
//! axis from the op table (`block_size` with `axis` = that axis; the scales have the weight's
//! shape with that axis shrunk to `ceil(D/N)`). int4 scales are float16 (a `Cast` to float
//! follows the `DequantizeLinear`), which halves their cost: scales below float16's smallest
//! normal are raised to it (see `grid.rs`). Both need opset 21: see `opset.rs` for when
//! [`raise_opset`] raises it and why a model may keep every weight in float. tract 0.23 runs
//! neither, so verification runs an equivalent graph (`crate::verify::prepare`), which the report
//! line says. A weight on the int4 block grid (integers in `[−7, 7]` with one `±7` per block,
//! times a power of two) comes back bit for bit.
//!
//! **Dynamic mode** (`--quantize-mode dynamic`): MatMul and Gemm weights as onnxruntime's dynamic
//! quantizer writes them, see `dynamic.rs`; other weights as above.
//!
//! **Static activations** (`--quantize-activations --calibration DIR`, ranges by
//! `--quantize-calibrate minmax|percentile[:P]|entropy`): the weights as above, and every float
//! activation a Conv, MatMul or Gemm reads behind a uint8 `QuantizeLinear` → `DequantizeLinear`
//! pair whose scale and zero point come from the activation's range on the calibration inputs,
//! captured once in tract; see `static_act.rs`.

mod captured;
mod dynamic;
mod find;
mod grid;
mod opset;
mod static_act;
mod tolerance;

use super::util::{const_wire, make_attr_i, make_node};
use crate::error::{Error, Result};
use crate::ir::{tensor, Model, ValueRef};
use crate::onnx::proto::{tensor_proto::DataType, TensorProto};
use crate::rewrite::{
    Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, SearchVariant, Stage,
};

use crate::calibrate::range::RangeMethod;
pub(crate) use find::{find_weights, plan, weight_name, Candidate, Spelling};
#[cfg(test)]
use grid::quantize;
use grid::{int_tensor, quantize_groups};
pub use opset::{opset_blockers, raise_opset};
use opset::{opset_refusal, TRACT_NOTE};
#[cfg(test)]
use tolerance::MEASURED;
pub use tolerance::TOLERANCE_SEED;
use tolerance::{cached_error, error_key, error_text, output_errors};

/// Weights with fewer elements stay float by default: the `DequantizeLinear` node, its scale and
/// zero point cost more than the bytes saved.
pub const DEFAULT_MIN_ELEMENTS: u64 = 256;
/// `--quantize-granularity auto`: weights with fewer elements per output channel go per tensor.
pub const AUTO_MIN_PER_CHANNEL: u64 = 32;
/// The opset of `DequantizeLinear` with int4 inputs and `block_size`.
pub const OPSET_INT4: i64 = 21;
/// Default verification tolerance, a sanity bound (see [`Quantize::tolerance`]).
pub const VERIFY_TOLERANCE: f32 = 2.0;

/// The integer type weights are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightType {
    /// Symmetric int8, zero point 0, values in `[−127, 127]`.
    #[default]
    Int8,
    /// Asymmetric uint8: `[min, max]` (widened to include 0) maps onto `[0, 255]`.
    Uint8,
    /// Symmetric int4 (ONNX `INT4`, data type 22), zero point 0 (omitted), values in `[−7, 7]`,
    /// stored two per byte, low nibble first. Needs opset 21 (see [`raise_opset`]).
    Int4,
}

impl WeightType {
    /// The flag value: `int8`, `uint8` or `int4`.
    pub fn name(self) -> &'static str {
        match self {
            WeightType::Int8 => "int8",
            WeightType::Uint8 => "uint8",
            WeightType::Int4 => "int4",
        }
    }
}

/// Whether one scale serves the whole tensor or each output channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// One scale and zero point per output channel.
    #[default]
    Channel,
    /// One scale and zero point for the tensor.
    Tensor,
    /// Per channel, except weights with fewer than [`AUTO_MIN_PER_CHANNEL`] elements per
    /// channel (depthwise and small kernels), which go per tensor: their channel scales would
    /// cost more than an eighth of the int8 codes. `--quantize-granularity auto`.
    Auto,
    /// One scale (and zero point) per block of this many consecutive elements along the
    /// weight's input (reduction) axis from the op table: `DequantizeLinear`'s `block_size`,
    /// which needs opset 21 (see [`raise_opset`]). `--quantize-granularity block:N`, `N ≥ 1`.
    Block(usize),
}

/// Options of the `quantize` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeConfig {
    /// Storage type.
    pub weights: WeightType,
    /// Per channel or per tensor.
    pub granularity: Granularity,
    /// Node or weight names left in float.
    pub exclude: Vec<String>,
    /// Weights with fewer elements stay float.
    pub min_elements: u64,
    /// `--quantize-tolerance`: keep in float any weight whose quantization alone moves the
    /// outputs by more than this relative L2 error (see the module docs).
    pub tolerance: Option<f64>,
    /// `--quantize-mode`: weight-only `DequantizeLinear` (the default) or, for MatMul and Gemm,
    /// `DynamicQuantizeLinear` + `MatMulInteger`.
    pub mode: Mode,
    /// `--quantize-activations`: how the ranges of the activations that Conv, MatMul and Gemm
    /// read are calibrated (`--quantize-calibrate`), or `None` for weights only (see
    /// `static_act.rs`).
    pub activations: Option<RangeMethod>,
    /// `--quantize-outputs`: with `activations`, a pair on the outputs of those Conv, MatMul
    /// and Gemm nodes too (the placement onnxruntime fuses into integer kernels).
    pub outputs: bool,
}

/// How quantized weights are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Weight-only: `DequantizeLinear` feeds the float op.
    #[default]
    Qdq,
    /// MatMul and Gemm read their weights through `MatMulInteger` on the activation quantized
    /// at run time by `DynamicQuantizeLinear`, as onnxruntime's dynamic quantizer writes them
    /// (see `dynamic.rs`); other weights are quantized weight-only.
    Dynamic,
}

impl Default for QuantizeConfig {
    fn default() -> Self {
        QuantizeConfig {
            weights: WeightType::default(),
            granularity: Granularity::default(),
            exclude: Vec::new(),
            min_elements: DEFAULT_MIN_ELEMENTS,
            tolerance: None,
            mode: Mode::default(),
            activations: None,
            outputs: false,
        }
    }
}

impl QuantizeConfig {
    /// Builds the options from the command-line flags, refusing values it does not know.
    pub fn from_flags(
        weights: Option<&str>,
        granularity: Option<&str>,
        exclude: &[String],
        tolerance: Option<f64>,
    ) -> Result<QuantizeConfig> {
        let mut cfg = QuantizeConfig::default();
        if let Some(t) = tolerance {
            if !t.is_finite() || t < 0.0 {
                return Err(Error::Usage(format!(
                    "--quantize-tolerance must be a finite non-negative number, got `{t}`"
                )));
            }
            cfg.tolerance = Some(t);
        }
        match weights {
            None | Some("int8") => {}
            Some("uint8") => cfg.weights = WeightType::Uint8,
            Some("int4") => cfg.weights = WeightType::Int4,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "--quantize-weights must be `int8`, `uint8` or `int4`, got `{other}`"
                )))
            }
        }
        match granularity {
            None | Some("channel") => {}
            Some("tensor") => cfg.granularity = Granularity::Tensor,
            Some("auto") => cfg.granularity = Granularity::Auto,
            Some(g) if g.starts_with("block:") => {
                let n = &g["block:".len()..];
                match n.parse::<usize>() {
                    Ok(b) if b >= 1 => cfg.granularity = Granularity::Block(b),
                    _ => {
                        return Err(Error::Usage(format!(
                            "--quantize-granularity `block:N` needs a positive whole block size, got `{n}`"
                        )))
                    }
                }
            }
            Some(other) => {
                return Err(Error::Usage(format!(
                    "--quantize-granularity must be `channel`, `tensor`, `auto` or `block:N`, got `{other}`"
                )))
            }
        }
        cfg.exclude = exclude
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        Ok(cfg)
    }

    /// Sets the mode from `--quantize-mode` (`qdq`, the default, or `dynamic`), refusing values
    /// it does not know and dynamic with int4 or blocks (`MatMulInteger` takes 8-bit codes with
    /// one scale per column or per tensor).
    pub fn with_mode(mut self, mode: Option<&str>) -> Result<QuantizeConfig> {
        match mode {
            None | Some("qdq") => self.mode = Mode::Qdq,
            Some("dynamic") => self.mode = Mode::Dynamic,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "--quantize-mode must be `qdq` or `dynamic`, got `{other}`"
                )))
            }
        }
        if self.mode == Mode::Dynamic
            && (self.weights == WeightType::Int4
                || matches!(self.granularity, Granularity::Block(_)))
        {
            return Err(Error::Usage(
                "--quantize-mode dynamic takes int8 or uint8 weights per channel or per tensor, not int4 or blocks".into(),
            ));
        }
        Ok(self)
    }

    /// Sets static activation quantization from `--quantize-activations` and
    /// `--quantize-calibrate` (`minmax`, the default, `percentile[:P]` or `entropy`), refusing
    /// it without calibration inputs, in dynamic mode, and a method without the flag.
    pub fn with_activations(
        mut self,
        activations: bool,
        outputs: bool,
        method: Option<&str>,
        has_calibration: bool,
    ) -> Result<QuantizeConfig> {
        if !activations {
            if outputs {
                return Err(Error::Usage(
                    "--quantize-outputs adds pairs to those of --quantize-activations; add `--quantize-activations`".into(),
                ));
            }
            if method.is_some() {
                return Err(Error::Usage(
                    "--quantize-calibrate chooses the ranges of --quantize-activations; add `--quantize-activations`".into(),
                ));
            }
            return Ok(self);
        }
        let method = match method {
            None => RangeMethod::MinMax,
            Some(m) => RangeMethod::parse(m)
                .map_err(|why| Error::Usage(format!("--quantize-calibrate {why}")))?,
        };
        if !has_calibration {
            return Err(Error::Usage(
                "--quantize-activations needs `--calibration DIR`: the activation ranges come from running the model on calibration inputs".into(),
            ));
        }
        if self.mode == Mode::Dynamic {
            return Err(Error::Usage(
                "--quantize-activations writes static QuantizeLinear/DequantizeLinear pairs; it cannot be combined with `--quantize-mode dynamic`".into(),
            ));
        }
        self.activations = Some(method);
        self.outputs = outputs;
        Ok(self)
    }

    /// The default-domain opset the written `DequantizeLinear`s need: 21 for int4 or blocks,
    /// else 10 (per-channel scales below 13 are spelled with a `Mul`).
    pub fn needs_opset(&self) -> i64 {
        if self.weights == WeightType::Int4 || matches!(self.granularity, Granularity::Block(_)) {
            OPSET_INT4
        } else {
            10
        }
    }

    /// Whether any flag differs from the defaults.
    pub fn is_default(&self) -> bool {
        *self == QuantizeConfig::default()
    }
}

/// See the module docs.
pub struct Quantize;

fn scheme(cfg: &QuantizeConfig, c: &Candidate) -> String {
    let ty = cfg.weights.name();
    if c.dynamic.is_some() {
        return match c.axis {
            Some(a) => format!(
                "{ty} per column (axis {a}) read by MatMulInteger after DynamicQuantizeLinear"
            ),
            None => format!("{ty} per tensor read by MatMulInteger after DynamicQuantizeLinear"),
        };
    }
    match (c.axis, c.spelling) {
        (Some(a), _) if c.block.is_some() => {
            format!("{ty} per block of {} along axis {a}", c.block.unwrap_or(1))
        }
        (Some(a), Spelling::Axis) => format!("{ty} per channel (axis {a})"),
        (Some(a), Spelling::Mul) => format!(
            "{ty} per channel (axis {a}) as {}Mul by the channel scales",
            match cfg.weights {
                WeightType::Uint8 => "DequantizeLinear, Sub of the zero points, then ",
                _ => "DequantizeLinear then ",
            }
        ),
        (None, _) => format!("{ty} per tensor"),
    }
}

impl Rule for Quantize {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "Q001",
            name: "quantize",
            group: "quantize",
            summary: "store float weights as int8/uint8/int4 read through DequantizeLinear (and, with --quantize-activations, activations as QDQ pairs)",
            exactness: Exactness::Lossy {
                tolerance: VERIFY_TOLERANCE,
            },
        }
    }

    fn find(&self, model: &Model, config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        let mut planned = Vec::new();
        let opset = model.opset("").unwrap_or(1);
        let needs = config.quantize.needs_opset();
        // Whole-graph work once per `find`, only when the opset is too low for the scheme.
        let too_old = (opset < needs).then(|| opset_refusal(model, needs));
        for (reader, weight) in
            find_weights(model, &config.quantize, &mut f, (10, "DequantizeLinear"))
        {
            if let Some(reason) = &too_old {
                f.skip(
                    model,
                    reader,
                    format!("weight `{}`: {reason}", weight_name(g, weight)),
                );
                continue;
            }
            match plan(model, &config.quantize, weight) {
                Ok(c) => planned.push((
                    Match {
                        anchor: reader,
                        nodes: vec![weight.node],
                        what: format!("weight `{}`", weight_name(g, weight)),
                    },
                    c,
                )),
                Err(reason) => f.skip(model, reader, reason),
            }
        }
        let Some(tol) = config.quantize.tolerance else {
            f.matches = planned.into_iter().map(|(m, _)| m).collect();
            let acts = static_act::find_activations(model, config, &mut f);
            f.matches.extend(acts);
            return f;
        };
        let errors = output_errors(self, model, config, &planned);
        for ((m, _), e) in planned.into_iter().zip(errors) {
            match e {
                Ok(e) if e <= tol => f.matches.push(m),
                Ok(e) => f.skip(
                    model,
                    m.anchor,
                    format!(
                        "{}: quantized alone it moves the outputs by {} (relative L2 error), more than --quantize-tolerance {tol}",
                        m.what,
                        error_text(e)
                    ),
                ),
                Err(reason) => f.skip(
                    model,
                    m.anchor,
                    format!(
                        "{}: its output error for --quantize-tolerance could not be measured: {reason}",
                        m.what
                    ),
                ),
            }
        }
        let acts = static_act::find_activations(model, config, &mut f);
        f.matches.extend(acts);
        f
    }

    /// The user's configuration, without `--quantize-tolerance` (the search measures every
    /// layer's loss itself).
    fn search_variants(&self, config: &Config) -> Vec<SearchVariant> {
        let mut c = config.clone();
        c.quantize.tolerance = None;
        vec![SearchVariant {
            name: format!(
                "quantize {}",
                format!("{:?} per {:?}", c.quantize.weights, c.quantize.granularity).to_lowercase()
            ),
            config: c,
            stage: Stage::Store,
        }]
    }

    fn rewrite(&self, model: &Model, m: &Match, config: &Config) -> Result<Patch> {
        if let Some(name) = static_act::activation_name(m) {
            return static_act::rewrite_activation(model, m, config, name);
        }
        let g = &model.graph;
        let cfg = &config.quantize;
        let fail = |reason: String| Error::Rule {
            rule: "quantize".into(),
            reason,
        };
        let node = *m
            .nodes
            .first()
            .ok_or_else(|| fail(format!("{}: no weight in the match", m.what)))?;
        let c = plan(model, cfg, ValueRef { node, slot: 0 }).map_err(fail)?;
        let t = g
            .const_tensor(c.weight)
            .ok_or_else(|| fail("the weight is not constant".into()))?;
        let w = tensor::to_f32(t)?;
        let dims: Vec<usize> = w.shape().to_vec();
        let values: Vec<f32> = w.iter().copied().collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(fail(format!("{} holds NaN or infinity", m.what)));
        }
        let groups = c.groups();
        // int4: float16 block scales (a Cast back to float follows), halving their cost.
        let q = quantize_groups(
            &values,
            &dims,
            groups,
            cfg.weights,
            cfg.weights == WeightType::Int4,
        );
        let name = weight_name(g, c.weight).to_string();
        let before = tensor::payload_bytes(t);
        let channels = q.scales.len();
        let output_error = match cfg.tolerance {
            Some(_) => cached_error(error_key(model, config, &c))
                .and_then(|e| e.ok())
                .map(|e| format!(", output error {}", error_text(e)))
                .unwrap_or_default(),
            None => String::new(),
        };
        if let Some(d) = &c.dynamic {
            let rel = q.rel_error;
            let mut p = dynamic::rewrite_dynamic(model, cfg, &c, d, q, m.anchor)?;
            let n = tensor::numel(t).unwrap_or(0);
            let after = n + param_bytes(cfg, &c, channels);
            p.description = format!(
                "{}: {} {}, {before} → {after} bytes, weight error {:.3} %{output_error}",
                m.what,
                shape_text(&t.dims),
                scheme(cfg, &c),
                rel * 100.0,
            );
            return Ok(p);
        }
        let mut p = Patch::new(String::new(), Some(m.anchor));
        let codes = p.add_initializer(int_tensor(
            format!("{name}_quantized"),
            t.dims.clone(),
            q.codes,
            cfg.weights,
        ));
        let floats = |n: &str, dims: Vec<i64>, v: Vec<f32>| -> Result<TensorProto> {
            let mut t = tensor::from_f32(
                n,
                &ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[v.len()]), v)
                    .map_err(|e| fail(e.to_string()))?,
            );
            t.dims = dims;
            Ok(t)
        };
        let out = match (c.axis, c.spelling) {
            (Some(axis), Spelling::Mul) => {
                // `[C, 1, …]`: broadcasts along `axis` of the weight (trailing axes aligned).
                let mut bdims = vec![channels as i64];
                bdims.resize(t.dims.len() - axis, 1);
                // One unit scale and zero point serve every weight (reused when present).
                let unit = const_wire(
                    g,
                    &mut p,
                    floats("dequantize_unit_scale", vec![], vec![1.0])?,
                );
                let zero = const_wire(
                    g,
                    &mut p,
                    int_tensor("dequantize_zero_point".into(), vec![], vec![0], cfg.weights),
                );
                let dq = make_node(
                    "DequantizeLinear",
                    &format!("{name}_dequantize"),
                    3,
                    &[&format!("{name}_codes")],
                );
                let mut x = p.add_op(dq, &[Some(codes), Some(unit), Some(zero)])[0];
                if cfg.weights == WeightType::Uint8 {
                    let zf: Vec<f32> = q.zero_points.iter().map(|z| *z as f32).collect();
                    let zw = p.add_initializer(floats(
                        &format!("{name}_zero_point"),
                        bdims.clone(),
                        zf,
                    )?);
                    let sub = make_node(
                        "Sub",
                        &format!("{name}_center"),
                        2,
                        &[&format!("{name}_centered")],
                    );
                    x = p.add_op(sub, &[Some(x), Some(zw)])[0];
                }
                let sw = p.add_initializer(floats(&format!("{name}_scale"), bdims, q.scales)?);
                let mul = make_node(
                    "Mul",
                    &format!("{name}_rescale"),
                    2,
                    &[&format!("{name}_dequantized")],
                );
                p.add_op(mul, &[Some(x), Some(sw)])[0]
            }
            (axis, _) => {
                let param_dims = groups.scale_dims(&t.dims);
                let scale = if q.half {
                    let raw: Vec<u8> = q
                        .scales
                        .iter()
                        .flat_map(|s| crate::onnx::dtype::f32_to_f16(*s).to_le_bytes())
                        .collect();
                    p.add_initializer(TensorProto {
                        name: Some(format!("{name}_scale")),
                        dims: param_dims.clone(),
                        data_type: Some(DataType::Float16 as i32),
                        raw_data: Some(raw.into()),
                        ..Default::default()
                    })
                } else {
                    p.add_initializer(floats(
                        &format!("{name}_scale"),
                        param_dims.clone(),
                        q.scales,
                    )?)
                };
                // int4 is symmetric: its zero point (0) is omitted.
                let zp = (cfg.weights != WeightType::Int4).then(|| {
                    p.add_initializer(int_tensor(
                        format!("{name}_zero_point"),
                        param_dims,
                        q.zero_points,
                        cfg.weights,
                    ))
                });
                let out_name = if q.half {
                    format!("{name}_dequantized_f16")
                } else {
                    format!("{name}_dequantized")
                };
                let mut node = make_node(
                    "DequantizeLinear",
                    &format!("{name}_dequantize"),
                    if zp.is_some() { 3 } else { 2 },
                    &[&out_name],
                );
                if let Some(a) = axis {
                    node.attribute.push(make_attr_i("axis", a as i64));
                }
                if let Some(b) = c.block {
                    node.attribute.push(make_attr_i("block_size", b as i64));
                }
                let mut inputs = vec![Some(codes), Some(scale)];
                inputs.extend(zp.map(Some));
                let y = p.add_op(node, &inputs)[0];
                if q.half {
                    let mut cast = make_node(
                        "Cast",
                        &format!("{name}_to_float"),
                        1,
                        &[&format!("{name}_dequantized")],
                    );
                    cast.attribute
                        .push(make_attr_i("to", DataType::Float as i32 as i64));
                    p.add_op(cast, &[Some(y)])[0]
                } else {
                    y
                }
            }
        };
        p.shunt(c.weight, out);
        p.keep_name(c.weight, out);
        p.remove(c.weight.node);
        let n = tensor::numel(t).unwrap_or(0);
        let code_bytes = match cfg.weights {
            WeightType::Int4 => n.div_ceil(2),
            _ => n,
        };
        let after = code_bytes
            + if q.half {
                2 * channels as u64
            } else {
                param_bytes(cfg, &c, channels)
            };
        let note = c
            .note
            .clone()
            .or_else(|| (cfg.needs_opset() > 13).then(|| format!("{TRACT_NOTE}")));
        p.description = format!(
            "{}: {} {}, {before} → {after} bytes, weight error {:.3} %{output_error}{}",
            m.what,
            shape_text(&t.dims),
            scheme(cfg, &c) + if q.half { ", float16 scales" } else { "" },
            q.rel_error * 100.0,
            note.map(|n| format!(" ({n})")).unwrap_or_default()
        );
        Ok(p)
    }

    fn independent_matches(&self) -> bool {
        // Each match rewrites one weight and the nodes that hold it; no other match reads them.
        true
    }

    /// A sanity bound, as for lowrank: verification compares element-wise,
    /// `|a − b| ≤ tol·max(1, |a|)`, and the worst element of a quantized model sits far above
    /// its typical error (captcha_crnn at 100 % argmax agreement and cosine 0.992 needs 2; at 1
    /// it fails). So this catches a broken rewrite (NaN, infinities, wrong shapes, garbage), not
    /// accuracy loss: the verification table's cosine and argmax agreement, and `--tolerance`,
    /// are what tell and bound the loss.
    fn tolerance(&self, _config: &Config) -> f32 {
        VERIFY_TOLERANCE
    }
}

/// Payload bytes of the scales and zero points `c` is written with (the unit scale and zero point
/// of [`Spelling::Mul`] are shared by all weights and not counted).
fn param_bytes(cfg: &QuantizeConfig, c: &Candidate, channels: usize) -> u64 {
    let ch = channels as u64;
    match (c.spelling, cfg.weights) {
        _ if c.dynamic.is_some() && cfg.weights == WeightType::Int8 => 4 * ch,
        _ if c.dynamic.is_some() => 5 * ch,
        (_, WeightType::Int4) => 4 * ch,
        (Spelling::Mul, WeightType::Uint8) if c.axis.is_some() => 8 * ch,
        (Spelling::Mul, _) if c.axis.is_some() => 4 * ch,
        _ => 5 * ch,
    }
}

fn shape_text(dims: &[i64]) -> String {
    let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", d.join("×"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_on_the_int8_grid_come_back_exactly() {
        // Two channels along axis 1 of a [3, 2] weight, scales 2^-3 and 2^-7.
        let s = [0.125f32, 0.0078125];
        let q = [[127i32, -5], [-64, 127], [0, -127]];
        let w: Vec<f32> = q
            .iter()
            .flat_map(|row| row.iter().enumerate().map(|(c, v)| *v as f32 * s[c]))
            .collect();
        let r = quantize(&w, &[3, 2], Some(1), WeightType::Int8);
        assert_eq!(r.scales, s.to_vec());
        assert_eq!(r.rel_error, 0.0);
        let codes: Vec<i8> = r.codes.iter().map(|c| *c as i8).collect();
        assert_eq!(codes, vec![127, -5, -64, 127, 0, -127]);
    }

    #[test]
    fn uint8_keeps_zero_exact_and_error_within_half_a_step() {
        let w = [-1.0f32, 0.0, 0.3, 2.0, 0.0, -0.7];
        let r = quantize(&w, &[6], None, WeightType::Uint8);
        let (s, z) = (r.scales[0], r.zero_points[0] as f32);
        for (i, v) in w.iter().enumerate() {
            let back = (r.codes[i] as f32 - z) * s;
            if *v == 0.0 {
                assert_eq!(back, 0.0);
            }
            assert!((back - v).abs() <= s / 2.0 + 1e-6, "{v} → {back}");
        }
    }

    #[test]
    fn a_weight_kept_in_float_by_the_tolerance_is_measured_once() {
        use crate::ir::builder::{seeded_f32, ModelBuilder};
        use crate::onnx::proto::tensor_proto::DataType as D;
        // W2 has an outlier: per tensor, every other value rounds to 0, so it breaks the output.
        // The outlier reads hidden unit 0, which the Relu zeroes (x ≥ 0, W1's column 0 is −1).
        let mut w2 = seeded_f32(&[32, 8], 812);
        w2[[0, 0]] = 1000.0;
        let mut w1 = seeded_f32(&[16, 32], 811);
        w1.slice_mut(ndarray::s![.., 0]).fill(-1.0);
        let mut b = ModelBuilder::new(17);
        b.input("x", D::Float, &[2, 16])
            .initializer_f32("W1", w1)
            .initializer_f32("W2", w2)
            .node_named("fc1", "MatMul", &["x", "W1"], &["h"], vec![])
            .node_named("relu", "Relu", &["h"], &["hr"], vec![])
            .node_named("fc2", "MatMul", &["hr", "W2"], &["y"], vec![])
            .output("y", D::Float, &[2, 8]);
        let mut model = Model::from_proto(b.build()).unwrap();
        let config = Config {
            quantize: QuantizeConfig {
                granularity: Granularity::Tensor,
                min_elements: 16,
                tolerance: Some(0.1),
                ..Default::default()
            },
            ..Default::default()
        };
        let w2_key = {
            let c = plan(
                &model,
                &config.quantize,
                model.graph.producer("W2").unwrap(),
            )
            .unwrap();
            error_key(&model, &config, &c)
        };
        let rules: Vec<&dyn Rule> = vec![&Quantize];
        let report = crate::rewrite::run(&mut model, &rules, &config, &Default::default()).unwrap();
        assert_eq!(report.patches(), 1);
        let skip = report.rules[0]
            .skips
            .iter()
            .find(|s| s.reason.contains("`W2`"))
            .expect("W2 kept");
        assert!(
            skip.reason.contains("more than --quantize-tolerance 0.1"),
            "{skip:?}"
        );
        let measured = MEASURED
            .lock()
            .unwrap()
            .iter()
            .filter(|k| **k == w2_key)
            .count();
        assert_eq!(measured, 1, "W2 measured once although `find` ran again");
        let findings = Quantize.find(&model, &config);
        assert!(findings.matches.is_empty());
        let measured = MEASURED
            .lock()
            .unwrap()
            .iter()
            .filter(|k| **k == w2_key)
            .count();
        assert_eq!(measured, 1);
    }

    #[test]
    fn an_all_zero_channel_gets_scale_one_and_zero_codes() {
        let w = [0.0f32, 0.0, 1.0, -2.0];
        let r = quantize(&w, &[2, 2], Some(0), WeightType::Int8);
        assert_eq!(r.scales[0], 1.0);
        assert_eq!(&r.codes[..2], &[0, 0]);
    }
}
