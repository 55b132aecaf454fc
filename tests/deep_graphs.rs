//! Graphs as deep as code generators make them: a chain of 100,000 nodes goes through every
//! stage that walks the graph (build, topological order, facts, text form, the driver and its
//! graph check, encode and decode) on a test thread's 2 MiB stack. A walk that recurses once
//! per node overflows it long before the end of the chain (petgraph's `is_cyclic_directed`
//! did, at about 30,000 nodes).
//!
//! The driver on such graphs: a chain of 200,000 `Identity` nodes goes in one call (the
//! matches of one `find` are applied as a batch, not one `find` per patch), a batch whose
//! patches are fine alone but not together is redone one patch at a time, growth is refused
//! patch by patch inside a batch, and `--max-patches` says it stopped early only when it did.

use onnx_slim::error::{Error, Result};
use onnx_slim::ir::builder::{attr_g, ModelBuilder};
use onnx_slim::ir::{text, Model, ValueRef};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto, NodeProto};
use onnx_slim::onnx::{decode_bytes, encode_model};
use onnx_slim::rewrite::{
    registry, run, Config, DriverOptions, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire,
};
use prost::Message;

const DEPTH: usize = 100_000;

/// x → Identity → Relu → Identity → … → y, `DEPTH` nodes.
fn chain() -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("v0", DataType::Float, &[1, 4]);
    for i in 0..DEPTH {
        let op = if i % 2 == 0 { "Identity" } else { "Relu" };
        b.node(op, &[&format!("v{i}")], &[&format!("v{}", i + 1)], vec![]);
    }
    b.output(&format!("v{DEPTH}"), DataType::Float, &[1, 4]);
    b.build()
}

#[test]
fn a_chain_of_100k_nodes_walks_without_recursion() {
    let proto = chain();
    let mut m = Model::from_proto(proto.clone()).expect("builds");
    assert_eq!(m.graph.op_count(), DEPTH);
    assert_eq!(m.graph.topo_order().len(), DEPTH + 1);
    let facts = m.graph.facts();
    drop(facts);
    assert_eq!(
        text::to_text(&m)
            .lines()
            .filter(|l| l.contains(" = "))
            .count(),
        DEPTH
    );
    // Two patches: each is applied to a copy, checked (cycle test included) and measured.
    let rules = registry::select("clean").expect("clean");
    let opts = DriverOptions {
        max_patches: Some(2),
        ..Default::default()
    };
    let report = run(&mut m, &rules, &Config::default(), &opts).expect("runs");
    assert_eq!(report.patches(), 2);
    assert_eq!(m.graph.op_count(), DEPTH - 2);
    let bytes = encode_model(&m.to_proto());
    let back = decode_bytes(bytes.into(), std::path::Path::new("chain.onnx")).expect("decodes");
    assert_eq!(
        Model::from_proto(back).expect("builds").graph.op_count(),
        DEPTH - 2
    );
}

/// x → Relu → Identity × `n` → y.
fn identities_after_relu(n: usize) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[1, 4]);
    b.node("Relu", &["x"], &["v0"], vec![]);
    for i in 0..n {
        let out = if i + 1 == n {
            "y".to_string()
        } else {
            format!("v{}", i + 1)
        };
        b.node("Identity", &[&format!("v{i}")], &[&out], vec![]);
    }
    b.output("y", DataType::Float, &[1, 4]);
    b.build()
}

#[test]
fn a_chain_of_200k_identities_goes_in_one_driver_call() {
    const N: usize = 200_000;
    let mut m = Model::from_proto(identities_after_relu(N)).expect("builds");
    let rules = registry::select("clean").expect("clean");
    let report = run(
        &mut m,
        &rules,
        &Config::default(),
        &DriverOptions::default(),
    )
    .expect("runs");
    assert_eq!(report.patches(), N);
    let identity = report
        .rules
        .iter()
        .find(|r| r.name == "eliminate-identity")
        .expect("reported");
    assert_eq!(identity.rewrites.len(), N);
    assert_eq!((identity.before.nodes, identity.after.nodes), (N + 1, 1));
    assert!(!report.stopped_early);
    m.graph.check().expect("the result checks");
    assert_eq!(m.graph.op_count(), 1);
    let out = m.to_proto();
    let g = out.graph.as_ref().expect("graph");
    assert_eq!(g.node[0].op_type.as_deref(), Some("Relu"));
    assert_eq!(g.node[0].output, ["y"]);
    assert_eq!(g.output[0].name.as_deref(), Some("y"));
}

