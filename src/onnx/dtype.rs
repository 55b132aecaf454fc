//! ONNX element types: names and storage sizes.

use super::proto::tensor_proto::DataType;

/// Bits per element of an ONNX data type, or `None` for strings and unknown ids.
pub fn bits(data_type: i32) -> Option<u64> {
    let dt = DataType::try_from(data_type).ok()?;
    use DataType::*;
    Some(match dt {
        Float | Int32 | Uint32 => 32,
        Uint8 | Int8 | Bool => 8,
        Uint16 | Int16 | Float16 | Bfloat16 => 16,
        Int64 | Uint64 | Double | Complex64 => 64,
        Complex128 => 128,
        Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz | Float8e8m0 => 8,
        Uint4 | Int4 | Float4e2m1 => 4,
        Uint2 | Int2 => 2,
        String | Undefined => return None,
    })
}

/// Lowercase name of an ONNX data type (`float32`, `int64`, ...), or `dtype(N)` for unknown ids.
pub fn name(data_type: i32) -> String {
    let Ok(dt) = DataType::try_from(data_type) else {
        return format!("dtype({data_type})");
    };
    use DataType::*;
    match dt {
        Undefined => "undefined",
        Float => "float32",
        Uint8 => "uint8",
        Int8 => "int8",
        Uint16 => "uint16",
        Int16 => "int16",
        Int32 => "int32",
        Int64 => "int64",
        String => "string",
        Bool => "bool",
        Float16 => "float16",
        Double => "float64",
        Uint32 => "uint32",
        Uint64 => "uint64",
        Complex64 => "complex64",
        Complex128 => "complex128",
        Bfloat16 => "bfloat16",
        Float8e4m3fn => "float8e4m3fn",
        Float8e4m3fnuz => "float8e4m3fnuz",
        Float8e5m2 => "float8e5m2",
        Float8e5m2fnuz => "float8e5m2fnuz",
        Uint4 => "uint4",
        Int4 => "int4",
        Float4e2m1 => "float4e2m1",
        Float8e8m0 => "float8e8m0",
        Uint2 => "uint2",
        Int2 => "int2",
    }
    .to_string()
}

/// Number of elements for `dims`, or `None` if a dim is negative or the product overflows.
pub fn numel(dims: &[i64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| {
        if d < 0 {
            None
        } else {
            acc.checked_mul(d as u64)
        }
    })
}

/// Bytes needed to store `dims` elements of `data_type` packed (sub-byte types round up), or
/// `None` for strings, unknown types, negative dims or overflow.
pub fn byte_len(data_type: i32, dims: &[i64]) -> Option<u64> {
    let n = numel(dims)?;
    let b = bits(data_type)?;
    n.checked_mul(b).map(|bits| bits.div_ceil(8))
}

/// The IEEE half-precision bits nearest to `x` (round to nearest, ties to even; subnormals,
/// infinities and NaN kept), as ONNX stores `FLOAT16`.
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let mant = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 31 {
        return sign | 0x7c00;
    }
    let (m, shift) = if e <= 0 {
        (mant | 0x80_0000, (14 - e) as u32)
    } else {
        (mant, 13u32)
    };
    if shift > 24 {
        return sign;
    }
    let mut h = m >> shift;
    let rem = m & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    if rem > half || (rem == half && h & 1 == 1) {
        h += 1;
    }
    if e > 0 {
        h += (e as u32) << 10;
    }
    sign | h as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_rounding_matches_the_known_bit_patterns() {
        let cases: &[(f32, u16)] = &[
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),
            (65520.0, 0x7c00),
            (6.103_515_6e-5, 0x0400),
            (5.960_464_5e-8, 0x0001),
            (1.0 + 1.0 / 2048.0, 0x3c00),
            (1.0 + 3.0 / 2048.0, 0x3c02),
            (0.1, 0x2e66),
            (0.0, 0x0000),
        ];
        for (x, want) in cases {
            assert_eq!(f32_to_f16(*x), *want, "{x}");
        }
        assert_eq!(cases.len(), 10);
    }
}
