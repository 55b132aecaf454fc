//! `K001 cluster`: stores each float weight as small integer codes into a codebook of float
//! centroids (weight sharing by k-means), decoded in the graph by a `Gather`.
//!
//! **What:** a constant float32 weight `W` that the op table ([`crate::ops::weights`]) names as
//! a kernel, recurrent weight or table — Conv, ConvTranspose, MatMul, Gemm (`B`), LSTM/GRU/RNN
//! (`W` and `R`), Gather's table; the very weights `quantize` finds, by the same code
//! ([`crate::rules::quantize`]'s `find_weights` and `plan`) — is clustered by one-dimensional
//! k-means with `k = 2^bits` centroids (`--cluster-bits 4|5|6|8`, default 4), per tensor (one
//! codebook, the default) or per output channel (`--cluster-granularity channel`: one codebook
//! per slice along the op's output-channel axis, where the codebooks and their offsets cost at
//! most as much as the codes; weights with smaller channels share one, the report line saying
//! so). The k-means is deterministic: centroids start
//! evenly spaced over the values' range and Lloyd's iterations settle them (see `kmeans.rs`).
//! The weight becomes
//!
//! ```text
//! W_codes:uint8[dims] → Cast(int32) → [Add(W_code_offsets) per channel] → Gather(W_codebook) → W
//! ```
//!
//! under `W`'s own name, feeding the original op. Per channel, channel `c`'s codebook is entries
//! `c·m .. c·m + m` of one flat codebook (`m` the most centroids any channel has), and the
//! int32 offsets `c·m`, shaped `[C, 1, …]` to broadcast along the channel axis, move each code
//! into its channel's entries. **Codes packed two per byte:** when every code is below 16 (4 bits,
//! or any weight with at most 16 centroids per codebook), the element count is even and the
//! weight has at least [`PACK_MIN_ELEMENTS`] elements, byte `i` holds code `2i` in its low
//! nibble and code `2i + 1` in its high one; they are unpacked without bitwise ops by a `Gather`
//! from one shared uint8 table `cluster_nibbles[256, 2]` whose row `b` is `[b & 15, b >> 4]`,
//! then a `Reshape` to the weight's dims and the `Cast` above. (tract 0.23 has `BitShift` and
//! `BitwiseAnd`, but `BitwiseAnd` needs opset 18 and onnxruntime's `BitShift` takes no int32:
//! the table runs at any opset from 7, in both, for 512 bytes once per model.)
//!
//! **Why:** Deep Compression's weight sharing: 4-bit codes are an eighth of float32 plus a
//! 64-byte codebook, and k-means places the levels where the weights are (unlike a uniform
//! int4 grid), so accuracy holds better; every runtime runs `Cast`, `Add`, `Gather` and
//! `Reshape`. The codes, few distinct bytes, also compress well.
//!
//! **Example:** `y = MatMul(x, W[512,512])`, 4 bits per tensor → `W = Gather(W_codebook[16],
//! Cast(Reshape(Gather(cluster_nibbles, Cast(W_codes[131072]:uint8)), [512,512])))`: 1,048,576 →
//! 131,072 + 64 + 16 bytes.
//!
//! **Exact:** no (lossy); the report gives per weight the bits, the granularity, the bytes
//! before and after (codes, codebook, offsets and the `Reshape` target; the shared nibble table
//! not counted) and the relative weight error `‖W − Ŵ‖/‖W‖`. A weight (or, per channel, each
//! channel) that takes at most `2^bits` distinct values is reproduced bit for bit: the codebook
//! is those values. Zero stays exactly zero: when a codebook's values include 0, one centroid is
//! fixed at 0 (pruned and sparse weights keep their zeros).
//!
//! **Left alone, with a reason:** what `quantize` leaves (not float32, not constant, graph
//! outputs, read inside subgraphs other than as weights — a weight the subgraphs read only as a
//! weight is clustered per tensor), weights already clustered (and their
//! codebooks), weights holding NaN or infinities, and models below opset 7 (numpy-style
//! broadcasting of `Add`). A weight whose codes and codebook would not be smaller than it is
//! stays float with the sizes in the skip; a rewrite that would still grow the model (the
//! nodes cost bytes too) is refused by the driver.
//!
//! **Quantized weights** (the int8/uint8 input of a `DequantizeLinear` feeding Conv, MatMul or
//! Gemm) are clustered on their integers into an integer codebook of their own type, the
//! `DequantizeLinear` kept and its zero point a fixed centroid (see `quantized.rs`); unweighted.
//!
//! **Weighted by calibration** (`--calibration DIR`): each value weighs the mean square of the
//! input feature it multiplies on the calibration data (the diagonal of `XᵀX`, damped; see
//! `importance.rs`), and Lloyd's iterations settle each centroid on the weighted mean of its
//! values, so the weights that meet large inputs are fitted better. Both codebooks are made and
//! the weighted one is kept only where the layer's output error on the calibration rows
//! (`Σ eᵀ(XᵀX)e` with the full Gram) is smaller; the report line gives both errors and which was
//! kept. A weight that cannot be weighted (LSTM, `Gather` tables, grouped convolutions, shared
//! weights) is clustered unweighted, saying why. Without `--calibration` every value weighs
//! alike. Weighting changes only where the centroids settle: the lossless case and the fixed
//! zero hold as without it.

