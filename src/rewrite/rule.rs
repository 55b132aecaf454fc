//! The [`Rule`] trait: a read-only `find` and a `rewrite` that returns a [`Patch`].

use serde::Serialize;

use super::{Config, Patch};
use crate::error::Result;
use crate::ir::{Model, NodeId};

/// Whether a rule keeps outputs equal up to float reordering, or trades accuracy for size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Exactness {
    /// Outputs equal within `tolerance` (relative, with an absolute floor of `tolerance`).
    Exact {
        /// Verification tolerance.
        tolerance: f32,
    },
    /// Outputs change; verification accepts up to `tolerance` by default.
    Lossy {
        /// Default verification tolerance.
        tolerance: f32,
    },
}

impl Exactness {
    /// The verification tolerance this rule needs.
    pub fn tolerance(&self) -> f32 {
        match *self {
            Exactness::Exact { tolerance } | Exactness::Lossy { tolerance } => tolerance,
        }
    }
}

/// What the registry and the docs know about a rule.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RuleMeta {
    /// Stable code, never reused (`C001`).
    pub code: &'static str,
    /// Kebab-case name used by `--rules`.
    pub name: &'static str,
    /// Group selected together (`clean`, `share`, ...).
    pub group: &'static str,
    /// One line on what the rule does.
    pub summary: &'static str,
    /// Exact or lossy, with tolerance.
    pub exactness: Exactness,
}

/// One place a rule can act. `nodes` lists everything the rewrite reads, `anchor` first.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// The node the rewrite centres on; new nodes are placed where it was.
    pub anchor: NodeId,
    /// Other nodes involved.
    pub nodes: Vec<NodeId>,
    /// Human description, e.g. "Identity `x` → `y`".
    pub what: String,
}

/// A place a rule looked at and left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Skip {
    /// Node label.
    pub node: String,
    /// Its op type.
    pub op: String,
    /// Why the rule did not act.
    pub reason: String,
}

/// What `find` returns: matches to rewrite and skips to report.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// Places to rewrite.
    pub matches: Vec<Match>,
    /// Places left alone, with reasons.
    pub skips: Vec<Skip>,
}

impl Findings {
    /// Records a skip of `node` (label and op from the model).
    pub fn skip(&mut self, model: &Model, node: NodeId, reason: impl Into<String>) {
        let n = model.graph.node(node);
        self.skips.push(Skip {
            node: n.label(),
            op: n.op_type().to_string(),
            reason: reason.into(),
        });
    }
}

/// What a variant of a lossy rule does to a layer, which fixes the order a `--budget` search
/// applies the chosen variants in and how they combine on one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Changes the shapes of a group of layers (prune): its own option per match, applied first,
    /// so that the other stages see the smaller layers.
    Structure,
    /// Replaces a layer by others (lowrank's two factors), which a `Store` variant may then reach.
    Factor,
    /// Changes how a layer's weights are stored (quantize): applied last, alone or after a
    /// `Factor` variant on the same layer.
    Store,
}

/// One configuration of a lossy rule a `--budget` search may choose per match.
#[derive(Debug, Clone)]
pub struct SearchVariant {
    /// How the report names it: `lowrank ratio 0.3`, `quantize int8 per channel`.
    pub name: String,
    /// The configuration that applies it.
    pub config: Config,
    /// Its stage.
    pub stage: Stage,
}

/// A rewrite rule. `find` must not mutate and must not return a match the rule already rewrote,
/// so that the driver reaches a fixed point; `rewrite` builds the patch for one match.
pub trait Rule: Sync {
    /// Code, name, group, summary, exactness.
    fn meta(&self) -> RuleMeta;
    /// Where the rule can act, and where it chose not to.
    fn find(&self, model: &Model, config: &Config) -> Findings;
    /// The patch for `m`; an error becomes a skip in the report.
    fn rewrite(&self, model: &Model, m: &Match, config: &Config) -> Result<Patch>;
    /// Whether the matches of one `find` never interact: each rewrite touches only its own
    /// match's nodes and leaves every other match of the same `find` valid. The driver then
    /// applies them all in one batch, building each patch against the working copy with the
    /// earlier ones applied, before calling `find` again.
    fn independent_matches(&self) -> bool {
        false
    }
    /// Whether this configuration changes the model's outputs beyond float reordering (defaults
    /// to the metadata's exactness). A run where such a rule rewrote something is judged by a
    /// model-level budget.
    fn lossy(&self, _config: &Config) -> bool {
        matches!(self.meta().exactness, Exactness::Lossy { .. })
    }
    /// The variants a `--budget` search may choose from, per match, under the user's
    /// `config`: by default this configuration alone when it is lossy (as a `Store` variant),
    /// else none. Rules with a natural ladder (lowrank's ranks, prune's ratios) offer it when the
    /// user did not pin one.
    fn search_variants(&self, config: &Config) -> Vec<SearchVariant> {
        if self.lossy(config) {
            vec![SearchVariant {
                name: self.meta().name.to_string(),
                config: config.clone(),
                stage: Stage::Store,
            }]
        } else {
            Vec::new()
        }
    }
    /// Tolerance for verification with this configuration (defaults to the metadata's).
    fn tolerance(&self, _config: &Config) -> f32 {
        self.meta().exactness.tolerance()
    }
    /// The labels of the nodes that a rewrite of the node labelled `label` leaves in its place
    /// when they are not `label` itself (a factored layer becomes two nodes); empty by default.
    /// A search that scopes a later rule to the layers it chose follows these.
    fn rewritten_labels(&self, _label: &str) -> Vec<String> {
        Vec::new()
    }
}
