//! `pack` / `unpack` on every model in `../shared/models` (and on any model paths given as
//! arguments): packed size against zstd level 19 of the original file (the zstd crate, the
//! library `zstd -19` runs), and pack/unpack throughput in MB/s of original bytes, by wall clock
//! and by the process's CPU time (the machine may be shared: CPU time is what the work costs).
//!
//! Run: `cargo bench --bench pack` or `cargo bench --bench pack -- MODEL.onnx...`. One run per
//! model; prints a Markdown table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use onnx_slim::pack::{pack, unpack};

/// CPU time of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Runs `f`: (wall seconds, CPU seconds).
fn timed(f: impl FnOnce()) -> (f64, f64) {
    let (w, c) = (Instant::now(), cpu_seconds());
    f();
    (w.elapsed().as_secs_f64(), cpu_seconds() - c)
}

fn main() {
    let mut models: Vec<(String, PathBuf)> = Vec::new();
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/models"));
    match std::fs::read_dir(&dir) {
        Ok(rd) => {
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("model.onnx").is_file())
                .collect();
            v.sort();
            for p in v {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                models.push((name, p.join("model.onnx")));
            }
        }
        Err(_) => eprintln!("SKIPPED: ../shared/models not found"),
    }
    for a in std::env::args().skip(1).filter(|a| !a.starts_with('-')) {
        let p = PathBuf::from(&a);
        if p.is_file() {
            models.push((a, p));
        }
    }
    let work = tempfile::tempdir().expect("temp dir");
    println!(
        "| model | original B | pack B | pack × | zstd -19 B | zstd -19 × | \
         pack MB/s wall (CPU) | unpack MB/s wall (CPU) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, path) in &models {
        let packed = work.path().join("m.slim");
        let restored = work.path().join("r.onnx");
        let mut summary = None;
        let (pw, pc) = timed(|| summary = Some(pack(path, &packed).expect("pack")));
        let summary = summary.unwrap();
        let (uw, uc) = timed(|| {
            unpack(&packed, &restored).expect("unpack");
        });
        let original = std::fs::read(path).expect("read");
        assert!(
            original == std::fs::read(&restored).expect("read"),
            "{name}: restored bytes differ"
        );
        let zstd = zstd::bulk::compress(&original, 19).expect("zstd").len() as u64;
        let n = summary.original_len() as f64;
        let mb = |s: f64| n / 1e6 / s;
        println!(
            "| {name} | {} | {} | {:.3} | {zstd} | {:.3} | {:.0} ({:.0}) | {:.0} ({:.0}) |",
            summary.original_len(),
            summary.packed_len,
            summary.packed_len as f64 / n,
            zstd as f64 / original.len() as f64,
            mb(pw),
            mb(pc),
            mb(uw),
            mb(uc),
        );
        let _ = std::fs::remove_file(Path::new(&restored));
    }
}
