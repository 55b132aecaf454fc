//! Segment-wise verification (`--memory-limit`): where the graphs are cut, and that verifying
//! segment by segment gives the whole-model verdict and names the segment a broken rewrite is in.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use bytes::Bytes;
use common::proto::{f32_tensor, model, node, value_info};
use common::run::{ok, refused, run};
use onnx_slim::onnx::proto::tensor_proto::DataType;
use onnx_slim::onnx::proto::{AttributeProto, GraphProto, ModelProto, TensorProto};
use onnx_slim::verify::compare::DEFAULT_TOLERANCE;
use onnx_slim::verify::segment::{plan, verify_segmented, verify_within, weight_bytes};
use onnx_slim::verify::{load_test_data_sets, verify_labeled, InputSet};
use prost::Message;
use tract_onnx::prelude::Tensor;

const WIDTH: i64 = 32;

/// `x[1,32]` → `layers` × (MatMul `w{i}` → Add `b{i}` → Relu) → `y`, each layer's value named
/// `h{i}`; with `residual`, the first layer's output `h0` is added back before the last layer,
/// so it is live across every segment in between.
fn chain(layers: usize, residual: bool) -> ModelProto {
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut prev = "x".to_string();
    for i in 0..layers {
        let (mm, add, h) = (format!("mm{i}"), format!("add{i}"), format!("h{i}"));
        let mut input = prev.clone();
        if residual && i + 1 == layers && layers > 1 {
            nodes.push(node("Add", "residual", &[&prev, "h0"], &["res"]));
            input = "res".into();
        }
        let out = if i + 1 == layers {
            "y".to_string()
        } else {
            h.clone()
        };
        nodes.push(node(
            "MatMul",
            &mm,
            &[&input, &format!("w{i}")],
            &[&format!("{mm}_out")],
        ));
        nodes.push(node(
            "Add",
            &add,
            &[&format!("{mm}_out"), &format!("b{i}")],
            &[&format!("{add}_out")],
        ));
        nodes.push(node(
            "Relu",
            &format!("relu{i}"),
            &[&format!("{add}_out")],
            &[&out],
        ));
        inits.push(f32_tensor(
            &format!("w{i}"),
            &[WIDTH, WIDTH],
            i as u32 * 7 + 1,
        ));
        inits.push(f32_tensor(&format!("b{i}"), &[WIDTH], i as u32 * 7 + 2));
        prev = h;
    }
    model(
        GraphProto {
            name: Some("chain".into()),
            node: nodes,
            initializer: inits,
            input: vec![value_info("x", DataType::Float, &[1, WIDTH])],
            output: vec![value_info("y", DataType::Float, &[1, WIDTH])],
            ..Default::default()
        },
        "test",
        13,
    )
}

fn input_set(seed: u32) -> InputSet {
    let v: Vec<f32> = (0..WIDTH as u32)
        .map(|i| ((i * 37 + seed * 11) % 17) as f32 / 8.0 - 1.0)
        .collect();
    InputSet::new(
        format!("set {seed}"),
        vec![(
            "x".into(),
            Tensor::from_shape(&[1, WIDTH as usize], &v).unwrap(),
        )],
    )
}

/// Bytes of one layer's weights as the planner counts them (encoded initializers).
fn layer_bytes(m: &ModelProto) -> u64 {
    let g = m.graph.as_ref().unwrap();
    let w = g
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some("w0"));
    let b = g
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some("b0"));
    (w.unwrap().encoded_len() + b.unwrap().encoded_len()) as u64
}

