//! Graphs as deep as code generators make them: a chain of 100,000 nodes goes through every
//! stage that walks the graph (build, topological order, facts, text form, the driver and its
//! graph check, encode and decode) on a test thread's 2 MiB stack. A walk that recurses once
//! per node overflows it long before the end of the chain (petgraph's `is_cyclic_directed`
//! did, at about 30,000 nodes).

use onnx_slim::ir::builder::ModelBuilder;
use onnx_slim::ir::{text, Model};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::onnx::{decode_bytes, encode_model};
use onnx_slim::rewrite::{registry, run, Config, DriverOptions};

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
