//! The driver on chains as deep as code generators make them: `--rules clean` (driver only, no
//! verification, no file I/O) on in-memory chains of 10k, 100k and 1M `Identity` nodes, and of
//! 100k `Relu`, `Add` of a constant zero, and `Reshape` to the value's own shape (the constant
//! one per node, or one shared by all, at 10k, 100k and 1M for the shared zero: removing a reader
//! must not walk the constant's list of readers, as petgraph's singly linked lists did, which
//! made that case quadratic). Prints the
//! wall time of `rewrite::run`, the time per node (flat when the driver is linear), the patches
//! applied and the peak resident memory of the case (VmHWM, reset between cases where the kernel
//! allows it).
//!
//! Run: `cargo bench --bench deep` (all cases) or `cargo bench --bench deep -- identity-10k`
//! (only the cases whose name contains one of the words).

use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use onnx_slim::ir::builder::{tensor_f32, tensor_i64_1d, ModelBuilder};
use onnx_slim::ir::Model;
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{registry, run, Config, DriverOptions};

/// x → op → op → … → y, `n` nodes of `op` (`Add` adds a zero, `Reshape` reshapes to `[1, 4]`,
/// the shape every value has). The constant is one initializer read by every node when
/// `shared`, else one per node.
fn chain(op: &str, n: usize, shared: bool) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("v0", DataType::Float, &[1, 4]);
    let constant = |b: &mut ModelBuilder, name: &str| match op {
        "Add" => {
            b.initializer(tensor_f32(name, &ArrayD::zeros(IxDyn(&[1, 4]))));
        }
        "Reshape" => {
            b.initializer(tensor_i64_1d(name, &[1, 4]));
        }
        _ => {}
    };
    if shared {
        constant(&mut b, "c");
    }
    for i in 0..n {
        let a = format!("v{i}");
        let out = format!("v{}", i + 1);
        let c = if shared {
            "c".to_string()
        } else {
            format!("c{i}")
        };
        if !shared {
            constant(&mut b, &c);
        }
        let inputs: Vec<&str> = match op {
            "Add" | "Reshape" => vec![&a, &c],
            _ => vec![&a],
        };
        b.node(op, &inputs, &[&out], vec![]);
    }
    b.output(&format!("v{n}"), DataType::Float, &[1, 4]);
    b.build()
}

/// Peak resident set size of this process in KiB (`VmHWM`), if the kernel reports it.
fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time this thread has used (user + system), in seconds: on a shared machine, where other
/// jobs stretch the wall time, the figure that follows the work.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0); whether it worked.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let cases: &[(&str, &str, usize, bool)] = &[
        ("identity-10k", "Identity", 10_000, false),
        ("identity-100k", "Identity", 100_000, false),
        ("relu-100k", "Relu", 100_000, false),
        ("add-zero-100k", "Add", 100_000, false),
        ("add-shared-zero-10k", "Add", 10_000, true),
        ("add-shared-zero-100k", "Add", 100_000, true),
        ("reshape-own-shape-100k", "Reshape", 100_000, false),
        ("reshape-shared-shape-100k", "Reshape", 100_000, true),
        ("identity-1M", "Identity", 1_000_000, false),
        ("add-shared-zero-1M", "Add", 1_000_000, true),
    ];
    let rules = registry::select("clean").expect("the clean group exists");
    println!(
        "| chain | nodes | patches | nodes left | s | CPU s | µs CPU per node | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &(name, op, n, shared) in cases {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let reset = reset_peak_rss();
        let mut model = Model::from_proto(chain(op, n, shared)).expect("the chain builds");
        let t = Instant::now();
        let cpu = thread_cpu_secs();
        let report = run(
            &mut model,
            &rules,
            &Config::default(),
            &DriverOptions::default(),
        )
        .expect("the driver runs");
        let secs = t.elapsed().as_secs_f64();
        let cpu = thread_cpu_secs() - cpu;
        model.graph.check().expect("the result checks");
        let rss = peak_rss_kib().map_or("?".to_string(), |k| {
            format!(
                "{:.0}{}",
                k as f64 / 1024.0,
                if reset { "" } else { " (cumulative)" }
            )
        });
        println!(
            "| {name} | {n} | {} | {} | {secs:.2} | {cpu:.2} | {:.1} | {rss} |",
            report.patches(),
            model.graph.op_count(),
            cpu * 1e6 / n as f64,
        );
    }
}
