//! `C100 remove-dead`: removes nodes and initializers whose values nothing reads.
//!
//! **What:** operators none of whose outputs reach a graph output, a node or a subgraph, and
//! initializers that nothing reads and that are not graph inputs. Graph inputs always stay.
//! **Why:** dead code costs load time and file size.
//! **Example:** an unused `Shape` branch left by an exporter disappears.
//! **Exact:** yes. Operators outside the default domain are kept (they may have side effects
//! we cannot see), and so are ops whose outputs are all unnamed.

use crate::error::Result;
use crate::ir::{Model, NodeKind, ValueRef};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta};

/// See the module docs.
pub struct RemoveDead;

impl Rule for RemoveDead {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C100",
            name: "remove-dead",
            group: "clean",
            summary: "remove nodes and initializers that nothing reads",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        for id in g.topo_order().into_iter().rev() {
            let node = g.node(id);
            let removable = match &node.kind {
                NodeKind::Op(_) => node.domain().is_empty(),
                NodeKind::Initializer(_) | NodeKind::SparseInitializer(_) => true,
                NodeKind::Input { .. } => false,
            };
            if !removable {
                continue;
            }
            let used = (0..node.num_outputs()).any(|slot| g.is_used(ValueRef { node: id, slot }));
            if !used {
                f.matches.push(Match {
                    anchor: id,
                    nodes: vec![],
                    what: format!("dead {} `{}`", node.op_type(), node.label()),
                });
            }
        }
        f
    }

    fn rewrite(&self, _model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        p.remove(m.anchor);
        Ok(p)
    }
}
