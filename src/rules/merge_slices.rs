//! `C008 merge-slices`: merges a `Slice` of a `Slice` on other axes into one `Slice`.
//!
//! **What:** `Slice(Slice(x, s1, e1, a1, p1), s2, e2, a2, p2)` with constant parameters and
//! disjoint axes becomes `Slice(x, s1‖s2, e1‖e2, a1‖a2, p1‖p2)`, when every reader of the inner
//! slice is such a slice (so the inner one disappears).
//! **Why:** exporters spell `x[:, :, ::2, ::2]` as one Slice per axis (YOLO "Focus" stems).
//! **Example:** `Slice(Slice(x, [0], [MAX], [2], [2]), [1], [MAX], [3], [2])` →
//! `Slice(x, [0, 1], [MAX, MAX], [2, 3], [2, 2])`.
//! **Exact:** yes, bit for bit: slicing different axes commutes and composes. Negative axes are
//! resolved with the input's known rank, or the pair is left alone.

use crate::error::{Error, Result};
use crate::ir::{Graph, Model, NodeId, ValueRef};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

use super::util::{const_ints, const_wire, is_op, make_node};
use crate::ir::facts::Facts;
use rustc_hash::{FxHashMap, FxHashSet};

/// See the module docs.
pub struct MergeSlices;

/// (starts, ends, axes normalised, steps) of a Slice-10+ with constant parameters.
fn params(g: &Graph, id: NodeId, rank: Option<usize>) -> Option<[Vec<i64>; 4]> {
    let starts = const_ints(g, id, 1)?;
    let ends = const_ints(g, id, 2)?;
    let n = starts.len();
    let axes = match g.input(id, 3) {
        Some(_) => const_ints(g, id, 3)?,
        None => (0..n as i64).collect(),
    };
    let steps = match g.input(id, 4) {
        Some(_) => const_ints(g, id, 4)?,
        None => vec![1; n],
    };
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return None;
    }
    let axes: Option<Vec<i64>> = axes
        .iter()
        .map(|a| {
            if *a >= 0 {
                Some(*a)
            } else {
                rank.map(|r| a + r as i64).filter(|a| *a >= 0)
            }
        })
        .collect();
    Some([starts, ends, axes?, steps])
}

fn check(model: &Model, facts: &Facts, outer: NodeId) -> std::result::Result<NodeId, String> {
    let g = &model.graph;
    let v = g.input(outer, 0).ok_or("no input")?;
    let inner = v.node;
    if v.slot != 0 || !is_op(g, inner, "Slice") {
        return Err(String::new());
    }
    if g.is_graph_output(v) || g.is_captured(v) {
        return Err("the inner Slice's output is a graph output or captured".into());
    }
    let x = g.input(inner, 0).ok_or("no input")?;
    let rank = facts.get(x).rank();
    let pi = params(g, inner, rank).ok_or("the inner Slice's parameters are not constant")?;
    for (c, _) in g.consumers(v) {
        if !is_op(g, c, "Slice") || g.input(c, 0) != Some(v) {
            return Err("the inner Slice has readers that are not Slices".into());
        }
        let po = params(g, c, rank).ok_or("a reading Slice's parameters are not constant")?;
        if po[2].iter().any(|a| pi[2].contains(a)) {
            return Err("the Slices share an axis".into());
        }
    }
    Ok(inner)
}

