use onnx_slim::ir::{Model, ValueRef, tensor};
use onnx_slim::linalg::*;
#[test]
fn probe() {
    for m in ["digits_mlp", "captcha_crnn"] {
        let p = format!("{}/../shared/models/{m}/model.onnx", env!("CARGO_MANIFEST_DIR"));
        let model = Model::from_proto(onnx_slim::onnx::decode_file(std::path::Path::new(&p)).unwrap().model).unwrap();
        let g = &model.graph;
        for id in g.ops() {
            let n = g.node(id);
            if !["MatMul", "Gemm", "Conv"].contains(&n.op_type()) { continue; }
            let v: ValueRef = g.input(id, 1).unwrap();
            let t = g.const_tensor(v).unwrap();
            let a = tensor::to_f32(t).unwrap();
            let d = a.shape().to_vec();
            let rows = d[0]; let cols: usize = d[1..].iter().product();
            let w = a.into_shape_with_order((rows, cols)).unwrap();
            let t0 = std::time::Instant::now();
            let dec = thin_svd(to_faer(w.view()).as_ref());
            let dt = t0.elapsed().as_secs_f64();
            let mn = rows.min(cols);
            let be = (rows * cols) as f64 / (rows + cols) as f64;
            let e95 = dec.rank_for_energy(0.95).unwrap();
            let e99 = dec.rank_for_energy(0.99).unwrap();
            let e90 = dec.rank_for_energy(0.90).unwrap();
            let t05 = dec.rank_for_energy(1.0-0.05*0.05).unwrap();
            let t10 = dec.rank_for_energy(1.0-0.1*0.1).unwrap();
            let t20 = dec.rank_for_energy(1.0-0.2*0.2).unwrap();
            println!("{m} {} {:?} min {mn} breakeven {be:.0} e90 {e90} e95 {e95} e99 {e99} t.05 {t05} t.1 {t10} t.2 {t20} svd {dt:.3}s err@be/2 {:.3}", n.label(), d, dec.rel_error((be/2.0) as usize));
        }
    }
}
