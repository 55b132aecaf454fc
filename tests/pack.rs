//! `onnx-slim pack` / `unpack`: byte-identical round trips (fixtures, external data, every shared
//! model and every node-suite model), the size target against `zstd -19` (computed here with the
//! zstd crate; `xz -9` needs a program and takes minutes, so the README measures it), refusal of
//! corrupt, truncated, foreign and future packs (exit 2, one line, nothing written), and bounded
//! memory on a model with hundreds of MB of external data.

mod common;

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::proto::{make_external, mlp_graph, model};
use common::run::{ok, refused};
use onnx_slim::pack::{pack, unpack};
use prost::Message;

/// Every file below `dir`, relative, sorted.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut work = vec![dir.to_path_buf()];
    while let Some(d) = work.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            if p.is_dir() {
                work.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Packs `model` and unpacks it into a fresh folder; asserts the restored model is byte-identical
/// and returns the packed size.
fn round_trip(model: &Path, work: &Path) -> u64 {
    let packed = work.join("m.onnx.slim");
    let restored = work.join("restored.onnx");
    let s = pack(model, &packed).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let u = unpack(&packed, &restored).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let a = std::fs::read(model).unwrap();
    let b = std::fs::read(&restored).unwrap();
    assert!(a == b, "{}: restored bytes differ", model.display());
    assert_eq!(s.files, u.files);
    assert_eq!(s.packed_len, std::fs::metadata(&packed).unwrap().len());
    s.packed_len
}

#[test]
fn pack_then_unpack_restores_every_fixture_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    let fixtures = common::fixtures();
    for f in &fixtures {
        round_trip(f, d.path());
    }
    assert_eq!(fixtures.len(), 11);
}

#[test]
fn pack_then_unpack_restores_every_node_suite_model_byte_for_byte() {
    let Some(cases) = common::node_test_cases() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for c in &cases {
        round_trip(&c.join("model.onnx"), d.path());
        compared += 1;
    }
    assert_eq!(compared, cases.len());
    assert_eq!(compared, 1765, "the node suite has 1765 cases");
}

#[test]
fn pack_restores_every_shared_model_and_is_smaller_than_zstd_19_of_it() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for m in &models {
        let path = m.join("model.onnx");
        let packed = round_trip(&path, d.path());
        let original = std::fs::read(&path).unwrap();
        let zstd = zstd::bulk::compress(&original, 19).unwrap().len() as u64;
        assert!(
            packed < zstd,
            "{}: pack {packed} B is not smaller than zstd -19 {zstd} B",
            m.display()
        );
        compared += 1;
    }
    assert_eq!(compared, 6);
}

/// The quantized model of `--rules clean,quantize` packs and restores too (codes are 1-byte
/// elements: they go through the plain stream).
#[test]
fn a_quantized_model_packs_and_restores_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    let q = d.path().join("q.onnx");
    ok(
        d.path(),
        &[
            common::run::fixture("mlp.onnx").to_str().unwrap(),
            q.to_str().unwrap(),
            "--rules",
            "clean,quantize",
        ],
    );
    let packed = round_trip(&q, d.path());
    assert!(packed < std::fs::metadata(&q).unwrap().len());
}

