//! Input values given on the command line: `--input name=VALUE` (`sr=16000`, `mask=1,0,1`), for
//! the scalar and small inputs a model needs real values for (a sample rate that decides an
//! `If`, a flag, a length). A given value replaces that input in every input set, loaded or
//! random.

use tract_onnx::prelude::tract_ndarray::{ArrayD, IxDyn};
use tract_onnx::prelude::{DatumType, Tensor};

use super::inputs::{datum_type_of, declared_elem_type, declared_shape, model_inputs, DeclaredDim};
use super::InputSet;
use crate::error::{Error, Result};
use crate::onnx::proto::ModelProto;

/// Most values one `--input` may give: it is for scalars and small tensors, larger inputs come
/// from files (`--inputs`).
pub const MAX_GIVEN: usize = 4096;

/// One `--input name=VALUE`: the input's name and its values as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Given {
    /// The graph input.
    pub name: String,
    /// The comma-separated values, as written.
    pub values: Vec<String>,
}

/// Parses the `--input` values `name=v` or `name=v1,v2,...`; an input given twice is refused.
pub fn parse_given(specs: &[String]) -> Result<Vec<Given>> {
    let mut out: Vec<Given> = Vec::with_capacity(specs.len());
    for spec in specs {
        let Some((name, vals)) = spec.split_once('=') else {
            return Err(Error::Usage(format!(
                "`--input {spec}`: expected `name=VALUE` or `name=v1,v2,...`"
            )));
        };
        if name.is_empty() {
            return Err(Error::Usage(format!(
                "`--input {spec}`: the input name is empty"
            )));
        }
        let values: Vec<String> = vals.split(',').map(|v| v.trim().to_string()).collect();
        if values.iter().any(String::is_empty) {
            return Err(Error::Usage(format!("`--input {spec}`: a value is empty")));
        }
        if values.len() > MAX_GIVEN {
            return Err(Error::Usage(format!(
                "`--input {name}=...` gives {} values, more than {MAX_GIVEN}: give large inputs with `--inputs`",
                values.len()
            )));
        }
        if out.iter().any(|g| g.name == name) {
            return Err(Error::Usage(format!(
                "`--input {name}=...` is given twice; give each input's value once"
            )));
        }
        out.push(Given {
            name: name.to_string(),
            values,
        });
    }
    Ok(out)
}

/// The shape of each given input, for making random inputs around them: the `--input-shape`
/// of that input when `shapes` has one, else a scalar for one value where the model declares
/// rank 0 or nothing, `[n]` where it declares rank 1 (or nothing), the declared shape when it is
/// fixed and holds n elements, else an error asking for `--input-shape`.
pub fn given_shapes(
    model: &ModelProto,
    given: &[Given],
    shapes: &[(String, Vec<usize>)],
) -> Result<Vec<(String, Vec<usize>)>> {
    let inputs = model_inputs(model);
    let mut out = Vec::with_capacity(given.len());
    for g in given {
        let Some(vi) = inputs.iter().find(|vi| vi.name.as_deref() == Some(&g.name)) else {
            let names: Vec<String> = inputs
                .iter()
                .map(|vi| format!("`{}`", vi.name.as_deref().unwrap_or("")))
                .collect();
            return Err(Error::Usage(format!(
                "`--input {}=...`: the model has no input `{}` (inputs: {})",
                g.name,
                g.name,
                names.join(", ")
            )));
        };
        let n = g.values.len();
        let shape = if let Some((_, s)) = shapes.iter().find(|(m, _)| *m == g.name) {
            s.clone()
        } else {
            match declared_shape(vi) {
                None if n == 1 => vec![],
                None => vec![n],
                Some(d) if d.is_empty() => vec![],
                Some(d) if d.len() == 1 => vec![n],
                Some(d) => {
                    let fixed: Option<Vec<usize>> = d
                        .iter()
                        .map(|x| match x {
                            DeclaredDim::Fixed(f) => Some(*f),
                            _ => None,
                        })
                        .collect();
                    match fixed {
                        Some(f) if f.iter().product::<usize>() == n => f,
                        _ => {
                            return Err(Error::Usage(format!(
                                "`--input {}=...` gives {n} value{} for an input of rank {}: give its shape with `--input-shape {}=DIMS` too",
                                g.name,
                                if n == 1 { "" } else { "s" },
                                d.len(),
                                g.name
                            )))
                        }
                    }
                }
            }
        };
        let elements: usize = shape.iter().product();
        if elements != n {
            return Err(Error::Usage(format!(
                "`--input {}=...` gives {n} value{} but its shape {shape:?} holds {elements}",
                g.name,
                if n == 1 { "" } else { "s" }
            )));
        }
        out.push((g.name.clone(), shape));
    }
    Ok(out)
}

