//! Seeded corruption of real and built models: thousands of mutants go through
//! `decode_bytes` → `Model::from_proto` → `inspect` → `to_proto` → `encode_model` in-process under
//! `catch_unwind`, with a global allocator that records any single allocation larger than
//! 4 × the input + 64 MB. Nothing may panic, nothing may allocate without bound, and a mutant the
//! IR accepts must still round-trip losslessly. A sample also goes through the binary, which must
//! exit 0 or 2, never 101.
//!
//! Mutations: bit flips, byte overwrites, truncations, raw splices from another model, deletions
//! and insertions of byte ranges; structure-aware edits on a protobuf wire tree (varints set to
//! absurd values such as dims of 1 << 40, length prefixes set huge, fields deleted, repeated or
//! given another wire type, payloads truncated or swapped for a message from another model);
//! and edits of the decoded `ModelProto` (absurd dims and dtypes, self loops, dangling and
//! duplicate names, nested subgraphs, shuffled nodes).
//!
//! Built-in models make this test do real work without `../shared`; with it, the six shared models
//! and a sample of the node suite are mutated too.

mod common;

use common::proto::{f32_tensor, mlp_graph, node, value_info};

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bytes::Bytes;
use onnx_slim::ir::Model;
use onnx_slim::onnx::proto::attribute_proto::AttributeType;
use onnx_slim::onnx::proto::tensor_proto::{DataLocation, DataType};
use onnx_slim::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, OperatorSetIdProto, SparseTensorProto,
    StringStringEntryProto, TensorProto, TypeProto, ValueInfoProto,
};
use onnx_slim::onnx::{decode_bytes, encode_model};
use onnx_slim::report::inspect::inspect;
use prost::Message;

// ---- the allocation guard ----

/// Records allocations above the calling thread's limit (only the thread running the pipeline
/// sets one; every other thread has `usize::MAX`).
struct Guard;

thread_local! {
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Allocations over `LIMIT` seen on this thread, and the largest of them.
    static VIOLATIONS: Cell<usize> = const { Cell::new(0) };
    static LARGEST_VIOLATION: Cell<usize> = const { Cell::new(0) };
}

#[inline]
fn check_size(size: usize) {
    let limit = LIMIT.try_with(Cell::get).unwrap_or(usize::MAX);
    if size > limit {
        let _ = VIOLATIONS.try_with(|v| v.set(v.get() + 1));
        let _ = LARGEST_VIOLATION.try_with(|v| v.set(v.get().max(size)));
    }
}

fn violations() -> usize {
    VIOLATIONS.with(Cell::get)
}

unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check_size(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Guard = Guard;

// ---- a small PRNG ----

struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// `ONNX_SLIM_MUTATION_SEED` (default 0) salts every seed and `ONNX_SLIM_MUTATION_SCALE`
/// (default 1) multiplies the mutant counts: for longer fuzzing runs by hand. CI uses the defaults.
fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed_of(name: &str) -> u64 {
    // FNV-1a: stable across runs and platforms.
    let salt = env_u64("ONNX_SLIM_MUTATION_SEED", 0);
    name.bytes()
        .chain(salt.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        })
}

// ---- built-in models ----

fn model(graph: GraphProto, opset: i64) -> ModelProto {
    let mut m = common::proto::model(graph, "mutation test", opset);
    m.metadata_props = vec![StringStringEntryProto {
        key: Some("k".into()),
        value: Some("v".into()),
    }];
    m
}

fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

/// MatMul + Add + Relu + MatMul, batch symbolic, with a `value_info`.
fn mlp() -> ModelProto {
    let mut g = mlp_graph(-1, "y");
    g.value_info = vec![value_info("h", DataType::Float, &[-1, 32])];
    model(g, 13)
}

/// An `If` whose branches read outer values, a `Constant`, a sparse initializer, an input with a
/// default initializer and an optional (empty) input.
fn branches() -> ModelProto {
    let then_branch = GraphProto {
        name: Some("then".into()),
        node: vec![node("Add", "then_add", &["x", "W"], &["t_out"])],
        output: vec![value_info("t_out", DataType::Float, &[4])],
        ..Default::default()
    };
    let else_branch = GraphProto {
        name: Some("else".into()),
        node: vec![
            node("Mul", "else_mul", &["x", "c"], &["e0"]),
            node("Identity", "else_id", &["e0"], &["e_out"]),
        ],
        output: vec![value_info("e_out", DataType::Float, &[4])],
        ..Default::default()
    };
    let mut if_node = node("If", "if", &["cond"], &["z"]);
    if_node.attribute = vec![
        AttributeProto {
            name: Some("then_branch".into()),
            r#type: Some(AttributeType::Graph as i32),
            g: Some(then_branch),
            ..Default::default()
        },
        AttributeProto {
            name: Some("else_branch".into()),
            r#type: Some(AttributeType::Graph as i32),
            g: Some(else_branch),
            ..Default::default()
        },
    ];
    let mut constant = node("Constant", "const_c", &[], &["c"]);
    constant.attribute = vec![tensor_attr("value", f32_tensor("c", &[4], 5))];
    let mut clip = node("Clip", "clip", &["z", "", "hi"], &["y"]);
    clip.domain = Some(String::new());
    let sparse = SparseTensorProto {
        values: Some(f32_tensor("S", &[2], 6)),
        indices: Some(TensorProto {
            name: Some("S_idx".into()),
            dims: vec![2],
            data_type: Some(DataType::Int64 as i32),
            int64_data: vec![1, 3],
            ..Default::default()
        }),
        dims: vec![4],
    };
    model(
        GraphProto {
            name: Some("branches".into()),
            node: vec![
                constant,
                if_node,
                node("Add", "add_s", &["y", "S"], &["y2"]),
                clip,
            ],
            initializer: vec![
                f32_tensor("W", &[4], 7),
                f32_tensor("hi", &[], 8),
                f32_tensor("x", &[4], 9),
            ],
            sparse_initializer: vec![sparse],
            input: vec![
                value_info("cond", DataType::Bool, &[]),
                value_info("x", DataType::Float, &[4]),
            ],
            output: vec![value_info("y2", DataType::Float, &[4])],
            ..Default::default()
        },
        13,
    )
}