mod importance;
mod kmeans;
mod quantized;

pub use importance::DAMPING;
pub use kmeans::{cluster, cluster_weighted, relative_error, Codebook};

use importance::{weightings, Weighting};

use bytes::Bytes;

use super::quantize::{find_weights, plan, weight_name, Candidate, QuantizeConfig};
use super::util::{make_attr_i, make_node};
use crate::error::{Error, Result};
use crate::ir::{tensor, Graph, Model, ValueRef};
use crate::onnx::proto::{tensor_proto::DataType, TensorProto};
use crate::rewrite::{
    Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, SearchVariant, Stage, Wire,
};

/// The opset the decoding needs: `Add` with numpy-style broadcasting.
pub const OPSET: i64 = 7;
/// Codes are packed two per byte only from this many elements: below it the unpacking nodes
/// (a `Gather`, a `Reshape` and its target) cost about what packing saves.
pub const PACK_MIN_ELEMENTS: u64 = 2048;
/// Default verification tolerance, a sanity bound as for `quantize` and `prune` (verification
/// compares element-wise, `|a − b| ≤ tol·max(1, |a|)`): it catches a broken rewrite (NaN,
/// infinities, wrong shapes, garbage), not accuracy loss, which the verification table's
/// cosine and argmax agreement and `--budget` bound. quantize's 2 is too tight at 4 bits:
/// captcha_crnn's logits move by up to 17.6 (relative 2.0) there, at cosine 0.85.
pub const VERIFY_TOLERANCE: f32 = 50.0;
/// The name of the shared nibble table.
pub const NIBBLES: &str = "cluster_nibbles";

/// One codebook per weight, or one per output channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterGranularity {
    /// One codebook for the whole weight.
    #[default]
    Tensor,
    /// One codebook per slice along the op's output-channel axis.
    Channel,
}

/// Options of the `cluster` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Bits per code: 4, 5, 6 or 8 (`k = 2^bits` centroids). Codes are stored one per byte,
    /// except 4-bit codes, packed two per byte (see the module docs).
    pub bits: u32,
    /// Per tensor or per output channel.
    pub granularity: ClusterGranularity,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            bits: 4,
            granularity: ClusterGranularity::Tensor,
        }
    }
}

impl ClusterConfig {
    /// Builds the options from `--cluster-bits` and `--cluster-granularity`, refusing values
    /// it does not know.
    pub fn from_flags(bits: Option<u32>, granularity: Option<&str>) -> Result<ClusterConfig> {
        let mut cfg = ClusterConfig::default();
        match bits {
            None => {}
            Some(b @ (4 | 5 | 6 | 8)) => cfg.bits = b,
            Some(b) => {
                return Err(Error::Usage(format!(
                    "--cluster-bits must be 4, 5, 6 or 8, got `{b}`"
                )))
            }
        }
        match granularity {
            None | Some("tensor") => {}
            Some("channel") => cfg.granularity = ClusterGranularity::Channel,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "--cluster-granularity must be `tensor` or `channel`, got `{other}`"
                )))
            }
        }
        Ok(cfg)
    }

    /// Whether any flag differs from the defaults.
    pub fn is_default(&self) -> bool {
        *self == ClusterConfig::default()
    }

    /// Centroids per codebook.
    pub fn k(&self) -> usize {
        1 << self.bits
    }

    /// What `quantize`'s weight finder needs to find the same weights: the granularity, and no
    /// size floor (the sizes are compared in [`plan_cluster`]).
    fn finder(&self) -> QuantizeConfig {
        QuantizeConfig {
            granularity: match self.granularity {
                ClusterGranularity::Tensor => crate::rules::quantize::Granularity::Tensor,
                ClusterGranularity::Channel => crate::rules::quantize::Granularity::Channel,
            },
            min_elements: 0,
            ..Default::default()
        }
    }

    fn describe(&self) -> String {
        format!(
            "cluster {}-bit per {}",
            self.bits,
            match self.granularity {
                ClusterGranularity::Tensor => "tensor",
                ClusterGranularity::Channel => "channel",
            }
        )
    }
}

