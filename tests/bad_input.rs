//! Bad input through the real binary: every case must exit with code 2, print exactly one line on
//! stderr that names the problem (and the offending path or name in backticks), never panic, and
//! leave nothing behind in the output folder (no output file, no temp file).
//!
//! The models are built in code, so these tests run without `../shared`.

mod common;

use common::proto::{f32_tensor, make_external, mlp_graph, model};

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use onnx_slim::onnx::proto::ModelProto;
use prost::Message;

// ---- a tiny model built in code ----

/// x[1,16] → MatMul(W1[16,32]) → Add(b1) → Relu → MatMul(W2[32,8]) → y[1,8].
fn mlp() -> ModelProto {
    model(mlp_graph(1, "y"), "bad_input test", 13)
}

// ---- running the binary ----

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(common::bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run onnx-slim")
}

/// Runs `args` in `dir` and checks the bad-input contract: exit 2, one stderr line containing every
/// phrase in `want`, no panic, no output file and no new file in `dir` (or in `out_dir`, if given).
fn expect_refused(dir: &Path, args: &[&str], out: &str, want: &[&str]) -> String {
    let out_path = dir.join(out);
    let watch = out_path
        .parent()
        .filter(|p| p.is_dir())
        .map(Path::to_path_buf);
    let before_dir = listing(dir);
    let before_out = watch.as_deref().map(listing);
    let existed = out_path.exists();
    let o = run(dir, args);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    let ctx = format!(
        "onnx-slim {}\nexit: {:?}\nstderr:\n{stderr}\nstdout:\n{}",
        args.join(" "),
        o.status.code(),
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!stderr.contains("panicked"), "panic:\n{ctx}");
    assert_eq!(o.status.code(), Some(2), "wrong exit code:\n{ctx}");
    let trimmed = stderr.trim();
    assert_eq!(
        trimmed.lines().count(),
        1,
        "stderr must be exactly one line:\n{ctx}"
    );
    for w in want {
        assert!(trimmed.contains(w), "stderr lacks {w:?}:\n{ctx}");
    }
    if !existed {
        assert!(!out_path.exists(), "an output file was written:\n{ctx}");
    }
    assert_eq!(
        listing(dir),
        before_dir,
        "files appeared or vanished:\n{ctx}"
    );
    if let (Some(w), Some(b)) = (watch, before_out) {
        assert_eq!(
            listing(&w),
            b,
            "files appeared in the output folder:\n{ctx}"
        );
    }
    trimmed.to_string()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

const NONE: [&str; 2] = ["--rules", "none"];

fn args<'a>(a: &[&'a str]) -> Vec<&'a str> {
    a.iter().copied().chain(NONE).collect()
}

#[test]
fn the_built_model_is_accepted() {
    // The baseline every other case corrupts must itself go through.
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    let o = run(d.path(), &args(&["in.onnx", "out.onnx"]));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(d.path().join("out.onnx").is_file());
    assert_eq!(
        listing(d.path()),
        ["in.onnx", "out.onnx"].map(String::from).into()
    );
}

#[test]
fn a_png_is_not_a_model() {
    let d = tmp();
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    png.extend_from_slice(&[
        0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 1, 0, 0, 0, 1, 0, 8, 6,
    ]);
    png.extend_from_slice(&[
        0, 0, 0, 0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 0, b'I', b'E', b'N', b'D',
    ]);
    write(d.path(), "in.png", &png);
    expect_refused(
        d.path(),
        &args(&["in.png", "out.onnx"]),
        "out.onnx",
        &["`in.png`", "is not a valid onnx model"],
    );
}

#[test]
fn a_text_file_is_not_a_model() {
    let d = tmp();
    write(
        d.path(),
        "in.onnx",
        b"This is a README, not a model.\nIt has two lines of text.\n",
    );
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["`in.onnx`", "is not a valid onnx model"],
    );
}

