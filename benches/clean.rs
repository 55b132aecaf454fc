//! `--rules clean` on every shared model, side by side with onnxslim in the same run.
//!
//! Run: `cargo bench --bench clean`. onnxslim is timed when `target/bench-venv/bin/onnxslim`
//! exists (make it with `python3 -m venv target/bench-venv && target/bench-venv/bin/pip install
//! onnxslim==0.1.98 onnxruntime==1.32.0 onnx==1.19.1`). Wall time of the whole command, median of
//! five runs, output written to a temp dir; node counts are the top-level nodes of each output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use onnx_slim::onnx::decode_file;

fn median_wall(mut cmd: impl FnMut() -> Command) -> Option<f64> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = cmd().output().ok()?;
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Some(times[times.len() / 2])
}

fn nodes(path: &Path) -> Option<usize> {
    decode_file(path)
        .ok()
        .and_then(|l| l.model.graph.map(|g| g.node.len()))
}

fn main() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/models"));
    let Ok(rd) = std::fs::read_dir(&dir) else {
        eprintln!("SKIPPED: ../shared/models not found; nothing to benchmark");
        return;
    };
    let mut models: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    models.sort();
    let slim = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/bench-venv/bin/onnxslim"
    ));
    let have_slim = slim.exists();
    if !have_slim {
        eprintln!(
            "note: {} not found; onnxslim columns left empty",
            slim.display()
        );
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    println!("| model | nodes in | onnx-slim clean: nodes | onnxslim: nodes | onnx-slim s (--no-verify) | of which I/O (`--rules none`) | onnxslim s | ratio | onnx-slim s, verified in tract |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for m in models {
        let input = m.join("model.onnx");
        let name = m
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let ours = tmp.path().join(format!("{name}.ours.onnx"));
        let theirs = tmp.path().join(format!("{name}.onnxslim.onnx"));
        let t_ours = median_wall(|| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_onnx-slim"));
            c.arg(&input)
                .arg(&ours)
                .args(["--rules", "clean", "--no-verify"]);
            c
        });
        // Decode and re-encode only: what reading and writing the file costs on its own.
        let reencoded = tmp.path().join(format!("{name}.none.onnx"));
        let t_io = median_wall(|| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_onnx-slim"));
            c.arg(&input)
                .arg(&reencoded)
                .args(["--rules", "none", "--no-verify"]);
            c
        });
        // The default run also verifies in tract; onnxslim does not verify, so the ratio uses
        // `--no-verify`, and this column shows what verification costs on top.
        let t_verified = median_wall(|| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_onnx-slim"));
            c.arg(&input).arg(&ours).args(["--rules", "clean"]);
            c
        });
        let t_slim = if have_slim {
            median_wall(|| {
                let mut c = Command::new(&slim);
                c.arg(&input).arg(&theirs);
                c
            })
        } else {
            None
        };
        let fmt = |t: Option<f64>| t.map_or("—".into(), |t| format!("{t:.2}"));
        let ratio = match (t_ours, t_slim) {
            (Some(a), Some(b)) => format!("{:.2}", a / b),
            _ => "—".into(),
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {ratio} | {} |",
            nodes(&input).map_or("?".into(), |n| n.to_string()),
            nodes(&ours).map_or("?".into(), |n| n.to_string()),
            if have_slim {
                nodes(&theirs).map_or("?".into(), |n| n.to_string())
            } else {
                "—".into()
            },
            fmt(t_ours),
            fmt(t_io),
            fmt(t_slim),
            fmt(t_verified),
        );
    }
}