/// A long chain of small ops with int64 shape tensors, attributes of every list kind and
/// value_info, plus a function and a second opset.
fn chain() -> ModelProto {
    let mut nodes = Vec::new();
    let mut prev = "x".to_string();
    for i in 0..24 {
        let out = format!("v{i}");
        let mut n = match i % 4 {
            0 => node("Relu", &format!("n{i}"), &[&prev], &[&out]),
            1 => node("Add", &format!("n{i}"), &[&prev, "bias"], &[&out]),
            2 => node("Reshape", &format!("n{i}"), &[&prev, "shape"], &[&out]),
            _ => node("Transpose", &format!("n{i}"), &[&prev], &[&out]),
        };
        if i % 4 == 3 {
            n.attribute.push(AttributeProto {
                name: Some("perm".into()),
                r#type: Some(AttributeType::Ints as i32),
                ints: vec![1, 0],
                ..Default::default()
            });
        }
        if i % 5 == 0 {
            n.attribute.push(AttributeProto {
                name: Some("note".into()),
                r#type: Some(AttributeType::Strings as i32),
                strings: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
                floats: vec![1.5, -0.0, f32::NAN],
                ..Default::default()
            });
        }
        nodes.push(n);
        prev = out;
    }
    nodes.push(node("Identity", "last", &[&prev], &["y"]));
    let mut m = model(
        GraphProto {
            name: Some("chain".into()),
            node: nodes,
            initializer: vec![
                f32_tensor("bias", &[8], 11),
                TensorProto {
                    name: Some("shape".into()),
                    dims: vec![2],
                    data_type: Some(DataType::Int64 as i32),
                    raw_data: Some(Bytes::from(
                        [8i64, 8]
                            .iter()
                            .flat_map(|v| v.to_le_bytes())
                            .collect::<Vec<u8>>(),
                    )),
                    ..Default::default()
                },
            ],
            input: vec![value_info("x", DataType::Float, &[8, 8])],
            output: vec![value_info("y", DataType::Float, &[8, 8])],
            value_info: (0..24)
                .step_by(3)
                .map(|i| value_info(&format!("v{i}"), DataType::Float, &[8, 8]))
                .collect(),
            ..Default::default()
        },
        14,
    );
    m.opset_import.push(OperatorSetIdProto {
        domain: Some("com.example".into()),
        version: Some(1),
    });
    m.functions.push(onnx_slim::onnx::proto::FunctionProto {
        name: Some("Double".into()),
        domain: Some("com.example".into()),
        input: vec!["a".into()],
        output: vec!["b".into()],
        node: vec![node("Add", "dbl", &["a", "a"], &["b"])],
        ..Default::default()
    });
    m
}

// ---- a protobuf wire tree, for structure-aware mutations ----

#[derive(Clone)]
enum Payload {
    Varint(u64),
    I64([u8; 8]),
    I32([u8; 4]),
    Len(Bytes),
    Msg(Vec<Field>),
}

#[derive(Clone)]
struct Field {
    number: u64,
    payload: Payload,
}

fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Parses `b` as a message; length-delimited payloads become sub-messages when they parse and
/// re-encode to the same bytes, else stay opaque.
fn parse(b: &Bytes, depth: usize) -> Option<Vec<Field>> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = read_varint(b, &mut pos)?;
        let number = key >> 3;
        if number == 0 || number > (1 << 29) {
            return None;
        }
        let payload = match key & 7 {
            0 => Payload::Varint(read_varint(b, &mut pos)?),
            1 => {
                let s = b.get(pos..pos + 8)?;
                pos += 8;
                Payload::I64(s.try_into().ok()?)
            }
            5 => {
                let s = b.get(pos..pos + 4)?;
                pos += 4;
                Payload::I32(s.try_into().ok()?)
            }
            2 => {
                let len = read_varint(b, &mut pos)? as usize;
                if len > b.len() - pos {
                    return None;
                }
                let sub = b.slice(pos..pos + len);
                pos += len;
                match (depth < 24 && !sub.is_empty())
                    .then(|| parse(&sub, depth + 1))
                    .flatten()
                {
                    Some(f) if serialize(&f) == sub => Payload::Msg(f),
                    _ => Payload::Len(sub),
                }
            }
            _ => return None,
        };
        fields.push(Field { number, payload });
    }
    Some(fields)
}

fn serialize(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut no_edit = Edit {
        target: usize::MAX,
        action: Action::Delete,
    };
    ser(fields, &mut out, &mut no_edit, &mut 0);
    out
}

#[derive(Clone, Debug)]
enum Action {
    SetVarint(u64),
    Delete,
    Repeat(usize),
    SetPayload(Bytes),
    /// A length prefix that does not match the payload that follows.
    BadLength(u64),
    WireType(u64),
    Number(u64),
}

