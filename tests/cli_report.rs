//! The human report of the main command and the conveniences around it, through the binary:
//! thousands separators and percentages, file bytes, per-rule blocks only for rules that acted
//! (`--verbose` for the rest), `--quiet`, an aligned verification table, the note of a lossy
//! rule run without clean-up, the groups in `--help` and `--list-rules`, shell completions, and
//! output into a closed pipe.

mod common;

use std::path::PathBuf;

use common::run::{dir_with, ok, refused, run};
use onnx_slim::report::format::sep;
use onnx_slim::rewrite::registry;
use onnx_slim::verify::{Comparison, SetReport, VerifyReport};

fn shared_model(name: &str) -> Option<PathBuf> {
    let p = common::shared_dir()
        .join("models")
        .join(name)
        .join("model.onnx");
    if p.is_file() {
        Some(p)
    } else {
        common::skip_loudly(&format!("SKIPPED: {} not found", p.display()));
        None
    }
}

fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).expect("metadata").len()
}

#[test]
fn the_last_line_gives_file_bytes_with_separators_and_the_change_in_percent() {
    let Some(model) = shared_model("digits_mlp") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let r = ok(
        d.path(),
        &[model.to_str().unwrap(), "out.onnx", "--rules", "quantize"],
    );
    let (a, b) = (file_len(&model), file_len(&d.path().join("out.onnx")));
    let p = (b as f64 - a as f64) / a as f64 * 100.0;
    let want = format!(
        "wrote `out.onnx`: {} bytes, input {} bytes (−{:.1} %)",
        sep(b),
        sep(a),
        -p
    );
    assert!(r.stdout.lines().any(|l| l == want), "{want}\n{r:?}");
    assert!(a > 1_000_000 && sep(a).matches(',').count() == 2);
    // The totals: weight bytes with separators and the change.
    let total = r
        .stdout
        .lines()
        .find(|l| l.starts_with("total: 3 rewrites, nodes 8 → 11 (+37.5 %), params "))
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(total.contains("weight bytes 1,204,264 → "), "{total}");
}

#[test]
fn rules_with_nothing_to_do_are_named_only_with_verbose() {
    let d = dir_with(&["conv.onnx"]);
    let r = ok(d.path(), &["conv.onnx", "out.onnx"]);
    assert!(!r.stdout.contains("nothing to do:"), "{r:?}");
    let counted = r
        .stdout
        .lines()
        .find(|l| l.ends_with("with nothing to do (--verbose names them)"))
        .unwrap_or_else(|| panic!("{r:?}"));
    let n: usize = counted.split(' ').next().unwrap().parse().unwrap();
    let r = ok(d.path(), &["conv.onnx", "out.onnx", "--verbose"]);
    let named = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("nothing to do: "))
        .unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(named.split(", ").count(), n, "{named}");
    // Only rules that acted have a block.
    for name in named.split(", ") {
        assert!(
            !r.stdout.contains(&format!(" {name} (exact)")),
            "{name}: {r:?}"
        );
    }
}

#[test]
fn verbose_lists_every_rewrite() {
    let Some(model) = shared_model("silero_vad_v6_16k_op15") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let m = model.to_str().unwrap();
    let count = |r: &common::run::Run| {
        r.stdout
            .lines()
            .filter(|l| l.starts_with("    rewrote Constant"))
            .count()
    };
    let r = ok(d.path(), &[m, "out.onnx", "--rules", "C002"]);
    assert_eq!(count(&r), 10, "{r:?}");
    assert!(
        r.stdout
            .contains("    ... and 39 more (--verbose lists them)"),
        "{r:?}"
    );
    let r = ok(d.path(), &[m, "out.onnx", "--rules", "C002", "--verbose"]);
    assert_eq!(count(&r), 49, "{r:?}");
}

#[test]
fn quiet_prints_nothing_and_still_writes() {
    let d = dir_with(&["conv.onnx"]);
    let r = ok(d.path(), &["conv.onnx", "out.onnx", "--quiet"]);
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("", ""), "{r:?}");
    assert!(d.path().join("out.onnx").is_file());
    refused(d.path(), &["conv.onnx", "o2.onnx", "--quiet", "--verbose"]);
    // Errors still speak.
    let r = run(d.path(), &["missing.onnx", "o3.onnx", "-q"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.starts_with("error: "), "{r:?}");
}

