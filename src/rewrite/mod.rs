//! The rule engine: rules find matches without mutating, turn each into a [`Patch`], and the
//! [`driver`] applies the non-overlapping patches of one `find` as a batch (each measured for
//! growth, undone if it fails; one graph check per batch, a one-by-one fallback when it fails),
//! and loops to a fixed point. `--max-patches N` stops after N patches, to bisect which one broke
//! numerics.

pub mod config;
pub mod driver;
pub mod patch;
pub mod registry;
pub mod rule;

pub use config::Config;
pub use driver::{run, DriverOptions, RuleReport, RunReport};
pub use patch::{Patch, Wire};
pub use rule::{Exactness, Findings, Match, Rule, RuleMeta, SearchVariant, Skip, Stage};