struct Edit {
    target: usize,
    action: Action,
}

fn wire_type(p: &Payload) -> u64 {
    match p {
        Payload::Varint(_) => 0,
        Payload::I64(_) => 1,
        Payload::Len(_) | Payload::Msg(_) => 2,
        Payload::I32(_) => 5,
    }
}

fn ser_field(f: &Field, out: &mut Vec<u8>, edit: &mut Edit, counter: &mut usize) {
    put_varint(f.number << 3 | wire_type(&f.payload), out);
    match &f.payload {
        Payload::Varint(v) => put_varint(*v, out),
        Payload::I64(b) => out.extend_from_slice(b),
        Payload::I32(b) => out.extend_from_slice(b),
        Payload::Len(b) => {
            put_varint(b.len() as u64, out);
            out.extend_from_slice(b);
        }
        Payload::Msg(sub) => {
            let mut body = Vec::new();
            ser(sub, &mut body, edit, counter);
            put_varint(body.len() as u64, out);
            out.extend_from_slice(&body);
        }
    }
}

/// Encodes `fields`, applying `edit` to the field whose pre-order index is `edit.target`.
fn ser(fields: &[Field], out: &mut Vec<u8>, edit: &mut Edit, counter: &mut usize) {
    for f in fields {
        let id = *counter;
        *counter += 1;
        if id != edit.target {
            ser_field(f, out, edit, counter);
            continue;
        }
        let mut plain = Edit {
            target: usize::MAX,
            action: Action::Delete,
        };
        match edit.action.clone() {
            Action::Delete => {}
            Action::Repeat(n) => {
                for _ in 0..n {
                    ser_field(f, out, &mut plain, &mut 0);
                }
            }
            Action::SetVarint(v) => {
                put_varint(f.number << 3, out);
                put_varint(v, out);
            }
            Action::SetPayload(b) => {
                put_varint(f.number << 3 | 2, out);
                put_varint(b.len() as u64, out);
                out.extend_from_slice(&b);
            }
            Action::BadLength(len) => {
                let body = match &f.payload {
                    Payload::Len(b) => b.to_vec(),
                    Payload::Msg(sub) => serialize(sub),
                    _ => Vec::new(),
                };
                put_varint(f.number << 3 | 2, out);
                put_varint(len, out);
                out.extend_from_slice(&body);
            }
            Action::WireType(wt) => {
                let mut tmp = Vec::new();
                ser_field(f, &mut tmp, &mut plain, &mut 0);
                let mut p = 0;
                let _ = read_varint(&tmp, &mut p);
                put_varint(f.number << 3 | wt, out);
                out.extend_from_slice(&tmp[p..]);
            }
            Action::Number(n) => {
                let g = Field {
                    number: n,
                    payload: f.payload.clone(),
                };
                ser_field(&g, out, &mut plain, &mut 0);
            }
        }
        // Keep the counter in step with an unedited walk (the edited subtree is skipped).
        *counter += subtree_size(f) - 1;
        edit.target = usize::MAX;
    }
}