/// See the module docs.
pub struct Cluster;

/// How one weight is clustered: `quantize`'s plan (the weight, its channel axis or why none),
/// and the byte counts that decide whether it pays.
struct Planned {
    c: Candidate,
    /// `(channels, elements per channel slice step)`: channel of element `i` is
    /// `(i / inner) % channels`.
    channels: usize,
    inner: usize,
}

/// Decides whether and how `weight` is clustered, or why not (a skip reason).
fn plan_cluster(
    model: &Model,
    cfg: &ClusterConfig,
    weight: ValueRef,
) -> std::result::Result<Planned, String> {
    let g = &model.graph;
    let mut c = plan(model, &cfg.finder(), weight)?;
    if c.spelling == crate::rules::quantize::Spelling::Mul {
        // quantize's note on per-channel `DequantizeLinear` below opset 13: not ours.
        c.note = None;
    }
    let name = weight_name(g, weight);
    let t = g
        .const_tensor(weight)
        .ok_or_else(|| format!("weight `{name}` is not constant"))?;
    let n = tensor::numel(t).unwrap_or(0);
    let dims: Vec<usize> = t.dims.iter().map(|d| (*d).max(0) as usize).collect();
    let (mut channels, mut inner) = match c.axis {
        Some(a) if dims.get(a).is_some_and(|d| *d > 1) => {
            (dims[a], dims[a + 1..].iter().product::<usize>().max(1))
        }
        _ => {
            c.axis = None;
            (1, n as usize)
        }
    };
    if channels > 1 {
        // A codebook per channel only where the codebooks (and offsets) cost at most as much
        // as the codes: small channels (depthwise and narrow kernels) share one.
        let m = n as usize / channels;
        let per = cfg.k().min(m.max(1));
        let codes = if packs(n, per) { n / 2 } else { n };
        if 4 * (channels * (per + 1)) as u64 > codes {
            c.axis = None;
            c.note = Some(format!(
                "per tensor: {m} elements per channel, too few to pay for a codebook each"
            ));
            (channels, inner) = (1, n as usize);
        }
    }
    let before = tensor::payload_bytes(t);
    // A codebook has at most `k` centroids, and no more than the values it serves.
    let per = cfg.k().min((n as usize / channels).max(1));
    let at_most = estimate_bytes(n, channels, dims.len(), per);
    if at_most >= before {
        return Err(format!(
            "weight `{name}`: its codes and codebook{} would take {at_most} bytes, not fewer than its {before}",
            if channels > 1 { "s" } else { "" }
        ));
    }
    Ok(Planned { c, channels, inner })
}

/// Payload bytes of the clustered form with `per` centroids per codebook: codes, codebooks,
/// channel offsets and, when packed, the `Reshape` target.
fn estimate_bytes(n: u64, channels: usize, rank: usize, per: usize) -> u64 {
    let packed = packs(n, per);
    let codes = if packed { n / 2 } else { n };
    let offsets = if channels > 1 { 4 * channels as u64 } else { 0 };
    codes + 4 * (channels * per) as u64 + offsets + if packed { 8 * rank as u64 } else { 0 }
}

/// Whether `n` codes below `per` are packed two per byte.
fn packs(n: u64, per: usize) -> bool {
    per <= 16 && n % 2 == 0 && n >= PACK_MIN_ELEMENTS
}

