//! Detection and sampling: `NonMaxSuppression`, `RoiAlign`, `GridSample`, `AffineGrid`,
//! `CenterCropPad`, and the spectral windows (`HannWindow`, `HammingWindow`, `BlackmanWindow`).

use super::infer::{fact, norm_axis, InferCx};
use super::{arity, Flow, OpDef};
use crate::ir::facts::{Dim, Fact};
use crate::onnx::proto::tensor_proto::DataType;

fn nms(cx: &mut InferCx) -> Vec<Fact> {
    let n = cx.fresh();
    vec![fact(Some(DataType::Int64 as i32), Some(vec![n, Dim::K(3)]))]
}

fn roi_align(cx: &mut InferCx) -> Vec<Fact> {
    let x = cx.x(0).clone();
    let rois = cx.x(1).shape.clone();
    let shape = match (&x.shape, rois) {
        (Some(x), Some(r)) if x.len() == 4 && r.len() == 2 => Some(vec![
            r[0],
            x[1],
            Dim::K(cx.attr_i("output_height").unwrap_or(1)),
            Dim::K(cx.attr_i("output_width").unwrap_or(1)),
        ]),
        _ => None,
    };
    vec![fact(x.dtype, shape)]
}

fn grid_sample(cx: &mut InferCx) -> Vec<Fact> {
    let x = cx.x(0).clone();
    let shape = match (&x.shape, &cx.x(1).shape) {
        (Some(x), Some(g)) if x.len() >= 3 && g.len() == x.len() => {
            let mut s = vec![x[0], x[1]];
            s.extend_from_slice(&g[1..g.len() - 1]);
            Some(s)
        }
        _ => None,
    };
    vec![fact(x.dtype, shape)]
}

fn affine_grid(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.x(0).dtype;
    // size is [N, C, H, W] (2-D) or [N, C, D, H, W] (3-D); the grid is [N, (D,) H, W, 2 or 3].
    let shape = cx.val(1).filter(|s| s.len() == 4 || s.len() == 5).map(|s| {
        let mut out = vec![Dim::K(s[0])];
        out.extend(s[2..].iter().map(|d| Dim::K(*d)));
        out.push(Dim::K(s.len() as i64 - 2));
        out
    });
    vec![fact(dtype, shape)]
}

fn center_crop_pad(cx: &mut InferCx) -> Vec<Fact> {
    let x = cx.x(0).clone();
    let mut out = fact(x.dtype, None);
    let (Some(s), Some(target)) = (&x.shape, cx.val(1)) else {
        return vec![out];
    };
    let axes = cx
        .attr_ints("axes")
        .unwrap_or_else(|| (0..s.len() as i64).collect());
    if axes.len() != target.len() {
        return vec![out];
    }
    let mut shape = s.clone();
    for (a, t) in axes.iter().zip(target) {
        match norm_axis(*a, s.len()) {
            Some(a) => shape[a] = Dim::K(t),
            None => return vec![out],
        }
    }
    out.shape = Some(shape);
    vec![out]
}

fn window(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.attr_i("output_datatype").unwrap_or(1) as i32;
    let size = cx
        .val(0)
        .filter(|v| v.len() == 1)
        .map(|v| vec![Dim::K(v[0])]);
    vec![fact(Some(dtype), size)]
}

const WINDOW: &str = "output_datatype periodic";

pub(super) const OPS: &[OpDef] = &[
    OpDef {
        attrs: "center_point_box",
        infer: nms,
        ..OpDef::new("NonMaxSuppression", 10, arity(2, 5), arity(1, 1))
    },
    OpDef {
        attrs: "coordinate_transformation_mode>=16 mode output_height output_width \
                sampling_ratio spatial_scale",
        infer: roi_align,
        ..OpDef::new("RoiAlign", 10, arity(3, 3), arity(1, 1))
    },
    OpDef {
        attrs: "align_corners mode padding_mode",
        infer: grid_sample,
        flow: Flow::Pass { per_channel: &[] },
        ..OpDef::new("GridSample", 16, arity(2, 2), arity(1, 1))
    },
    OpDef {
        attrs: "align_corners",
        infer: affine_grid,
        ..OpDef::new("AffineGrid", 20, arity(2, 2), arity(1, 1))
    },
    OpDef {
        attrs: "axes",
        infer: center_crop_pad,
        ..OpDef::new("CenterCropPad", 18, arity(2, 2), arity(1, 1))
    },
    OpDef {
        attrs: WINDOW,
        infer: window,
        ..OpDef::new("HannWindow", 17, arity(1, 1), arity(1, 1))
    },
    OpDef {
        attrs: WINDOW,
        infer: window,
        ..OpDef::new("HammingWindow", 17, arity(1, 1), arity(1, 1))
    },
    OpDef {
        attrs: WINDOW,
        infer: window,
        ..OpDef::new("BlackmanWindow", 17, arity(1, 1), arity(1, 1))
    },
];
