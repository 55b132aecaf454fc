//! Where a model file keeps its tensor payloads, found by walking the protobuf wire format
//! without decoding it: byte ranges of `raw_data` and packed `float_data`/`double_data`, each with
//! the element width its byte planes have, and the external data each tensor points at.
//!
//! The walk only guides compression: a range it misses is stored as plain bytes, never lost, so
//! a field it does not know, or a part it cannot parse, is skipped, not refused.

/// How a run of bytes is split for the entropy coder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Kept as they are (protobuf structure, names, strings).
    Raw,
    /// 1-byte elements (int8, uint8, float8, packed int4): kept as they are, in a stream of
    /// their own, apart from the protobuf structure.
    W1,
    /// 2-byte elements (float16, bfloat16, int16), split into 2 byte planes.
    W2,
    /// 4-byte elements (float32, int32, complex64), split into 4 byte planes.
    W4,
    /// 8-byte elements (int64, double, complex128), split into 8 byte planes.
    W8,
}

impl Kind {
    /// Bytes per element (1 for [`Kind::Raw`]).
    pub fn width(self) -> usize {
        match self {
            Kind::Raw | Kind::W1 => 1,
            Kind::W2 => 2,
            Kind::W4 => 4,
            Kind::W8 => 8,
        }
    }

    /// The kind of a tensor payload of ONNX element type `data_type` (little-endian fixed
    /// width elements).
    pub fn of_data_type(data_type: i64) -> Kind {
        match data_type {
            1 | 6 | 12 | 14 => Kind::W4,
            4 | 5 | 10 | 16 => Kind::W2,
            7 | 11 | 13 | 15 => Kind::W8,
            2 | 3 | 9 | 17..=24 => Kind::W1,
            _ => Kind::Raw,
        }
    }
}

/// A payload range: `len` bytes at `offset`, of elements of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub len: u64,
    pub kind: Kind,
}

/// A tensor whose payload is in an external file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRef {
    /// The tensor's name (for messages).
    pub tensor: String,
    /// The `location` entry, as written.
    pub location: String,
    /// The `offset` entry (0 when absent or not a number).
    pub offset: u64,
    /// The `length` entry, when present and a number.
    pub length: Option<u64>,
    /// The tensor's `data_type`.
    pub data_type: i64,
    /// The tensor's dims (to size a payload without a `length`).
    pub dims: Vec<i64>,
}

/// What [`scan`] found in a model file.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Payload ranges inside the model file, by offset (they never overlap).
    pub ranges: Vec<Range>,
    /// Tensors with external data, in file order.
    pub external: Vec<ExternalRef>,
}

/// Which message a byte range holds.
#[derive(Debug, Clone, Copy)]
enum Msg {
    Model,
    Graph,
    Node,
    Attribute,
    Function,
    Training,
    Sparse,
    Tensor,
}

/// One protobuf field: number, and its value (a varint, or the range of a length-delimited one).
enum Field {
    Varint(u64),
    Bytes(usize, usize),
    Fixed,
}

/// Reads one varint at `*pos`.
fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The fields of the message in `b[start..end]`, in order; `None` where it does not parse.
fn fields(b: &[u8], start: usize, end: usize) -> Option<Vec<(u64, Field)>> {
    let mut out = Vec::new();
    let mut pos = start;
    let b = b.get(..end)?;
    while pos < end {
        let tag = varint(b, &mut pos)?;
        let field = match tag & 7 {
            0 => Field::Varint(varint(b, &mut pos)?),
            1 => {
                pos = pos.checked_add(8)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(varint(b, &mut pos)?).ok()?;
                let s = pos;
                pos = pos.checked_add(len)?;
                Field::Bytes(s, pos)
            }
            5 => {
                pos = pos.checked_add(4)?;
                Field::Fixed
            }
            _ => return None,
        };
        if pos > end {
            return None;
        }
        out.push((tag >> 3, field));
    }
    Some(out)
}

/// Walks the model file `b`: every tensor in the graph, its subgraphs, functions and training
/// graphs (with an explicit work list: nesting depth costs no stack).
pub fn scan(b: &[u8]) -> Scan {
    let mut found = Scan::default();
    let mut work = vec![(Msg::Model, 0usize, b.len())];
    while let Some((msg, start, end)) = work.pop() {
        let Some(fs) = fields(b, start, end) else {
            continue;
        };
        if let Msg::Tensor = msg {
            tensor(b, &fs, &mut found);
            continue;
        }
        for (num, f) in fs {
            let Field::Bytes(s, e) = f else { continue };
            let child = match (msg, num) {
                (Msg::Model, 7) => Msg::Graph,
                (Msg::Model, 20) => Msg::Training,
                (Msg::Model, 25) => Msg::Function,
                (Msg::Training, 1 | 2) => Msg::Graph,
                (Msg::Function, 7) => Msg::Node,
                (Msg::Function, 11) => Msg::Attribute,
                (Msg::Graph, 1) => Msg::Node,
                (Msg::Graph, 5) => Msg::Tensor,
                (Msg::Graph, 15) => Msg::Sparse,
                (Msg::Node, 5) => Msg::Attribute,
                (Msg::Attribute, 5 | 10) => Msg::Tensor,
                (Msg::Attribute, 6 | 11) => Msg::Graph,
                (Msg::Attribute, 22 | 23) => Msg::Sparse,
                (Msg::Sparse, 1 | 2) => Msg::Tensor,
                _ => continue,
            };
            work.push((child, s, e));
        }
    }
    found.ranges.sort_by_key(|r| r.offset);
    found
}