impl Rule for Cluster {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "K001",
            name: "cluster",
            group: "cluster",
            summary: "store float weights as 4-8 bit codes into a k-means codebook, decoded by Gather (weight sharing)",
            exactness: Exactness::Lossy {
                tolerance: VERIFY_TOLERANCE,
            },
        }
    }

    fn find(&self, model: &Model, config: &Config) -> Findings {
        let g = &model.graph;
        let cfg = &config.cluster;
        let mut f = Findings::default();
        let weights = find_weights(
            model,
            &cfg.finder(),
            &mut f,
            (OPSET, "`Add` with numpy-style broadcasting"),
        );
        let weighting = weightings(model, &weights, config);
        for ((reader, weight), w) in weights.into_iter().zip(weighting) {
            if let Weighting::Failed(why) = w {
                f.skip(model, reader, why);
                continue;
            }
            match plan_cluster(model, cfg, weight) {
                Ok(_) => f.matches.push(Match {
                    anchor: reader,
                    nodes: vec![weight.node],
                    what: format!("weight `{}`", weight_name(g, weight)),
                }),
                Err(reason) => f.skip(model, reader, reason),
            }
        }
        if model.opset("").unwrap_or(1) >= OPSET {
            quantized::find(model, cfg, &mut f);
        }
        f
    }

    /// The user's configuration when a `--cluster-*` flag pinned it; else 4 and 8 bits per
    /// tensor (the search picks per layer; 5 and 6 bits are stored a byte per code, as 8 are,
    /// so they would only lose more).
    fn search_variants(&self, config: &Config) -> Vec<SearchVariant> {
        let configs = if config.cluster.is_default() {
            vec![
                ClusterConfig::default(),
                ClusterConfig {
                    bits: 8,
                    ..Default::default()
                },
            ]
        } else {
            vec![config.cluster.clone()]
        };
        configs
            .into_iter()
            .map(|cluster| SearchVariant {
                name: cluster.describe(),
                config: Config {
                    cluster,
                    ..config.clone()
                },
                stage: Stage::Store,
            })
            .collect()
    }

    fn rewrite(&self, model: &Model, m: &Match, config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let cfg = &config.cluster;
        let fail = |reason: String| Error::Rule {
            rule: "cluster".into(),
            reason,
        };
        let node = *m
            .nodes
            .first()
            .ok_or_else(|| fail(format!("{}: no weight in the match", m.what)))?;
        if g.node(m.anchor).op_type() == "DequantizeLinear" {
            return quantized::rewrite(model, cfg, m.anchor, &m.what);
        }
        let planned = plan_cluster(model, cfg, ValueRef { node, slot: 0 }).map_err(fail)?;
        let weight = planned.c.weight;
        let t = g
            .const_tensor(weight)
            .ok_or_else(|| fail("the weight is not constant".into()))?;
        let values: Vec<f32> = tensor::to_f32(t)?.iter().copied().collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(fail(format!("{} holds NaN or infinity", m.what)));
        }
        let (channels, inner) = (planned.channels, planned.inner);
        let k = cfg.k();
        let weighting = weightings(model, &[(m.anchor, weight)], config)
            .pop()
            .unwrap_or(Weighting::Plain);
        let importance = match &weighting {
            Weighting::Failed(why) => return Err(fail(why.clone())),
            Weighting::Weighted(w) if w.weights.len() == values.len() => Some(w),
            _ => None,
        };
        let (mut codes, mut books) = codebooks(&values, channels, inner, k, None);
        // Weighted: kept only where the layer's calibration output error is smaller.
        let mut chosen = None;
        if let Some(w) = importance {
            let (wc, wb) = codebooks(&values, channels, inner, k, Some(&w.weights));
            let plain = w.output_error(&values, &decode(&codes, &books, channels, inner));
            let weighted = w.output_error(&values, &decode(&wc, &wb, channels, inner));
            let take = weighted < plain;
            if take {
                (codes, books) = (wc, wb);
            }
            chosen = Some((take, w.rows, weighted, plain));
        }
        let per = books.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut codebook = Vec::with_capacity(per * channels);
        for b in &books {
            codebook.extend_from_slice(b);
            // Unused entries repeat the last centroid (no code points at them).
            let last = b.last().copied().unwrap_or(0.0);
            codebook.resize(codebook.len().div_ceil(per) * per, last);
        }
        let decoded = decode(&codes, &books, channels, inner);
        let rel_error = relative_error(&values, decoded.into_iter());
        let n = values.len() as u64;
        let name = weight_name(g, weight).to_string();
        let packed = packs(n, per);
        let mut p = Patch::new(String::new(), Some(m.anchor));
        let dims = t.dims.clone();
        let axis = planned.c.axis.filter(|_| channels > 1);
        let book = raw_tensor(
            &format!("{name}_codebook"),
            vec![codebook.len() as i64],
            DataType::Float,
            codebook.iter().flat_map(|v| v.to_le_bytes()).collect(),
        );
        let out = emit_decoding(g, &mut p, &name, &dims, codes, packed, axis, per, book);
        p.shunt(weight, out);
        p.keep_name(weight, out);
        p.remove(weight.node);
        let before = tensor::payload_bytes(t);
        let after = estimate_bytes(n, channels, dims.len(), per);
        let scheme = match planned.c.axis.filter(|_| channels > 1) {
            Some(a) => format!(
                "{}-bit per channel (axis {a}), {per} centroids each",
                cfg.bits
            ),
            None => format!("{}-bit per tensor, {per} centroids", cfg.bits),
        };
        let storage = if packed {
            "codes packed two per byte"
        } else {
            "codes one per byte"
        };
        let mut notes: Vec<String> = planned.c.note.clone().into_iter().collect();
        if rel_error == 0.0 {
            notes.push("exact: every value is a centroid".into());
        }
        match (&weighting, chosen) {
            (_, Some((true, rows, weighted, plain))) => notes.push(format!(
                "weighted by calibration input energy: output error {:.3} % on {rows} calibration rows, unweighted {:.3} %",
                weighted * 100.0,
                plain * 100.0
            )),
            (_, Some((false, rows, weighted, plain))) => notes.push(format!(
                "unweighted: output error {:.3} % on {rows} calibration rows, weighted by input energy {:.3} %",
                plain * 100.0,
                weighted * 100.0
            )),
            (Weighting::Unweighted(why), _) => notes.push(format!("unweighted: {why}")),
            _ => {}
        }
        p.description = format!(
            "{}: {} {scheme}, {storage}, {before} → {after} bytes, weight error {:.3} %{}",
            m.what,
            shape_text(&dims),
            rel_error * 100.0,
            if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            }
        );
        Ok(p)
    }

    fn independent_matches(&self) -> bool {
        // Each match rewrites one weight and the nodes that hold it; the shared nibble table is
        // found by name in the working copy.
        true
    }

    fn tolerance(&self, _config: &Config) -> f32 {
        VERIFY_TOLERANCE
    }
}