fn fed(names: &[&str]) -> HashSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Checks, independently of the planner, that `cuts` separate `g` as `segments` says: every
/// node is in one segment, and a value one segment reads from an earlier one is in every cut in
/// between. Returns the number of cross-segment reads checked.
fn assert_separates(g: &GraphProto, segments: &[Vec<usize>], cuts: &[Vec<String>]) -> usize {
    let mut seg_of: HashMap<&str, usize> = HashMap::new();
    let mut placed = HashSet::new();
    for (s, nodes) in segments.iter().enumerate() {
        for &i in nodes {
            assert!(placed.insert(i), "node {i} in two segments");
            for o in &g.node[i].output {
                seg_of.insert(o, s);
            }
        }
    }
    let mut crossings = 0;
    for (s, nodes) in segments.iter().enumerate() {
        for &i in nodes {
            for r in &g.node[i].input {
                if let Some(&t) = seg_of.get(r.as_str()) {
                    assert!(t <= s, "`{r}` read before it is made");
                    for (k, cut) in cuts.iter().enumerate().take(s).skip(t) {
                        assert!(
                            cut.contains(r),
                            "`{r}` crosses cut {k} without being in it: {cut:?}"
                        );
                        crossings += 1;
                    }
                }
            }
        }
    }
    crossings
}

#[test]
fn a_residual_value_crosses_every_cut_between_its_maker_and_its_reader() {
    let m = chain(6, true);
    let g = m.graph.as_ref().unwrap();
    // One layer's weights per segment: 6 segments.
    let seg = plan(g, g, &fed(&["x"]), layer_bytes(&m));
    assert_eq!(seg.original.len(), 6, "{:?}", seg.cuts);
    assert_eq!(seg.cuts.len(), 5);
    // h0 is made in segment 0 and read by the residual Add, in the last segment before the cut
    // after it: every cut before that one holds it.
    for (k, cut) in seg.cuts.iter().enumerate().take(4) {
        assert!(cut.contains(&"h0".to_string()), "cut {k}: {cut:?}");
        assert_eq!(cut.len(), if k == 0 { 1 } else { 2 }, "cut {k}: {cut:?}");
    }
    assert_eq!(seg.cuts[4], ["res"], "{:?}", seg.cuts);
    assert!(assert_separates(g, &seg.original, &seg.cuts) >= 5 + 3);
    assert_separates(g, &seg.rewritten, &seg.cuts);
    // And segment by segment the model verifies against itself.
    let sets = [input_set(0), input_set(1)];
    let r = verify_segmented(&m, "a", &m, "b", &sets, 0.0, layer_bytes(&m) * 3, None).unwrap();
    assert!(r.passed, "{r}");
    assert_eq!(r.segmented.as_ref().unwrap().segments.len(), 6);
}

#[test]
fn a_cut_holds_only_values_the_rewritten_model_makes_with_the_same_shape() {
    let a = chain(4, false);
    let mut b = a.clone();
    let gb = b.graph.as_mut().unwrap();
    // The rewrite renames h1 (fusing would) and changes the shape of h2 (pruning would: 32 → 16
    // columns, the next layer's weight loses rows).
    for n in &mut gb.node {
        for s in n.input.iter_mut().chain(n.output.iter_mut()) {
            if s == "h1" {
                *s = "h1_renamed".into();
            }
        }
    }
    for t in &mut gb.initializer {
        match t.name.as_deref() {
            Some("w2") => *t = f32_tensor("w2", &[WIDTH, 16], 5),
            Some("b2") => *t = f32_tensor("b2", &[16], 6),
            Some("w3") => *t = f32_tensor("w3", &[16, WIDTH], 7),
            _ => {}
        }
    }
    let (ga, gb) = (a.graph.as_ref().unwrap(), b.graph.as_ref().unwrap());
    let seg = plan(ga, gb, &fed(&["x"]), layer_bytes(&a));
    assert!(!seg.cuts.is_empty());
    for cut in &seg.cuts {
        assert!(!cut.contains(&"h1".to_string()), "{:?}", seg.cuts);
        assert!(!cut.contains(&"h2".to_string()), "{:?}", seg.cuts);
    }
    // Every value the rewrite changed stays inside a segment: layer 2 (whose output shrank) is
    // not cut anywhere between its MatMul and the next layer's MatMul.
    let changed = ["h1", "h2", "mm2_out", "add2_out"];
    for cut in &seg.cuts {
        assert!(
            cut.iter().all(|v| !changed.contains(&v.as_str())),
            "{seg:?}"
        );
    }
    assert_eq!(
        seg.cuts,
        [["h0"], ["add1_out"], ["mm3_out"]].map(|c| vec![c[0].to_string()]),
        "{seg:?}"
    );
    assert_separates(ga, &seg.original, &seg.cuts);
    assert_separates(gb, &seg.rewritten, &seg.cuts);
}