/// Records the payload ranges or the external reference of one `TensorProto`.
fn tensor(b: &[u8], fs: &[(u64, Field)], found: &mut Scan) {
    let mut data_type = 0i64;
    let mut external = false;
    let mut dims = Vec::new();
    for (num, f) in fs {
        match (num, f) {
            (2, Field::Varint(v)) => data_type = *v as i64,
            (14, Field::Varint(v)) => external = *v == 1,
            (1, Field::Varint(v)) => dims.push(*v as i64),
            (1, Field::Bytes(s, e)) => {
                let mut pos = *s;
                while pos < *e {
                    match varint(&b[..*e], &mut pos) {
                        Some(v) => dims.push(v as i64),
                        None => break,
                    }
                }
            }
            _ => {}
        }
    }
    let text = |s: usize, e: usize| String::from_utf8_lossy(&b[s..e]).into_owned();
    if external {
        let mut r = ExternalRef {
            tensor: String::new(),
            location: String::new(),
            offset: 0,
            length: None,
            data_type,
            dims,
        };
        let mut has_location = false;
        for (num, f) in fs {
            match (num, f) {
                (8, Field::Bytes(s, e)) => r.tensor = text(*s, *e),
                (13, Field::Bytes(s, e)) => {
                    let Some(entry) = fields(b, *s, *e) else {
                        continue;
                    };
                    let (mut key, mut value) = (String::new(), String::new());
                    for (n, f) in entry {
                        if let Field::Bytes(s, e) = f {
                            match n {
                                1 => key = text(s, e),
                                2 => value = text(s, e),
                                _ => {}
                            }
                        }
                    }
                    match key.as_str() {
                        "location" => {
                            r.location = value;
                            has_location = true;
                        }
                        "offset" => r.offset = value.parse().unwrap_or(0),
                        "length" => r.length = value.parse().ok(),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if has_location {
            found.external.push(r);
        }
        return;
    }
    for (num, f) in fs {
        let Field::Bytes(s, e) = *f else { continue };
        let kind = match num {
            9 => Kind::of_data_type(data_type),
            4 => Kind::W4,
            10 => Kind::W8,
            _ => continue,
        };
        if kind != Kind::Raw && e > s {
            found.ranges.push(Range {
                offset: s as u64,
                len: (e - s) as u64,
                kind,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{tensor_proto::DataLocation, StringStringEntryProto, TensorProto};
    use prost::Message;

    #[test]
    fn scan_finds_raw_and_float_data_at_their_exact_offsets_and_external_refs() {
        let mut model = crate::ir::builder::ModelBuilder::new(17).build();
        let raw: Vec<u8> = (0..400u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let g = model.graph.as_mut().unwrap();
        g.initializer.push(TensorProto {
            name: Some("raw".into()),
            data_type: Some(1),
            dims: vec![400],
            raw_data: Some(raw.clone().into()),
            ..Default::default()
        });
        g.initializer.push(TensorProto {
            name: Some("fd".into()),
            data_type: Some(1),
            dims: vec![3],
            float_data: vec![1.5, -2.0, 3.25],
            ..Default::default()
        });
        let entry = |k: &str, v: &str| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v.into()),
        };
        g.initializer.push(TensorProto {
            name: Some("ext".into()),
            data_type: Some(10),
            dims: vec![8],
            data_location: Some(DataLocation::External as i32),
            external_data: vec![
                entry("location", "w.bin"),
                entry("offset", "64"),
                entry("length", "16"),
            ],
            ..Default::default()
        });
        let bytes = model.encode_to_vec();
        let s = scan(&bytes);
        assert_eq!(s.ranges.len(), 2);
        let r = s.ranges.iter().find(|r| r.len == 1600).unwrap();
        assert_eq!(r.kind, Kind::W4);
        assert_eq!(&bytes[r.offset as usize..][..1600], &raw[..]);
        let f = s.ranges.iter().find(|r| r.len == 12).unwrap();
        let want: Vec<u8> = [1.5f32, -2.0, 3.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(&bytes[f.offset as usize..][..12], &want[..]);
        assert_eq!(
            s.external,
            vec![ExternalRef {
                tensor: "ext".into(),
                location: "w.bin".into(),
                offset: 64,
                length: Some(16),
                data_type: 10,
                dims: vec![8],
            }]
        );
    }
}
