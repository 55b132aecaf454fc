//! Where the channel-moving ops spell what places their channels, for rules that follow
//! channels through them (prune's coupled groups) and rewrite them: the axis of `Concat`,
//! `Split` and `Flatten`, the sizes of `Split`, the bounds of `Slice`, the target of `Reshape`
//! — attributes in early opsets, inputs later. Their [`super::Flow`] says how channels move;
//! this says where the numbers are. It also says which sizes a `Shape` lists and which entries
//! of such a list a `Slice` or `Gather` reads ([`shape_axes`], [`vector_picks`]): a channel
//! count that only reaches readers of the other entries does not stop a rule from changing it.

use std::ops::Range;

use super::infer::{attr_i, attr_ints, norm_axis, slice_bounds, slice_len};
use crate::onnx::proto::NodeProto;

/// Where an op keeps a list of integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// An ints attribute of this name.
    Attr(&'static str),
    /// A constant int64 input at this slot.
    Input(usize),
}

/// The axis `Concat`, `Split` or `Flatten` acts on (their defaults: none for Concat, 0 for
/// Split, 1 for Flatten), normalised for an input of rank `rank`; Flatten's axis may be `rank`.
pub fn axis(node: &NodeProto, rank: usize) -> Option<usize> {
    let op = node.op_type.as_deref().unwrap_or("");
    let default = match op {
        "Split" => Some(0),
        "Flatten" => Some(1),
        _ => None,
    };
    let a = attr_i(node, "axis").or(default)?;
    if op == "Flatten" {
        let a = if a < 0 { a + rank as i64 } else { a };
        return (0..=rank as i64).contains(&a).then_some(a as usize);
    }
    norm_axis(a, rank)
}

/// Where `Split` takes its sizes at `opset`: the `split` attribute before 13, input 1 after.
/// A Split that gives none (equal parts, or `num_outputs` from 18) may be given them there.
pub fn split_sizes(opset: i64) -> Spelling {
    if opset < 13 {
        Spelling::Attr("split")
    } else {
        Spelling::Input(1)
    }
}

/// Where `Reshape` takes its target shape at `opset`: the `shape` attribute before 5, input 1
/// after.
pub fn reshape_target(opset: i64) -> Spelling {
    if opset < 5 {
        Spelling::Attr("shape")
    } else {
        Spelling::Input(1)
    }
}

/// The parameters of a `Slice`, and where they are spelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceParams {
    /// `starts`.
    pub starts: Vec<i64>,
    /// `ends`.
    pub ends: Vec<i64>,
    /// `axes` (given or `0..n`), not normalised.
    pub axes: Vec<i64>,
    /// `steps` (given or 1).
    pub steps: Vec<i64>,
    /// Where `starts` is: the attribute before opset 10, input 1 after.
    pub starts_at: Spelling,
    /// Where `ends` is: the attribute before opset 10, input 2 after.
    pub ends_at: Spelling,
}

impl SliceParams {
    /// The index into the parameter lists of the entry that slices axis `axis` of an input of
    /// rank `rank`, with its normalised `[begin, end)` for a dim of `len` when its step is 1;
    /// `Ok(None)` when the Slice leaves that axis alone, `Err` when it slices it with another step.
    pub fn on_axis(
        &self,
        axis: usize,
        rank: usize,
        len: i64,
    ) -> Result<Option<(usize, i64, i64)>, String> {
        for (i, a) in self.axes.iter().enumerate() {
            if norm_axis(*a, rank) != Some(axis) {
                continue;
            }
            let step = self.steps.get(i).copied().unwrap_or(1);
            if step != 1 {
                return Err(format!("slices the axis with step {step}"));
            }
            let (b, e, _) = slice_bounds(self.starts[i], self.ends[i], 1, len);
            return Ok(Some((i, b, e.max(b))));
        }
        Ok(None)
    }
}