/// Replaces (or adds) each given input in every set of `sets`, as a tensor of the model's
/// declared element type and the shape [`given_shapes`] gives it.
pub fn apply_given(
    model: &ModelProto,
    sets: &mut [InputSet],
    given: &[Given],
    shapes: &[(String, Vec<usize>)],
) -> Result<()> {
    let resolved = given_shapes(model, given, shapes)?;
    let inputs = model_inputs(model);
    for (g, (_, shape)) in given.iter().zip(resolved) {
        let vi = inputs
            .iter()
            .find(|vi| vi.name.as_deref() == Some(&g.name))
            .ok_or_else(|| Error::Usage(format!("the model has no input `{}`", g.name)))?;
        let elem = declared_elem_type(vi).ok_or_else(|| {
            Error::Usage(format!(
                "input `{}` declares no element type: `--input` cannot tell how to read its value",
                g.name
            ))
        })?;
        let t = tensor_of(&g.name, &g.values, datum_type_of(elem, &g.name)?, &shape)?;
        for set in sets.iter_mut() {
            match set.tensors.iter_mut().find(|(n, _)| *n == g.name) {
                Some((_, old)) => *old = t.clone(),
                None => set.tensors.push((g.name.clone(), t.clone())),
            }
        }
    }
    Ok(())
}

fn parse_each<T: std::str::FromStr>(name: &str, values: &[String], what: &str) -> Result<Vec<T>> {
    values
        .iter()
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                Error::Usage(format!(
                    "`--input {name}=...`: `{v}` is not {what}, the element type of input `{name}`"
                ))
            })
        })
        .collect()
}

fn array<T: tract_onnx::prelude::Datum>(shape: &[usize], v: Vec<T>) -> Result<Tensor> {
    ArrayD::from_shape_vec(IxDyn(shape), v)
        .map(Tensor::from)
        .map_err(|e| Error::Usage(format!("`--input`: {e}")))
}

/// The tensor of `values` read as `dt` at `shape`.
fn tensor_of(name: &str, values: &[String], dt: DatumType, shape: &[usize]) -> Result<Tensor> {
    macro_rules! num {
        ($t:ty, $what:expr) => {
            array(shape, parse_each::<$t>(name, values, $what)?)
        };
    }
    match dt {
        DatumType::F32 => num!(f32, "a float32"),
        DatumType::F64 => num!(f64, "a float64"),
        DatumType::I8 => num!(i8, "an int8"),
        DatumType::I16 => num!(i16, "an int16"),
        DatumType::I32 => num!(i32, "an int32"),
        DatumType::I64 => num!(i64, "an int64"),
        DatumType::U8 => num!(u8, "a uint8"),
        DatumType::U16 => num!(u16, "a uint16"),
        DatumType::U32 => num!(u32, "a uint32"),
        DatumType::U64 => num!(u64, "a uint64"),
        DatumType::Bool => {
            let v = values
                .iter()
                .map(|v| match v.as_str() {
                    "1" | "true" | "True" => Ok(true),
                    "0" | "false" | "False" => Ok(false),
                    _ => Err(Error::Usage(format!(
                        "`--input {name}=...`: `{v}` is not a bool (true, false, 1 or 0)"
                    ))),
                })
                .collect::<Result<Vec<bool>>>()?;
            array(shape, v)
        }
        DatumType::String => array(shape, values.to_vec()),
        other => Err(Error::Usage(format!(
            "`--input {name}=...`: values of type {other:?} cannot be given on the command line; use `--inputs`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused() {
        let g = parse_given(&["sr=16000".into(), "m=1, 0,1".into()]).unwrap();
        assert_eq!(g[0].values, vec!["16000"]);
        assert_eq!(g[1].values, vec!["1", "0", "1"]);
        for bad in ["sr", "=3", "sr=", "sr=1,,2"] {
            assert!(parse_given(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(parse_given(&["a=1".into(), "a=2".into()]).is_err());
    }

    #[test]
    fn values_are_read_as_the_declared_type() {
        let t = tensor_of("sr", &["16000".into()], DatumType::I64, &[]).unwrap();
        let v = t.to_plain_array_view::<i64>().unwrap();
        assert_eq!(
            (v.ndim(), v.iter().copied().collect::<Vec<_>>()),
            (0, vec![16000])
        );
        assert!(tensor_of("sr", &["1.5".into()], DatumType::I64, &[]).is_err());
        let t = tensor_of("x", &["0.5".into(), "2".into()], DatumType::F32, &[2]).unwrap();
        let v = t.to_plain_array_view::<f32>().unwrap();
        assert_eq!(v.iter().copied().collect::<Vec<_>>(), vec![0.5, 2.0]);
    }
}