#[test]
fn a_cut_the_rewritten_model_does_not_respect_is_dropped() {
    let a = chain(4, false);
    let mut b = a.clone();
    // The rewritten model reads h0 again in its last layer (h0 is dead there in the original):
    // the cuts after layers 1 and 2 do not separate it.
    let gb = b.graph.as_mut().unwrap();
    let last_mm = gb
        .node
        .iter()
        .position(|n| n.name.as_deref() == Some("mm3"))
        .unwrap();
    gb.node.insert(
        last_mm,
        node("Add", "late_reader", &["h2", "h0"], &["h2_plus"]),
    );
    gb.node[last_mm + 1].input[0] = "h2_plus".into();
    let (ga, gb) = (a.graph.as_ref().unwrap(), b.graph.as_ref().unwrap());
    let seg = plan(ga, gb, &fed(&["x"]), layer_bytes(&a));
    assert_eq!(seg.dropped, 2, "{seg:?}");
    assert_eq!(seg.original.len(), 2, "{seg:?}");
    assert_separates(ga, &seg.original, &seg.cuts);
    assert!(assert_separates(gb, &seg.rewritten, &seg.cuts) > 0);
}

/// `x` → MatMul `w0` → `h0` → Relu → `r` → `If(c)`: then `h0 · w_then` (the body reads outer
/// `h0` and the outer weight `w_then`), else `r`; → MatMul `w1` → `y`.
fn with_if() -> ModelProto {
    let then_branch = GraphProto {
        name: Some("then".into()),
        node: vec![node("MatMul", "then_mm", &["h0", "w_then"], &["t_out"])],
        output: vec![value_info("t_out", DataType::Float, &[1, WIDTH])],
        ..Default::default()
    };
    let else_branch = GraphProto {
        name: Some("else".into()),
        node: vec![node("Identity", "else_id", &["r"], &["e_out"])],
        output: vec![value_info("e_out", DataType::Float, &[1, WIDTH])],
        ..Default::default()
    };
    let mut iff = node("If", "the_if", &["c"], &["z"]);
    iff.attribute = vec![
        AttributeProto {
            name: Some("then_branch".into()),
            r#type: Some(5),
            g: Some(then_branch),
            ..Default::default()
        },
        AttributeProto {
            name: Some("else_branch".into()),
            r#type: Some(5),
            g: Some(else_branch),
            ..Default::default()
        },
    ];
    model(
        GraphProto {
            name: Some("if".into()),
            node: vec![
                node("MatMul", "mm0", &["x", "w0"], &["h0"]),
                node("Relu", "relu0", &["h0"], &["r"]),
                iff,
                node("MatMul", "mm1", &["z", "w1"], &["y"]),
            ],
            initializer: vec![
                f32_tensor("w0", &[WIDTH, WIDTH], 1),
                f32_tensor("w_then", &[WIDTH, WIDTH], 2),
                f32_tensor("w1", &[WIDTH, WIDTH], 3),
            ],
            input: vec![
                value_info("x", DataType::Float, &[1, WIDTH]),
                value_info("c", DataType::Bool, &[]),
            ],
            output: vec![value_info("y", DataType::Float, &[1, WIDTH])],
            ..Default::default()
        },
        "test",
        13,
    )
}

#[test]
fn a_node_with_a_subgraph_stays_whole_and_its_outer_reads_cross_the_cut() {
    let m = with_if();
    let g = m.graph.as_ref().unwrap();
    let w = f32_tensor("w0", &[WIDTH, WIDTH], 1).encoded_len() as u64;
    let seg = plan(g, g, &fed(&["x", "c"]), w);
    let body: HashSet<&str> = ["then_mm", "t_out", "else_id", "e_out"].into();
    for cut in &seg.cuts {
        for v in cut {
            assert!(!body.contains(v.as_str()), "{v} is inside a body: {seg:?}");
        }
    }
    let if_seg = seg.original.iter().position(|s| s.contains(&2)).unwrap();
    assert!(if_seg > 0, "{seg:?}");
    // The body reads h0 and r from outside: both reach the If's segment through the cut.
    let cut = &seg.cuts[if_seg - 1];
    assert!(
        cut.contains(&"h0".into()) && cut.contains(&"r".into()),
        "{seg:?}"
    );
    // Both branches, whole model and segment by segment, give the same verdict.
    for c in [true, false] {
        let set = InputSet::new(
            format!("c = {c}"),
            vec![
                ("x".into(), input_set(3).tensors[0].1.clone()),
                ("c".into(), Tensor::from(c)),
            ],
        );
        let r = verify_segmented(&m, "a", &m, "b", &[set], 0.0, w * 3, None).unwrap();
        assert!(r.passed, "{r}");
        assert!(r.segmented.as_ref().unwrap().segments.len() >= 2, "{r}");
    }
}