/// A model with two external data files, one in a subfolder, with bytes no tensor refers to
/// (a gap and a tail).
fn external_model(dir: &Path) -> PathBuf {
    let mut m = model(mlp_graph(1, "y"), "pack-test", 17);
    let w1 = make_external(&mut m, "W1", "weights/w1.bin", 7);
    let w2 = make_external(&mut m, "W2", "w2.bin", 0);
    std::fs::create_dir(dir.join("weights")).unwrap();
    let mut f1 = b"header!".to_vec();
    f1.extend_from_slice(&w1);
    f1.extend_from_slice(b"unreferenced tail");
    std::fs::write(dir.join("weights/w1.bin"), f1).unwrap();
    std::fs::write(dir.join("w2.bin"), w2).unwrap();
    let p = dir.join("m.onnx");
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

#[test]
fn external_data_files_are_packed_and_restored_at_their_locations_byte_for_byte() {
    let src = tempfile::tempdir().unwrap();
    let model = external_model(src.path());
    let packed = src.path().join("m.slim");
    let r = ok(
        src.path(),
        &["pack", model.to_str().unwrap(), packed.to_str().unwrap()],
    );
    assert!(r.stdout.contains("model + 2 external data files"), "{r:?}");
    let dst = tempfile::tempdir().unwrap();
    let restored = dst.path().join("restored.onnx");
    ok(
        dst.path(),
        &[
            "unpack",
            packed.to_str().unwrap(),
            restored.to_str().unwrap(),
        ],
    );
    for (a, b) in [
        ("m.onnx", "restored.onnx"),
        ("weights/w1.bin", "weights/w1.bin"),
        ("w2.bin", "w2.bin"),
    ] {
        assert_eq!(
            std::fs::read(src.path().join(a)).unwrap(),
            std::fs::read(dst.path().join(b)).unwrap(),
            "{a}"
        );
    }
    assert_eq!(
        listing(dst.path()),
        ["restored.onnx", "w2.bin", "weights", "weights/w1.bin"]
            .map(PathBuf::from)
            .to_vec()
    );
    // The restored model loads with its external data.
    onnx_slim::onnx::decode_file(&restored).unwrap();
}

/// Unpacks `bytes` as a pack in a fresh folder: the error's message, after checking it is exit
/// code 2 and nothing was left in the folder.
fn unpack_refused(bytes: &[u8]) -> String {
    let d = tempfile::tempdir().unwrap();
    let packed = d.path().join("p.slim");
    std::fs::write(&packed, bytes).unwrap();
    let e = match unpack(&packed, &d.path().join("out/restored.onnx")) {
        Ok(_) => panic!("a broken pack was unpacked"),
        Err(e) => e,
    };
    let e2 = match unpack(&packed, &d.path().join("restored.onnx")) {
        Ok(_) => panic!("a broken pack was unpacked"),
        Err(e) => e,
    };
    assert_eq!(e.exit_code(), 2, "{e}");
    assert_eq!(e2.exit_code(), 2, "{e2}");
    assert_eq!(listing(d.path()), vec![PathBuf::from("p.slim")], "{e}");
    e2.to_string()
}

fn packed_external() -> (tempfile::TempDir, Vec<u8>) {
    let src = tempfile::tempdir().unwrap();
    let model = external_model(src.path());
    let packed = src.path().join("m.slim");
    pack(&model, &packed).unwrap();
    let bytes = std::fs::read(&packed).unwrap();
    (src, bytes)
}

#[test]
fn every_flipped_byte_of_a_pack_is_refused_and_writes_nothing() {
    let (_src, good) = packed_external();
    let d = tempfile::tempdir().unwrap();
    let packed = d.path().join("p.slim");
    let out = d.path().join("restored.onnx");
    let mut refused = 0;
    for at in 0..good.len() {
        // Single bits too: some bits of a zstd frame change nothing the decoder outputs, and
        // only the pack's own checksum sees them.
        for mask in [0x10, 0x5a] {
            let mut bad = good.clone();
            bad[at] ^= mask;
            std::fs::write(&packed, &bad).unwrap();
            let e = match unpack(&packed, &out) {
                Ok(_) => panic!("a pack with byte {at} flipped by {mask:#x} was unpacked"),
                Err(e) => e,
            };
            assert_eq!(e.exit_code(), 2, "{e}");
            assert_eq!(listing(d.path()), vec![PathBuf::from("p.slim")], "{e}");
            refused += 1;
        }
    }
    assert_eq!(refused, 2 * good.len());
    assert!(good.len() > 1000, "{}", good.len());
    // The same refusal through a fresh folder whose output folder is missing.
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x5a;
    unpack_refused(&bad);
}

#[test]
fn a_pack_truncated_at_any_offset_is_refused_as_truncated_and_writes_nothing() {
    let (_src, good) = packed_external();
    for len in 1..good.len() {
        let e = unpack_refused(&good[..len]);
        assert!(e.contains("truncated"), "at {len}: {e}");
    }
}

#[test]
fn foreign_files_future_versions_and_trailing_bytes_are_refused_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let (_src, good) = packed_external();
    let out = d.path().join("r.onnx");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "model.onnx",
            std::fs::read(common::run::fixture("mlp.onnx")).unwrap(),
            "not an onnx-slim pack",
        ),
        ("empty.slim", Vec::new(), "not an onnx-slim pack"),
        (
            "v2.slim",
            {
                let mut b = good.clone();
                b[8..12].copy_from_slice(&2u32.to_le_bytes());
                b
            },
            "format version 2; this onnx-slim reads version 1",
        ),
        (
            "trailing.slim",
            {
                let mut b = good.clone();
                b.push(0);
                b
            },
            "bytes follow its end record",
        ),
    ];
    for (name, bytes, want) in cases {
        let p = d.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let line = refused(
            d.path(),
            &["unpack", p.to_str().unwrap(), out.to_str().unwrap()],
        );
        assert!(
            line.starts_with(&format!("error: packed model `{}`: ", p.display())),
            "{line}"
        );
        assert!(line.contains(want), "{name}: {line}");
        assert!(!out.exists());
    }
    // A checksum mismatch: the last byte of the model's SHA-256 (the model is the first file).
    let mut bad = good.clone();
    let sha_end = find_first_end_record(&good);
    bad[sha_end] ^= 1;
    let p = d.path().join("sum.slim");
    std::fs::write(&p, bad).unwrap();
    let line = refused(
        d.path(),
        &["unpack", p.to_str().unwrap(), out.to_str().unwrap()],
    );
    assert!(
        line.contains("the checksum of the model does not match"),
        "{line}"
    );
}

