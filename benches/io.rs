//! Decode → IR → encode throughput and peak memory on the largest model in `../shared/models`.
//!
//! Run: `cargo bench --bench io`. Prints MB/s (median of several runs) and the peak heap in use
//! during one pass, as a multiple of the model's file size. Peak memory is measured by a
//! counting global allocator, so it covers everything the pass allocates (file buffer included).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use onnx_slim::ir::Model;
use onnx_slim::onnx::{decode_file, encode_model};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn one_pass(path: &std::path::Path) -> usize {
    let loaded = decode_file(path).expect("decode");
    let model = Model::from_proto(loaded.model).expect("ir");
    let bytes = encode_model(&model.to_proto());
    bytes.len()
}

fn main() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/models"));
    let Ok(rd) = std::fs::read_dir(&dir) else {
        eprintln!("SKIPPED: ../shared/models not found; nothing to benchmark");
        return;
    };
    let mut models: Vec<(u64, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("model.onnx"))
        .filter_map(|p| std::fs::metadata(&p).ok().map(|m| (m.len(), p)))
        .collect();
    models.sort();
    let Some((size, path)) = models.pop() else {
        eprintln!("SKIPPED: no model in ../shared/models");
        return;
    };
    let _ = one_pass(&path); // warm the page cache
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = one_pass(&path);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let mut times = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        std::hint::black_box(one_pass(&path));
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let mb = size as f64 / 1e6;
    println!(
        "decode → IR → encode `{}` ({:.1} MB, re-encoded {} bytes): median {:.1} ms = {:.0} MB/s; peak heap {:.1} MB = {:.2}× the file",
        path.display(),
        mb,
        out,
        median * 1e3,
        mb / median,
        peak as f64 / 1e6,
        peak as f64 / size as f64
    );
}
