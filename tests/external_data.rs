//! External data (`data_location = EXTERNAL`): reading only the described range, keeping the
//! layout on rewrite, `--external-data THRESHOLD`, and refusing locations outside the model's
//! folder. Models are built in code, so these tests run without `../shared`.

mod common;

use common::proto::{f32_tensor, mlp_graph, node, value_info};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use bytes::Bytes;
use onnx_slim::onnx::proto::tensor_proto::{DataLocation, DataType};
use onnx_slim::onnx::proto::{
    attribute_proto::AttributeType, AttributeProto, ModelProto, NodeProto, StringStringEntryProto,
    TensorProto,
};
use onnx_slim::onnx::{decode_bytes, decode_file};
use prost::Message;

// ---- a small model built in code ----

/// x[1,16] → MatMul(W1[16,32], 2048 B) → Add(b1[32], 128 B) → Relu → MatMul(W2[32,8], 1024 B)
/// → Add(Constant c[8], 32 B) → MatMul(Constant k[8,8], 256 B) → y[1,8]. Tensor sizes straddle
/// every threshold used below, and two of them live in `Constant` attributes.
fn model() -> ModelProto {
    let constant = NodeProto {
        op_type: Some("Constant".into()),
        name: Some("const_c".into()),
        output: vec!["c".into()],
        attribute: vec![AttributeProto {
            name: Some("value".into()),
            r#type: Some(AttributeType::Tensor as i32),
            t: Some(f32_tensor("c", &[8], 7)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let big_constant = NodeProto {
        op_type: Some("Constant".into()),
        name: Some("const_k".into()),
        output: vec!["k".into()],
        attribute: vec![AttributeProto {
            name: Some("value".into()),
            r#type: Some(AttributeType::Tensor as i32),
            t: Some(f32_tensor("k", &[8, 8], 8)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut graph = mlp_graph(1, "z");
    graph.name = Some("ext".into());
    graph.node.extend([
        constant,
        node("Add", "add2", &["z", "c"], &["z2"]),
        big_constant,
        node("MatMul", "mm3", &["z2", "k"], &["y"]),
    ]);
    graph.output = vec![value_info("y", DataType::Float, &[1, 8])];
    common::proto::model(graph, "external_data test", 13)
}

fn entry(k: &str, v: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    }
}

/// Every tensor of `m` (initializers and Constant values), by name, mutably.
fn tensors_mut(m: &mut ModelProto) -> Vec<&mut TensorProto> {
    let g = m.graph.as_mut().unwrap();
    let mut v: Vec<&mut TensorProto> = g.initializer.iter_mut().collect();
    for n in g.node.iter_mut() {
        for a in n.attribute.iter_mut() {
            if let Some(t) = a.t.as_mut() {
                v.push(t);
            }
        }
    }
    v
}

fn tensors(m: &ModelProto) -> Vec<&TensorProto> {
    let g = m.graph.as_ref().unwrap();
    let mut v: Vec<&TensorProto> = g.initializer.iter().collect();
    for n in &g.node {
        for a in &n.attribute {
            v.extend(a.t.as_ref());
        }
    }
    v
}

/// Name → payload bytes of every tensor (the payload must be inline).
fn payloads(m: &ModelProto) -> BTreeMap<String, Vec<u8>> {
    tensors(m)
        .into_iter()
        .map(|t| {
            assert!(
                t.data_location != Some(DataLocation::External as i32),
                "`{:?}` still external",
                t.name
            );
            (
                t.name.clone().unwrap(),
                t.raw_data.as_ref().expect("raw data").to_vec(),
            )
        })
        .collect()
}

fn ext_fields(t: &TensorProto) -> (String, u64, u64) {
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(k))
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| panic!("`{:?}` has no `{k}` entry", t.name))
    };
    (
        get("location"),
        get("offset").parse().unwrap(),
        get("length").parse().unwrap(),
    )
}

/// Moves every tensor of at least `threshold` bytes into `location` inside `dir`, with a junk
/// prefix, junk gaps between payloads and a junk suffix, so only exact offsets read right.
fn externalize_with_junk(m: &mut ModelProto, dir: &Path, location: &str, threshold: usize) {
    let mut data: Vec<u8> = (0..777u32).map(|i| (i * 31 % 251) as u8).collect();
    for t in tensors_mut(m) {
        let raw = t.raw_data.as_ref().unwrap();
        if raw.len() < threshold {
            continue;
        }
        let raw = t.raw_data.take().unwrap();
        let offset = data.len();
        data.extend_from_slice(&raw);
        data.extend((0..13u8).map(|i| i ^ 0xa5));
        t.external_data = vec![
            entry("location", location),
            entry("offset", &offset.to_string()),
            entry("length", &raw.len().to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
    }
    data.extend(std::iter::repeat_n(0xeeu8, 4096));
    std::fs::write(dir.join(location), data).unwrap();
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(common::bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run onnx-slim")
}

fn ok(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr:\n{}\nstdout:\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
}

/// Checks that every external tensor of the file `onnx` points into `data_file` with a range
/// holding exactly `want[name]`, that inline ones are below `threshold` and external ones reach
/// it, and that the ranges tile the data file.
fn check_layout(
    onnx: &Path,
    data_file: &str,
    threshold: usize,
    want: &BTreeMap<String, Vec<u8>>,
) -> usize {
    let raw = decode_bytes(Bytes::from(std::fs::read(onnx).unwrap()), onnx).unwrap();
    let data = std::fs::read(onnx.parent().unwrap().join(data_file)).unwrap();
    let mut external = 0;
    let mut ranges = Vec::new();
    for t in tensors(&raw) {
        let name = t.name.clone().unwrap();
        let expected = &want[&name];
        if t.data_location == Some(DataLocation::External as i32) {
            external += 1;
            assert!(t.raw_data.is_none(), "`{name}`: external with inline data");
            let (loc, offset, length) = ext_fields(t);
            assert_eq!(loc, data_file, "`{name}`");
            assert_eq!(length as usize, expected.len(), "`{name}`");
            assert!(
                length as usize >= threshold,
                "`{name}` is below the threshold"
            );
            let r = offset as usize..(offset + length) as usize;
            assert_eq!(&data[r.clone()], &expected[..], "`{name}` bytes");
            ranges.push(r);
        } else {
            assert!(expected.len() < threshold, "`{name}` should be external");
            assert_eq!(t.raw_data.as_deref().unwrap(), &expected[..], "`{name}`");
        }
    }
    ranges.sort_by_key(|r| r.start);
    let mut at = 0;
    for r in &ranges {
        assert_eq!(r.start, at, "ranges must tile the data file");
        at = r.end;
    }
    assert_eq!(at, data.len(), "the data file holds exactly the payloads");
    external
}

#[test]
fn external_input_round_trips_byte_for_byte_and_stays_external() {
    let d = tempfile::tempdir().unwrap();
    let original = model();
    let want = payloads(&original);
    let mut m = original.clone();
    externalize_with_junk(&mut m, d.path(), "weights.bin", 1024);
    std::fs::write(d.path().join("in.onnx"), m.encode_to_vec()).unwrap();

    // The library reads it back to exactly the original payloads.
    let loaded = decode_file(&d.path().join("in.onnx")).unwrap();
    assert_eq!(loaded.external.tensors, 2, "W1 and W2");
    assert_eq!(loaded.external.bytes, 2048 + 1024);
    assert_eq!(loaded.external.min_len, Some(1024));
    assert_eq!(payloads(&loaded.model), want);
    assert_eq!(loaded.model.encode_to_vec(), original.encode_to_vec());

    // Through the binary, into another folder: the output keeps external data (no flag given).
    std::fs::create_dir(d.path().join("o")).unwrap();
    ok(&run(
        d.path(),
        &["in.onnx", "o/out.onnx", "--rules", "none"],
    ));
    assert!(d.path().join("o/out.onnx.data").is_file());
    let n = check_layout(&d.path().join("o/out.onnx"), "out.onnx.data", 1024, &want);
    assert_eq!(n, 2);
    let out = decode_file(&d.path().join("o/out.onnx")).unwrap();
    assert_eq!(out.external.tensors, 2);
    assert_eq!(payloads(&out.model), want);
    assert_eq!(out.model.encode_to_vec(), original.encode_to_vec());
    let mut files: Vec<_> = std::fs::read_dir(d.path().join("o"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["out.onnx", "out.onnx.data"], "no temp files left");
}

#[test]
fn external_data_flag_moves_tensors_over_the_threshold() {
    let d = tempfile::tempdir().unwrap();
    let original = model();
    let want = payloads(&original);
    std::fs::write(d.path().join("in.onnx"), original.encode_to_vec()).unwrap();
    ok(&run(
        d.path(),
        &[
            "in.onnx",
            "out.onnx",
            "--rules",
            "none",
            "--external-data",
            "100",
        ],
    ));
    // W1 (2048), b1 (128), W2 (1024), k (256) go out; c (32) stays inline.
    let n = check_layout(&d.path().join("out.onnx"), "out.onnx.data", 100, &want);
    assert_eq!(n, 4);
    let out = decode_file(&d.path().join("out.onnx")).unwrap();
    assert_eq!(out.external.tensors, 4);
    assert_eq!(payloads(&out.model), want);
    assert_eq!(out.model.encode_to_vec(), original.encode_to_vec());

    // A higher threshold: only W1 and W2.
    ok(&run(
        d.path(),
        &[
            "in.onnx",
            "out2.onnx",
            "--rules",
            "none",
            "--external-data",
            "1000",
        ],
    ));
    assert_eq!(
        check_layout(&d.path().join("out2.onnx"), "out2.onnx.data", 1000, &want),
        2
    );
}

#[test]
fn external_data_flag_without_value_uses_1024() {
    let d = tempfile::tempdir().unwrap();
    let original = model();
    let want = payloads(&original);
    std::fs::write(d.path().join("in.onnx"), original.encode_to_vec()).unwrap();
    ok(&run(
        d.path(),
        &["in.onnx", "out.onnx", "--external-data", "--rules", "none"],
    ));
    assert_eq!(
        check_layout(&d.path().join("out.onnx"), "out.onnx.data", 1024, &want),
        2
    );
}

#[test]
fn inline_input_without_the_flag_stays_inline() {
    let d = tempfile::tempdir().unwrap();
    let original = model();
    std::fs::write(d.path().join("in.onnx"), original.encode_to_vec()).unwrap();
    ok(&run(d.path(), &["in.onnx", "out.onnx", "--rules", "none"]));
    assert!(!d.path().join("out.onnx.data").exists());
    let out = std::fs::read(d.path().join("out.onnx")).unwrap();
    assert_eq!(out, original.encode_to_vec());
}

#[test]
fn in_place_rewrite_of_an_external_model_keeps_its_data() {
    let d = tempfile::tempdir().unwrap();
    let original = model();
    let want = payloads(&original);
    let mut m = original.clone();
    externalize_with_junk(&mut m, d.path(), "m.onnx.data", 200);
    std::fs::write(d.path().join("m.onnx"), m.encode_to_vec()).unwrap();
    ok(&run(
        d.path(),
        &["m.onnx", "m.onnx", "--in-place", "--rules", "none"],
    ));
    // Rewritten over itself: same data file name, junk gone, payloads intact.
    assert_eq!(
        check_layout(&d.path().join("m.onnx"), "m.onnx.data", 256, &want),
        3
    );
    let out = decode_file(&d.path().join("m.onnx")).unwrap();
    assert_eq!(out.model.encode_to_vec(), original.encode_to_vec());
}

#[test]
fn only_the_described_range_is_read() {
    let d = tempfile::tempdir().unwrap();
    let mut m = model();
    let w1 = {
        let t = &mut m.graph.as_mut().unwrap().initializer[0];
        t.raw_data.take().unwrap().to_vec()
    };
    // 3 MB of unrelated bytes around the 2 KB payload, at an odd offset.
    let offset = 1_500_001usize;
    let mut data = vec![0x5au8; offset];
    data.extend_from_slice(&w1);
    data.extend(std::iter::repeat_n(0xc3u8, 1_500_000));
    std::fs::write(d.path().join("blob.bin"), &data).unwrap();
    {
        let t = &mut m.graph.as_mut().unwrap().initializer[0];
        t.data_location = Some(DataLocation::External as i32);
        t.external_data = vec![
            entry("location", "blob.bin"),
            entry("offset", &offset.to_string()),
            entry("length", &w1.len().to_string()),
        ];
    }
    std::fs::write(d.path().join("in.onnx"), m.encode_to_vec()).unwrap();
    let loaded = decode_file(&d.path().join("in.onnx")).unwrap();
    assert_eq!(loaded.external.tensors, 1);
    assert_eq!(
        loaded.external.bytes,
        w1.len() as u64,
        "read only the range"
    );
    let t = &loaded.model.graph.as_ref().unwrap().initializer[0];
    assert_eq!(t.raw_data.as_deref().unwrap(), &w1[..]);
    assert_eq!(t.data_location, None);
    assert!(t.external_data.is_empty());

    // Without `length`, the range is the tensor's size from its dtype and dims.
    {
        let t = &mut m.graph.as_mut().unwrap().initializer[0];
        t.external_data
            .retain(|e| e.key.as_deref() != Some("length"));
    }
    std::fs::write(d.path().join("in2.onnx"), m.encode_to_vec()).unwrap();
    let loaded = decode_file(&d.path().join("in2.onnx")).unwrap();
    assert_eq!(loaded.external.bytes, w1.len() as u64);
    let t = &loaded.model.graph.as_ref().unwrap().initializer[0];
    assert_eq!(t.raw_data.as_deref().unwrap(), &w1[..]);

    // Two tensors in one file, the second before the first: offsets, not order, decide.
    let mut m2 = model();
    let g = m2.graph.as_mut().unwrap();
    let a = g.initializer[0].raw_data.take().unwrap().to_vec();
    let b = g.initializer[2].raw_data.take().unwrap().to_vec();
    let mut blob = vec![1u8; 10];
    blob.extend_from_slice(&b);
    blob.extend_from_slice(&[2u8; 10]);
    blob.extend_from_slice(&a);
    for (t, off, len) in [(0usize, 10 + b.len() + 10, a.len()), (2usize, 10, b.len())] {
        g.initializer[t].data_location = Some(DataLocation::External as i32);
        g.initializer[t].external_data = vec![
            entry("location", "two.bin"),
            entry("offset", &off.to_string()),
            entry("length", &len.to_string()),
        ];
    }
    std::fs::write(d.path().join("two.bin"), &blob).unwrap();
    std::fs::write(d.path().join("in3.onnx"), m2.encode_to_vec()).unwrap();
    let loaded = decode_file(&d.path().join("in3.onnx")).unwrap();
    assert_eq!(payloads(&loaded.model), payloads(&model()));
}

#[test]
fn locations_outside_the_model_folder_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let inner = d.path().join("models");
    std::fs::create_dir(&inner).unwrap();
    // A real file in the parent folder: refused all the same, without being read.
    std::fs::write(d.path().join("secret.bin"), vec![0u8; 4096]).unwrap();
    let abs = d.path().join("secret.bin").to_string_lossy().into_owned();
    for location in [
        "../secret.bin",
        "sub/../../secret.bin",
        "./../secret.bin",
        abs.as_str(),
    ] {
        let mut m = model();
        {
            let t = &mut m.graph.as_mut().unwrap().initializer[0];
            let len = t.raw_data.take().unwrap().len();
            t.data_location = Some(DataLocation::External as i32);
            t.external_data = vec![
                entry("location", location),
                entry("offset", "0"),
                entry("length", &len.to_string()),
            ];
        }
        std::fs::write(inner.join("in.onnx"), m.encode_to_vec()).unwrap();
        let e = decode_file(&inner.join("in.onnx")).expect_err(location);
        assert!(
            matches!(e, onnx_slim::Error::ExternalData { .. }),
            "{location}: {e:?}"
        );
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(msg.contains("`W1`"), "{msg}");
        assert!(
            msg.contains("relative path inside the model's folder"),
            "{msg}"
        );
        assert!(msg.contains(location), "{msg}");

        // The binary says the same on one line, exit 2, and writes nothing.
        let o = run(&inner, &["in.onnx", "out.onnx", "--rules", "none"]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("relative path inside the model's folder"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"));
        assert!(!inner.join("out.onnx").exists());
    }
}

#[test]
fn bad_offsets_and_lengths_are_refused() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("w.bin"), vec![0u8; 4096]).unwrap();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("offset", "abc"), ("length", "2048")], "bad offset `abc`"),
        (&[("offset", "-1"), ("length", "2048")], "bad offset `-1`"),
        (&[("offset", "0"), ("length", "1e9")], "bad length `1e9`"),
        (
            &[("offset", "18446744073709551615"), ("length", "2")],
            "overflows",
        ),
        (&[("offset", "4000"), ("length", "2048")], "too short"),
    ];
    for (entries, want) in cases {
        let mut m = model();
        {
            let t = &mut m.graph.as_mut().unwrap().initializer[0];
            t.raw_data = None;
            t.data_location = Some(DataLocation::External as i32);
            t.external_data = vec![entry("location", "w.bin")];
            t.external_data
                .extend(entries.iter().map(|(k, v)| entry(k, v)));
        }
        std::fs::write(d.path().join("in.onnx"), m.encode_to_vec()).unwrap();
        let e = decode_file(&d.path().join("in.onnx")).expect_err(want);
        assert!(e.to_string().contains(want), "{want}: {e}");
        assert!(e.to_string().contains("`W1`"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
    // No `location` at all.
    let mut m = model();
    {
        let t = &mut m.graph.as_mut().unwrap().initializer[0];
        t.raw_data = None;
        t.data_location = Some(DataLocation::External as i32);
    }
    std::fs::write(d.path().join("in.onnx"), m.encode_to_vec()).unwrap();
    let e = decode_file(&d.path().join("in.onnx")).unwrap_err();
    assert!(e.to_string().contains("no `location`"), "{e}");
}