/// The offset of the last SHA-256 byte of the first file record, found by flipping each byte
/// until the model's checksum is what fails.
fn find_first_end_record(good: &[u8]) -> usize {
    (0..good.len())
        .rev()
        .find(|&at| {
            let mut b = good.to_vec();
            b[at] ^= 1;
            unpack_refused(&b).contains("the checksum of the model does not match")
        })
        .expect("a byte of the model's checksum")
}

#[test]
fn pack_refuses_a_missing_model_a_non_model_a_folder_as_output_and_its_own_input() {
    let d = tempfile::tempdir().unwrap();
    let line = refused(d.path(), &["pack", "missing.onnx", "out.slim"]);
    assert!(line.contains("`missing.onnx`"), "{line}");
    std::fs::write(d.path().join("junk.onnx"), b"\x00\x01garbage").unwrap();
    let line = refused(d.path(), &["pack", "junk.onnx", "out.slim"]);
    assert!(line.contains("not a valid onnx model"), "{line}");
    std::fs::create_dir(d.path().join("folder")).unwrap();
    let mlp = common::run::fixture("mlp.onnx");
    let line = refused(d.path(), &["pack", mlp.to_str().unwrap(), "folder"]);
    assert!(line.contains("it is a folder"), "{line}");
    std::fs::copy(&mlp, d.path().join("m.onnx")).unwrap();
    let line = refused(d.path(), &["pack", "m.onnx", "./m.onnx"]);
    assert!(line.contains("would overwrite its input"), "{line}");
    assert_eq!(
        std::fs::read(d.path().join("m.onnx")).unwrap(),
        std::fs::read(&mlp).unwrap()
    );
    std::fs::remove_file(d.path().join("m.onnx")).unwrap();
    assert_eq!(
        listing(d.path()),
        ["folder", "junk.onnx"].map(PathBuf::from).to_vec()
    );
}

// ---- memory ----

/// Writes a model whose one float32 weight of `n` elements lives in `w.bin`, written in
/// chunks (never held whole): values like trained weights, a few exponents, random mantissas.
fn big_external_model(dir: &Path, n: usize) -> PathBuf {
    let mut m = model(mlp_graph(1, "y"), "pack-memory", 17);
    {
        let g = m.graph.as_mut().unwrap();
        g.initializer.push(onnx_slim::onnx::proto::TensorProto {
            name: Some("big".into()),
            data_type: Some(1),
            dims: vec![n as i64],
            raw_data: Some(Vec::new().into()),
            ..Default::default()
        });
    }
    make_external(&mut m, "big", "w.bin", 0);
    let g = m.graph.as_mut().unwrap();
    let t = g.initializer.last_mut().unwrap();
    for e in &mut t.external_data {
        if e.key.as_deref() == Some("length") {
            e.value = Some((4 * n).to_string());
        }
    }
    let mut w = BufWriter::new(std::fs::File::create(dir.join("w.bin")).unwrap());
    let mut x = 0x2545_f491_u32;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let v = ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.1;
        w.write_all(&v.to_le_bytes()).unwrap();
    }
    w.flush().unwrap();
    let p = dir.join("m.onnx");
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

/// Runs the binary with `args` and returns the largest `RssAnon` (bytes) seen in its
/// `/proc/PID/status` while it ran (sampled every 2 ms).
fn peak_rss_anon(args: &[&Path]) -> u64 {
    let mut child = Command::new(common::bin()).args(args).spawn().unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb * 1024);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "onnx-slim {args:?}: {st}");
            return peak;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            let k = fb.read(&mut bb[nb..na]).unwrap();
            if k == 0 {
                return false;
            }
            nb += k;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
    }
}

/// 320 MB of external data: neither command holds a whole file (the bound is under half of it).
#[test]
fn pack_and_unpack_memory_stays_bounded_on_hundreds_of_mb_of_external_data() {
    const N: usize = 80 << 20;
    const BOUND: u64 = 150 << 20;
    let src = tempfile::tempdir().unwrap();
    let model = big_external_model(src.path(), N);
    let packed = src.path().join("m.slim");
    let pack_peak = peak_rss_anon(&[Path::new("pack"), &model, &packed]);
    let dst = tempfile::tempdir().unwrap();
    let restored = dst.path().join("r.onnx");
    let unpack_peak = peak_rss_anon(&[Path::new("unpack"), &packed, &restored]);
    common::skip_loudly(&format!(
        "pack of {} MB external data: peak RssAnon {} MB; unpack: {} MB",
        4 * N >> 20,
        pack_peak >> 20,
        unpack_peak >> 20
    ));
    assert!(same_file(&model, &restored));
    assert!(same_file(
        &src.path().join("w.bin"),
        &dst.path().join("w.bin")
    ));
    assert!(pack_peak > 0 && unpack_peak > 0);
    assert!(pack_peak < BOUND, "pack peak RssAnon {pack_peak} B");
    assert!(unpack_peak < BOUND, "unpack peak RssAnon {unpack_peak} B");
}
