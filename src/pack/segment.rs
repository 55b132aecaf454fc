//! Segments: a file cut into pieces of at most [`SEGMENT`] bytes, each split into streams (the
//! plain bytes, and one stream per byte plane of each element width) that are entropy-coded on
//! their own. See the module doc of [`crate::pack`] for the layout.

use std::io::Read;

use zstd::zstd_safe::CParameter;

use super::scan::{Kind, Range};

/// The most original bytes one segment holds: what bounds memory while packing and unpacking.
pub const SEGMENT: usize = 16 << 20;

/// Stream ids: 0 the layout, 1 the plain bytes, then the byte planes of 4-, 2- and 8-byte
/// elements, then the 1-byte elements.
const LAYOUT: usize = 0;
const PLAIN: usize = 1;
const STREAMS: usize = 17;

/// The first stream id of the planes of `kind`'s elements.
fn first_plane(kind: Kind) -> usize {
    match kind {
        Kind::Raw => PLAIN,
        Kind::W1 => 16,
        Kind::W4 => 2,
        Kind::W2 => 6,
        Kind::W8 => 8,
    }
}

/// Codec ids of a stream.
const STORED: u8 = 0;
const ZSTD: u8 = 1;

/// Layout flag: the 4-byte elements were stored exponent-aligned (see [`exponent_aligned`]).
const FLAG_EXPONENT: u8 = 1;

/// A run of `len` bytes of one kind inside a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub kind: Kind,
    pub len: u32,
}

