//! The one table of rules, in canonical order, and `--rules` selection.

use super::rule::Rule;
use crate::error::{Error, Result};
use crate::rules;

/// Every rule, in the order the driver runs them. Codes are stable and never reused.
pub fn all() -> Vec<&'static dyn Rule> {
    rules::ALL.to_vec()
}

/// Groups selectable by one name, and what `--rules` means when not given.
pub const DEFAULT_SELECTION: &str = "clean";

/// Resolves a `--rules` value: `none`, or a comma list of rule names, codes or group names.
/// The result follows the canonical order whatever the order of the list. Unknown names are
/// refused with the list of valid ones.
pub fn select(spec: &str) -> Result<Vec<&'static dyn Rule>> {
    let all = all();
    let spec = spec.trim();
    if spec == "none" {
        return Ok(vec![]);
    }
    let words: Vec<&str> = spec.split(',').map(str::trim).collect();
    if words.iter().all(|w| w.is_empty()) {
        return Err(Error::Usage(
            "--rules is empty; give rule names, codes or groups, or `none` for a plain re-encode"
                .into(),
        ));
    }
    if words.contains(&"none") {
        return Err(Error::Usage(format!(
            "--rules `{spec}` mixes `none` with rules; give `none` alone, or only rules"
        )));
    }
    let mut chosen = vec![false; all.len()];
    for word in words.into_iter().filter(|w| !w.is_empty()) {
        let mut hit = false;
        for (i, r) in all.iter().enumerate() {
            let m = r.meta();
            if m.name == word
                || m.code.eq_ignore_ascii_case(word)
                || m.group == word
                || word == "all"
            {
                chosen[i] = true;
                hit = true;
            }
        }
        if !hit {
            return Err(Error::Usage(format!(
                "unknown rule `{word}`; valid: {}",
                valid_names().join(", ")
            )));
        }
    }
    Ok(all
        .into_iter()
        .zip(chosen)
        .filter_map(|(r, c)| c.then_some(r))
        .collect())
}

/// Every accepted word: `none`, `all`, groups, then rule names.
pub fn valid_names() -> Vec<String> {
    let mut v = vec!["none".to_string(), "all".to_string()];
    for r in all() {
        let g = r.meta().group.to_string();
        if !v.contains(&g) {
            v.push(g);
        }
    }
    v.extend(all().iter().map(|r| r.meta().name.to_string()));
    v
}