#[test]
fn a_truncated_model_is_refused() {
    let d = tmp();
    let bytes = mlp().encode_to_vec();
    write(d.path(), "in.onnx", &bytes[..bytes.len() / 2]);
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["`in.onnx`", "is not a valid onnx model"],
    );
}

#[test]
fn a_truncated_shared_model_is_refused() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let Some(m) = models.iter().find(|m| m.ends_with("digits_mlp")) else {
        return;
    };
    let bytes = std::fs::read(m.join("model.onnx")).unwrap();
    let d = tmp();
    write(d.path(), "in.onnx", &bytes[..bytes.len() / 2]);
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["`in.onnx`", "is not a valid onnx model"],
    );
}

#[test]
fn an_empty_file_is_refused() {
    let d = tmp();
    write(d.path(), "in.onnx", b"");
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["`in.onnx`", "empty"],
    );
}

#[test]
fn a_missing_external_data_file_is_refused() {
    let d = tmp();
    let mut m = mlp();
    make_external(&mut m, "W1", "weights.bin", 0);
    write(d.path(), "in.onnx", &m.encode_to_vec());
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["external data", "`W1`", "weights.bin`", "cannot open"],
    );
}

#[test]
fn a_too_short_external_data_file_is_refused() {
    let d = tmp();
    let mut m = mlp();
    let raw = make_external(&mut m, "W1", "weights.bin", 16);
    let mut data = vec![0u8; 16];
    data.extend_from_slice(&raw[..raw.len() - 1]);
    write(d.path(), "weights.bin", &data);
    write(d.path(), "in.onnx", &m.encode_to_vec());
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["external data", "`W1`", "weights.bin`", "too short"],
    );
}

#[test]
fn an_input_that_nothing_produces_is_refused() {
    let d = tmp();
    let mut m = mlp();
    m.graph.as_mut().unwrap().node[1].input[1] = "ghost".into();
    write(d.path(), "in.onnx", &m.encode_to_vec());
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["`ghost`", "produced by nothing", "`add1`"],
    );
}

#[test]
fn names_with_newlines_stay_on_one_line() {
    // Names come from the file: control characters in them are escaped in the message.
    let d = tmp();
    let mut m = mlp();
    let n = &mut m.graph.as_mut().unwrap().node[1];
    n.name = Some("add\nfake line\r\u{1b}[31m".into());
    n.input[1] = "gh\nost".into();
    write(d.path(), "in.onnx", &m.encode_to_vec());
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &[
            "`gh\\nost`",
            "`add\\nfake line\\r\\u{1b}[31m`",
            "produced by nothing",
        ],
    );
}

#[test]
fn an_output_that_nothing_produces_is_refused() {
    let d = tmp();
    let mut m = mlp();
    m.graph.as_mut().unwrap().output[0].name = Some("phantom".into());
    write(d.path(), "in.onnx", &m.encode_to_vec());
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["`phantom`", "produced by nothing"],
    );
}

#[test]
fn a_cycle_is_refused() {
    let d = tmp();
    let mut m = mlp();
    // relu1 now reads the output of mm2, which (through h) reads relu1: h → y → h1' → h.
    let g = m.graph.as_mut().unwrap();
    g.node[2].input[0] = "y".into();
    write(d.path(), "in.onnx", &m.encode_to_vec());
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["cycle", "`"],
    );
}

#[test]
fn duplicate_value_names_are_refused() {
    let d = tmp();
    let mut m = mlp();
    // Two nodes write `h1`.
    m.graph.as_mut().unwrap().node[0].output[0] = "h1".into();
    m.graph.as_mut().unwrap().node[1].input[0] = "x".into();
    write(d.path(), "in.onnx", &m.encode_to_vec());
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["duplicate value name", "`h1`"],
    );
}

