//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Make ONNX models smaller and faster by rewriting their graphs, and prove every rewrite
/// numerically in tract.
#[derive(Debug, Parser)]
#[command(
    name = "onnx-slim",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  onnx-slim in.onnx out.onnx                 # default rules (clean), verify, write\n  onnx-slim in.onnx out.onnx --rules none    # lossless re-encode\n  onnx-slim inspect in.onnx --json\n  onnx-slim --list-rules"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// The main job: rewrite IN, verify, write OUT.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The model to rewrite.
    #[arg(value_name = "IN", required_unless_present = "list_rules")]
    pub input: Option<PathBuf>,
    /// Where to write the result (refused if it is IN, unless --in-place).
    #[arg(value_name = "OUT", required_unless_present = "list_rules")]
    pub output: Option<PathBuf>,
    /// Comma-separated rules, rule codes (`C005`) or groups (clean, share, prune, sparsify,
    /// lowrank, quantize, cluster); `all` is every rule, `none` re-encodes losslessly. Default: clean
    /// (with --budget or --target-size: clean,prune,lowrank,quantize; with --budget and option
    /// flags of lossy rules: clean and those rules). See --list-rules.
    #[arg(long)]
    pub rules: Option<String>,
    /// List the rules and the groups `--rules` takes, and exit.
    #[arg(long)]
    pub list_rules: bool,
    /// Write the result without verifying it in tract.
    #[arg(long)]
    pub no_verify: bool,
    /// Allow OUT to be the same file as IN.
    #[arg(long)]
    pub in_place: bool,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// Store tensors of at least THRESHOLD bytes (default 1024) in `OUT.data`.
    #[arg(long, value_name = "THRESHOLD", num_args = 0..=1, default_missing_value = "1024")]
    pub external_data: Option<u64>,
    /// Stop after N patches (to bisect which rewrite broke numerics).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_patches: Option<usize>,
    /// Representative inputs for data-aware rules (test_data_set folders or .npz).
    #[arg(long, value_name = "DIR")]
    pub calibration: Vec<PathBuf>,
    /// lowrank: keep this fraction of each weight's squared singular values, in (0, 1]
    /// (default 0.95 when no --lowrank-* rank flag is given).
    #[arg(long, value_name = "E", allow_negative_numbers = true)]
    pub lowrank_energy: Option<f64>,
    /// lowrank: factor every weight at this rank.
    #[arg(long, value_name = "R")]
    pub lowrank_rank: Option<usize>,
    /// lowrank: keep this fraction of each weight's parameters, in (0, 1].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub lowrank_ratio: Option<f64>,
    /// lowrank: per-layer relative error budget ‖W−AB‖/‖W‖ (output error on the calibration
    /// data with --calibration); raises the rank where needed, or alone picks the smallest.
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub lowrank_tolerance: Option<f64>,
    /// lowrank: factor only when it saves more than this fraction of parameters (default 0.1).
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub lowrank_min_saving: Option<f64>,
    /// prune: remove the channels and neurons the next layers read as a constant (0, or a
    /// constant they take in their bias), with every tensor coupled to them (lossless).
    /// `--rules prune` alone does the same.
    #[arg(long)]
    pub prune_zero: bool,
    /// prune: also remove the lowest-importance fraction R of each coupled group, in (0, 1)
    /// (lossy; at least one channel stays).
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub prune_ratio: Option<f64>,
    /// prune: how --prune-ratio ranks channels: `l1` (the default) or `l2` norm of the
    /// producers' filters, or `bn` (|gamma| of the BatchNormalizations).
    #[arg(long, value_name = "l1|l2|bn")]
    pub prune_importance: Option<String>,
    /// prune: round the channels --prune-ratio keeps in each group to the nearest multiple of N
    /// (never to 0, never above the group's count), for the panel sizes of matrix kernels.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub prune_round: Option<i64>,
    /// prune: node or weight names whose groups are left alone (comma-separated, repeatable).
    #[arg(long, value_name = "NAME,...")]
    pub prune_exclude: Vec<String>,
    /// sparsify: zero this fraction of each layer's weights (Conv, ConvTranspose, Gemm, MatMul
    /// kernels), smallest magnitudes first, in (0, 1) (default 0.5; lossy).
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub sparsity: Option<f64>,
    /// sparsify: `unstructured` (the default) or `2:4` (in every 4 consecutive weights along the
    /// input axis the 2 smallest go, as sparse tensor cores run them; the sparsity is then 0.5).
    #[arg(long, value_name = "P")]
    pub sparsity_pattern: Option<String>,
    /// Store float32 initializers as ONNX sparse initializers where that makes them smaller (with
    /// any rules; lossless).
    #[arg(long)]
    pub sparse_storage: bool,
    /// quantize: store weights as `int8` (symmetric, the default), `uint8` (asymmetric) or `int4`
    /// (symmetric, two per byte; opset 21, raised when no other op changes meaning).
    #[arg(long, value_name = "TYPE")]
    pub quantize_weights: Option<String>,
    /// quantize: one scale per output `channel` (the default), per `tensor`, `auto` (per tensor
    /// below 32 elements per channel), or per `block:N` of N elements along the weight's input
    /// axis (`block_size`, opset 21).
    #[arg(long, value_name = "G")]
    pub quantize_granularity: Option<String>,
    /// quantize: `qdq` (weight-only DequantizeLinear, the default) or `dynamic` (MatMul and Gemm
    /// through DynamicQuantizeLinear + MatMulInteger, as onnxruntime's dynamic quantizer).
    #[arg(long, value_name = "MODE")]
    pub quantize_mode: Option<String>,
    /// quantize: node or weight names to keep in float (comma-separated, repeatable).
    #[arg(long, value_name = "NAME,...")]
    pub quantize_exclude: Vec<String>,
    /// quantize: keep in float any weight whose quantization alone moves the model's outputs by
    /// more than X, the largest relative L2 error ‖a−b‖/‖a‖ of any output on any input set,
    /// measured in tract on the --calibration inputs (else on seeded random inputs).
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub quantize_tolerance: Option<f64>,
    /// quantize: also quantize the activations Conv, MatMul and Gemm read (static QDQ: uint8
    /// QuantizeLinear→DequantizeLinear pairs with ranges calibrated on --calibration, required).
    #[arg(long)]
    pub quantize_activations: bool,
    /// quantize: how --quantize-activations picks each activation's range: `minmax` (the
    /// default), `percentile[:P]` (cut (100−P)/2 % at each end, default P 99.999) or `entropy`
    /// (KL divergence, as TensorRT).
    #[arg(long, value_name = "METHOD")]
    pub quantize_calibrate: Option<String>,
    /// quantize: with --quantize-activations, also a pair on each output of those Conv, MatMul
    /// and Gemm nodes: the placement onnxruntime fuses into integer kernels (QLinearConv,
    /// QLinearMatMul, QGemm); more pairs, more error.
    #[arg(long)]
    pub quantize_outputs: bool,
    /// cluster: bits per code, `4` (the default; codes packed two per byte), `5`, `6` or `8`
    /// (one byte per code): 2^bits k-means centroids per codebook.
    #[arg(long, value_name = "BITS")]
    pub cluster_bits: Option<u32>,
    /// cluster: one codebook per `tensor` (the default) or per output `channel`.
    #[arg(long, value_name = "G")]
    pub cluster_granularity: Option<String>,
    /// How far the outputs may move, as a loss under --budget-metric (cosine: 1 − cosine, so
    /// 0.01 means cosine ≥ 0.99). Without a --lowrank-*/--quantize-*/--prune-ratio flag, onnx-slim
    /// chooses per layer how to apply the lossy rules (default: clean,prune,lowrank,quantize) to make
    /// the model as small as possible within it; with one, it is the limit that fixed recipe is
    /// held to. Default for a lossy run: 0.01 on cosine.
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub budget: Option<f64>,
    /// The metric of --budget: `cosine` (the default), `rel-l2`, `argmax` (1 − agreement of the
    /// last axis' argmax) or `max-abs`; the worst output on the worst input set counts.
    #[arg(long, value_name = "M")]
    pub budget_metric: Option<String>,
    /// Reach this fraction of the input's file size with the least output loss (the dual of
    /// --budget), e.g. 0.2.
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub target_size: Option<f64>,
    /// What the --budget search minimises: `size` (the default), `macs`, or `latency` (tract's,
    /// measured per option; not deterministic).
    #[arg(long, value_name = "O")]
    pub objective: Option<String>,
    /// No report and no progress display: only warnings and errors, on stderr (the progress
    /// display is also hidden when stderr is not a terminal).
    #[arg(long, short = 'q', conflicts_with = "verbose")]
    pub quiet: bool,
    /// Every rewrite in the report (not the first 10 per rule), and the rules that had
    /// nothing to do.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    #[command(flatten)]
    pub conveniences: super::conveniences::ConvenienceArgs,
    #[command(flatten)]
    pub verify: VerifyInputArgs,
}

