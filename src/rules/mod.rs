//! The rules, one per file. [`ALL`] is the registry table in canonical order; codes are stable.
//!
//! | code | name | group | exact |
//! |------|------|-------|-------|
//! | C002 | `constant-to-initializer` | clean | exact |
//! | C001 | `eliminate-identity` | clean | exact |
//! | C003 | `eliminate-dropout` | clean | exact |
//! | C004 | `eliminate-noop` | clean | exact |
//! | C005 | `eliminate-neutral-arith` | clean | exact |
//! | C006 | `fold-constants` | clean | exact (1e-5) |
//! | C007 | `static-reshape-shape` | clean | exact |
//! | C008 | `merge-slices` | clean | exact |
//! | C009 | `fuse-batchnorm` | clean | exact (1e-5) |
//! | C010 | `fuse-conv-add` | clean | exact (1e-5) |
//! | C011 | `matmul-add-to-gemm` | clean | exact (1e-5) |
//! | C012 | `drop-zero-rnn-state` | clean | exact |
//! | C013 | `eliminate-common-subexpressions` | clean | exact |
//! | C100 | `remove-dead` | clean | exact |
//! | S001 | `share-identical` | share | exact |
//! | S002 | `share-transposed` | share | exact |
//! | S003 | `share-into-subgraphs` | share | exact |
//! | P001 | `prune` | prune | exact (1e-6) |
//! | P002 | `sparsify` | sparsify | lossy |
//! | L001 | `lowrank` | lowrank | lossy |
//! | Q001 | `quantize` | quantize | lossy |
//! | K001 | `cluster` | cluster | lossy |
//! | D001 | `to-fp16` | dtype | lossy (only with `--dtype fp16`) |

pub mod cluster;
pub mod constant_to_initializer;
pub mod cse;
pub mod drop_zero_rnn_state;
pub mod eliminate_dropout;
pub mod eliminate_identity;
pub mod eliminate_neutral;
pub mod eliminate_noop;
pub mod fold_constants;
pub mod fuse_batchnorm;
pub mod fuse_conv_add;
pub mod lowrank;
pub mod matmul_add_to_gemm;
pub mod merge_slices;
pub mod prune;
pub mod quantize;
pub mod remove_dead;
pub mod share_identical;
pub mod share_subgraphs;
pub mod share_transposed;
pub mod sparsify;
pub mod static_reshape;
pub mod to_fp16;

pub(crate) mod eval;
pub(crate) mod util;

use crate::rewrite::Rule;

/// Every rule in canonical order. Clean-up rules that expose dead code run before `remove-dead`,
/// which stays last in the clean group. `prune` runs after the clean-up that removes its
/// barriers (Identity, Dropout, constants) but before `fuse-batchnorm`: it ranks and values
/// channels through the BatchNormalizations (their `beta` is what a removed channel gave on
/// average), which folding loses; `fuse-batchnorm` keeps the kernel's `doc_string`, so prune's
/// mark survives the fold and the next round does not cut the group again.
pub static ALL: &[&dyn Rule] = &[
    &constant_to_initializer::ConstantToInitializer,
    &eliminate_identity::EliminateIdentity,
    &eliminate_dropout::EliminateDropout,
    &eliminate_noop::EliminateNoop,
    &eliminate_neutral::EliminateNeutral,
    &fold_constants::FoldConstants,
    &static_reshape::StaticReshape,
    &merge_slices::MergeSlices,
    &prune::Prune,
    &fuse_batchnorm::FuseBatchnorm,
    &fuse_conv_add::FuseConvAdd,
    &matmul_add_to_gemm::MatMulAddToGemm,
    &drop_zero_rnn_state::DropZeroRnnState,
    &cse::EliminateCommonSubexpressions,
    &remove_dead::RemoveDead,
    &share_identical::ShareIdentical,
    &share_transposed::ShareTransposed,
    &share_subgraphs::ShareIntoSubgraphs,
    &sparsify::Sparsify,
    &lowrank::Lowrank,
    &quantize::Quantize,
    &cluster::Cluster,
    &to_fp16::ToFp16,
];