#[test]
fn an_initializer_shadowing_a_node_output_is_refused() {
    let d = tmp();
    let mut m = mlp();
    let g = m.graph.as_mut().unwrap();
    g.initializer.push(f32_tensor("h", &[1, 32], 9));
    write(d.path(), "in.onnx", &m.encode_to_vec());
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["duplicate value name", "`h`"],
    );
}

#[test]
fn out_equal_to_in_is_refused_without_in_place() {
    let d = tmp();
    let bytes = mlp().encode_to_vec();
    write(d.path(), "model.onnx", &bytes);
    expect_refused(
        d.path(),
        &args(&["model.onnx", "model.onnx"]),
        "model.onnx",
        &["`model.onnx`", "--in-place"],
    );
    assert_eq!(std::fs::read(d.path().join("model.onnx")).unwrap(), bytes);
    // The same file spelled differently is still the same file.
    expect_refused(
        d.path(),
        &args(&["model.onnx", "./model.onnx"]),
        "model.onnx",
        &["`model.onnx`", "--in-place"],
    );
    assert_eq!(std::fs::read(d.path().join("model.onnx")).unwrap(), bytes);
}

#[test]
fn out_equal_to_in_works_with_in_place() {
    let d = tmp();
    let bytes = mlp().encode_to_vec();
    write(d.path(), "model.onnx", &bytes);
    let o = run(d.path(), &args(&["model.onnx", "model.onnx", "--in-place"]));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(listing(d.path()), ["model.onnx".to_string()].into());
    let back = onnx_slim::onnx::decode_file(&d.path().join("model.onnx")).unwrap();
    assert_eq!(back.model.encode_to_vec(), bytes);
}

#[test]
fn out_in_a_missing_folder_is_refused() {
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    expect_refused(
        d.path(),
        &args(&["in.onnx", "nope/out.onnx"]),
        "nope/out.onnx",
        &["`nope/out.onnx`", "`nope`", "does not exist"],
    );
    assert!(!d.path().join("nope").exists());
}

#[cfg(unix)]
#[test]
fn out_in_a_read_only_folder_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    let ro = d.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("probe"), b"x").is_ok() {
        // Root ignores permissions: nothing to test here.
        common::skip_loudly(&format!(
            "SKIPPED: a read-only folder is writable (running as root?)"
        ));
        let _ = std::fs::remove_file(ro.join("probe"));
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        return;
    }
    expect_refused(
        d.path(),
        &args(&["in.onnx", "ro/out.onnx"]),
        "ro/out.onnx",
        &["`ro", "ermission denied"],
    );
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn out_that_is_a_folder_is_refused() {
    // Writable everywhere, even as root: the rename onto a folder fails, and the temp file must go.
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    std::fs::create_dir(d.path().join("out.onnx")).unwrap();
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["`out.onnx`"],
    );
    assert!(d.path().join("out.onnx").is_dir());
}

#[test]
fn a_failed_rename_leaves_no_file_behind() {
    // The library under the binary: when the final rename fails (the target became a folder
    // after the temp files were written), neither the temp files nor the external data file may
    // remain.
    use onnx_slim::onnx::{prepare_write, SaveOptions};
    let d = tmp();
    let opts = SaveOptions {
        external_threshold: Some(100),
    };
    let prepared = prepare_write(mlp(), &d.path().join("out.onnx"), &opts).unwrap();
    assert!(prepared.written().data_file.is_some());
    assert_eq!(
        listing(d.path()).len(),
        2,
        "two temp files before the rename"
    );
    std::fs::create_dir(d.path().join("out.onnx")).unwrap();
    std::fs::write(d.path().join("out.onnx").join("keep"), b"x").unwrap();
    let e = prepared.commit().unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("out.onnx`"), "{e}");
    assert_eq!(listing(d.path()), ["out.onnx".to_string()].into());
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[cfg(unix)]
#[test]
fn out_that_is_a_fifo_is_refused_and_stays() {
    use std::os::unix::fs::FileTypeExt;
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    let st = Command::new("mkfifo")
        .arg(d.path().join("out.onnx"))
        .status()
        .expect("mkfifo");
    assert!(st.success());
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["`out.onnx`", "not a regular file"],
    );
    let ft = std::fs::symlink_metadata(d.path().join("out.onnx"))
        .unwrap()
        .file_type();
    assert!(ft.is_fifo(), "the FIFO was replaced");
}