/// The parameters of `Slice` node `node` at `opset`: from its attributes before 10, else from
/// its inputs 1..=4 whose constant values `value(slot)` gives. `None` when one is not known or
/// the lists disagree in length.
pub fn slice_params(
    node: &NodeProto,
    opset: i64,
    value: impl Fn(usize) -> Option<Vec<i64>>,
) -> Option<SliceParams> {
    let present = |s: usize| node.input.get(s).is_some_and(|n| !n.is_empty());
    let p = if opset < 10 {
        let starts = attr_ints(node, "starts")?.to_vec();
        let n = starts.len();
        SliceParams {
            ends: attr_ints(node, "ends")?.to_vec(),
            axes: attr_ints(node, "axes")
                .map(<[i64]>::to_vec)
                .unwrap_or_else(|| (0..n as i64).collect()),
            steps: vec![1; n],
            starts,
            starts_at: Spelling::Attr("starts"),
            ends_at: Spelling::Attr("ends"),
        }
    } else {
        let starts = value(1)?;
        let n = starts.len();
        SliceParams {
            ends: value(2)?,
            axes: if present(3) {
                value(3)?
            } else {
                (0..n as i64).collect()
            },
            steps: if present(4) { value(4)? } else { vec![1; n] },
            starts,
            starts_at: Spelling::Input(1),
            ends_at: Spelling::Input(2),
        }
    };
    let n = p.starts.len();
    (p.ends.len() == n && p.axes.len() == n && p.steps.len() == n).then_some(p)
}

/// The axes of its input, of rank `rank`, whose sizes a `Shape` node lists, in order: `[start,
/// end)` from its attributes (opset 15; negative counts from the end, clamped to the rank), all
/// of them by default.
pub fn shape_axes(node: &NodeProto, rank: usize) -> Range<usize> {
    let r = rank as i64;
    let at = |name: &str, default: i64| {
        let a = attr_i(node, name).unwrap_or(default);
        let a = if a < 0 { a.saturating_add(r) } else { a };
        a.clamp(0, r) as usize
    };
    let (s, e) = (at("start", 0), at("end", r));
    s..e.max(s)
}

/// The entries of a 1-D vector of `len` elements (a shape) that `node`, reading it at input 0,
/// puts in its output: a `Slice` (any step) and a `Gather` on axis 0 whose parameters or
/// indices `value(slot)` knows. `None` for any other op, or when they are not known: it may
/// then read every entry.
pub fn vector_picks(
    node: &NodeProto,
    opset: i64,
    len: usize,
    value: impl Fn(usize) -> Option<Vec<i64>>,
) -> Option<Vec<usize>> {
    if !node.domain.as_deref().unwrap_or("").is_empty() {
        return None;
    }
    let n = len as i64;
    match node.op_type.as_deref()? {
        "Slice" => {
            let p = slice_params(node, opset, value)?;
            let mut picks: Vec<usize> = (0..len).collect();
            for i in 0..p.starts.len() {
                if norm_axis(p.axes[i], 1) != Some(0) || p.steps[i] == 0 {
                    return None;
                }
                let (b, e, st) = slice_bounds(p.starts[i], p.ends[i], p.steps[i], n);
                let count = slice_len(b, e, st);
                picks = (0..count)
                    .map(|k| picks.get((b + k * st) as usize).copied())
                    .collect::<Option<Vec<usize>>>()?;
            }
            Some(picks)
        }
        "Gather" => {
            if norm_axis(attr_i(node, "axis").unwrap_or(0), 1) != Some(0) {
                return None;
            }
            value(1)?
                .into_iter()
                .map(|i| {
                    let i = if i < 0 { i + n } else { i };
                    (0..n).contains(&i).then_some(i as usize)
                })
                .collect()
        }
        _ => None,
    }
}