#[test]
fn a_lossy_rule_alone_says_why_the_node_count_grew() {
    let d = dir_with(&["lowrank.onnx"]);
    let args = ["--lowrank-rank", "1", "--budget", "1"];
    let mut alone = vec!["lowrank.onnx", "a.onnx", "--rules", "lowrank"];
    alone.extend(args);
    let r = ok(d.path(), &alone);
    let note = r
        .stdout
        .lines()
        .find(|l| l.starts_with("note: nodes "))
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(
        note.contains("lowrank +3 (each factored layer is two)"),
        "{note}"
    );
    assert!(note.contains("`--rules clean,lowrank`"), "{note}");
    assert!(
        note.contains("what the rewrites left unread went with them"),
        "{note}"
    );
    // MACs before and after: MatMul and Gemm 64·64 each on one row, the Conv 32·16·3·3 at 6×6
    // positions; at rank 1: 64 + 64 per row each, (16·9 + 32)·36 for the Conv pair.
    let macs = format!(
        "MACs: {} → {} (−96.2 %)",
        sep(2 * 4096 + 4608 * 36),
        sep(2 * 128 + 176 * 36)
    );
    assert!(r.stdout.lines().any(|l| l == macs), "{macs}\n{r:?}");
    let mut with_clean = vec!["lowrank.onnx", "b.onnx", "--rules", "clean,lowrank"];
    with_clean.extend(args);
    let r = ok(d.path(), &with_clean);
    assert!(!r.stdout.contains("note: nodes "), "{r:?}");
}

/// `(nodes before, nodes after)` from the report's `total:` line.
fn total_nodes(stdout: &str) -> (usize, usize) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("total: "))
        .unwrap_or_else(|| panic!("no total line:\n{stdout}"));
    let nodes = line.split(", nodes ").nth(1).expect("nodes");
    let mut it = nodes.split(' ');
    let a = it.next().unwrap().replace(',', "").parse().unwrap();
    assert_eq!(it.next(), Some("→"));
    let b = it.next().unwrap().replace(',', "").parse().unwrap();
    (a, b)
}

/// `--rules lowrank` alone: the node count grows by exactly one per factored layer, the note
/// says so, and the clean-up its rewrite makes possible is done: `--rules clean` finds on the
/// result exactly what it finds on the input (nothing left behind by the rewrite).
fn lowrank_alone_leaves_no_clean_up_of_its_own(
    dir: &std::path::Path,
    model: &str,
    flags: &[&str],
) -> (usize, usize, usize) {
    let mut args = vec![model, "lr.onnx", "--rules", "lowrank", "--no-verify"];
    args.extend(flags);
    let r = ok(dir, &args);
    let (before, after) = total_nodes(&r.stdout);
    let rewrites = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("total: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(after, before + rewrites, "{r:?}");
    let note = r
        .stdout
        .lines()
        .find(|l| l.starts_with("note: nodes "))
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(
        note.contains(&format!(
            "lowrank +{} (each factored layer is two)",
            sep(rewrites as u64)
        )) && note.contains("`--rules clean,lowrank`"),
        "{note}"
    );
    let clean = |m: &str, out: &str| {
        total_nodes(&ok(dir, &[m, out, "--rules", "clean", "--no-verify"]).stdout)
    };
    let (a, b) = clean(model, "c_in.onnx");
    let (c, e) = clean("lr.onnx", "c_lr.onnx");
    assert_eq!((a, c), (before, after));
    assert_eq!(
        a - b,
        c - e,
        "clean removes {} nodes from the input, {} from lowrank's output",
        a - b,
        c - e
    );
    (before, after, a - b)
}

#[test]
fn lowrank_alone_grows_by_its_factored_layers_and_leaves_nothing_to_clean() {
    let d = dir_with(&["lowrank.onnx"]);
    assert_eq!(
        lowrank_alone_leaves_no_clean_up_of_its_own(
            d.path(),
            "lowrank.onnx",
            &["--lowrank-rank", "1"]
        ),
        (4, 7, 0)
    );
    let Some(model) = shared_model("ddddocr_det_yolox") else {
        return;
    };
    std::fs::copy(&model, d.path().join("yolox.onnx")).unwrap();
    // 30 layers factored at the default energy; clean merges the same 4 slices either way.
    assert_eq!(
        lowrank_alone_leaves_no_clean_up_of_its_own(
            d.path(),
            "yolox.onnx",
            &["--lowrank-energy", "0.95"]
        ),
        (279, 309, 4)
    );
}

#[test]
fn help_and_list_rules_name_every_group_and_all() {
    let d = tempfile::tempdir().unwrap();
    let help = ok(d.path(), &["--help"]).stdout;
    let list = ok(d.path(), &["--list-rules"]).stdout;
    let mut groups: Vec<&str> = registry::all().iter().map(|r| r.meta().group).collect();
    groups.dedup();
    assert!(groups.len() >= 6, "{groups:?}");
    let footer: Vec<&str> = list.lines().skip_while(|l| !l.is_empty()).collect();
    for g in &groups {
        assert!(help.contains(g), "--help lacks group `{g}`");
        let line = footer
            .iter()
            .find(|l| l.split_whitespace().next() == Some(*g))
            .unwrap_or_else(|| panic!("--list-rules lacks group `{g}`: {list}"));
        // The group's line names each of its rules.
        for r in registry::all().iter().filter(|r| r.meta().group == *g) {
            assert!(line.contains(r.meta().name), "{line}");
        }
    }
    assert!(help.contains("`all` is every rule"), "{help}");
    assert!(
        footer.iter().any(|l| l.trim_start().starts_with("all ")),
        "{list}"
    );
}

#[test]
fn completions_for_each_shell_know_the_flags_and_subcommands() {
    let d = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let r = ok(d.path(), &["completions", shell]);
        for word in ["input-shape", "lowrank-rank", "inspect", "verify"] {
            assert!(r.stdout.contains(word), "{shell} lacks {word}");
        }
    }
    let e = refused(d.path(), &["completions", "tcsh"]);
    assert!(e.contains("tcsh"), "{e}");
}