/// Codes and one codebook per channel slice (or one for all), codes local to their codebook;
/// k-means weighted by `weights` (one per value) when given.
fn codebooks(
    values: &[f32],
    channels: usize,
    inner: usize,
    k: usize,
    weights: Option<&[f64]>,
) -> (Vec<u8>, Vec<Vec<f32>>) {
    if channels == 1 {
        let cb = cluster_weighted(values, weights, k);
        return (cb.codes, vec![cb.centroids]);
    }
    let mut codes = vec![0u8; values.len()];
    let mut books = Vec::with_capacity(channels);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); channels];
    for i in 0..values.len() {
        members[(i / inner) % channels].push(i);
    }
    for idx in &members {
        let vals: Vec<f32> = idx.iter().map(|&i| values[i]).collect();
        let w: Option<Vec<f64>> = weights.map(|w| idx.iter().map(|&i| w[i]).collect());
        let cb = cluster_weighted(&vals, w.as_deref(), k);
        for (&i, code) in idx.iter().zip(&cb.codes) {
            codes[i] = *code;
        }
        books.push(cb.centroids);
    }
    (codes, books)
}

/// The value each code stands for, in its channel's codebook.
fn decode(codes: &[u8], books: &[Vec<f32>], channels: usize, inner: usize) -> Vec<f32> {
    codes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ch = if channels == 1 {
                0
            } else {
                (i / inner) % channels
            };
            books[ch][*c as usize]
        })
        .collect()
}