/// Where each axis of the input of a `Transpose`, `Squeeze` or `Unsqueeze` goes in its output,
/// for an input of dims `dims` (`None`: unknown): the output axis per input axis, `None` for a
/// squeezed one. Their parameters: `perm` (reversed axes by default); `axes` as attribute or
/// input 1 (`value(1)`), a Squeeze without them dropping the dims known to be 1. `None` for
/// another op, or when a parameter is not known or not valid.
pub fn axis_moves(
    node: &NodeProto,
    dims: &[Option<i64>],
    value: impl Fn(usize) -> Option<Vec<i64>>,
) -> Option<Vec<Option<usize>>> {
    if !node.domain.as_deref().unwrap_or("").is_empty() {
        return None;
    }
    let r = dims.len();
    let axes = || match attr_ints(node, "axes") {
        Some(a) => Some(a.to_vec()),
        None if node.input.get(1).is_some_and(|n| !n.is_empty()) => value(1),
        None => Some(Vec::new()),
    };
    match node.op_type.as_deref()? {
        "Transpose" => {
            let perm: Vec<i64> = attr_ints(node, "perm")
                .map(<[i64]>::to_vec)
                .unwrap_or_else(|| (0..r as i64).rev().collect());
            if perm.len() != r {
                return None;
            }
            let mut out = vec![None; r];
            for (i, p) in perm.iter().enumerate() {
                let p = norm_axis(*p, r)?;
                if out[p].replace(i).is_some() {
                    return None;
                }
            }
            Some(out)
        }
        "Squeeze" => {
            let axes = axes()?;
            let drop: Vec<usize> = if axes.is_empty() {
                dims.iter()
                    .map(|d| d.map(|d| d == 1))
                    .collect::<Option<Vec<bool>>>()?
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, one)| one.then_some(i))
                    .collect()
            } else {
                axes.iter()
                    .map(|a| norm_axis(*a, r))
                    .collect::<Option<Vec<usize>>>()?
            };
            let mut next = 0;
            Some(
                (0..r)
                    .map(|i| {
                        (!drop.contains(&i)).then(|| {
                            next += 1;
                            next - 1
                        })
                    })
                    .collect(),
            )
        }
        "Unsqueeze" => {
            let axes = axes()?;
            let n = r + axes.len();
            let mut at: Vec<usize> = Vec::new();
            for a in &axes {
                let a = norm_axis(*a, n)?;
                if at.contains(&a) {
                    return None;
                }
                at.push(a);
            }
            Some((0..n).filter(|i| !at.contains(i)).map(Some).collect())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::{attr_i, attr_ints};

    fn node(
        op: &str,
        inputs: &[&str],
        attrs: Vec<crate::onnx::proto::AttributeProto>,
    ) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        }
    }

    #[test]
    fn axes_take_each_ops_default_and_normalise() {
        assert_eq!(axis(&node("Split", &["x"], vec![]), 4), Some(0));
        assert_eq!(axis(&node("Flatten", &["x"], vec![]), 4), Some(1));
        assert_eq!(
            axis(&node("Flatten", &["x"], vec![attr_i("axis", 4)]), 4),
            Some(4)
        );
        assert_eq!(axis(&node("Concat", &["x"], vec![]), 4), None);
        assert_eq!(
            axis(&node("Concat", &["x"], vec![attr_i("axis", -3)]), 4),
            Some(1)
        );
    }

    #[test]
    fn slice_params_come_from_attributes_before_10_and_inputs_after() {
        let old = node(
            "Slice",
            &["x"],
            vec![
                attr_ints("starts", &[2]),
                attr_ints("ends", &[-1]),
                attr_ints("axes", &[1]),
            ],
        );
        let p = slice_params(&old, 9, |_| None).expect("attributes");
        assert_eq!(p.starts_at, Spelling::Attr("starts"));
        assert_eq!(p.on_axis(1, 4, 10), Ok(Some((0, 2, 9))));
        assert_eq!(p.on_axis(2, 4, 10), Ok(None));
        let new = node("Slice", &["x", "s", "e", "a", "st"], vec![]);
        let p = slice_params(&new, 13, |s| Some(vec![[0, 1, 5, 1, 2][s]])).expect("inputs");
        assert_eq!(p.ends_at, Spelling::Input(2));
        assert!(p.on_axis(1, 4, 10).is_err(), "step 2");
        assert!(slice_params(&new, 13, |s| (s != 2).then(|| vec![0])).is_none());
        assert_eq!(split_sizes(12), Spelling::Attr("split"));
        assert_eq!(split_sizes(13), Spelling::Input(1));
        assert_eq!(reshape_target(13), Spelling::Input(1));
    }

    #[test]
    fn shape_lists_its_start_to_end_axes_and_slice_and_gather_pick_entries_of_a_shape() {
        assert_eq!(shape_axes(&node("Shape", &["x"], vec![]), 4), 0..4);
        let tail = node("Shape", &["x"], vec![attr_i("start", -2), attr_i("end", 9)]);
        assert_eq!(shape_axes(&tail, 4), 2..4);
        let slice = node("Slice", &["s", "b", "e"], vec![]);
        let bounds = |b: i64, e: i64| move |s: usize| Some(vec![[0, b, e][s]]);
        assert_eq!(vector_picks(&slice, 15, 4, bounds(0, 1)), Some(vec![0]));
        assert_eq!(
            vector_picks(&slice, 15, 4, bounds(-2, 99)),
            Some(vec![2, 3])
        );
        let back = node("Slice", &["s", "b", "e", "a", "st"], vec![]);
        let steps = |s: usize| Some(vec![[0, -1, -99, 0, -2][s]]);
        assert_eq!(vector_picks(&back, 15, 4, steps), Some(vec![3, 1]));
        assert_eq!(vector_picks(&slice, 15, 4, |_| None), None);
        let gather = node("Gather", &["s", "i"], vec![]);
        let idx = |v: Vec<i64>| move |_: usize| Some(v.clone());
        assert_eq!(
            vector_picks(&gather, 15, 4, idx(vec![0, -1])),
            Some(vec![0, 3])
        );
        assert_eq!(vector_picks(&gather, 15, 4, idx(vec![4])), None);
        let on1 = node("Gather", &["s", "i"], vec![attr_i("axis", 1)]);
        assert_eq!(vector_picks(&on1, 15, 4, idx(vec![0])), None);
        assert_eq!(
            vector_picks(&node("Concat", &["s"], vec![]), 15, 4, idx(vec![0])),
            None
        );
    }

    #[test]
    fn transpose_squeeze_and_unsqueeze_move_each_axis_where_their_parameters_say() {
        let d4 = [Some(1), Some(8), Some(1), Some(5)];
        let t = node("Transpose", &["x"], vec![attr_ints("perm", &[0, 2, 3, 1])]);
        assert_eq!(
            axis_moves(&t, &d4, |_| None),
            Some(vec![Some(0), Some(3), Some(1), Some(2)])
        );
        let rev = node("Transpose", &["x"], vec![]);
        assert_eq!(
            axis_moves(&rev, &d4[..2], |_| None),
            Some(vec![Some(1), Some(0)])
        );
        let twice = node("Transpose", &["x"], vec![attr_ints("perm", &[0, 0, 1, 2])]);
        assert_eq!(axis_moves(&twice, &d4, |_| None), None);
        let sq = node("Squeeze", &["x", "a"], vec![]);
        assert_eq!(
            axis_moves(&sq, &d4, |_| Some(vec![-2])),
            Some(vec![Some(0), Some(1), None, Some(2)])
        );
        let all = node("Squeeze", &["x"], vec![]);
        assert_eq!(
            axis_moves(&all, &d4, |_| None),
            Some(vec![None, Some(0), None, Some(1)])
        );
        assert_eq!(axis_moves(&all, &[None, Some(8)], |_| None), None);
        let un = node("Unsqueeze", &["x"], vec![attr_ints("axes", &[0, -1])]);
        assert_eq!(
            axis_moves(&un, &d4[..2], |_| None),
            Some(vec![Some(1), Some(2)])
        );
        assert_eq!(axis_moves(&sq, &d4, |_| None), None, "axes not known");
    }
}
