//! README tables recomputed on the shared models: each test rebuilds its table's rows and checks
//! them against the values it asserts and against the README text.

use std::path::Path;

use onnx_slim::onnx::proto::ModelProto;
use onnx_slim::verify::{self, InputSet, Outputs};

/// One shared model, decoded, with its test sets and the original's outputs on them.
pub struct Shared {
    /// The model's folder name.
    pub name: String,
    /// Bytes of `model.onnx` (what size ratios are taken against).
    pub file_len: u64,
    pub original: ModelProto,
    pub sets: Vec<InputSet>,
    /// The original's outputs on `sets`, in tract.
    pub base: Vec<Outputs>,
}

impl Shared {
    /// Loads `dir/model.onnx` and its test sets and runs the original on them (panics naming
    /// the model on failure: the shared data is fixed).
    pub fn load(dir: &Path) -> Shared {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let loaded = onnx_slim::onnx::decode_file(&dir.join("model.onnx"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let original = loaded.model;
        let sets = verify::load_test_data_sets(dir, &original)
            .unwrap_or_else(|e| panic!("{name}: test sets: {e}"));
        let base = verify::run_many(&original, &sets, "original")
            .unwrap_or_else(|e| panic!("{name}: original: {e}"));
        Shared {
            name,
            file_len: loaded.file_len,
            original,
            sets,
            base,
        }
    }

    /// `bytes` over the original file's size, as the README prints it (three decimals).
    pub fn ratio(&self, bytes: usize) -> String {
        format!("{:.3}", bytes as f64 / self.file_len as f64)
    }
}

/// The rows of one README table as recomputed: every row must be the asserted one and must
/// stand verbatim in README.md. [`Rows::finish`] prints them and fails with every mismatch.
pub struct Rows {
    readme: String,
    rows: Vec<String>,
    failures: Vec<String>,
}

impl Rows {
    pub fn new() -> Rows {
        Rows {
            readme: std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
                .expect("README.md"),
            rows: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Records `row`; `asserted` says whether its values equal the ones the test asserts.
    pub fn check(&mut self, row: String, asserted: bool) {
        if !asserted {
            self.failures.push(format!("{row}: not the asserted row"));
        }
        if !self.readme.contains(&row) {
            self.failures.push(format!("{row}: not in README.md"));
        }
        self.rows.push(row);
    }

    /// A failure that is not about one row's text.
    pub fn fail(&mut self, failure: String) {
        self.failures.push(failure);
    }

    /// Prints the rows (loudly), then fails on any mismatch or when the number of rows checked
    /// is not `expected`.
    pub fn finish(self, expected: usize) {
        super::skip_loudly(&self.rows.join("\n"));
        assert!(self.failures.is_empty(), "{}", self.failures.join("\n"));
        assert_eq!(self.rows.len(), expected, "rows compared");
    }
}