fn subtree_size(f: &Field) -> usize {
    1 + match &f.payload {
        Payload::Msg(sub) => sub.iter().map(subtree_size).sum(),
        _ => 0,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Varint,
    Fixed,
    Len,
    Msg,
}

struct Site {
    kind: Kind,
    /// Encoded length of the payload.
    len: usize,
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends a site per field in pre-order; returns the encoded length of `fields`.
fn index(fields: &[Field], out: &mut Vec<Site>) -> usize {
    let mut total = 0;
    for f in fields {
        let at = out.len();
        out.push(Site {
            kind: Kind::Varint,
            len: 0,
        });
        let (kind, len) = match &f.payload {
            Payload::Varint(v) => (Kind::Varint, varint_len(*v)),
            Payload::I64(_) => (Kind::Fixed, 8),
            Payload::I32(_) => (Kind::Fixed, 4),
            Payload::Len(b) => (Kind::Len, b.len()),
            Payload::Msg(sub) => (Kind::Msg, index(sub, out)),
        };
        out[at] = Site { kind, len };
        total += varint_len(f.number << 3)
            + len
            + if matches!(kind, Kind::Len | Kind::Msg) {
                varint_len(len as u64)
            } else {
                0
            };
    }
    total
}

/// Every message payload (as bytes) in the tree, for structured splices.
fn messages(fields: &[Field], out: &mut Vec<Bytes>, max: usize) {
    for f in fields {
        if let Payload::Msg(sub) = &f.payload {
            let b = serialize(sub);
            if b.len() <= max {
                out.push(Bytes::from(b));
            }
            messages(sub, out, max);
        }
    }
}

// ---- mutation ----

struct Subject {
    name: String,
    bytes: Bytes,
    proto: ModelProto,
    tree: Vec<Field>,
    sites: Vec<Site>,
}

impl Subject {
    fn new(name: String, bytes: Bytes) -> Subject {
        let proto = decode_bytes(bytes.clone(), Path::new(&name))
            .unwrap_or_else(|e| panic!("{name}: the unmutated model must decode: {e}"));
        let tree = parse(&bytes, 0).expect("a model parses as a wire tree");
        assert_eq!(
            serialize(&tree),
            bytes,
            "{name}: wire tree must re-encode exactly"
        );
        let mut sites = Vec::new();
        assert_eq!(index(&tree, &mut sites), bytes.len(), "{name}: site sizes");
        Subject {
            name,
            bytes,
            proto,
            tree,
            sites,
        }
    }
}

const INTERESTING: [u64; 20] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0xffff,
    (1 << 31) - 1,
    1 << 31,
    1 << 32,
    1 << 40,
    1 << 48,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
    i64::MIN as u64,
    (-(1i64 << 40)) as u64,
    (-1i64 << 31) as u64,
    u32::MAX as u64,
    1 << 63,
];

fn raw_mutation(s: &Subject, donor: &Bytes, rng: &mut XorShift) -> (String, Vec<u8>) {
    let mut b = s.bytes.to_vec();
    let n = b.len();
    match rng.below(7) {
        0 => {
            let k = 1 + rng.below(8);
            for _ in 0..k {
                let i = rng.below(n);
                b[i] ^= 1 << rng.below(8);
            }
            (format!("flip {k} bits"), b)
        }
        1 => {
            let k = 1 + rng.below(4);
            for _ in 0..k {
                let i = rng.below(n);
                let r = rng.next() as u8;
                b[i] = *rng.pick(&[0x00, 0xff, 0x80, 0x7f, r]);
            }
            (format!("overwrite {k} bytes"), b)
        }
        2 => {
            let at = rng.below(n);
            b.truncate(at);
            (format!("truncate at {at}"), b)
        }
        3 => {
            let at = rng.below(n);
            let len = 1 + rng.below((n - at).min(4096));
            let from = rng.below(donor.len());
            let dlen = 1 + rng.below((donor.len() - from).min(4096));
            b.splice(at..at + len, donor[from..from + dlen].iter().copied());
            (
                format!("splice {dlen} donor bytes over {at}..{}", at + len),
                b,
            )
        }
        4 => {
            let at = rng.below(n);
            let len = 1 + rng.below((n - at).min(256));
            b.drain(at..at + len);
            (format!("delete {at}..{}", at + len), b)
        }
        5 => {
            let at = rng.below(n);
            let len = 1 + rng.below((n - at).min(512));
            let chunk = b[at..at + len].to_vec();
            let times = 1 + rng.below(8);
            for _ in 0..times {
                b.splice(at..at, chunk.iter().copied());
            }
            (format!("repeat {at}..{} {times}×", at + len), b)
        }
        _ => {
            let at = rng.below(n + 1);
            let len = 1 + rng.below(16);
            let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            b.splice(at..at, junk);
            (format!("insert {len} random bytes at {at}"), b)
        }
    }
}

fn tree_mutation(s: &Subject, donors: &[Bytes], rng: &mut XorShift) -> (String, Vec<u8>) {
    // Prefer the sites that matter most: varints (dims, types, counts) and lengths.
    let target = rng.below(s.sites.len());
    let site = &s.sites[target];
    let action = match (site.kind, rng.below(10)) {
        (Kind::Varint, 0..=4) => Action::SetVarint(*rng.pick(&INTERESTING)),
        (Kind::Varint, 6) => Action::SetVarint(rng.next() >> rng.below(64)),
        (Kind::Len | Kind::Msg, 0..=2) => {
            let len = site.len as u64;
            Action::BadLength(*rng.pick(&[
                1 << 40,
                u32::MAX as u64,
                1 << 31,
                i64::MAX as u64,
                u64::MAX,
                len + 1,
                len.saturating_sub(1),
                len * 2 + 7,
            ]))
        }
        (Kind::Len, 3..=4) => {
            // Keep the framing, cut or pad the payload (raw_data vs dims, strings).
            let cut = rng.below(site.len + 1);
            let mut b = vec![0u8; cut];
            if rng.chance(30) {
                b.resize(site.len + 1 + rng.below(64), 0x41);
            }
            Action::SetPayload(Bytes::from(b))
        }
        (Kind::Msg, 3..=4) => {
            // Swap in a whole message from another model (maybe of another type).
            let d = rng.pick(donors).clone();
            Action::SetPayload(d)
        }
        (_, 5..=6) => {
            let cap = (1 << 20) / (site.len + 16);
            Action::Repeat(2 + rng.below(cap.clamp(1, 1000)))
        }
        (_, 7) => Action::WireType(*rng.pick(&[0, 1, 2, 3, 4, 5, 6, 7])),
        (_, 8) => Action::Number(*rng.pick(&[1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 20, 1000])),
        _ => Action::Delete,
    };
    let mut out = Vec::with_capacity(s.bytes.len() + 64);
    let desc = format!("wire edit of field #{target}: {action:?}")
        .chars()
        .take(160)
        .collect();
    ser(&s.tree, &mut out, &mut Edit { target, action }, &mut 0);
    (desc, out)
}

/// Calls `f` on every tensor of a graph and its subgraphs.
fn for_tensors(g: &mut GraphProto, f: &mut dyn FnMut(&mut TensorProto)) {
    for t in &mut g.initializer {
        f(t);
    }
    for s in &mut g.sparse_initializer {
        if let Some(v) = s.values.as_mut() {
            f(v);
        }
        if let Some(i) = s.indices.as_mut() {
            f(i);
        }
    }
    for n in &mut g.node {
        for a in &mut n.attribute {
            if let Some(t) = a.t.as_mut() {
                f(t);
            }
            if let Some(sub) = a.g.as_mut() {
                for_tensors(sub, f);
            }
        }
    }
}

/// Edits one tensor of `t`'s graph in a way chosen by `what`; returns a description.
fn mutate_tensor(what: usize, t: &mut TensorProto, rng: &mut XorShift) -> String {
    match what {
        0 => {
            let d = *rng.pick(&[1i64 << 40, i64::MAX, -1, 1 << 31, 0, i64::MIN]);
            let all = rng.chance(50);
            if t.dims.is_empty() {
                t.dims.push(d);
            }
            let last = t.dims.len() - 1;
            for (i, x) in t.dims.iter_mut().enumerate() {
                if all || i == last {
                    *x = d;
                }
            }
            format!("dims of {:?} := {:?}", t.name, t.dims)
        }
        1 => {
            let dt = *rng.pick(&[0, 8, 16, 17, 99, -1, i32::MAX, 23, 26]);
            t.data_type = Some(dt);
            format!("data_type of {:?} := {dt}", t.name)
        }
        2 => {
            let keep = t.raw_data.as_ref().map_or(0, |r| rng.below(r.len() + 1));
            if let Some(r) = t.raw_data.as_mut() {
                *r = r.slice(..keep);
            }
            t.float_data.extend([1.0; 3]);
            t.int64_data.push(i64::MAX);
            format!("payload of {:?} cut to {keep} + stray typed data", t.name)
        }
        _ => {
            let location = rng
                .pick(&["w.bin", "../x", "/etc/passwd", "", "."])
                .to_string();
            let length = rng.pick(&["1099511627776", "-5", "x"]).to_string();
            t.data_location = Some(DataLocation::External as i32);
            t.external_data = vec![
                StringStringEntryProto {
                    key: Some("location".into()),
                    value: Some(location),
                },
                StringStringEntryProto {
                    key: Some("length".into()),
                    value: Some(length),
                },
            ];
            format!("{:?} made external", t.name)
        }
    }
}

fn value_names(g: &GraphProto) -> Vec<String> {
    let mut v: Vec<String> = g.input.iter().filter_map(|i| i.name.clone()).collect();
    v.extend(g.initializer.iter().filter_map(|t| t.name.clone()));
    v.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    v.push(String::new());
    v.push("nowhere".into());
    v
}

fn proto_mutation(s: &Subject, rng: &mut XorShift) -> (String, Vec<u8>) {
    let mut m = s.proto.clone();
    let g = m.graph.get_or_insert_with(Default::default);
    let names = value_names(g);
    let what = rng.below(14);
    let desc: String = match what {
        0..=3 => {
            let mut count = 0;
            for_tensors(g, &mut |_| count += 1);
            if count == 0 {
                "no tensor to mutate".into()
            } else {
                let k = rng.below(count);
                let (mut i, mut desc) = (0, String::new());
                for_tensors(g, &mut |t| {
                    if i == k {
                        desc = mutate_tensor(what, t, rng);
                    }
                    i += 1;
                });
                desc
            }
        }
        4 if !g.node.is_empty() => {
            let i = rng.below(g.node.len());
            let own = g.node[i].output.first().cloned().unwrap_or_default();
            let n = &mut g.node[i];
            if n.input.is_empty() {
                n.input.push(own.clone());
            } else {
                let k = rng.below(n.input.len());
                n.input[k] = own.clone();
            }
            format!("node {i} reads its own output {own:?}")
        }
        5 if !g.node.is_empty() => {
            let i = rng.below(g.node.len());
            let name = rng.pick(&names).clone();
            let n = &mut g.node[i];
            let k = rng.below(n.input.len() + 1);
            if k == n.input.len() {
                n.input.push(name.clone());
            } else {
                n.input[k] = name.clone();
            }
            format!("node {i} input {k} := {name:?}")
        }
        6 if !g.node.is_empty() => {
            let i = rng.below(g.node.len());
            let name = rng.pick(&names).clone();
            let n = &mut g.node[i];
            if n.output.is_empty() || rng.chance(30) {
                n.output.push(name.clone());
            } else {
                let k = rng.below(n.output.len());
                n.output[k] = name.clone();
            }
            format!("node {i} writes {name:?}")
        }
        7 if !g.node.is_empty() => {
            let i = rng.below(g.node.len());
            match rng.below(3) {
                0 => {
                    let n = g.node[i].clone();
                    g.node.insert(i, n);
                    format!("node {i} duplicated")
                }
                1 => {
                    g.node.remove(i);
                    format!("node {i} removed")
                }
                _ => {
                    let j = rng.below(g.node.len());
                    g.node.swap(i, j);
                    format!("nodes {i} and {j} swapped")
                }
            }
        }
        8 => {
            let name = rng.pick(&names).clone();
            if g.output.is_empty() || rng.chance(30) {
                g.output.push(ValueInfoProto {
                    name: Some(name.clone()),
                    ..Default::default()
                });
            } else {
                let k = rng.below(g.output.len());
                g.output[k].name = Some(name.clone());
            }
            format!("graph output := {name:?}")
        }
        9 => {
            if !g.input.is_empty() && rng.chance(50) {
                let i = g.input[rng.below(g.input.len())].clone();
                g.input.push(i);
                "graph input duplicated".into()
            } else if !g.initializer.is_empty() {
                let t = g.initializer[rng.below(g.initializer.len())].clone();
                g.initializer.push(t);
                "initializer duplicated".into()
            } else {
                g.input.push(ValueInfoProto::default());
                "unnamed input added".into()
            }
        }
        10 if !g.node.is_empty() => {
            // Nest the graph inside one of its nodes, reading outer names.
            let sub = g.clone();
            let i = rng.below(g.node.len());
            g.node[i].attribute.push(AttributeProto {
                name: Some("body".into()),
                r#type: Some(AttributeType::Graph as i32),
                g: Some(sub),
                ..Default::default()
            });
            format!("whole graph nested in node {i}")
        }
        11 => {
            g.value_info.push(ValueInfoProto {
                name: Some(rng.pick(&names).clone()),
                r#type: Some(TypeProto::default()),
                ..Default::default()
            });
            g.value_info.push(ValueInfoProto::default());
            "odd value_info".into()
        }
        12 if !g.node.is_empty() => {
            let i = rng.below(g.node.len());
            let n = &mut g.node[i];
            n.op_type = rng.chance(50).then(String::new);
            n.name = None;
            n.domain = Some(rng.pick(&["", "ai.onnx", "x", "ai.onnx.ml"]).to_string());
            n.attribute.push(AttributeProto {
                name: None,
                r#type: Some(99),
                i: Some(i64::MIN),
                ints: vec![1 << 40; 3],
                ..Default::default()
            });
            format!("node {i} loses op_type/name, gains odd attribute")
        }
        _ => {
            m.ir_version = rng.chance(50).then_some(-1);
            m.opset_import.clear();
            if rng.chance(50) {
                m.graph = None;
            }
            "model header stripped".into()
        }
    };
    (format!("proto edit: {desc}"), m.encode_to_vec())
}

// ---- the pipeline under test ----

#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    decode_refused: usize,
    graph_refused: usize,
    accepted: usize,
    failures: Vec<String>,
}

