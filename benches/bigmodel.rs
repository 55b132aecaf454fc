//! Models larger than memory: wall time and peak memory of the main command on generated
//! transformer-like stacks ([`onnx_slim::bench::stack`]) of a requested size.
//!
//! Run (a folder with room for about 2.3× the largest size, plus 10 GB that the bench keeps free):
//!
//! ```text
//! cargo test --release --bench bigmodel --no-run
//! target/release/deps/bigmodel-* --dir /work/big-bench --gb 1,2 [--hidden 2048] [--memory-limit 8G]
//! ```
//!
//! For each size it writes `stack.onnx` + `stack.onnx.data`, then runs `onnx-slim` as a child
//! process for `--rules clean` and `--rules quantize`, each with `--no-verify` and verified, and
//! one tract pass of the original model (load, optimize, run once: a child process of this
//! bench), and records for each the wall time, the CPU time (user + system), the peak anonymous
//! memory (`RssAnon` of `/proc/PID/status`, polled every 5 ms: heap, not the page cache of mapped
//! files), the last `VmHWM` seen there and the peak RSS the kernel reports at exit (`ru_maxrss`,
//! mapped file pages included). `--memory-limit` is passed to the verified runs when the binary
//! lists it in its `--help`. With `--generate-only` it writes the model of each size
//! (`stack-<gb>.onnx`) into `--dir`, keeps it and runs nothing (to profile one run by hand).
//! Otherwise generated files are deleted after each size. A last table extrapolates to 7 B and
//! 70 B float32 parameters (28 and 280 GB): time in proportion to the weights (from the largest
//! size measured), anonymous memory by a least-squares line over the sizes. Not measured.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use onnx_slim::bench::stack::{write_stack, StackSpec};

const BIN: &str = env!("CARGO_BIN_EXE_onnx-slim");
const GB: f64 = 1e9;
/// The bench refuses a size whose files would leave less than this free on the folder's disk.
const KEEP_FREE: f64 = 10.0 * GB;