#[cfg(unix)]
#[test]
fn out_that_is_a_symlink_to_a_device_is_refused_and_stays() {
    // A link to /dev/null stands for any device: as root, a rename over the device itself would
    // destroy it, so the test only ever points a link at it.
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    symlink(Path::new("/dev/null"), &d.path().join("out.onnx"));
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["`out.onnx`", "symlink to `/dev/null`", "not a regular file"],
    );
    let meta = std::fs::symlink_metadata(d.path().join("out.onnx")).unwrap();
    assert!(meta.file_type().is_symlink());
    // The library refuses the device itself, before any temp file is made next to it.
    let e = onnx_slim::onnx::resolve_output(Path::new("/dev/null")).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[cfg(unix)]
#[test]
fn out_that_is_a_dangling_symlink_is_refused() {
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    symlink(&d.path().join("nowhere.onnx"), &d.path().join("out.onnx"));
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["`out.onnx`", "target does not exist"],
    );
    assert!(!d.path().join("nowhere.onnx").exists());
}

#[cfg(unix)]
#[test]
fn out_that_is_a_symlink_to_a_file_is_written_through() {
    // The link stays a link; the file it points to gets the model.
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    std::fs::create_dir(d.path().join("real")).unwrap();
    write(d.path(), "real/target.onnx", b"old");
    symlink(Path::new("real/target.onnx"), &d.path().join("out.onnx"));
    let o = run(d.path(), &args(&["in.onnx", "out.onnx"]));
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let meta = std::fs::symlink_metadata(d.path().join("out.onnx")).unwrap();
    assert!(meta.file_type().is_symlink(), "the link was replaced");
    let written = std::fs::read(d.path().join("real/target.onnx")).unwrap();
    assert_eq!(written, mlp().encode_to_vec());
    assert_eq!(
        listing(&d.path().join("real")),
        ["target.onnx".to_string()].into()
    );
}

#[cfg(unix)]
#[test]
fn external_data_behind_a_symlink_out_of_the_folder_is_refused() {
    // `location: link.bin` passes the lexical check, but the link leads outside the folder.
    let outside = tmp();
    let d = tmp();
    let mut m = mlp();
    let raw = make_external(&mut m, "W1", "link.bin", 0);
    std::fs::write(outside.path().join("secret.bin"), &raw).unwrap();
    symlink(
        &outside.path().join("secret.bin"),
        &d.path().join("link.bin"),
    );
    write(d.path(), "in.onnx", &m.encode_to_vec());
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &[
            "external data",
            "`W1`",
            "link.bin`",
            "outside the model's folder",
        ],
    );
    // The same through `inspect`, which reads external data too.
    let o = run(d.path(), &["inspect", "in.onnx"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("outside the model's folder"));
}

#[cfg(unix)]
#[test]
fn external_data_behind_a_symlink_inside_the_folder_is_read() {
    let d = tmp();
    let mut m = mlp();
    let raw = make_external(&mut m, "W1", "link.bin", 0);
    std::fs::create_dir(d.path().join("blobs")).unwrap();
    std::fs::write(d.path().join("blobs/w1.bin"), &raw).unwrap();
    symlink(Path::new("blobs/w1.bin"), &d.path().join("link.bin"));
    write(d.path(), "in.onnx", &m.encode_to_vec());
    let o = run(d.path(), &args(&["in.onnx", "out.onnx"]));
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let back = onnx_slim::onnx::decode_file(&d.path().join("out.onnx")).unwrap();
    assert_eq!(back.model, mlp());
}