/// Cuts a file of `len` bytes whose payloads are `ranges` (sorted by offset; overlapping ones
/// and the parts past the end are dropped, a tail that is not a whole element is plain) into
/// segments, each a list of spans of at most [`SEGMENT`] bytes in all.
pub fn plan(len: u64, ranges: &[Range]) -> Vec<Vec<Span>> {
    let mut pieces: Vec<(Kind, u64)> = Vec::new();
    let mut pos = 0u64;
    for r in ranges {
        if r.offset < pos || r.offset >= len {
            continue;
        }
        let end = r.offset.saturating_add(r.len).min(len);
        let w = r.kind.width() as u64;
        let whole = (end - r.offset) / w * w;
        if whole == 0 {
            continue;
        }
        if r.offset > pos {
            pieces.push((Kind::Raw, r.offset - pos));
        }
        pieces.push((r.kind, whole));
        pos = r.offset + whole;
    }
    if len > pos {
        pieces.push((Kind::Raw, len - pos));
    }
    let mut segments = Vec::new();
    let mut current: Vec<Span> = Vec::new();
    let mut used = 0usize;
    for (kind, mut left) in pieces {
        while left > 0 {
            let w = kind.width();
            let room = SEGMENT - used;
            let take = (left.min(room as u64) as usize) / w * w;
            if take == 0 {
                segments.push(std::mem::take(&mut current));
                used = 0;
                continue;
            }
            match current.last_mut() {
                Some(s) if s.kind == kind => s.len += take as u32,
                _ => current.push(Span {
                    kind,
                    len: take as u32,
                }),
            }
            used += take;
            left -= take as u64;
            if used == SEGMENT {
                segments.push(std::mem::take(&mut current));
                used = 0;
            }
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments
}

/// A float32 with its 8 exponent bits moved into the top byte (sign bit next, below them): the
/// top byte plane then holds only exponents, which compress well; the low 2 bytes are unchanged.
fn exponent_aligned(x: u32) -> u32 {
    ((x >> 23 & 0xff) << 24) | ((x >> 31) << 23) | (x & 0x7f_ffff)
}

/// The inverse of [`exponent_aligned`].
fn from_exponent_aligned(y: u32) -> u32 {
    ((y >> 23 & 1) << 31) | ((y >> 24) << 23) | (y & 0x7f_ffff)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
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

/// Encodes segments with zstd. Each stream is tried with two cheap settings: zstd level 3, and an
/// "entropy" setting that finds only matches of 7 bytes or more through a tiny hash table, so
/// that nearly everything is Huffman-coded literals (on an exponent plane this beats level 19:
/// short matches in near-random data cost more than they save). When level 3 wins by more than
/// 2 % the stream has real repeats, and it is also coded at the strong `level` (long-distance
/// matching on, a window covering the stream). The smallest result is kept, or the stream is
/// stored when nothing is smaller.
pub struct Encoder {
    fast: zstd::bulk::Compressor<'static>,
    entropy: zstd::bulk::Compressor<'static>,
    strong: zstd::bulk::Compressor<'static>,
    streams: Vec<Vec<u8>>,
    alt: [Vec<u8>; 2],
}

impl Encoder {
    /// An encoder at zstd `level` (1..=22).
    pub fn new(level: i32) -> std::io::Result<Self> {
        let mut fast = zstd::bulk::Compressor::new(3)?;
        fast.set_parameter(CParameter::ChecksumFlag(true))?;
        let mut entropy = zstd::bulk::Compressor::new(1)?;
        entropy.set_parameter(CParameter::ChecksumFlag(true))?;
        entropy.set_parameter(CParameter::Strategy(zstd::zstd_safe::Strategy::ZSTD_fast))?;
        entropy.set_parameter(CParameter::MinMatch(7))?;
        entropy.set_parameter(CParameter::HashLog(6))?;
        let mut strong = zstd::bulk::Compressor::new(level)?;
        strong.set_parameter(CParameter::ChecksumFlag(true))?;
        strong.set_parameter(CParameter::EnableLongDistanceMatching(true))?;
        Ok(Encoder {
            fast,
            entropy,
            strong,
            streams: vec![Vec::new(); STREAMS],
            alt: [Vec::new(), Vec::new()],
        })
    }

    /// Appends the encoded segment of `data` (laid out as `spans`) to `out`: its length, its
    /// stream count, then each stream (see the module doc of [`crate::pack`]).
    pub fn encode(
        &mut self,
        data: &[u8],
        spans: &[Span],
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        for s in &mut self.streams {
            s.clear();
        }
        let mut pos = 0usize;
        for span in spans {
            let bytes = &data[pos..pos + span.len as usize];
            pos += span.len as usize;
            let w = span.kind.width();
            let first = first_plane(span.kind);
            if w == 1 {
                self.streams[first].extend_from_slice(bytes);
                continue;
            }
            for k in 0..w {
                let plane = &mut self.streams[first + k];
                plane.extend(bytes.iter().skip(k).step_by(w));
            }
        }
        let flags = if self.exponent_pays()? {
            let (p2, p3) = (&self.alt[0], &self.alt[1]);
            self.streams[4].clone_from(p2);
            self.streams[5].clone_from(p3);
            FLAG_EXPONENT
        } else {
            0
        };
        let layout = &mut self.streams[LAYOUT];
        layout.push(flags);
        put_varint(layout, spans.len() as u64);
        for s in spans {
            layout.push(match s.kind {
                Kind::Raw => 0,
                Kind::W1 => 1,
                Kind::W2 => 2,
                Kind::W4 => 4,
                Kind::W8 => 8,
            });
            put_varint(layout, u64::from(s.len));
        }
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        let count = self.streams.iter().filter(|s| !s.is_empty()).count();
        out.push(count as u8);
        for id in 0..STREAMS {
            if self.streams[id].is_empty() {
                continue;
            }
            let s = std::mem::take(&mut self.streams[id]);
            self.put_stream(id, &s, out)?;
            self.streams[id] = s;
        }
        Ok(())
    }

    /// Whether the 4-byte planes compress better exponent-aligned: tried with the two cheap
    /// settings on the two planes the transform changes; the aligned planes are left in `alt`
    /// when it pays.
    fn exponent_pays(&mut self) -> std::io::Result<bool> {
        let (p0, p1, p2, p3) = (
            &self.streams[2],
            &self.streams[3],
            &self.streams[4],
            &self.streams[5],
        );
        if p3.len() < 1024 {
            return Ok(false);
        }
        let [a2, a3] = &mut self.alt;
        a2.clear();
        a3.clear();
        for i in 0..p3.len() {
            let x = u32::from_le_bytes([p0[i], p1[i], p2[i], p3[i]]);
            let [_, _, b2, b3] = exponent_aligned(x).to_le_bytes();
            a2.push(b2);
            a3.push(b3);
        }
        let mut cheap = |data: &[u8]| -> std::io::Result<usize> {
            let e = self.entropy.compress(data)?.len();
            Ok(e.min(self.fast.compress(data)?.len()))
        };
        let plain = cheap(p2)? + cheap(p3)?;
        let aligned = cheap(a2)? + cheap(a3)?;
        Ok(aligned < plain)
    }

    /// Appends stream `id` holding `data`, coded as the [`Encoder`] doc says.
    fn put_stream(&mut self, id: usize, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        let mut best: Option<Vec<u8>> = None;
        if data.len() >= 64 {
            let log = (usize::BITS - (data.len() - 1).leading_zeros()).clamp(10, 27);
            self.entropy.set_parameter(CParameter::WindowLog(log))?;
            let entropy = self.entropy.compress(data)?;
            let fast = self.fast.compress(data)?;
            if fast.len() * 100 < entropy.len() * 98 {
                self.strong.set_parameter(CParameter::WindowLog(log))?;
                let strong = self.strong.compress(data)?;
                best = Some(if strong.len() < fast.len() {
                    strong
                } else {
                    fast
                });
            } else {
                best = Some(entropy);
            }
        }
        out.push(id as u8);
        let (codec, body) = match &best {
            Some(z) if z.len() < data.len() => (ZSTD, z.as_slice()),
            _ => (STORED, data),
        };
        out.push(codec);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        Ok(())
    }
}

/// Why a segment could not be decoded: the input ended, or its bytes are inconsistent.
#[derive(Debug)]
pub enum DecodeError {
    /// The input ended inside the segment.
    Truncated,
    /// Reading failed.
    Io(std::io::Error),
    /// The segment's bytes are inconsistent (corrupt).
    Corrupt(String),
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), DecodeError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => DecodeError::Truncated,
        _ => DecodeError::Io(e),
    })
}