#[test]
fn a_model_just_over_the_limit_verifies_in_two_segments() {
    let m = chain(4, false);
    let weights = weight_bytes(&m);
    let by_hand: u64 = m
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .map(|t| t.encoded_len() as u64)
        .sum();
    assert_eq!(weights, by_hand);
    let sets = [input_set(0)];
    let need = 3 * weights;
    let whole = verify_within(&m, "a", &m, "b", &sets, 0.0, need, None).unwrap();
    assert!(whole.segmented.is_none(), "{whole}");
    let r = verify_within(&m, "a", &m, "b", &sets, 0.0, need - 1, None).unwrap();
    let s = r.segmented.as_ref().expect("segmented");
    assert_eq!(s.segments.len(), 2, "{r}");
    assert!(r.passed, "{r}");
    assert!(r.to_string().contains("verified in 2 segments"), "{r}");
}

/// Adds `delta` to every element of float initializer `name`.
fn corrupt(m: &mut ModelProto, name: &str, delta: f32) {
    let g = m.graph.as_mut().unwrap();
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap();
    corrupt_tensor(t, delta);
}

fn corrupt_tensor(t: &mut TensorProto, delta: f32) {
    if let Some(raw) = &t.raw_data {
        let v: Vec<u8> = raw
            .chunks_exact(4)
            .flat_map(|c| (f32::from_le_bytes([c[0], c[1], c[2], c[3]]) + delta).to_le_bytes())
            .collect();
        t.raw_data = Some(Bytes::from(v));
    } else {
        for x in &mut t.float_data {
            *x += delta;
        }
    }
}

#[test]
fn a_corrupted_weight_fails_in_its_own_segment_only() {
    let a = chain(8, false);
    let mut b = a.clone();
    corrupt(&mut b, "w5", 0.25);
    let sets = [input_set(0), input_set(1)];
    let whole = verify_labeled(&a, "a", &b, "b", &sets, 1e-5).unwrap();
    assert!(!whole.passed);
    let r = verify_segmented(&a, "a", &b, "b", &sets, 1e-5, layer_bytes(&a) * 3, None).unwrap();
    assert!(!r.passed, "{r}");
    let s = r.segmented.as_ref().unwrap();
    assert_eq!(s.segments.len(), 8, "{r}");
    let verdicts: Vec<bool> = s.segments.iter().map(|x| x.report.passed).collect();
    assert_eq!(
        verdicts,
        [true, true, true, true, true, false, true, true],
        "{r}"
    );
    let f = s.first_failing().unwrap();
    assert_eq!(
        (f.first_node.as_str(), f.last_node.as_str()),
        ("mm5", "relu5"),
        "{r}"
    );
}