#[test]
fn max_patches_stops_early_only_with_work_left_and_keeps_the_stats() {
    let rules = registry::select("eliminate-identity").expect("rule");
    let run_with = |max: usize| {
        let mut m = Model::from_proto(identities_after_relu(5)).expect("builds");
        let opts = DriverOptions {
            max_patches: Some(max),
            ..Default::default()
        };
        let r = run(&mut m, &rules, &Config::default(), &opts).expect("runs");
        (r, m)
    };
    // Exactly the patches the run makes: nothing was left, so it did not stop early.
    let (r, m) = run_with(5);
    assert_eq!((r.patches(), r.stopped_early), (5, false));
    assert_eq!(m.graph.op_count(), 1);
    // Fewer: it stopped early, and the rule's counts are those of the model it left.
    let (r, m) = run_with(2);
    assert_eq!((r.patches(), r.stopped_early), (2, true));
    assert_eq!(m.graph.op_count(), 4);
    assert_eq!((r.rules[0].before.nodes, r.rules[0].after.nodes), (6, 4));
    assert_eq!(r.after.nodes, 4);
}

/// A test rule whose two patches are each fine alone but make a cycle together: `p1` is rewired
/// to read `q2`, and `q1` to read `p2`, where `p1 → p2` and `q1 → q2`.
struct CrossWire;