/// Inputs and tolerance for verification.
#[derive(Debug, Args, Clone, Default)]
pub struct VerifyInputArgs {
    /// Inputs: a test_data_set_N folder, a folder of them, a .npz or a .npy file. Default: the
    /// model's own test_data_set_* folders if present and no --input-shape/--input is given,
    /// else seeded random values (a symbolic first axis is 1, other symbolic dims need
    /// --input-shape).
    #[arg(long, value_name = "DIR|FILE")]
    pub inputs: Option<PathBuf>,
    /// Verification only: run the models at this input shape, e.g. `--input-shape
    /// x=1,3,224,224` (repeatable); random inputs are made at it (test_data_set folders beside
    /// the model are then not used), with --inputs the loaded tensors must have it. The written
    /// model keeps its declared shapes (--input-shapes NAME:DIMS writes them into it).
    #[arg(long, value_name = "NAME=DIMS")]
    pub input_shape: Vec<String>,
    /// Give an input's value, e.g. `--input sr=16000` (repeatable): a scalar, or comma-separated
    /// values (a 1-D input, or at its --input-shape); it replaces that input in every input set.
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub input_values: Vec<String>,
    /// Override the element-wise verification tolerance (relative, with an absolute floor), a
    /// number ≥ 0. A lossy run is judged by --budget instead.
    #[arg(long, allow_negative_numbers = true, value_parser = tolerance)]
    pub tolerance: Option<f32>,
    /// Seed for random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Memory verification may take, e.g. `8G`, `512M`, `1.5G` or bytes: when tract would need
    /// more to hold a model whole (about 3× its weights), both models are verified segment by
    /// segment, each segment's weights within a third of it; calibration and the runs of
    /// --quantize-tolerance and --budget too. Default: a tenth of the RAM.
    #[arg(long, value_name = "SIZE", value_parser = memory_limit)]
    pub memory_limit: Option<u64>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// What is in a model: opsets, inputs/outputs, op histogram, parameters, MACs.
    Inspect {
        /// The model.
        model: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Count MACs at this input shape, e.g. `--input-shape x=1,3,224,224` (repeatable);
        /// symbolic dims not given count as 1.
        #[arg(long, value_name = "NAME=DIMS")]
        input_shape: Vec<String>,
    },
    /// Deterministic text form of the graph.
    Show {
        /// The model.
        model: PathBuf,
    },
    /// What changed between two models: op counts and a unified diff of their text forms.
    Diff {
        /// The original.
        a: PathBuf,
        /// The rewritten model.
        b: PathBuf,
    },
    /// Run both models in tract on the same inputs and compare every output.
    Verify {
        /// The reference model.
        a: PathBuf,
        /// The model to check.
        b: PathBuf,
        #[command(flatten)]
        inputs: VerifyInputArgs,
        /// Judge B by a model-level budget instead of element by element, as the main command
        /// judges a lossy run (see its --budget).
        #[arg(long, value_name = "X", allow_negative_numbers = true)]
        budget: Option<f64>,
        /// The metric of --budget: cosine (the default), rel-l2, argmax or max-abs.
        #[arg(long, value_name = "M")]
        budget_metric: Option<String>,
        /// Write the comparison as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        report_json: Option<PathBuf>,
    },
    /// Print a shell completion script: `onnx-slim completions bash > /etc/bash_completion.d/onnx-slim`
    /// (zsh: into a folder of `$fpath` as `_onnx-slim`; fish: `~/.config/fish/completions/onnx-slim.fish`).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Run presets of the main job on model folders (model.onnx + test_data_set_*) and compare
    /// each result with the original: size, parameters, MACs, tract latency, output error and
    /// the task metric, as a Markdown table (and an SVG chart of size against error).
    Bench {
        /// Model folders in ONNX model-zoo layout.
        #[arg(value_name = "MODEL_DIR", required = true)]
        dirs: Vec<PathBuf>,
        /// Main-job arguments, split at whitespace, e.g. "--rules quantize"; `{dir}` is the
        /// model folder (repeatable). Default: "--rules clean" and "--rules quantize".
        #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
        preset: Vec<String>,
        /// Timed tract runs per model and preset; the latency is their median.
        #[arg(long, value_name = "N", default_value_t = 5)]
        runs: usize,
        /// Write the Markdown table to FILE instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Write the chart of size ratio against output error to FILE (SVG).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// Store a model and its external data losslessly, entropy-coded, in one file (`unpack`
    /// restores every byte).
    Pack {
        /// The model (its external data files are packed with it).
        model: PathBuf,
        /// The packed file to write.
        packed: PathBuf,
    },
    /// Restore a model packed by `pack`, byte for byte, with its external data files beside it.
    Unpack {
        /// The packed file.
        packed: PathBuf,
        /// Where to write the model.
        model: PathBuf,
    },
}

/// Parses `--tolerance`: a finite number, not negative.
fn tolerance(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        Ok(t) => Err(format!("must be a finite number ≥ 0, got {t}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses `--memory-limit`: a size such as `512M`, `8G`, `1.5G` or bytes.
fn memory_limit(s: &str) -> std::result::Result<u64, String> {
    crate::verify::segment::parse_size(s)
}