#[test]
fn the_verify_command_names_the_failing_segment() {
    let dir = tempfile::tempdir().unwrap();
    let a = chain(8, false);
    let mut b = a.clone();
    corrupt(&mut b, "w2", 0.25);
    std::fs::write(dir.path().join("a.onnx"), a.encode_to_vec()).unwrap();
    std::fs::write(dir.path().join("b.onnx"), b.encode_to_vec()).unwrap();
    let limit = (layer_bytes(&a) * 3).to_string();
    let args = ["verify", "a.onnx", "b.onnx", "--memory-limit", &limit];
    let r = run(
        dir.path(),
        &[&args[..], &["--report-json", "r.json"]].concat(),
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout.contains("verified in 8 segments"), "{r:?}");
    // Segment 3 alone fails on the original's values.
    let fail_lines: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains("/8  ") && l.contains("FAIL"))
        .collect();
    assert_eq!(fail_lines.len(), 1, "{r:?}");
    assert!(fail_lines[0].contains("3/8  `mm2` … `relu2`"), "{r:?}");
    let json = common::run::json(&dir.path().join("r.json"));
    let segs = json["segmented"]["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 8);
    assert_eq!(segs[2]["first_node"], "mm2");
    assert_eq!(segs[2]["report"]["passed"], false);
    assert_eq!(json["passed"], false);
    // Within the default limit the same models verify whole.
    let r = run(dir.path(), &["verify", "a.onnx", "b.onnx"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(!r.stdout.contains("segment"), "{r:?}");
}

#[test]
fn a_budget_judges_the_segments_of_a_lossy_pair() {
    let dir = tempfile::tempdir().unwrap();
    let a = chain(4, false);
    let mut b = a.clone();
    corrupt(&mut b, "w2", 0.002);
    std::fs::write(dir.path().join("a.onnx"), a.encode_to_vec()).unwrap();
    std::fs::write(dir.path().join("b.onnx"), b.encode_to_vec()).unwrap();
    let limit = (layer_bytes(&a) * 3).to_string();
    let args = [
        "verify",
        "a.onnx",
        "b.onnx",
        "--memory-limit",
        &limit,
        "--report-json",
        "r.json",
    ];
    // Element by element, segment 3 moved; within a cosine budget of 0.01, nothing did.
    let r = run(dir.path(), &args);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout.contains("3/4  `mm2` … `relu2`") && r.stdout.contains("FAIL"),
        "{r:?}"
    );
    let r = ok(dir.path(), &[&args[..], &["--budget", "0.01"]].concat());
    assert!(r.stdout.contains("verified in 4 segments"), "{r:?}");
    assert!(r.stdout.contains("within budget"), "{r:?}");
    let json = common::run::json(&dir.path().join("r.json"));
    let segs = json["segmented"]["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 4);
    for s in segs {
        assert_eq!(s["report"]["passed"], true, "{s}");
        assert!(s["report"]["budget"].is_array(), "{s}");
    }
}

#[test]
fn the_main_command_verifies_in_segments_under_a_small_limit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), chain(6, true).encode_to_vec()).unwrap();
    // A redundant Identity for the clean rules to remove, so that there is something to verify.
    let mut m = chain(6, true);
    let g = m.graph.as_mut().unwrap();
    g.node.insert(0, node("Identity", "id", &["x"], &["x_id"]));
    g.node[1].input[0] = "x_id".into();
    std::fs::write(dir.path().join("m.onnx"), m.encode_to_vec()).unwrap();
    let r = ok(dir.path(), &["m.onnx", "o.onnx", "--memory-limit", "20K"]);
    assert!(r.stdout.contains("verified in "), "{r:?}");
    assert!(r.stdout.contains("passed at tolerance"), "{r:?}");
}

#[test]
fn a_bad_memory_limit_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), chain(2, false).encode_to_vec()).unwrap();
    for bad in ["8X", "-1G", "0", "lots"] {
        let flag = format!("--memory-limit={bad}");
        let line = refused(dir.path(), &["m.onnx", "o.onnx", &flag]);
        assert!(line.contains("--memory-limit"), "{line}");
        let line = refused(dir.path(), &["verify", "m.onnx", "m.onnx", &flag]);
        assert!(line.contains("--memory-limit"), "{line}");
        assert!(!dir.path().join("o.onnx").exists());
    }
}