#[cfg(unix)]
#[test]
fn external_data_that_is_a_fifo_is_refused_without_blocking() {
    let d = tmp();
    let mut m = mlp();
    make_external(&mut m, "W1", "pipe.bin", 0);
    let st = Command::new("mkfifo")
        .arg(d.path().join("pipe.bin"))
        .status()
        .expect("mkfifo");
    assert!(st.success());
    write(d.path(), "in.onnx", &m.encode_to_vec());
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx"]),
        "out.onnx",
        &["`W1`", "pipe.bin`", "not a regular file"],
    );
}

#[test]
fn an_unwritable_report_means_no_output_either() {
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    expect_refused(
        d.path(),
        &args(&[
            "in.onnx",
            "out.onnx",
            "--report-json",
            "missing/report.json",
        ]),
        "out.onnx",
        &["`missing/report.json`", "does not exist"],
    );
    expect_refused(
        d.path(),
        &args(&["in.onnx", "out.onnx", "--report-json", "out.onnx"]),
        "out.onnx",
        &["--report-json", "`out.onnx`", "overwrite the model"],
    );
}

#[test]
fn report_and_output_land_together() {
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    let o = run(
        d.path(),
        &args(&["in.onnx", "out.onnx", "--report-json", "report.json"]),
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        listing(d.path()),
        ["in.onnx", "out.onnx", "report.json"]
            .map(String::from)
            .into()
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("report.json")).unwrap()).unwrap();
    let size = std::fs::metadata(d.path().join("out.onnx")).unwrap().len();
    assert_eq!(json["output_bytes"], size);
}

#[cfg(unix)]
#[test]
fn the_output_is_an_ordinary_file() {
    // Same mode as a file created normally in the same folder (not tempfile's 0600).
    use std::os::unix::fs::PermissionsExt;
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    let o = run(
        d.path(),
        &args(&["in.onnx", "out.onnx", "--external-data", "100"]),
    );
    assert_eq!(o.status.code(), Some(0));
    let mode = |n: &str| {
        std::fs::metadata(d.path().join(n))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("out.onnx"), mode("in.onnx"));
    assert_eq!(mode("out.onnx.data"), mode("in.onnx"));
}

#[test]
fn a_missing_input_is_refused() {
    let d = tmp();
    expect_refused(
        d.path(),
        &args(&["missing.onnx", "out.onnx"]),
        "out.onnx",
        &["`missing.onnx`", "cannot read"],
    );
}

#[test]
fn an_unknown_rule_is_refused_with_the_valid_ones() {
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    let line = expect_refused(
        d.path(),
        &["in.onnx", "out.onnx", "--rules", "bogus-rule"],
        "out.onnx",
        &["unknown rule", "`bogus-rule`", "valid:", "none", "clean"],
    );
    // Every rule the binary lists is named in the message.
    let list = run(d.path(), &["--list-rules"]);
    assert_eq!(list.status.code(), Some(0));
    // The rule table ends at the blank line before the groups.
    let stdout = String::from_utf8_lossy(&list.stdout);
    let rows: Vec<&str> = stdout.lines().take_while(|l| !l.is_empty()).collect();
    assert!(rows.len() > 20, "{stdout}");
    for l in rows {
        if let Some(name) = l.split_whitespace().nth(1) {
            assert!(line.contains(name), "rule `{name}` not listed in: {line}");
        }
    }
}

#[test]
fn empty_rules_and_none_mixed_with_rules_are_refused() {
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    for empty in ["", " ", ",", " , "] {
        expect_refused(
            d.path(),
            &["in.onnx", "out.onnx", "--rules", empty],
            "out.onnx",
            &["--rules is empty", "`none`"],
        );
    }
    for mixed in ["none,clean", "clean, none"] {
        expect_refused(
            d.path(),
            &["in.onnx", "out.onnx", "--rules", mixed],
            "out.onnx",
            &["mixes `none` with rules", "`none` alone"],
        );
    }
}

