//! Where the channel-moving ops spell what places their channels, for rules that follow
//! channels through them (prune's coupled groups) and rewrite them: the axis of `Concat`,
//! `Split` and `Flatten`, the sizes of `Split`, the bounds of `Slice`, the target of `Reshape`
//! — attributes in early opsets, inputs later. Their [`super::Flow`] says how channels move;
//! this says where the numbers are.

use super::infer::{attr_i, attr_ints, norm_axis, slice_bounds};
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
}