#[cfg(unix)]
#[test]
fn inspect_and_show_into_a_closed_pipe_end_quietly() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let Some(model) = shared_model("captcha_crnn") else {
        return;
    };
    for cmd in ["inspect", "show"] {
        let mut child = Command::new(common::bin())
            .args([cmd, model.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run onnx-slim");
        // Read one chunk (as `head` does), then close the pipe.
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = [0u8; 64];
        let n = out.read(&mut buf).expect("read");
        assert!(n > 0);
        drop(out);
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("read stderr");
        let status = child.wait().expect("wait");
        assert!(!err.contains("panicked"), "{cmd}: {err}");
        assert_ne!(status.code(), Some(101), "{cmd}: {err}");
    }
}

#[test]
fn the_verification_table_stays_aligned_with_long_output_names() {
    let row = |name: &str, passed: bool| Comparison {
        output: name.into(),
        dtype: "F32".into(),
        shape: vec![1, 10],
        other_shape: vec![1, 10],
        shape_equal: true,
        elements: 10,
        max_abs_error: Some(0.0),
        max_rel_error: Some(0.0),
        rel_l2: Some(0.0),
        cosine: Some(1.0),
        argmax_agreement: Some(1.0),
        mismatched: 0,
        passed,
        note: None,
        loss: None,
    };
    let long = "/model/decoder/a_very_long_output_name_of_some_exporter";
    let report = VerifyReport {
        tolerance: 1e-5,
        budget: None,
        sets: vec![SetReport {
            label: "test_data_set_0".into(),
            outputs: vec![row(long, true), row("y", true)],
            passed: true,
            inputs: vec!["x [1, 16]".into()],
        }],
        passed: true,
        segmented: None,
    };
    let text = report.to_string();
    let lines: Vec<&str> = text.lines().take(3).collect();
    // Every column ends at the same place on the header and both rows.
    let ends: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
    assert_eq!(ends[1], ends[2], "{text}");
    let col = |l: &str, w: &str| l.find(w).unwrap_or_else(|| panic!("{w} in {l}"));
    assert_eq!(col(lines[0], "dtype"), col(lines[1], "F32"), "{text}");
    assert_eq!(col(lines[1], "F32"), col(lines[2], "F32"), "{text}");
    assert!(text.contains("inputs: x [1, 16]"), "{text}");
}