fn read_u32(r: &mut impl Read) -> Result<u32, DecodeError> {
    let mut b = [0u8; 4];
    read_exact(r, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Decodes segments; its buffers are reused from one segment to the next.
pub struct Decoder {
    zstd: zstd::bulk::Decompressor<'static>,
    streams: Vec<Vec<u8>>,
    packed: Vec<u8>,
}

impl Decoder {
    pub fn new() -> std::io::Result<Self> {
        Ok(Decoder {
            zstd: zstd::bulk::Decompressor::new()?,
            streams: vec![Vec::new(); STREAMS],
            packed: Vec::new(),
        })
    }

    /// Reads one segment (after its tag) from `r` into `out` (replacing what `out` held); at
    /// most `max` original bytes are accepted.
    pub fn decode(
        &mut self,
        r: &mut impl Read,
        max: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        let corrupt = |s: &str| DecodeError::Corrupt(s.to_string());
        let len = read_u32(r)? as usize;
        if len == 0 || len > SEGMENT || len as u64 > max {
            return Err(corrupt("a segment length is out of range"));
        }
        let mut count = [0u8];
        read_exact(r, &mut count)?;
        for s in &mut self.streams {
            s.clear();
        }
        let mut seen = [false; STREAMS];
        for _ in 0..count[0] {
            let mut head = [0u8; 2];
            read_exact(r, &mut head)?;
            let (id, codec) = (head[0] as usize, head[1]);
            if id >= STREAMS || seen[id] {
                return Err(corrupt("a stream id is unknown or repeated"));
            }
            seen[id] = true;
            let raw_len = read_u32(r)? as usize;
            let stored_len = read_u32(r)? as usize;
            // The layout takes at most 1 + 10 + 6 bytes per span, and a span at least 1 byte.
            let bound = if id == LAYOUT { 11 + 6 * len } else { len };
            if raw_len > bound {
                return Err(corrupt("a stream is longer than its segment"));
            }
            let stream = &mut self.streams[id];
            match codec {
                STORED if stored_len == raw_len => {
                    stream.resize(raw_len, 0);
                    read_exact(r, stream)?;
                }
                ZSTD if stored_len <= zstd::zstd_safe::compress_bound(raw_len) => {
                    self.packed.resize(stored_len, 0);
                    read_exact(r, &mut self.packed)?;
                    stream.reserve(raw_len);
                    let n = self
                        .zstd
                        .decompress_to_buffer(&self.packed[..], stream)
                        .map_err(|e| DecodeError::Corrupt(format!("zstd: {e}")))?;
                    if n != raw_len {
                        return Err(corrupt("a stream decodes to the wrong length"));
                    }
                }
                _ => return Err(corrupt("a stream's codec or length is invalid")),
            }
        }
        self.assemble(len, out)
            .ok_or_else(|| corrupt("the segment's layout does not match its streams"))
    }

    /// Interleaves the decoded streams back into the original bytes, as the layout says.
    fn assemble(&self, len: usize, out: &mut Vec<u8>) -> Option<()> {
        let layout = &self.streams[LAYOUT];
        let flags = *layout.first()?;
        if flags & !FLAG_EXPONENT != 0 {
            return None;
        }
        let mut pos = 1usize;
        let n = get_varint(layout, &mut pos)?;
        out.clear();
        out.reserve(len);
        let mut at = [0usize; STREAMS];
        for _ in 0..n {
            let kind = match *layout.get(pos)? {
                0 => Kind::Raw,
                1 => Kind::W1,
                2 => Kind::W2,
                4 => Kind::W4,
                8 => Kind::W8,
                _ => return None,
            };
            pos += 1;
            let span = usize::try_from(get_varint(layout, &mut pos)?).ok()?;
            if span > len - out.len() || span % kind.width() != 0 {
                return None;
            }
            let w = kind.width();
            let first = first_plane(kind);
            let count = span / w;
            let start = at[first];
            for k in 0..w {
                if self.streams[first + k].len() < start + count || at[first + k] != start {
                    return None;
                }
                at[first + k] += count;
            }
            let planes = &self.streams[first..first + w];
            match kind {
                Kind::Raw | Kind::W1 => out.extend_from_slice(&planes[0][start..start + count]),
                Kind::W4 => {
                    let base = out.len();
                    out.resize(base + span, 0);
                    let exponent = flags & FLAG_EXPONENT != 0;
                    let (p0, p1, p2, p3) = (
                        &planes[0][start..start + count],
                        &planes[1][start..start + count],
                        &planes[2][start..start + count],
                        &planes[3][start..start + count],
                    );
                    let bytes = p0.iter().zip(p1).zip(p2.iter().zip(p3));
                    for (o, ((a, b), (c, d))) in out[base..].chunks_exact_mut(4).zip(bytes) {
                        let y = u32::from_le_bytes([*a, *b, *c, *d]);
                        let x = if exponent {
                            from_exponent_aligned(y)
                        } else {
                            y
                        };
                        o.copy_from_slice(&x.to_le_bytes());
                    }
                }
                _ => {
                    let base = out.len();
                    out.resize(base + span, 0);
                    for (k, plane) in planes.iter().enumerate() {
                        for (i, b) in plane[start..start + count].iter().enumerate() {
                            out[base + i * w + k] = *b;
                        }
                    }
                }
            }
        }
        let used_all = (0..STREAMS).all(|id| id == LAYOUT || at[id] == self.streams[id].len());
        (pos == layout.len() && out.len() == len && used_all).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponent_alignment_is_a_bijection_on_every_sign_exponent_and_edge_mantissa() {
        for s in 0..2u32 {
            for e in 0..256u32 {
                for m in [0, 1, 0x40_0000, 0x7f_ffff, 0x12_3456] {
                    let x = s << 31 | e << 23 | m;
                    let y = exponent_aligned(x);
                    assert_eq!(y >> 24, e);
                    assert_eq!(from_exponent_aligned(y), x);
                }
            }
        }
    }

    #[test]
    fn plan_cuts_at_segment_size_on_element_boundaries_and_keeps_every_byte() {
        let ranges = [
            Range {
                offset: 3,
                len: 40_000_001,
                kind: Kind::W4,
            },
            // Overlaps the first: dropped.
            Range {
                offset: 10,
                len: 8,
                kind: Kind::W8,
            },
        ];
        let len = 40_000_100u64;
        let segs = plan(len, &ranges);
        let total: u64 = segs
            .iter()
            .flat_map(|s| s.iter())
            .map(|s| u64::from(s.len))
            .sum();
        assert_eq!(total, len);
        for s in &segs {
            let n: usize = s.iter().map(|s| s.len as usize).sum();
            assert!(n <= SEGMENT);
            for span in s {
                assert_eq!(span.len as usize % span.kind.width(), 0);
            }
        }
        assert_eq!(
            segs[0][0],
            Span {
                kind: Kind::Raw,
                len: 3
            }
        );
        assert_eq!(segs.len(), 3);
    }

    #[test]
    fn a_segment_of_every_kind_decodes_to_its_exact_bytes() {
        let mut data = Vec::new();
        let mut spans = Vec::new();
        let mut x = 12345u32;
        for (kind, n) in [
            (Kind::Raw, 37),
            (Kind::W1, 300),
            (Kind::W4, 4000),
            (Kind::W2, 1002),
            (Kind::W8, 808),
            (Kind::W4, 12),
            (Kind::Raw, 5),
        ] {
            for _ in 0..n {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                data.push((x >> 16) as u8 & if kind == Kind::W4 { 0x3f } else { 0xff });
            }
            spans.push(Span { kind, len: n });
        }
        let mut enc = Encoder::new(19).unwrap();
        let mut buf = Vec::new();
        enc.encode(&data, &spans, &mut buf).unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut out = Vec::new();
        dec.decode(&mut &buf[..], u64::MAX, &mut out).unwrap();
        assert_eq!(out, data);
    }
}