impl Rule for MergeSlices {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C008",
            name: "merge-slices",
            group: "clean",
            summary: "merge a Slice of a Slice on other axes into one Slice",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        if model.opset("").unwrap_or(1) < 10 {
            return f;
        }
        let candidates: Vec<NodeId> = g
            .ops()
            .into_iter()
            .filter(|id| is_op(g, *id, "Slice"))
            .filter(|id| g.input(*id, 0).is_some_and(|v| is_op(g, v.node, "Slice")))
            .collect();
        if candidates.is_empty() {
            return f;
        }
        let facts = g.facts();
        let mut pairs: Vec<(NodeId, NodeId)> = Vec::new();
        for id in candidates {
            match check(model, &facts, id) {
                Ok(inner) => pairs.push((id, inner)),
                Err(reason) if !reason.is_empty() => f.skip(model, id, reason),
                Err(_) => {}
            }
        }
        for group in groups(g, &pairs) {
            let what = group
                .iter()
                .map(|(outer, inner)| {
                    format!(
                        "`{}` into `{}`",
                        g.node(*inner).label(),
                        g.node(*outer).label()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            f.matches.push(Match {
                anchor: group[0].0,
                nodes: group.iter().map(|(outer, _)| *outer).collect(),
                what: format!("merge Slice {what}"),
            });
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let facts = g.facts();
        let err = |reason: String| Error::Rule {
            rule: "merge-slices".into(),
            reason,
        };
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        // Parameter tensors added by this patch, by content: pairs of a group often share them.
        let mut added: Vec<(Vec<i64>, Wire)> = Vec::new();
        let mut inners: Vec<NodeId> = Vec::new();
        for &outer in &m.nodes {
            let inner = check(model, &facts, outer).map_err(err)?;
            let x = g.input(inner, 0).expect("checked");
            let rank = facts.get(x).rank();
            let pi = params(g, inner, rank).ok_or_else(|| err("parameters".into()))?;
            let po = params(g, outer, rank).ok_or_else(|| err("parameters".into()))?;
            let label = g.node(outer).label();
            let out_name = g
                .value_name(ValueRef {
                    node: outer,
                    slot: 0,
                })
                .to_string();
            // Short names: each is written once per reader, and a merge must pay for itself.
            let names = ["b", "e", "a", "s"];
            let mut wires = vec![Some(Wire::Value(x))];
            for k in 0..4 {
                let mut v = pi[k].clone();
                v.extend_from_slice(&po[k]);
                let wire = match added.iter().find(|(c, _)| *c == v) {
                    Some((_, w)) => *w,
                    None => {
                        let arr =
                            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[v.len()]), v.clone())
                                .expect("1-D");
                        let t =
                            crate::ir::tensor::from_i64(&format!("{out_name}_{}", names[k]), &arr);
                        let w = const_wire(g, &mut p, t);
                        added.push((v, w));
                        w
                    }
                };
                wires.push(Some(wire));
            }
            let out = ValueRef {
                node: outer,
                slot: 0,
            };
            let node = make_node("Slice", &label, 5, &[&out_name]);
            let new = p.add_op(node, &wires);
            p.shunt(out, new[0]);
            p.keep_name(out, new[0]);
            p.remove(outer);
            if !inners.contains(&inner) {
                inners.push(inner);
            }
        }
        for inner in inners {
            let readers = g.consumers(ValueRef {
                node: inner,
                slot: 0,
            });
            if readers.iter().all(|(c, _)| m.nodes.contains(c)) {
                p.remove(inner);
            }
        }
        Ok(p)
    }
}

/// Merge candidates `(outer, inner)` grouped so that pairs sharing an inner Slice or a parameter
/// constant are merged by one patch: the constants they share can only be freed together, so
/// only the group as a whole can be judged on whether it shrinks the model. In a chain of three
/// Slices only the first pair is taken; the next is found again once it is merged.
fn groups(g: &Graph, pairs: &[(NodeId, NodeId)]) -> Vec<Vec<(NodeId, NodeId)>> {
    // Hash sets and a union-find: every pair of a graph's slices may share one constant.
    let (mut outers, mut inners) = (FxHashSet::default(), FxHashSet::default());
    let mut taken: Vec<(NodeId, NodeId)> = Vec::new();
    for &(outer, inner) in pairs {
        if !outers.contains(&inner) && !inners.contains(&outer) {
            outers.insert(outer);
            inners.insert(inner);
            taken.push((outer, inner));
        }
    }
    let mut parent: Vec<usize> = (0..taken.len()).collect();
    fn root(parent: &mut [usize], mut k: usize) -> usize {
        while parent[k] != k {
            parent[k] = parent[parent[k]];
            k = parent[k];
        }
        k
    }
    let mut owner: FxHashMap<NodeId, usize> = FxHashMap::default();
    for (k, &(outer, inner)) in taken.iter().enumerate() {
        let mut touched = vec![inner];
        for id in [outer, inner] {
            touched.extend(
                g.node_inputs(id)
                    .into_iter()
                    .skip(1)
                    .flatten()
                    .map(|r| r.node),
            );
        }
        for t in touched {
            match owner.get(&t) {
                Some(&j) => {
                    let (a, b) = (root(&mut parent, j), root(&mut parent, k));
                    // The smaller index roots the group: groups keep the order of their
                    // first pair.
                    parent[a.max(b)] = a.min(b);
                }
                None => {
                    owner.insert(t, k);
                }
            }
        }
    }
    // Groups in the order of their first pair, each in the order of its pairs.
    let mut slot: FxHashMap<usize, usize> = FxHashMap::default();
    let mut groups: Vec<Vec<(NodeId, NodeId)>> = Vec::new();
    for (k, pair) in taken.iter().enumerate() {
        let r = root(&mut parent, k);
        let at = *slot.entry(r).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(*pair);
    }
    groups
}
