//! Options of the rules, set from the command line. Each rule with options owns one field.

/// Every rule option. Rules read their own section; `Default` is what a user gets without flags.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Folders or `.npz` files with representative inputs, for data-aware rules.
    pub calibration: Vec<std::path::PathBuf>,
    /// `prune` (P001): the criterion.
    pub prune: crate::rules::prune::PruneConfig,
    /// `sparsify` (P002): target sparsity and pattern.
    pub sparsify: crate::rules::sparsify::SparsifyConfig,
    /// `lowrank` (L001): rank selection, error budget, minimum saving.
    pub lowrank: crate::rules::lowrank::LowrankConfig,
    /// `quantize` (Q001): storage type, granularity, exclusions, output-error tolerance.
    pub quantize: crate::rules::quantize::QuantizeConfig,
    /// `cluster` (K001): bits per code, per tensor or per output channel.
    pub cluster: crate::rules::cluster::ClusterConfig,
    /// `to-fp16` (D001): convert to float16 (`--dtype fp16`); the rule does nothing without it.
    pub fp16: bool,
    /// `--memory-limit` in bytes: calibration and the runs of data-aware rules go segment by
    /// segment above it. `None`: the default ([`crate::verify::segment::default_memory_limit`]).
    pub memory_limit: Option<u64>,
}

impl Config {
    /// The memory limit in bytes: `memory_limit`, else the default.
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
            .unwrap_or_else(crate::verify::segment::default_memory_limit)
    }
}