/// Runs one mutant in-process. Records panics, oversized allocations and lossy round trips.
fn check(name: &str, desc: &str, bytes: Vec<u8>, tally: &mut Tally) {
    tally.cases += 1;
    let limit = 4 * bytes.len() + (64 << 20);
    let input = Bytes::from(bytes);
    let before = violations();
    LARGEST_VIOLATION.with(|v| v.set(0));
    LIMIT.with(|l| l.set(limit));
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<u8, String> {
        let path = Path::new("mutant.onnx");
        let Ok(proto) = decode_bytes(input.clone(), path) else {
            return Ok(0);
        };
        let want = encode_model(&proto);
        let Ok(ir) = Model::from_proto(proto) else {
            return Ok(1);
        };
        let report = inspect(&ir, input.len() as u64);
        let _ = std::hint::black_box((report.to_json(), report.to_string()));
        let back = encode_model(&ir.to_proto());
        if back != want {
            return Err("accepted by the IR but not round-tripped losslessly".into());
        }
        decode_bytes(back.into(), path)
            .map_err(|e| format!("re-encoded model does not decode: {e}"))?;
        Ok(2)
    }));
    LIMIT.with(|l| l.set(usize::MAX));
    let after = violations();
    let what = format!("{name}: {desc}");
    if after != before {
        tally.failures.push(format!(
            "{what}: allocation of {} bytes for a {}-byte input (limit {limit})",
            LARGEST_VIOLATION.with(Cell::get),
            input.len()
        ));
    }
    match r {
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            tally.failures.push(format!("{what}: PANIC {msg}"));
        }
        Ok(Err(e)) => tally.failures.push(format!("{what}: {e}")),
        Ok(Ok(0)) => tally.decode_refused += 1,
        Ok(Ok(1)) => tally.graph_refused += 1,
        Ok(Ok(_)) => tally.accepted += 1,
    }
}

