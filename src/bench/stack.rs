//! A synthetic transformer-like stack with its weights in external data, of any size: the model
//! the large-model benchmark (`benches/bigmodel.rs`) and the bounded-memory tests rewrite.
//!
//! Each of [`StackSpec::layers`] blocks is attention without heads followed by a feed-forward
//! layer, on an input `x` of float32 `[1, seq, hidden]`:
//!
//! ```text
//! q, k, v = x·Wq, x·Wk, x·Wv          a = Softmax(q·kᵀ · 1/√hidden)·v
//! n1 = LayerNormalization(x + a·Wo + bo)
//! n2 = LayerNormalization(n1 + Relu(n1·W1 + b1)·W2 + b2)      W1: hidden×4·hidden, W2: 4·hidden×hidden
//! ```
//!
//! so a block holds 12·hidden² + 10·hidden weights. An `Identity` sits before the first block and
//! between blocks: `--rules clean` always has something to remove, so a verified run verifies.
//! The weights (uniform in ±1/√hidden from a fixed seed) are written one tensor at a time straight
//! to `<name>.data`, never held in memory together.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};
use crate::ir::builder::{attr_f, attr_i, attr_ints, ModelBuilder};
use crate::onnx::proto::tensor_proto::{DataLocation, DataType};
use crate::onnx::proto::{StringStringEntryProto, TensorProto};

/// The shape of a generated stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackSpec {
    /// Width of the hidden state (the feed-forward layer is 4× wider).
    pub hidden: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Sequence length of the input `x` (`[1, seq, hidden]`).
    pub seq: usize,
    /// Seed of the weights.
    pub seed: u64,
}

impl StackSpec {
    /// The stack of `hidden` width whose weights come closest to `bytes` (at least one block).
    pub fn for_bytes(bytes: u64, hidden: usize) -> StackSpec {
        let per = Self::block_bytes(hidden);
        let layers = ((bytes as f64 / per as f64).round() as usize).max(1);
        StackSpec {
            hidden,
            layers,
            seq: 16,
            seed: 1,
        }
    }

    fn block_bytes(hidden: usize) -> u64 {
        let h = hidden as u64;
        4 * (12 * h * h + 10 * h)
    }

    /// Bytes of all weights (float32).
    pub fn weight_bytes(&self) -> u64 {
        self.layers as u64 * Self::block_bytes(self.hidden)
    }

    /// Number of weights.
    pub fn parameters(&self) -> u64 {
        self.weight_bytes() / 4
    }
}

/// Deterministic uniform floats (xorshift64*), fast enough to write gigabytes.
struct Uniform(u64);

