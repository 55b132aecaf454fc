//! `onnx-slim bench`: the command around [`crate::bench`].

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use crate::bench::{self, BenchOptions};
use crate::error::{Error, Result};
use crate::onnx::prepare_small_file;

/// Runs the presets on the folders with the running binary as the main job, then prints the
/// table (or writes it to `out`) and writes the chart to `svg`. Both files are checked before
/// any work, and land only when everything was measured.
pub fn command(
    dirs: Vec<PathBuf>,
    presets: Vec<String>,
    runs: usize,
    out: Option<&Path>,
    svg: Option<&Path>,
    exe: Option<&Path>,
) -> Result<i32> {
    if runs == 0 {
        return Err(Error::Usage("`--runs` must be at least 1".into()));
    }
    bench::check_dirs(&dirs)?;
    let out_file = out.map(prepare_small_file).transpose()?;
    let svg_file = svg.map(prepare_small_file).transpose()?;
    let exe = match exe {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe().map_err(|e| Error::io("find", "the running binary", e))?,
    };
    let opts = BenchOptions {
        dirs,
        presets,
        runs,
        exe,
    };
    let show = std::io::stderr().is_terminal();
    let rows = bench::run(&opts, &mut |line: &str| {
        if show {
            errln!("{line}");
        }
    })?;
    let table = bench::table::render(&rows, runs);
    if let (Some(path), Some((tmp, real))) = (svg, svg_file) {
        let chart = bench::chart::render(&rows)
            .map_err(|e| Error::io("draw the chart", path, std::io::Error::other(e)))?;
        write_all(path, tmp, &real, chart.as_bytes())?;
    }
    match (out, out_file) {
        (Some(path), Some((tmp, real))) => {
            write_all(path, tmp, &real, table.as_bytes())?;
            outln!("wrote `{}`: {} rows", path.display(), rows.len());
        }
        _ => out!("{table}"),
    }
    Ok(0)
}

fn write_all(path: &Path, tmp: tempfile::NamedTempFile, real: &Path, bytes: &[u8]) -> Result<()> {
    std::io::Write::write_all(&mut tmp.as_file(), bytes)
        .map_err(|e| Error::io("write", path, e))?;
    tmp.persist(real)
        .map_err(|e| Error::io("write", path, e.error))?;
    Ok(())
}