/// The models to mutate, each with its number of mutations: built-in ones always, the shared
/// models and a sample of the node suite when `../shared` is there. Smaller models get more.
fn subjects() -> Vec<(Subject, usize)> {
    let mut v = Vec::new();
    for (name, m, n) in [
        ("builtin/mlp", mlp(), 1500),
        ("builtin/branches", branches(), 1500),
        ("builtin/chain", chain(), 1200),
    ] {
        v.push((Subject::new(name.into(), Bytes::from(m.encode_to_vec())), n));
    }
    if let Some(models) = common::shared_models() {
        for dir in models {
            let bytes = Bytes::from(std::fs::read(dir.join("model.onnx")).unwrap());
            let n = (400_000_000 / bytes.len()).clamp(20, 1000);
            let name = format!("shared/{}", dir.file_name().unwrap().to_string_lossy());
            v.push((Subject::new(name, bytes), n));
        }
    }
    if let Some(cases) = common::node_test_cases() {
        for dir in cases.iter().step_by(4) {
            let bytes = Bytes::from(std::fs::read(dir.join("model.onnx")).unwrap());
            let name = format!("node/{}", dir.file_name().unwrap().to_string_lossy());
            v.push((Subject::new(name, bytes), 10));
        }
    }
    v
}

/// Donor material: raw bytes and whole sub-messages of the small models.
fn donors(subjects: &[(Subject, usize)]) -> (Vec<Bytes>, Vec<Bytes>) {
    let raw: Vec<Bytes> = subjects
        .iter()
        .filter(|(s, _)| s.bytes.len() < (4 << 20))
        .map(|(s, _)| s.bytes.clone())
        .collect();
    let mut msgs = Vec::new();
    for (s, _) in subjects.iter().take(3) {
        messages(&s.tree, &mut msgs, 64 << 10);
    }
    (raw, msgs)
}

