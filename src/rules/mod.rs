//! The rules, one per file. [`ALL`] is the registry table in canonical order; codes are stable.
//!
//! | code | name | group | exact |
//! |------|------|-------|-------|
//! | C001 | `eliminate-identity` | clean | exact |
//! | C100 | `remove-dead` | clean | exact |

pub mod eliminate_identity;
pub mod remove_dead;

pub(crate) mod util;

use crate::rewrite::Rule;

/// Every rule in canonical order. Clean-up rules that expose dead code run before `remove-dead`.
pub static ALL: &[&dyn Rule] = &[
    &eliminate_identity::EliminateIdentity,
    &remove_dead::RemoveDead,
];