impl Rule for CrossWire {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "T902",
            name: "test-cross-wire",
            group: "test",
            summary: "rewire p1 to read q2 and q1 to read p2 (a cycle when both are done)",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        for id in g.ops() {
            let label = g.node(id).label();
            let other = match label.as_str() {
                "p1" => "q2",
                "q1" => "p2",
                _ => continue,
            };
            let reads = g.input(id, 0).map(|v| g.value_name(v).to_string());
            if reads.as_deref() != Some(other) {
                f.matches.push(Match {
                    anchor: id,
                    nodes: vec![],
                    what: format!("{label} reads {other}"),
                });
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let other = if g.node(m.anchor).label() == "p1" {
            "q2"
        } else {
            "p2"
        };
        let v = g.producer(other).ok_or_else(|| Error::Rule {
            rule: "test-cross-wire".into(),
            reason: format!("no `{other}`"),
        })?;
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        p.rewire(m.anchor, 0, Some(Wire::Value(v)));
        Ok(p)
    }
}

#[test]
fn a_batch_that_does_not_check_is_redone_one_patch_at_a_time() {
    // Value names of one length, so that rewiring does not change the encoded size.
    let mut b = ModelBuilder::new(17);
    b.input("x0", DataType::Float, &[1, 4])
        .node_named("p1", "Relu", &["x0"], &["p1"], vec![])
        .node_named("p2", "Neg", &["p1"], &["p2"], vec![])
        .node_named("q1", "Relu", &["x0"], &["q1"], vec![])
        .node_named("q2", "Neg", &["q1"], &["q2"], vec![])
        .output("p2", DataType::Float, &[1, 4])
        .output("q2", DataType::Float, &[1, 4]);
    let mut m = Model::from_proto(b.build()).expect("builds");
    let report = run(
        &mut m,
        &[&CrossWire],
        &Config::default(),
        &DriverOptions::default(),
    )
    .expect("runs");
    // Both matches come from one `find` and do not overlap; together they make a cycle, which
    // the batch's check finds; one at a time, the first applies and the second is refused.
    assert_eq!(report.patches(), 1, "{report:?}");
    assert_eq!(report.rules[0].rewrites[0].description, "p1 reads q2");
    let skips = &report.rules[0].skips;
    assert_eq!(skips.len(), 1, "{skips:?}");
    assert_eq!(skips[0].node, "q1");
    assert!(skips[0].reason.contains("cycle"), "{skips:?}");
    m.graph.check().expect("the result checks");
    let text = text::to_text(&m);
    assert!(text.contains("p1 = Relu(q2)"), "{text}");
    assert!(text.contains("q1 = Relu(x0)"), "{text}");
}

/// A test rule that renames every `Relu` whose name starts with `r`: to `s<i>` (as long as
/// before) for even `i`, to a longer name for odd `i`, which grows the model.
struct Rename;

impl Rule for Rename {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "T903",
            name: "test-rename",
            group: "test",
            summary: "rename Relu nodes, growing the model for every other one",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        for id in g.ops() {
            let label = g.node(id).label();
            if g.node(id).op_type() == "Relu" && label.starts_with('r') {
                f.matches.push(Match {
                    anchor: id,
                    nodes: vec![],
                    what: format!("rename {label}"),
                });
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let label = g.node(m.anchor).label();
        let i: usize = label[1..].parse().map_err(|_| Error::Rule {
            rule: "test-rename".into(),
            reason: format!("unexpected name `{label}`"),
        })?;
        let name = if i.is_multiple_of(2) {
            format!("s{i}")
        } else {
            format!("renamed-to-something-longer-{i}")
        };
        let src = g.input(m.anchor, 0).ok_or_else(|| Error::Rule {
            rule: "test-rename".into(),
            reason: "no input".into(),
        })?;
        let mut p = Patch::new(format!("{label} → {name}"), Some(m.anchor));
        let node = NodeProto {
            op_type: Some("Relu".into()),
            name: Some(name),
            output: vec!["t".into()],
            ..Default::default()
        };
        let out = p.add_op(node, &[Some(Wire::Value(src))]);
        let old = ValueRef {
            node: m.anchor,
            slot: 0,
        };
        p.shunt(old, out[0]);
        p.remove(m.anchor);
        Ok(p)
    }
}

#[test]
fn growth_is_refused_patch_by_patch_inside_a_batch() {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[1, 4]);
    for i in 0..8 {
        b.node_named(
            &format!("r{i}"),
            "Relu",
            &["x"],
            &[&format!("o{i}")],
            vec![],
        );
    }
    for i in 0..8 {
        b.output(&format!("o{i}"), DataType::Float, &[1, 4]);
    }
    let proto = b.build();
    let mut m = Model::from_proto(proto.clone()).expect("builds");
    let report = run(
        &mut m,
        &[&Rename],
        &Config::default(),
        &DriverOptions::default(),
    )
    .expect("runs");
    let r = &report.rules[0];
    let done: Vec<&str> = r.rewrites.iter().map(|w| w.description.as_str()).collect();
    assert_eq!(done, ["r0 → s0", "r2 → s2", "r4 → s4", "r6 → s6"]);
    let refused: Vec<(&str, bool)> = r
        .skips
        .iter()
        .map(|s| {
            (
                s.node.as_str(),
                s.reason.contains("would grow the model by"),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [("r1", true), ("r3", true), ("r5", true), ("r7", true)],
        "{:?}",
        r.skips
    );
    // The refused patches were taken back: their nodes are as they were, and the graph checks.
    m.graph.check().expect("the result checks");
    let out = m.to_proto();
    let names: Vec<&str> = out
        .graph
        .as_ref()
        .expect("graph")
        .node
        .iter()
        .map(|n| n.name.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(names, ["s0", "r1", "s2", "r3", "s4", "r5", "s6", "r7"]);
    let text = text::to_text(&m);
    for i in 0..8 {
        assert!(text.contains(&format!("o{i} = Relu(x)")), "{text}");
    }
    assert!(out.encoded_len() <= proto.encoded_len());
}

/// `If`s nested `depth` deep in their `then` branches: each branch returns `x` (read from the
/// outermost scope) through an `Identity`.
fn nested_ifs(depth: usize) -> ModelProto {
    let leaf = |name: &str, out: &str| {
        let mut b = ModelBuilder::subgraph(name);
        b.node("Identity", &["x"], &[out], vec![])
            .output(out, DataType::Float, &[1, 4]);
        b.build_graph()
    };
    let mut inner = leaf("leaf", "o0");
    for k in 1..depth {
        let out = format!("o{k}");
        let mut b = ModelBuilder::subgraph(&format!("then{k}"));
        b.node(
            "If",
            &["c"],
            &[&out],
            vec![
                attr_g("then_branch", inner),
                attr_g("else_branch", leaf(&format!("else{k}"), &format!("e{k}"))),
            ],
        )
        .output(&out, DataType::Float, &[1, 4]);
        inner = b.build_graph();
    }
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[1, 4])
        .input("c", DataType::Bool, &[])
        .node(
            "If",
            &["c"],
            &["y"],
            vec![
                attr_g("then_branch", inner),
                attr_g("else_branch", leaf("else0", "e0")),
            ],
        )
        .output("y", DataType::Float, &[1, 4]);
    b.build()
}

#[test]
fn ifs_nested_as_deep_as_the_decoder_allows_go_through_clean() {
    // The deepest nesting the decoder accepts (it refuses deeper messages rather than recurse
    // without bound), found by doubling then bisecting.
    let decodes = |depth: usize| {
        let bytes = encode_model(&nested_ifs(depth));
        decode_bytes(bytes.into(), std::path::Path::new("ifs.onnx")).is_ok()
    };
    let (mut lo, mut hi) = (1, 2);
    while decodes(hi) && hi < 4096 {
        lo = hi;
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if decodes(mid) {
            lo = mid
        } else {
            hi = mid
        }
    }
    assert!(lo >= 10, "only {lo} nested Ifs decode");
    let bytes = encode_model(&nested_ifs(lo));
    let proto = decode_bytes(bytes.into(), std::path::Path::new("ifs.onnx")).expect("decodes");
    let mut m = Model::from_proto(proto).expect("builds");
    let rules = registry::select("clean").expect("clean");
    run(
        &mut m,
        &rules,
        &Config::default(),
        &DriverOptions::default(),
    )
    .expect("runs");
    m.graph.check().expect("the result checks");
    let _ = text::to_text(&m);
    let back = encode_model(&m.to_proto());
    decode_bytes(back.into(), std::path::Path::new("ifs.onnx")).expect("decodes again");
    eprintln!("{lo} nested Ifs");
}