fn mutants<'a>(
    s: &'a Subject,
    count: usize,
    raw_donors: &[Bytes],
    msg_donors: &[Bytes],
) -> impl Iterator<Item = (String, Vec<u8>)> + 'a {
    let mut rng = XorShift::new(seed_of(&s.name));
    let raw_donors = raw_donors.to_vec();
    let msg_donors = msg_donors.to_vec();
    (0..count).map(move |i| {
        let (d, b) = match i % 3 {
            0 => {
                let donor = rng.pick(&raw_donors).clone();
                raw_mutation(s, &donor, &mut rng)
            }
            1 => tree_mutation(s, &msg_donors, &mut rng),
            _ => proto_mutation(s, &mut rng),
        };
        (format!("#{i} {d}"), b)
    })
}

#[test]
fn seeded_corruptions_never_panic_nor_allocate_without_bound() {
    // The binary's main thread has 8 MB of stack; give the pipeline the same.
    let t = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(|| {
            let start = Instant::now();
            let subjects = subjects();
            let (raw_donors, msg_donors) = donors(&subjects);
            let mut tally = Tally::default();
            for (s, count) in &subjects {
                // The unmutated model goes through first: it must be accepted.
                let mut base = Tally::default();
                check(&s.name, "unmutated", s.bytes.to_vec(), &mut base);
                assert_eq!(base.accepted, 1, "{}: {:?}", s.name, base.failures);
                let count = *count * env_u64("ONNX_SLIM_MUTATION_SCALE", 1) as usize;
                for (desc, bytes) in mutants(s, count, &raw_donors, &msg_donors) {
                    check(&s.name, &desc, bytes, &mut tally);
                }
            }
            eprintln!(
                "mutation: {} mutants of {} models in {:.1?}: {} refused by decode, {} by the \
                 graph checks, {} accepted",
                tally.cases,
                subjects.len(),
                start.elapsed(),
                tally.decode_refused,
                tally.graph_refused,
                tally.accepted
            );
            (tally, subjects.len())
        })
        .unwrap();
    let (tally, models) = t.join().expect("the mutation thread itself must not die");
    assert!(tally.cases >= 1000, "only {} mutants", tally.cases);
    // The README's reliability section states these counts.
    if common::shared_models().is_some() {
        assert_eq!((tally.cases, models), (10_042, 451));
    }
    assert!(
        tally.failures.is_empty(),
        "{} of {} mutants failed:\n{}",
        tally.failures.len(),
        tally.cases,
        tally.failures.join("\n")
    );
}

/// The allocation guard itself works: an allocation over the limit is seen.
#[test]
fn the_allocation_guard_sees_big_allocations() {
    let before = violations();
    LIMIT.with(|l| l.set(1 << 20));
    let v: Vec<u8> = Vec::with_capacity(2 << 20);
    LIMIT.with(|l| l.set(usize::MAX));
    drop(std::hint::black_box(v));
    assert!(violations() > before);
}

