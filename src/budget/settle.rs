//! One allocation-and-verification pass over a base model: apply the choices, verify the bytes,
//! and back off until the budget holds (step 5 of the module docs).

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;

use super::*;

/// The mutable state of one allocation-and-verification pass over a base model.
pub(super) struct Pass {
    /// `(variant, layer) → measurement`; over a pruned base, losses are what each option adds.
    pub(super) measured: Measurements,
    pub(super) matches: Matches,
    pub(super) opts: BTreeMap<Layer, Vec<Costed>>,
    pub(super) chosen: BTreeMap<Layer, usize>,
    /// `(variant, layer, verification set)` measured after a failed verification.
    pub(super) rechecked: BTreeSet<(usize, Layer, String)>,
    pub(super) backoffs: Vec<String>,
    pub(super) to_save: Option<f64>,
    pub(super) alloc_limit: f64,
    pub(super) target_tries: usize,
    /// The base's own loss on the measuring inputs (0 unless structure options were applied).
    pub(super) base_loss: f64,
}

/// The loss `total` adds to a base whose own loss is `base`, in the metric's own units
/// (relative L2 errors add as squares).
pub(super) fn added(metric: Metric, total: f64, base: f64) -> f64 {
    match metric {
        Metric::RelL2 => (total * total - base * base).max(0.0).sqrt(),
        Metric::Cosine | Metric::Argmax | Metric::MaxAbs => (total - base).max(0.0),
    }
}

/// Everything a pass reads and does not change.
pub(super) struct Ctx<'a, 'v> {
    pub(super) variants: &'a [Variant<'v>],
    pub(super) goal: &'a Goal,
    pub(super) metric: Metric,
    /// The additive loss limit of the pass.
    pub(super) limit: f64,
    pub(super) budget: Budget,
    pub(super) weight_bytes: &'a BTreeMap<String, f64>,
    pub(super) verify_ref: &'a [Outputs],
    pub(super) verify_sets: &'a [InputSet],
    pub(super) input_bytes: u64,
    pub(super) progress: &'a Progress,
    /// `--memory-limit`: the candidates run segment by segment above it.
    pub(super) memory_limit: u64,
}