/// `mlp()` with initializer `W1`'s dims and payload replaced.
fn with_w1(dims: Vec<i64>, raw_len: usize) -> ModelProto {
    let mut m = mlp();
    let t = m
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some("W1"))
        .unwrap();
    t.dims = dims;
    t.raw_data = Some(vec![0u8; raw_len].into());
    m
}

#[test]
fn corrupt_tensors_are_refused_by_every_command() {
    let cases = [
        (with_w1(vec![16, -32], 2048), "dim 1 is -32, negative"),
        (
            with_w1(vec![1 << 62, 1 << 62], 2048),
            "overflow the element count",
        ),
        (
            with_w1(vec![16, 32], 2047),
            "raw_data holds 2047 bytes, but float32 [16,32] needs 2048",
        ),
        (with_w1(vec![16, 32], 4096), "raw_data holds 4096 bytes"),
    ];
    let n = cases.len();
    for (m, want) in cases {
        let d = tmp();
        write(d.path(), "in.onnx", &m.encode_to_vec());
        for cmd in [
            vec!["in.onnx", "out.onnx", "--rules", "none"],
            vec!["in.onnx", "out.onnx", "--no-verify"],
            vec!["in.onnx", "out.onnx"],
            vec!["inspect", "in.onnx"],
            vec!["show", "in.onnx"],
        ] {
            expect_refused(d.path(), &cmd, "out.onnx", &["`W1`", want]);
        }
    }
    assert_eq!(n, 4);
}

#[test]
fn an_absurd_input_shape_is_refused_before_allocating() {
    use onnx_slim::ir::builder::{Dim, ModelBuilder};
    use onnx_slim::onnx::proto::tensor_proto::DataType;
    let dims = [Dim::Sym("N".into()), Dim::Sym("C".into())];
    let mut b = ModelBuilder::new(17);
    b.input_sym("x", DataType::Float, &dims)
        .node("Relu", &["x"], &["y"], vec![])
        .output_sym("y", DataType::Float, &dims);
    let d = tmp();
    write(d.path(), "in.onnx", &b.build().encode_to_vec());
    write(d.path(), "other.onnx", &b.build().encode_to_vec());
    expect_refused(
        d.path(),
        &[
            "verify",
            "in.onnx",
            "other.onnx",
            "--input-shape",
            "x=100000000,64",
        ],
        "out.onnx",
        &["`x=100000000,64`", "more than 2 GiB", "--input-shape"],
    );
}

#[test]
fn argument_errors_are_one_line_naming_the_flag() {
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    let cases: [(&[&str], &str); 7] = [
        (
            &["in.onnx", "out.onnx", "--max-patches", "-1"],
            "--max-patches",
        ),
        (&["in.onnx", "out.onnx", "--tolerance", "-1"], "--tolerance"),
        (
            &["in.onnx", "out.onnx", "--tolerance", "NaN"],
            "--tolerance",
        ),
        (
            &["in.onnx", "out.onnx", "--max-patches", "x"],
            "--max-patches",
        ),
        (&["in.onnx", "out.onnx", "--tolerance", "x"], "--tolerance"),
        (&["in.onnx", "out.onnx", "--no-such-flag"], "--no-such-flag"),
        (&["verify", "in.onnx"], "<B>"),
    ];
    for (args, flag) in cases {
        expect_refused(d.path(), args, "out.onnx", &[flag, "see --help"]);
    }
    let help = run(d.path(), &["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).lines().count() > 10);
}

#[cfg(unix)]
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `show … | head -1`: the reader closes the pipe early; the binary must not panic.
    use std::io::Read;
    use std::process::Stdio;
    let d = tmp();
    write(d.path(), "in.onnx", &mlp().encode_to_vec());
    let mut child = Command::new(common::bin())
        .args(["show", "in.onnx"])
        .current_dir(d.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run onnx-slim");
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    let _ = child.wait().expect("wait");
    assert!(!err.contains("panicked"), "{err}");
}