/// The largest float tensor of `m` read by a top-level node: an initializer, or a `Constant`
/// node's value (returns a mutable reference to it and its name).
fn largest_weight(m: &mut ModelProto) -> (&mut TensorProto, String) {
    let g = m.graph.as_mut().unwrap();
    let read: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    let mut best: Option<(usize, bool, usize)> = None; // (size, is_init, index)
    for (i, t) in g.initializer.iter().enumerate() {
        if t.data_type == Some(DataType::Float as i32)
            && read.contains(t.name.as_deref().unwrap_or(""))
        {
            let n = t.encoded_len();
            if best.is_none_or(|b| n > b.0) {
                best = Some((n, true, i));
            }
        }
    }
    for (i, n) in g.node.iter().enumerate() {
        if n.op_type.as_deref() == Some("Constant") {
            if let Some(t) = n.attribute.iter().find_map(|a| a.t.as_ref()) {
                if t.data_type == Some(DataType::Float as i32) && read.contains(&n.output[0]) {
                    let s = t.encoded_len();
                    if best.is_none_or(|b| s > b.0) {
                        best = Some((s, false, i));
                    }
                }
            }
        }
    }
    let (_, init, i) = best.expect("a float weight");
    if init {
        let name = g.initializer[i].name.clone().unwrap_or_default();
        (&mut g.initializer[i], name)
    } else {
        let name = g.node[i].output[0].clone();
        let t = g.node[i]
            .attribute
            .iter_mut()
            .find_map(|a| a.t.as_mut())
            .unwrap();
        (t, name)
    }
}

fn load(path: &Path) -> ModelProto {
    onnx_slim::onnx::decode_file(path).unwrap().model
}

#[test]
fn segment_wise_verdicts_equal_whole_model_verdicts_on_the_shared_models() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (mut compared, mut failing, mut localized) = (0, 0, 0);
    for dir in &models {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let src = dir.join("model.onnx");
        let out = tmp.path().join(format!("{name}.onnx"));
        ok(
            tmp.path(),
            &[src.to_str().unwrap(), out.to_str().unwrap(), "--no-verify"],
        );
        let a = load(&src);
        let b = load(&out);
        let mut sets = load_test_data_sets(dir, &a).unwrap();
        sets.truncate(2);
        let limit = 3 * weight_bytes(&a) / 6;
        let mut broken = b.clone();
        let (t, weight) = largest_weight(&mut broken);
        corrupt_tensor(t, 0.5);
        for (b, what) in [(&b, "clean"), (&broken, "broken")] {
            let whole = verify_labeled(&a, "a", b, "b", &sets, DEFAULT_TOLERANCE).unwrap();
            let seg =
                verify_segmented(&a, "a", b, "b", &sets, DEFAULT_TOLERANCE, limit, None).unwrap();
            let s = seg.segmented.as_ref().unwrap();
            assert_eq!(
                whole.passed, seg.passed,
                "{name} {what}: whole\n{whole}\nsegments\n{seg}"
            );
            assert!(s.segments.len() >= 2, "{name}: {seg}");
            if what == "clean" {
                assert!(whole.passed, "{name}: {whole}");
                assert!(s.first_failing().is_none(), "{name}: {seg}");
            } else if !whole.passed {
                failing += 1;
                // The first segment to fail on the original's values is the one reading the
                // corrupted weight.
                let gb = b.graph.as_ref().unwrap();
                let fed: HashSet<String> = sets[0].names().map(str::to_string).collect();
                let p = plan(a.graph.as_ref().unwrap(), gb, &fed, limit / 3);
                assert_eq!(p.original.len(), s.segments.len());
                let reader = p
                    .rewritten
                    .iter()
                    .position(|nodes| nodes.iter().any(|&i| gb.node[i].input.contains(&weight)));
                let first = s.first_failing().map(|f| f.index - 1);
                assert!(first.is_some(), "{name} `{weight}`: {seg}");
                if let Some(r) = reader {
                    assert_eq!(first, Some(r), "{name} `{weight}`: {seg}");
                    localized += 1;
                }
            }
            eprintln!(
                "{name} {what}: {} segments, {} ({})",
                s.segments.len(),
                if seg.passed { "passed" } else { "failed" },
                s.first_failing()
                    .map(|f| f.describe(s.segments.len()))
                    .unwrap_or_default()
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 12);
    // A weight off by 0.5 everywhere moves the outputs of every shared model.
    assert_eq!(failing, 6);
    // In each, the segment named is the one whose node reads the corrupted weight.
    assert_eq!(localized, 6);
    eprintln!("{localized} of {failing} broken models localized to the reading segment");
}