/// Applies `st`'s choices to `base`, verifies the bytes, and backs off until the budget holds
/// (see the module docs): the result, what the rules did, its proto and its verification.
pub(super) fn settle(
    base: &Model,
    cx: &Ctx,
    st: &mut Pass,
) -> Result<(Model, Option<RunReport>, ModelProto, VerifyReport)> {
    let Ctx {
        variants,
        goal,
        metric,
        limit,
        budget,
        weight_bytes,
        verify_ref,
        verify_sets,
        input_bytes,
        progress,
        memory_limit,
    } = *cx;
    loop {
        progress.message("applying the chosen options");
        let (out, rules_report) = apply(base, variants, &st.opts, &st.chosen)?;
        if let (Some(r), Some(save)) = (goal.target_size, st.to_save) {
            let target = r * input_bytes as f64;
            let got = out.to_proto().encoded_len() as f64;
            if got > target && st.target_tries < 4 {
                st.target_tries += 1;
                let more = save + (got - target);
                let next = allocate(&st.opts, limit, Some(more), goal.objective, &st.chosen);
                if next != st.chosen {
                    st.to_save = Some(more);
                    st.chosen = next;
                    continue;
                }
            }
            if got > target {
                return Err(Error::VerifyFailed(format!(
                    "--target-size {r} cannot be reached with the rules given: the smallest model found is {:.3}× the input",
                    got / input_bytes as f64
                )));
            }
        }
        progress.message("verifying the whole model");
        let (proto, verification) =
            verify_written(&out, verify_ref, verify_sets, budget, memory_limit)?;
        if verification.passed {
            return Ok((out, rules_report, proto, verification));
        }
        let what = verification
            .budget
            .as_ref()
            .map(|(b, w)| {
                format!(
                    "`{}` on {} at {}",
                    w.output,
                    w.set,
                    b.metric.describe(w.loss)
                )
            })
            .unwrap_or_default();
        // The estimates missed what the verification inputs do: measure each chosen option
        // alone on the set that failed, keep the larger loss, and allocate again.
        if let Some((_, w)) = verification
            .budget
            .as_ref()
            .filter(|_| st.backoffs.len() < MAX_BACKOFF)
        {
            if let Some(si) = verify_sets.iter().position(|s| s.label == w.set) {
                let set = std::slice::from_ref(&verify_sets[si]);
                let reference = std::slice::from_ref(&verify_ref[si]);
                // Over a pruned base, an option's loss is what it adds to the base's own.
                let floor = if st.base_loss > 0.0 {
                    let r = verify::segment::verify_against_within(
                        reference,
                        &base.to_proto(),
                        "base",
                        set,
                        0.0,
                        memory_limit,
                    )?;
                    verify::metric::worst(&r, metric).map_or(0.0, |w| w.loss)
                } else {
                    0.0
                };
                let mut raised = Vec::new();
                for (layer, &i) in &st.chosen {
                    let k = st.opts[layer][i].key;
                    for vi in k.parts() {
                        let key = (vi, layer.clone());
                        if !st.rechecked.insert((vi, layer.clone(), w.set.clone())) {
                            continue;
                        }
                        progress
                            .message(&format!("{} on `{layer}`, on {}", variants[vi].name, w.set));
                        let (Some(m), Some(old)) = (st.matches.get(&key), st.measured.get(&key))
                        else {
                            continue;
                        };
                        if let Ok(x) = measure_one(
                            base,
                            &variants[vi],
                            m,
                            metric,
                            set,
                            reference,
                            None,
                            None,
                            None,
                        ) {
                            let x = Measured {
                                loss: added(metric, x.loss, floor),
                                ..x
                            };
                            if x.loss > old.loss {
                                raised.push(format!(
                                    "`{layer}` {} {} → {}",
                                    variants[vi].name,
                                    loss_text(old.loss),
                                    loss_text(x.loss)
                                ));
                                if let Some(e) = st.measured.get_mut(&key) {
                                    e.loss = x.loss;
                                }
                            }
                        }
                    }
                }
                if !raised.is_empty() {
                    let previous = describe_all(variants, &st.opts, &st.chosen);
                    st.opts = options(variants, &st.measured, metric, weight_bytes);
                    let next = allocate(
                        &st.opts,
                        st.alloc_limit,
                        st.to_save,
                        goal.objective,
                        &BTreeMap::new(),
                    );
                    let now = describe_all(variants, &st.opts, &next);
                    let changed: Vec<String> = now
                        .iter()
                        .filter(|(l, c)| previous.get(*l) != Some(c))
                        .map(|(l, c)| {
                            format!(
                                "`{l}` {} → {c}",
                                previous.get(l).map_or("unchanged", |s| s.as_str())
                            )
                        })
                        .collect();
                    st.backoffs.push(format!(
                        "{what}: measured alone on {}, {}; allocated again: {}",
                        w.set,
                        raised.join(", "),
                        if changed.is_empty() {
                            "no change".to_string()
                        } else {
                            changed.join(", ")
                        }
                    ));
                    if next != st.chosen {
                        st.chosen = next;
                        continue;
                    }
                }
            }
        }
        // The estimate was too low: allocate again under a limit scaled by how far off it was,
        // which drops the choices that save least per unit of loss first.
        let measured_loss = verification
            .budget
            .as_ref()
            .map_or(f64::INFINITY, |(_, w)| additive(metric, w.loss));
        let estimate: f64 = st.chosen.iter().map(|(l, &i)| st.opts[l][i].loss).sum();
        if goal.target_size.is_none()
            && measured_loss.is_finite()
            && estimate > 0.0
            && st.backoffs.len() < MAX_BACKOFF
        {
            let scaled = (st.alloc_limit * 0.9).min(limit * estimate / measured_loss * 0.95);
            let next = allocate(&st.opts, scaled, None, goal.objective, &BTreeMap::new());
            if next != st.chosen {
                let dropped = st
                    .chosen
                    .iter()
                    .filter(|(l, i)| next.get(*l) != Some(*i))
                    .map(|(l, &i)| {
                        format!(
                            "`{l}` {} → {}",
                            describe(variants, st.opts[l][i].key),
                            describe(variants, st.opts[l][next[l]].key)
                        )
                    })
                    .collect::<Vec<_>>();
                st.backoffs.push(format!(
                    "{what}: the layers' own losses added up to {}, so the allocation limit goes from {} to {}: {}",
                    loss_text(estimate),
                    loss_text(st.alloc_limit.min(limit)),
                    loss_text(scaled),
                    dropped.join(", ")
                ));
                st.alloc_limit = scaled;
                st.chosen = next;
                continue;
            }
        }
        // Back off the most sensitive choice to its next gentler option.
        let worst = st
            .chosen
            .iter()
            .filter(|(_, &i)| i != 0)
            .max_by(|a, b| {
                let la = st.opts[a.0][*a.1].loss;
                let lb = st.opts[b.0][*b.1].loss;
                la.total_cmp(&lb).then_with(|| b.0.cmp(a.0))
            })
            .map(|(l, &i)| (l.clone(), i));
        let Some((layer, i)) = worst.filter(|_| st.backoffs.len() < MAX_BACKOFF) else {
            // Nothing left to back off: the lossless result.
            if st.chosen.values().all(|&i| i == 0) {
                return Ok((out, rules_report, proto, verification));
            }
            st.backoffs
                .push(format!("{what}: every lossy choice dropped"));
            st.chosen.values_mut().for_each(|i| *i = 0);
            continue;
        };
        let list = &st.opts[&layer];
        let gentler = (0..list.len())
            .filter(|&j| list[j].loss < list[i].loss)
            .max_by(|&a, &b| {
                saving(&list[a], goal.objective)
                    .total_cmp(&saving(&list[b], goal.objective))
                    .then(b.cmp(&a))
            })
            .unwrap_or(0);
        st.backoffs.push(format!(
            "{what}: `{layer}` {} → {}",
            describe(variants, list[i].key),
            describe(variants, list[gentler].key)
        ));
        st.chosen.insert(layer, gentler);
    }
}
