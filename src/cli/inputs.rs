//! What the main job checks and says about the data a run reads: the calibration inputs (loaded
//! up front, so that a folder that yields nothing stops the run before any work) and the layers
//! whose calibration failed (a warning on stderr; the report counts them).

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::onnx::proto::ModelProto;
use crate::rewrite::RunReport;

/// Loads every `--calibration` path once: a path that does not exist, or that yields no input
/// set, is an error before any rule runs (the rules load the sets again when they read them).
pub(super) fn check_calibration(paths: &[PathBuf], model: &ModelProto) -> Result<()> {
    for p in paths {
        if !p.exists() {
            return Err(Error::Usage(format!(
                "calibration inputs `{}` do not exist",
                p.display()
            )));
        }
        let sets = crate::verify::load_inputs(p, model)?;
        if sets.is_empty() {
            return Err(Error::Usage(format!(
                "calibration inputs `{}` hold no input set (expected test_data_set_N folders, .npz or .npy files)",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Warns on stderr when the calibration failed for some layers (they were left as they were):
/// how many, and the first reason.
pub(super) fn warn_calibration_failures(report: &RunReport) {
    let failed = report.calibration_failures();
    if let Some(first) = failed.first() {
        let n = failed.len();
        errln!(
            "warning: calibration failed for {n} layer{}, left unchanged (first: {} `{}`: {})",
            if n == 1 { "" } else { "s" },
            first.op,
            first.node,
            first.reason
        );
    }
}