/// Adds the decoding of `codes` (one per element of a weight of `dims`, local to their
/// channel's codebook when `axis` is given) to `p`: packed two per byte when `packed`, the
/// nibble-table `Gather` and `Reshape`; `Cast` to int32; per channel the `Add` of the channel
/// offsets (`per` entries per channel); the `Gather` from `book`. Returns the decoded weight.
#[allow(clippy::too_many_arguments)]
fn emit_decoding(
    g: &Graph,
    p: &mut Patch,
    name: &str,
    dims: &[i64],
    codes: Vec<u8>,
    packed: bool,
    axis: Option<usize>,
    per: usize,
    book: TensorProto,
) -> Wire {
    let codes_tensor = if packed {
        let bytes: Vec<u8> = codes.chunks(2).map(|c| c[0] | (c[1] << 4)).collect();
        raw_tensor(
            &format!("{name}_codes"),
            vec![bytes.len() as i64],
            DataType::Uint8,
            bytes,
        )
    } else {
        raw_tensor(
            &format!("{name}_codes"),
            dims.to_vec(),
            DataType::Uint8,
            codes,
        )
    };
    let codes_wire = p.add_initializer(codes_tensor);
    let to_int32 = |p: &mut Patch, node: &str, out: &str, x: Wire| -> Wire {
        let mut cast = make_node("Cast", node, 1, &[out]);
        cast.attribute
            .push(make_attr_i("to", DataType::Int32 as i32 as i64));
        p.add_op(cast, &[Some(x)])[0]
    };
    let unpacked = if packed {
        let nibbles = nibble_table(g, p);
        let idx = to_int32(
            p,
            &format!("{name}_packed_index"),
            &format!("{name}_packed_indices"),
            codes_wire,
        );
        let pairs = p.add_op(
            make_node(
                "Gather",
                &format!("{name}_unpack"),
                2,
                &[&format!("{name}_code_pairs")],
            ),
            &[Some(nibbles), Some(idx)],
        )[0];
        let shape = p.add_initializer(raw_tensor(
            &format!("{name}_shape"),
            vec![dims.len() as i64],
            DataType::Int64,
            dims.iter().flat_map(|d| d.to_le_bytes()).collect(),
        ));
        p.add_op(
            make_node(
                "Reshape",
                &format!("{name}_unpacked"),
                2,
                &[&format!("{name}_unpacked_codes")],
            ),
            &[Some(pairs), Some(shape)],
        )[0]
    } else {
        codes_wire
    };
    let mut idx = to_int32(
        p,
        &format!("{name}_index"),
        &format!("{name}_indices"),
        unpacked,
    );
    if let Some(axis) = axis {
        let channels = dims[axis].max(1) as usize;
        // `[C, 1, …]`: broadcasts along `axis` of the weight (trailing axes aligned).
        let mut odims = vec![channels as i64];
        odims.resize(dims.len() - axis, 1);
        let offsets: Vec<u8> = (0..channels)
            .flat_map(|c| ((c * per) as i32).to_le_bytes())
            .collect();
        let off = p.add_initializer(raw_tensor(
            &format!("{name}_code_offsets"),
            odims,
            DataType::Int32,
            offsets,
        ));
        idx = p.add_op(
            make_node(
                "Add",
                &format!("{name}_offset"),
                2,
                &[&format!("{name}_book_indices")],
            ),
            &[Some(idx), Some(off)],
        )[0];
    }
    let book = p.add_initializer(book);
    p.add_op(
        make_node(
            "Gather",
            &format!("{name}_decode"),
            2,
            &[&format!("{name}_clustered")],
        ),
        &[Some(book), Some(idx)],
    )[0]
}

fn raw_tensor(name: &str, dims: Vec<i64>, ty: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims,
        data_type: Some(ty as i32),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// The shared `[256, 2]` uint8 table, row `b` = `[b & 15, b >> 4]`: the one in the graph when
/// an initializer of that name holds it, else a new one (under a fresh name if the name is
/// taken by something else). A lookup by name, not a scan of the graph.
fn nibble_table(g: &Graph, p: &mut Patch) -> Wire {
    let raw: Vec<u8> = (0..=255u8).flat_map(|b| [b & 15, b >> 4]).collect();
    let want = raw_tensor(NIBBLES, vec![256, 2], DataType::Uint8, raw);
    if let Some(v) = g.producer(NIBBLES) {
        if let Some(t) = g.const_tensor(v) {
            if t.dims == want.dims
                && t.data_type == want.data_type
                && t.raw_data.as_deref() == want.raw_data.as_deref()
            {
                return Wire::Value(v);
            }
        }
        let mut t = want;
        t.name = Some(g.fresh_name(NIBBLES));
        return p.add_initializer(t);
    }
    p.add_initializer(want)
}

fn shape_text(dims: &[i64]) -> String {
    let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", d.join("×"))
}