impl Uniform {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // 24 random bits in [0, 1), then to [-1, 1).
        ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Writes the stack of `spec` as `dir/<name>` and `dir/<name>.data`; returns the model's path.
/// Every initializer except the attention scale is external.
pub fn write_stack(spec: &StackSpec, dir: &Path, name: &str) -> Result<PathBuf> {
    let model_path = dir.join(name);
    let location = format!("{name}.data");
    let data_path = dir.join(&location);
    let file = std::fs::File::create(&data_path).map_err(|e| Error::io("create", &data_path, e))?;
    let mut data = std::io::BufWriter::with_capacity(1 << 22, file);
    let mut offset = 0u64;
    let mut rng = Uniform(spec.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let h = spec.hidden as i64;
    let amp = 1.0 / (spec.hidden as f32).sqrt();
    let mut b = ModelBuilder::new(17);
    b.graph_name("stack")
        .input("x", DataType::Float, &[1, spec.seq as i64, h])
        .output("y", DataType::Float, &[1, spec.seq as i64, h]);
    b.initializer(TensorProto {
        name: Some("scale".into()),
        data_type: Some(DataType::Float as i32),
        dims: vec![],
        raw_data: Some(Bytes::copy_from_slice(&amp.to_le_bytes())),
        ..Default::default()
    });
    // Writes one external tensor: `fill` gives each element from a uniform draw in [-1, 1).
    let mut external = |b: &mut ModelBuilder,
                        tensor: &str,
                        dims: &[i64],
                        fill: &dyn Fn(f32) -> f32|
     -> Result<()> {
        let n: i64 = dims.iter().product();
        let mut chunk = Vec::with_capacity(1 << 20);
        for i in 0..n {
            chunk.extend_from_slice(&fill(rng.next()).to_le_bytes());
            if chunk.len() >= (1 << 20) || i + 1 == n {
                data.write_all(&chunk)
                    .map_err(|e| Error::io("write", &data_path, e))?;
                chunk.clear();
            }
        }
        let len = 4 * n as u64;
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        b.initializer(TensorProto {
            name: Some(tensor.into()),
            data_type: Some(DataType::Float as i32),
            dims: dims.to_vec(),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![
                entry("location", location.clone()),
                entry("offset", offset.to_string()),
                entry("length", len.to_string()),
            ],
            ..Default::default()
        });
        offset += len;
        Ok(())
    };
    let weight = move |r: f32| r * amp;
    let bias = move |r: f32| r * 0.1;
    let gain = |r: f32| 1.0 + 0.1 * r;
    b.node("Identity", &["x"], &["x_0"], vec![]);
    for l in 0..spec.layers {
        let p = |s: &str| format!("l{l}_{s}");
        let x = format!("x_{l}");
        for w in ["wq", "wk", "wv", "wo"] {
            external(&mut b, &p(w), &[h, h], &weight)?;
        }
        external(&mut b, &p("bo"), &[h], &bias)?;
        external(&mut b, &p("g1"), &[h], &gain)?;
        external(&mut b, &p("c1"), &[h], &bias)?;
        external(&mut b, &p("w1"), &[h, 4 * h], &weight)?;
        external(&mut b, &p("b1"), &[4 * h], &bias)?;
        external(&mut b, &p("w2"), &[4 * h, h], &weight)?;
        external(&mut b, &p("b2"), &[h], &bias)?;
        external(&mut b, &p("g2"), &[h], &gain)?;
        external(&mut b, &p("c2"), &[h], &bias)?;
        let node = |b: &mut ModelBuilder, op: &str, ins: &[String], out: &str, attrs| {
            let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
            b.node(op, &ins, &[&p(out)], attrs);
        };
        node(&mut b, "MatMul", &[x.clone(), p("wq")], "q", vec![]);
        node(&mut b, "MatMul", &[x.clone(), p("wk")], "k", vec![]);
        node(&mut b, "MatMul", &[x.clone(), p("wv")], "v", vec![]);
        let perm = vec![attr_ints("perm", &[0, 2, 1])];
        node(&mut b, "Transpose", &[p("k")], "kt", perm);
        node(&mut b, "MatMul", &[p("q"), p("kt")], "s", vec![]);
        node(&mut b, "Mul", &[p("s"), "scale".into()], "ss", vec![]);
        let axis = vec![attr_i("axis", -1)];
        node(&mut b, "Softmax", &[p("ss")], "pr", axis);
        node(&mut b, "MatMul", &[p("pr"), p("v")], "a", vec![]);
        node(&mut b, "MatMul", &[p("a"), p("wo")], "o", vec![]);
        node(&mut b, "Add", &[p("o"), p("bo")], "ob", vec![]);
        node(&mut b, "Add", &[x.clone(), p("ob")], "r1", vec![]);
        let ln = || vec![attr_i("axis", -1), attr_f("epsilon", 1e-5)];
        let ins = [p("r1"), p("g1"), p("c1")];
        node(&mut b, "LayerNormalization", &ins, "n1", ln());
        node(&mut b, "MatMul", &[p("n1"), p("w1")], "h", vec![]);
        node(&mut b, "Add", &[p("h"), p("b1")], "hb", vec![]);
        node(&mut b, "Relu", &[p("hb")], "hr", vec![]);
        node(&mut b, "MatMul", &[p("hr"), p("w2")], "f", vec![]);
        node(&mut b, "Add", &[p("f"), p("b2")], "fb", vec![]);
        node(&mut b, "Add", &[p("n1"), p("fb")], "r2", vec![]);
        let ins = [p("r2"), p("g2"), p("c2")];
        node(&mut b, "LayerNormalization", &ins, "n2", ln());
        let next = if l + 1 == spec.layers {
            "y".to_string()
        } else {
            format!("x_{}", l + 1)
        };
        b.node("Identity", &[&p("n2")], &[&next], vec![]);
    }
    drop(external);
    data.flush()
        .map_err(|e| Error::io("write", &data_path, e))?;
    let bytes = b.build().encode_to_vec();
    std::fs::write(&model_path, bytes).map_err(|e| Error::io("write", &model_path, e))?;
    Ok(model_path)
}