#[test]
fn small_corruptions_through_the_binary_exit_0_or_2() {
    let mut subjects: Vec<(Subject, usize)> = vec![
        (
            Subject::new("builtin/mlp".into(), Bytes::from(mlp().encode_to_vec())),
            20,
        ),
        (
            Subject::new(
                "builtin/branches".into(),
                Bytes::from(branches().encode_to_vec()),
            ),
            15,
        ),
    ];
    if let Some(cases) = common::node_test_cases() {
        for dir in cases.iter().step_by(150) {
            let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
            if bytes.len() < (64 << 10) {
                let name = format!("node/{}", dir.file_name().unwrap().to_string_lossy());
                subjects.push((Subject::new(name, Bytes::from(bytes)), 2));
            }
        }
    } else {
        subjects.push((
            Subject::new("builtin/chain".into(), Bytes::from(chain().encode_to_vec())),
            15,
        ));
    }
    let (raw_donors, msg_donors) = donors(&subjects);
    let d = tempfile::tempdir().unwrap();
    let (inp, out): (PathBuf, PathBuf) = (d.path().join("in.onnx"), d.path().join("out.onnx"));
    let mut failures = Vec::new();
    let (mut runs, mut zeros) = (0, 0);
    for (s, count) in &subjects {
        // Seeded differently from the in-process test, so these are other mutants.
        let renamed = Subject::new(format!("{}/bin", s.name), s.bytes.clone());
        let count = *count * env_u64("ONNX_SLIM_MUTATION_SCALE", 1) as usize;
        for (desc, bytes) in mutants(&renamed, count, &raw_donors, &msg_donors) {
            std::fs::write(&inp, &bytes).unwrap();
            let _ = std::fs::remove_file(&out);
            let o = Command::new(common::bin())
                .args([&inp, &out])
                .args(["--rules", "none"])
                .current_dir(d.path())
                .output()
                .unwrap();
            runs += 1;
            let stderr = String::from_utf8_lossy(&o.stderr);
            let code = o.status.code();
            if code == Some(0) {
                zeros += 1;
            }
            if !matches!(code, Some(0) | Some(2)) || stderr.contains("panicked") {
                failures.push(format!("{}: {desc}: exit {code:?}: {stderr}", s.name));
            } else if code == Some(2) && stderr.trim().lines().count() != 1 {
                failures.push(format!("{}: {desc}: not one line: {stderr}", s.name));
            }
        }
    }
    eprintln!("binary: {runs} mutants, {zeros} accepted, the rest refused with exit 2");
    assert!(runs >= 45, "only {runs} runs");
    if common::node_test_cases().is_some() {
        assert_eq!(runs, 59, "the README's reliability section states 59");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Mutants meet a hostile file system: every OUT that is not a regular file (a folder, a FIFO,
/// a dangling symlink, a symlink to `/dev/null`) is refused with exit 2 and one line and stays as
/// it was, whatever the model; a model whose external data is a symlink leading out of its
/// folder is refused, and its mutants exit 0 or 2 with one line, never reading the outside file.
#[cfg(unix)]
#[test]
fn mutants_with_hostile_paths_through_the_binary_exit_2_and_touch_nothing() {
    use std::os::unix::fs::{symlink, FileTypeExt};
    let d = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let kinds = ["folder", "fifo", "dangling", "devnull"];
    for k in kinds {
        let p = d.path().join(format!("out-{k}.onnx"));
        match k {
            "folder" => std::fs::create_dir(&p).unwrap(),
            "fifo" => {
                let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: a valid NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            }
            "dangling" => symlink(d.path().join("nowhere.onnx"), &p).unwrap(),
            _ => symlink("/dev/null", &p).unwrap(),
        }
    }
    let subject = || {
        Subject::new(
            "builtin/mlp/paths".into(),
            Bytes::from(mlp().encode_to_vec()),
        )
    };
    let (raw_donors, msg_donors) = donors(&[(subject(), 0)]);
    let subject = subject();
    let mut failures = Vec::new();
    let mut runs = 0;
    let inp = d.path().join("in.onnx");
    let one_line = |o: &std::process::Output| {
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        (e.trim().lines().count() == 1 && !e.contains("panicked"), e)
    };
    for (desc, bytes) in mutants(&subject, 12, &raw_donors, &msg_donors) {
        std::fs::write(&inp, &bytes).unwrap();
        for k in kinds {
            let out = format!("out-{k}.onnx");
            let o = Command::new(common::bin())
                .args(["in.onnx", out.as_str(), "--rules", "none"])
                .current_dir(d.path())
                .output()
                .unwrap();
            runs += 1;
            let (ok, e) = one_line(&o);
            let meta = std::fs::symlink_metadata(d.path().join(&out)).unwrap();
            let same = match k {
                "folder" => {
                    meta.is_dir()
                        && std::fs::read_dir(d.path().join(&out))
                            .unwrap()
                            .next()
                            .is_none()
                }
                "fifo" => meta.file_type().is_fifo(),
                _ => meta.file_type().is_symlink(),
            };
            if o.status.code() != Some(2) || !ok || !same {
                failures.push(format!(
                    "{desc} → {k}: exit {:?}, unchanged {same}: {e}",
                    o.status.code()
                ));
            }
        }
    }
    // External data behind a symlink out of the folder; the outside file is a FIFO, so a run
    // that opened it would hang (the binary checks the resolved path before opening).
    let mut m = mlp();
    let raw = common::proto::make_external(&mut m, "W1", "link.bin", 0);
    let fifo = outside.path().join("secret.bin");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(!raw.is_empty());
    symlink(&fifo, d.path().join("link.bin")).unwrap();
    let ext = Subject::new(
        "builtin/mlp/external".into(),
        Bytes::from(m.encode_to_vec()),
    );
    let mut refused_whole = false;
    let cases = std::iter::once(("unmutated".to_string(), ext.bytes.to_vec())).chain(mutants(
        &ext,
        24,
        &raw_donors,
        &msg_donors,
    ));
    for (desc, bytes) in cases {
        std::fs::write(&inp, &bytes).unwrap();
        let _ = std::fs::remove_file(d.path().join("out.onnx"));
        let mut child = Command::new(common::bin())
            .args(["in.onnx", "out.onnx", "--rules", "none"])
            .current_dir(d.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() && start.elapsed().as_secs() < 20 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            failures.push(format!(
                "external {desc}: hung (opened the FIFO outside the folder?)"
            ));
            continue;
        }
        let o = child.wait_with_output().unwrap();
        runs += 1;
        let (ok, e) = one_line(&o);
        if desc == "unmutated" {
            refused_whole = o.status.code() == Some(2) && e.contains("outside the model's folder");
        }
        if !matches!(o.status.code(), Some(0) | Some(2)) || (o.status.code() == Some(2) && !ok) {
            failures.push(format!("external {desc}: exit {:?}: {e}", o.status.code()));
        }
    }
    eprintln!("hostile paths: {runs} runs of the binary");
    assert!(
        refused_whole,
        "the unmutated model with outside external data was not refused"
    );
    assert_eq!(runs, 12 * kinds.len() + 25);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A node with hundreds of thousands of inputs (a 1 MB file) must be decoded in linear time: a
/// small file must not keep the tool busy for minutes.
#[test]
fn a_very_wide_node_is_handled_in_linear_time() {
    let mut m = mlp();
    let g = m.graph.as_mut().unwrap();
    g.node.push(node("Sum", "wide", &[], &["wide_out"]));
    g.node.last_mut().unwrap().input = vec!["h".to_string(); 300_000];
    g.output
        .push(value_info("wide_out", DataType::Float, &[-1, 32]));
    let bytes = m.encode_to_vec();
    let start = Instant::now();
    let mut tally = Tally::default();
    check("builtin/wide", "300k inputs", bytes, &mut tally);
    let took = start.elapsed();
    assert!(tally.failures.is_empty(), "{:?}", tally.failures);
    assert_eq!(tally.accepted, 1);
    assert!(took.as_secs() < 10, "took {took:?}");
}