struct Sample {
    wall: f64,
    /// User plus system CPU seconds of the child (from `wait4`): follows the work when other
    /// jobs share the cores, where wall time does not.
    cpu: f64,
    anon: u64,
    hwm: u64,
    maxrss: u64,
    ok: bool,
    note: String,
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Runs `cmd` to completion, polling its memory.
fn measure(mut cmd: Command, log: &Path) -> Sample {
    let err = std::fs::File::create(log).expect("log file");
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn onnx-slim");
    let pid = child.id();
    let (mut anon, mut hwm) = (0u64, 0u64);
    let (status, maxrss, cpu) = loop {
        if let Some(a) = status_kb(pid, "RssAnon:") {
            anon = anon.max(a * 1024);
        }
        if let Some(h) = status_kb(pid, "VmHWM:") {
            hwm = hwm.max(h * 1024);
        }
        let mut st = 0;
        // SAFETY: plain syscall on our own child; `ru` is a valid out-parameter.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid as i32, &mut st, libc::WNOHANG, &mut ru) };
        if r == pid as i32 {
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            break (
                st,
                ru.ru_maxrss as u64 * 1024,
                secs(ru.ru_utime) + secs(ru.ru_stime),
            );
        }
        if r < 0 {
            break (-1, 0, 0.0);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = start.elapsed().as_secs_f64();
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let note = if ok {
        String::new()
    } else {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines().last().unwrap_or("").to_string()
    };
    Sample {
        wall,
        cpu,
        anon,
        hwm,
        maxrss,
        ok,
        note,
    }
}

fn free_bytes(dir: &Path) -> f64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `st` is a valid out-parameter and `c` a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0.0;
    }
    st.f_bavail as f64 * st.f_frsize as f64
}

/// The child side of the "one tract pass" measurement: load, optimize and run `model` once.
fn tract_pass(model: &Path) {
    use tract_onnx::prelude::*;
    let plan = tract_onnx::onnx()
        .model_for_path(model)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("tract loads the stack");
    let fact = plan.model().input_fact(0).expect("one input").clone();
    let shape: Vec<usize> = fact
        .shape
        .as_concrete()
        .expect("fixed input shape")
        .to_vec();
    let x = tract_ndarray::ArrayD::<f32>::from_elem(shape, 0.5);
    let out = plan.run(tvec!(x.into_tensor().into())).expect("tract runs");
    std::hint::black_box(out);
}

fn gb(b: u64) -> String {
    format!("{:.2}", b as f64 / GB)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(m) = flag("--tract-pass") {
        tract_pass(Path::new(&m));
        return;
    }
    let Some(dir) = flag("--dir").map(PathBuf::from) else {
        eprintln!(
            "SKIPPED: give --dir FOLDER (room for ~2.3× the largest --gb plus 10 GB), e.g. --dir /work/big-bench --gb 1,2"
        );
        return;
    };
    let sizes: Vec<f64> = flag("--gb")
        .unwrap_or_else(|| "1".into())
        .split(',')
        .map(|s| s.trim().parse().expect("--gb takes numbers, e.g. 1,2"))
        .collect();
    let hidden: usize = flag("--hidden").map_or(2048, |h| h.parse().expect("--hidden"));
    let help = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("onnx-slim --help");
    let accepts_limit = String::from_utf8_lossy(&help.stdout).contains("--memory-limit");
    let limit = flag("--memory-limit");
    let limit_args: Vec<String> = match (&limit, accepts_limit) {
        (Some(l), true) => vec!["--memory-limit".into(), l.clone()],
        (Some(_), false) => {
            println!("note: this onnx-slim has no --memory-limit; verified runs use its default");
            Vec::new()
        }
        (None, _) => Vec::new(),
    };
    std::fs::create_dir_all(&dir).expect("create --dir");
    println!(
        "onnx-slim {BIN}\nhidden {hidden}, verification {}",
        match (&limit, accepts_limit) {
            (Some(l), true) => format!("with --memory-limit {l}"),
            (_, true) => "with the default --memory-limit".into(),
            _ => "whole-model (this binary has no --memory-limit)".into(),
        }
    );
    println!("\n| weights GB | params | run | wall s | CPU s | peak RssAnon GB | VmHWM GB | ru_maxrss GB | exit |");
    println!("|---|---|---|---|---|---|---|---|---|");
    // (weight bytes, run, wall, anon) for the extrapolation.
    let mut fit: Vec<(f64, &str, f64, f64)> = Vec::new();
    for size in sizes {
        let spec = StackSpec::for_bytes((size * GB) as u64, hidden);
        let w = spec.weight_bytes() as f64;
        let free = free_bytes(&dir);
        if free - 2.3 * w < KEEP_FREE {
            println!(
                "| {:.2} | | skipped: {:.1} GB free, needs {:.1} GB | | | | | |",
                w / GB,
                free / GB,
                (2.3 * w + KEEP_FREE) / GB
            );
            continue;
        }
        let t = Instant::now();
        let generate_only = args.iter().any(|a| a == "--generate-only");
        let name = if generate_only {
            format!("stack-{size}.onnx")
        } else {
            "stack.onnx".to_string()
        };
        let model = write_stack(&spec, &dir, &name).expect("generate the stack");
        eprintln!(
            "generated {} ({} layers, {:.2} GB) in {:.1} s",
            model.display(),
            spec.layers,
            w / GB,
            t.elapsed().as_secs_f64()
        );
        if generate_only {
            continue;
        }
        let out = dir.join("out.onnx");
        let runs: [(&str, Vec<&str>, bool); 4] = [
            (
                "clean --no-verify",
                vec!["--rules", "clean", "--no-verify"],
                false,
            ),
            (
                "quantize --no-verify",
                vec!["--rules", "quantize", "--no-verify"],
                false,
            ),
            ("clean", vec!["--rules", "clean"], true),
            ("quantize", vec!["--rules", "quantize"], true),
        ];
        let mut results = Vec::new();
        for (label, extra, verified) in runs {
            let mut cmd = Command::new(BIN);
            cmd.arg(&model).arg(&out).args(&extra).arg("-q");
            if verified {
                cmd.args(&limit_args);
            }
            let s = measure(cmd, &dir.join("run.log"));
            let _ = std::fs::remove_file(&out);
            let _ = std::fs::remove_file(dir.join("out.onnx.data"));
            results.push((label, s));
        }
        let mut cmd = Command::new(std::env::current_exe().expect("own path"));
        cmd.arg("--tract-pass").arg(&model);
        results.push(("one tract pass", measure(cmd, &dir.join("run.log"))));
        for (label, s) in &results {
            println!(
                "| {:.2} | {:.0} M | {label} | {:.1} | {:.1} | {} | {} | {} | {} |",
                w / GB,
                spec.parameters() as f64 / 1e6,
                s.wall,
                s.cpu,
                gb(s.anon),
                gb(s.hwm),
                gb(s.maxrss),
                if s.ok {
                    "0".into()
                } else {
                    format!("failed: {}", s.note)
                }
            );
            if s.ok {
                fit.push((w, label, s.wall, s.anon as f64));
            }
        }
        let (pass, pass_cpu) = (results[4].1.wall, results[4].1.cpu);
        for (i, (label, s)) in results[2..4].iter().enumerate() {
            let (no_verify, no_verify_cpu) = (results[i].1.wall, results[i].1.cpu);
            eprintln!(
                "{label}: {:.2}× wall, {:.2}× CPU (its --no-verify run + one tract pass = {:.1} s, {:.1} CPU s)",
                s.wall / (no_verify + pass),
                s.cpu / (no_verify_cpu + pass_cpu),
                no_verify + pass,
                no_verify_cpu + pass_cpu
            );
        }
        for f in ["stack.onnx", "stack.onnx.data", "run.log"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
    println!(
        "\nextrapolated (not measured): time scaled linearly from the largest size measured; \
         anonymous memory by a least-squares line a + b·W over the sizes (float32 weights)\n"
    );
    println!("| run | s per GB | anon GB = a + b·W | 7 B (28 GB): s, anon GB | 70 B (280 GB): s, anon GB |");
    println!("|---|---|---|---|---|");
    for label in [
        "clean --no-verify",
        "quantize --no-verify",
        "clean",
        "quantize",
        "one tract pass",
    ] {
        let pts: Vec<(f64, f64, f64)> = fit
            .iter()
            .filter(|p| p.1 == label)
            .map(|p| (p.0 / GB, p.2, p.3 / GB))
            .collect();
        let Some(&(wmax, tmax, _)) = pts.iter().max_by(|a, b| a.0.total_cmp(&b.0)) else {
            continue;
        };
        let n = pts.len() as f64;
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.2).sum::<f64>() / n;
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.2 - my)).sum();
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        // One size: memory proportional to the weights.
        let (ma, mb) = if sxx > 0.0 {
            (my - sxy / sxx * mx, sxy / sxx)
        } else {
            (0.0, my / mx)
        };
        let per_gb = tmax / wmax;
        println!(
            "| {label} | {per_gb:.1} | {ma:.2} + {mb:.3}·W | {:.0} s, {:.1} | {:.0} s, {:.1} |",
            per_gb * 28.0,
            ma + mb * 28.0,
            per_gb * 280.0,
            ma + mb * 280.0
        );
    }
}
