//! Input sets for verification: loaded from ONNX `test_data_set_N` folders, `.npy`/`.npz` files,
//! or made up from a seed, and the `--input-shape` specs that size them (tensors are converted by
//! `super::tensor`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::prelude::tract_ndarray::{ArrayD, IxDyn, ShapeBuilder};
use tract_onnx::prelude::{f16, DatumType, Tensor};

pub use super::tensor::{datum_type_of, onnx_type_of, tensor_from_proto};
use super::tensor::{from_vec, tensor_err};
use crate::error::{Error, Result};
use crate::onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use crate::onnx::proto::type_proto::Value as TypeValue;
use crate::onnx::proto::{ModelProto, TensorProto, ValueInfoProto};

/// Largest number of elements a single tensor may declare (2^40); guards allocations on bad files.
pub(super) const MAX_ELEMENTS: u64 = 1 << 40;
/// Largest input set [`random_inputs`] makes, in bytes (2 GiB): tract holds it and each model's
/// activations on top, on machines of a few GiB; a larger `--input-shape` is refused before
/// anything is allocated.
pub const MAX_RANDOM_BYTES: u64 = 2 << 30;

/// One named set of input tensors, fed together to a model.
#[derive(Debug, Clone)]
pub struct InputSet {
    /// Where the set comes from (`test_data_set_0`, `inputs.npz`, `random seed 0`, ...).
    pub label: String,
    /// The tensors, each under the name of the graph input it feeds.
    pub tensors: Vec<(String, Tensor)>,
}

impl InputSet {
    /// A set named `label` holding `tensors`.
    pub fn new(label: impl Into<String>, tensors: Vec<(String, Tensor)>) -> Self {
        InputSet {
            label: label.into(),
            tensors,
        }
    }

    /// The tensor fed to input `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The input names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }

    /// Number of tensors in the set.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the set holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// The graph inputs a caller must feed: declared inputs that no initializer backs.
pub fn model_inputs(model: &ModelProto) -> Vec<&ValueInfoProto> {
    let Some(g) = model.graph.as_ref() else {
        return Vec::new();
    };
    let inits: std::collections::HashSet<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    g.input
        .iter()
        .filter(|i| !inits.contains(i.name.as_deref().unwrap_or("")))
        .collect()
}

/// Declared element type (ONNX data type id) of a graph input, if it is a tensor with one.
pub fn declared_elem_type(vi: &ValueInfoProto) -> Option<i32> {
    match vi.r#type.as_ref()?.value.as_ref()? {
        TypeValue::TensorType(t) => t.elem_type,
        _ => None,
    }
}

/// A declared dimension: a fixed size, a named symbol, or unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclaredDim {
    /// A fixed size.
    Fixed(usize),
    /// A named symbolic size (`batch`, `DynamicDimension.0`, ...).
    Symbol(String),
    /// No size and no name.
    Unknown,
}

/// Declared shape of a graph input, or `None` when the model gives no shape (any rank).
pub fn declared_shape(vi: &ValueInfoProto) -> Option<Vec<DeclaredDim>> {
    let TypeValue::TensorType(t) = vi.r#type.as_ref()?.value.as_ref()? else {
        return None;
    };
    let shape = t.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(DimValue::DimValue(v)) if *v >= 0 => DeclaredDim::Fixed(*v as usize),
                Some(DimValue::DimParam(p)) if !p.is_empty() => DeclaredDim::Symbol(p.clone()),
                _ => DeclaredDim::Unknown,
            })
            .collect(),
    )
}

/// Reads and decodes one `TensorProto` file (`input_0.pb`, `output_0.pb`, ...).
pub fn read_tensor_proto(path: &Path) -> Result<TensorProto> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    TensorProto::decode(bytes::Bytes::from(bytes)).map_err(|e| Error::Tensor {
        name: path.display().to_string(),
        reason: format!("not a valid onnx TensorProto: {e}"),
    })
}

/// Files `prefix_0.pb`, `prefix_1.pb`, ... in `dir`, in order, stopping at the first gap.
pub fn numbered_pb_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    (0..)
        .map(|i| dir.join(format!("{prefix}_{i}.pb")))
        .take_while(|p| p.is_file())
        .collect()
}

/// Loads one ONNX `test_data_set_N` folder: every `input_K.pb`, named after the `TensorProto`'s
/// `name`, else after the model's K-th feedable graph input.
pub fn load_test_data_set(dir: &Path, model: &ModelProto) -> Result<InputSet> {
    let inputs = model_inputs(model);
    let files = numbered_pb_files(dir, "input");
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "`{}` holds no `input_0.pb`",
            dir.display()
        )));
    }
    let mut tensors = Vec::with_capacity(files.len());
    for (k, f) in files.iter().enumerate() {
        let proto = read_tensor_proto(f)?;
        let name = match proto.name.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => inputs
                .get(k)
                .and_then(|vi| vi.name.clone())
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "`{}` is unnamed and the model has no input number {k}",
                        f.display()
                    ))
                })?,
        };
        let t = tensor_from_proto(&proto).map_err(|e| match e {
            Error::Tensor { reason, .. } => Error::Tensor {
                name: f.display().to_string(),
                reason,
            },
            other => other,
        })?;
        tensors.push((name, t));
    }
    let label = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    Ok(InputSet::new(label, tensors))
}

/// Loads `dir` as one test data set if it holds `input_0.pb`, else every `test_data_set_*` folder
/// inside it, sorted by their number.
pub fn load_test_data_sets(dir: &Path, model: &ModelProto) -> Result<Vec<InputSet>> {
    if dir.join("input_0.pb").is_file() {
        return Ok(vec![load_test_data_set(dir, model)?]);
    }
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
    let mut sets: Vec<(u64, String, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix("test_data_set_")?;
            let n = rest.parse::<u64>().unwrap_or(u64::MAX);
            let p = e.path();
            p.is_dir().then_some((n, name, p))
        })
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Err(Error::Usage(format!(
            "`{}` holds neither `input_0.pb` nor `test_data_set_*` folders",
            dir.display()
        )));
    }
    sets.iter()
        .map(|(_, _, p)| load_test_data_set(p, model))
        .collect()
}

fn npy_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Tensor {
        name: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads one npy array (from a file or an npz member) into a tract tensor.
fn npy_to_tensor<R: std::io::Read>(npy: npyz::NpyFile<R>, origin: &Path) -> Result<Tensor> {
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let fortran = npy.order() == npyz::Order::Fortran;
    let npyz::DType::Plain(ts) = npy.dtype() else {
        return Err(npy_err(origin, "structured npy arrays are not supported"));
    };
    let code = format!("{}{}", ts.type_char().to_str(), ts.size_field());
    fn build<T: tract_onnx::prelude::Datum>(
        shape: &[usize],
        fortran: bool,
        v: Vec<T>,
        origin: &Path,
    ) -> Result<Tensor> {
        let a = if fortran {
            ArrayD::from_shape_vec(IxDyn(shape).f(), v)
                .map_err(|e| npy_err(origin, e))?
                .as_standard_layout()
                .into_owned()
        } else {
            ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| npy_err(origin, e))?
        };
        Ok(Tensor::from(a))
    }
    macro_rules! read {
        ($t:ty) => {{
            let v: Vec<$t> = npy.into_vec::<$t>().map_err(|e| npy_err(origin, e))?;
            build(&shape, fortran, v, origin)
        }};
    }
    match code.as_str() {
        "f4" => read!(f32),
        "f8" => read!(f64),
        "i1" => read!(i8),
        "i2" => read!(i16),
        "i4" => read!(i32),
        "i8" => read!(i64),
        "u1" => read!(u8),
        "u2" => read!(u16),
        "u4" => read!(u32),
        "u8" => read!(u64),
        "b1" => read!(bool),
        _ => Err(npy_err(
            origin,
            format!(
                "npy element type `{}` is not supported (use float32/64, int8..64, uint8..64 or bool)",
                ts
            ),
        )),
    }
}

/// Casts `t` to the element type `vi` declares, when it declares one tract knows and the tensor
/// is numeric (numpy saves float64 and int64 by default).
fn cast_to_declared(t: Tensor, vi: Option<&ValueInfoProto>, name: &str) -> Result<Tensor> {
    let Some(want) = vi.and_then(declared_elem_type) else {
        return Ok(t);
    };
    let Ok(want) = datum_type_of(want, name) else {
        return Ok(t);
    };
    if want == t.datum_type() || want == DatumType::String || t.datum_type() == DatumType::String {
        return Ok(t);
    }
    t.cast_to_dt(want)
        .map(|c| c.into_owned())
        .map_err(|e| tensor_err(name, format!("cannot cast to {want:?}: {e}")))
}

/// Loads a `.npy` file as the single input of `model` (cast to its declared element type).
pub fn load_npy(path: &Path, model: &ModelProto) -> Result<InputSet> {
    let inputs = model_inputs(model);
    if inputs.len() != 1 {
        return Err(Error::Usage(format!(
            "`{}` is a single array but the model has {} inputs; use an `.npz` keyed by input name",
            path.display(),
            inputs.len()
        )));
    }
    let name = inputs[0].name.clone().unwrap_or_default();
    let f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(f)).map_err(|e| npy_err(path, e))?;
    let t = cast_to_declared(npy_to_tensor(npy, path)?, Some(inputs[0]), &name)?;
    Ok(InputSet::new(file_label(path), vec![(name, t)]))
}

fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Loads a `.npz` file whose keys are input names (cast to their declared element types).
///
/// Keys that name no input of the model are an error, so are inputs missing from the archive.
pub fn load_npz(path: &Path, model: &ModelProto) -> Result<InputSet> {
    let inputs = model_inputs(model);
    let mut archive = npyz::npz::NpzArchive::open(path).map_err(|e| npy_err(path, e))?;
    let names: Vec<String> = archive.array_names().map(|s| s.to_string()).collect();
    let by_name: HashMap<&str, &ValueInfoProto> = inputs
        .iter()
        .map(|vi| (vi.name.as_deref().unwrap_or(""), *vi))
        .collect();
    let mut tensors = Vec::new();
    for key in &names {
        let Some(vi) = by_name.get(key.as_str()) else {
            return Err(Error::Usage(format!(
                "`{}` holds array `{key}` but the model has no input of that name (inputs: {})",
                path.display(),
                input_list(&inputs)
            )));
        };
        let npy = archive
            .by_name(key)
            .map_err(|e| npy_err(path, e))?
            .ok_or_else(|| npy_err(path, format!("array `{key}` vanished")))?;
        let t = npy_to_tensor(npy, path)?;
        tensors.push((key.clone(), cast_to_declared(t, Some(vi), key)?));
    }
    for vi in &inputs {
        let n = vi.name.as_deref().unwrap_or("");
        if !names.iter().any(|k| k == n) {
            return Err(Error::Usage(format!(
                "`{}` has no array for input `{n}`",
                path.display()
            )));
        }
    }
    // Feed in the model's input order.
    tensors.sort_by_key(|(n, _)| {
        inputs
            .iter()
            .position(|vi| vi.name.as_deref() == Some(n))
            .unwrap_or(usize::MAX)
    });
    Ok(InputSet::new(file_label(path), tensors))
}

fn input_list(inputs: &[&ValueInfoProto]) -> String {
    inputs
        .iter()
        .map(|vi| format!("`{}`", vi.name.as_deref().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Loads input sets from `path`: a `.npy` file, a `.npz` file, a `test_data_set_N` folder, or a
/// folder of `test_data_set_*` folders.
pub fn load_inputs(path: &Path, model: &ModelProto) -> Result<Vec<InputSet>> {
    if path.is_dir() {
        return load_test_data_sets(path, model);
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => Ok(vec![load_npy(path, model)?]),
        Some("npz") => Ok(vec![load_npz(path, model)?]),
        Some("pb") => {
            let proto = read_tensor_proto(path)?;
            let inputs = model_inputs(model);
            let name = match proto.name.clone().filter(|n| !n.is_empty()) {
                Some(n) => n,
                None if inputs.len() == 1 => inputs[0].name.clone().unwrap_or_default(),
                None => {
                    return Err(Error::Usage(format!(
                        "`{}` is an unnamed tensor but the model has {} inputs",
                        path.display(),
                        inputs.len()
                    )))
                }
            };
            Ok(vec![InputSet::new(
                file_label(path),
                vec![(name, tensor_from_proto(&proto)?)],
            )])
        }
        _ => Err(Error::Usage(format!(
            "cannot read inputs from `{}`: expected a `.npy`, `.npz`, `.pb` file or a `test_data_set_N` folder",
            path.display()
        ))),
    }
}

/// Parses an `--input-shape` value, `name=1,3,224,224` (`name=` alone is a scalar).
pub fn parse_input_shape(spec: &str) -> Result<(String, Vec<usize>)> {
    let Some((name, dims)) = spec.rsplit_once('=') else {
        let hint = if spec.contains(':') {
            " (`NAME:DIMS` is the form of the main command's --input-shapes, which writes the shape into the model)"
        } else {
            ""
        };
        return Err(Error::Usage(format!(
            "`--input-shape {spec}`: expected `name=d1,d2,...`{hint}"
        )));
    };
    if name.is_empty() {
        return Err(Error::Usage(format!(
            "`--input-shape {spec}`: the input name is empty"
        )));
    }
    let dims = dims.trim();
    let shape = if dims.is_empty() {
        Vec::new()
    } else {
        dims.split([',', 'x'])
            .map(|d| {
                d.trim().parse::<usize>().map_err(|_| {
                    Error::Usage(format!(
                        "`--input-shape {spec}`: `{d}` is not a dimension (a non-negative integer)"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?
    };
    if shape.contains(&0) {
        return Err(Error::Usage(format!(
            "`--input-shape {spec}`: a dimension of 0 leaves no element to compare"
        )));
    }
    Ok((name.to_string(), shape))
}

/// Parses every `--input-shape` value; an input named twice is refused.
pub fn parse_input_shapes(specs: &[String]) -> Result<Vec<(String, Vec<usize>)>> {
    let mut shapes: Vec<(String, Vec<usize>)> = Vec::with_capacity(specs.len());
    for spec in specs {
        let (name, shape) = parse_input_shape(spec)?;
        if shapes.iter().any(|(n, _)| *n == name) {
            return Err(Error::Usage(format!(
                "`--input-shape {name}=...` is given twice; give each input's shape once"
            )));
        }
        shapes.push((name, shape));
    }
    Ok(shapes)
}

/// `name=d1,d2,...` as `--input-shape` takes it.
fn shape_spec(name: &str, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{name}={}", dims.join(","))
}

/// Checks loaded input sets against `--input-shape` bindings: each named input must be one the
/// model takes, and every set that feeds it must hold a tensor of exactly that shape. A conflict
/// is an error naming the input, the set and both shapes.
pub fn check_input_shapes(
    model: &ModelProto,
    sets: &[InputSet],
    shapes: &[(String, Vec<usize>)],
) -> Result<()> {
    let inputs = model_inputs(model);
    for (name, shape) in shapes {
        if !inputs.iter().any(|vi| vi.name.as_deref() == Some(name)) {
            return Err(Error::Usage(format!(
                "`--input-shape {name}=...`: the model has no input `{name}` (inputs: {})",
                input_list(&inputs)
            )));
        }
        for set in sets {
            if let Some(t) = set.get(name) {
                if t.shape() != shape.as_slice() {
                    return Err(Error::Usage(format!(
                        "`--input-shape {}` conflicts with input `{name}` of `{}`, which has shape {:?}",
                        shape_spec(name, shape),
                        set.label,
                        t.shape()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// SplitMix64: a tiny, stable generator, so a seed gives the same inputs on every platform and
/// version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in 0..n.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Resolves the concrete shape of each feedable input: `shapes` overrides win; a symbolic dim
/// takes the size an override gave the same symbol elsewhere; the first axis, when symbolic or
/// unknown, is the batch and defaults to 1 (and so does its symbol wherever else it appears).
/// Any other dim without a size is an error naming `--input-shape`: a default of 1 there would
/// verify the model on, say, an image one pixel wide.
pub fn resolve_input_shapes(
    model: &ModelProto,
    shapes: &[(String, Vec<usize>)],
) -> Result<Vec<(String, Vec<usize>)>> {
    let inputs = model_inputs(model);
    for (n, _) in shapes {
        if !inputs.iter().any(|vi| vi.name.as_deref() == Some(n)) {
            return Err(Error::Usage(format!(
                "`--input-shape {n}=...`: the model has no input `{n}` (inputs: {})",
                input_list(&inputs)
            )));
        }
    }
    let mut symbols: HashMap<String, usize> = HashMap::new();
    for vi in &inputs {
        let name = vi.name.as_deref().unwrap_or("");
        let Some((_, shape)) = shapes.iter().find(|(n, _)| n == name) else {
            continue;
        };
        if let Some(decl) = declared_shape(vi) {
            if decl.len() != shape.len() {
                return Err(Error::Usage(format!(
                    "`--input-shape {name}=...` has rank {} but input `{name}` has rank {}",
                    shape.len(),
                    decl.len()
                )));
            }
            for (d, &s) in decl.iter().zip(shape) {
                match d {
                    DeclaredDim::Fixed(f) if *f != s => {
                        return Err(Error::Usage(format!(
                            "`--input-shape {name}=...` gives {s} where input `{name}` has fixed size {f}"
                        )))
                    }
                    DeclaredDim::Symbol(sym) => {
                        symbols.entry(sym.clone()).or_insert(s);
                    }
                    _ => {}
                }
            }
        }
    }
    // The batch: a symbol on the first axis of an input not bound above is 1.
    for vi in &inputs {
        if let Some(DeclaredDim::Symbol(sym)) = declared_shape(vi).and_then(|d| d.first().cloned())
        {
            symbols.entry(sym).or_insert(1);
        }
    }
    let mut out = Vec::with_capacity(inputs.len());
    for vi in &inputs {
        let name = vi.name.clone().unwrap_or_default();
        let shape = if let Some((_, s)) = shapes.iter().find(|(n, _)| *n == name) {
            s.clone()
        } else {
            match declared_shape(vi) {
                Some(decl) => {
                    let mut dims = Vec::with_capacity(decl.len());
                    for (axis, d) in decl.iter().enumerate() {
                        dims.push(match d {
                            DeclaredDim::Fixed(f) => *f,
                            DeclaredDim::Symbol(s) if symbols.contains_key(s) => symbols[s],
                            DeclaredDim::Unknown if axis == 0 => 1,
                            DeclaredDim::Symbol(_) | DeclaredDim::Unknown => {
                                return Err(unsized_dim(&name, &decl, axis))
                            }
                        });
                    }
                    dims
                }
                None => {
                    return Err(Error::Usage(format!(
                        "input `{name}` declares no shape: give one with `--input-shape {name}=...`"
                    )))
                }
            }
        };
        out.push((name, shape));
    }
    Ok(out)
}

/// The error for a dim of input `name` (declared `decl`) that nothing gives a size: it names
/// the dim and the flag, with the declared shape as the example to fill in.
fn unsized_dim(name: &str, decl: &[DeclaredDim], axis: usize) -> Error {
    let dim = |d: &DeclaredDim| match d {
        DeclaredDim::Fixed(f) => f.to_string(),
        DeclaredDim::Symbol(s) => s.clone(),
        DeclaredDim::Unknown => "?".into(),
    };
    let example: Vec<String> = decl
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            DeclaredDim::Fixed(_) => dim(d),
            _ if i == 0 => "1".into(),
            _ => "N".into(),
        })
        .collect();
    Error::Usage(format!(
        "input `{name}` has no size for axis {axis} (`{}`) and no input data gives one: give it with `--input-shape {name}={}` or real inputs with `--inputs`",
        dim(&decl[axis]),
        example.join(",")
    ))
}

/// Makes one input set of seeded random values for every feedable input of `model`.
///
/// Shapes come from [`resolve_input_shapes`]. Values respect the declared element type: floats are
/// uniform in [0, 1); bools are fair coin flips; integers are uniform in 0..=1 for inputs whose
/// name contains `mask` (any case) and in 0..=9 otherwise; strings are short lowercase words.
pub fn random_inputs(
    model: &ModelProto,
    shapes: &[(String, Vec<usize>)],
    seed: u64,
) -> Result<InputSet> {
    let resolved = resolve_input_shapes(model, shapes)?;
    let inputs = model_inputs(model);
    let mut total = 0u64;
    for ((name, shape), vi) in resolved.iter().zip(&inputs) {
        let bytes = declared_elem_type(vi)
            .and_then(|e| crate::onnx::dtype::bits(e))
            .map_or(8, |b| b.div_ceil(8).max(1));
        let n = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .and_then(|n| n.checked_mul(bytes));
        total = n.and_then(|n| total.checked_add(n)).unwrap_or(u64::MAX);
        if total > MAX_RANDOM_BYTES {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            return Err(Error::Usage(format!(
                "random inputs at `{name}={}` would need more than {} GiB; give a smaller `--input-shape` or real `--inputs`",
                dims.join(","),
                MAX_RANDOM_BYTES >> 30
            )));
        }
    }
    let mut rng = SplitMix64(seed ^ 0x6f6e_6e78_736c_696d);
    let mut tensors = Vec::with_capacity(resolved.len());
    for ((name, shape), vi) in resolved.into_iter().zip(inputs) {
        let elem = declared_elem_type(vi).ok_or_else(|| {
            Error::Usage(format!(
                "input `{name}` is not a tensor with a declared element type"
            ))
        })?;
        let dt = datum_type_of(elem, &name)?;
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n as u64 <= MAX_ELEMENTS)
            .unwrap_or(usize::MAX);
        if n == usize::MAX {
            return Err(tensor_err(&name, format!("absurd shape {shape:?}")));
        }
        let int_hi: u64 = if name.to_lowercase().contains("mask") {
            2
        } else {
            10
        };
        macro_rules! ints {
            ($t:ty) => {
                from_vec(
                    &name,
                    &shape,
                    (0..n).map(|_| rng.below(int_hi) as $t).collect::<Vec<$t>>(),
                )?
            };
        }
        let t = match dt {
            DatumType::F32 => from_vec(
                &name,
                &shape,
                (0..n).map(|_| rng.next_f64() as f32).collect(),
            )?,
            DatumType::F64 => from_vec(&name, &shape, (0..n).map(|_| rng.next_f64()).collect())?,
            DatumType::F16 => from_vec(
                &name,
                &shape,
                (0..n).map(|_| f16::from_f64(rng.next_f64())).collect(),
            )?,
            DatumType::Bool => {
                from_vec(&name, &shape, (0..n).map(|_| rng.below(2) == 1).collect())?
            }
            DatumType::I8 => ints!(i8),
            DatumType::I16 => ints!(i16),
            DatumType::I32 => ints!(i32),
            DatumType::I64 => ints!(i64),
            DatumType::U8 => ints!(u8),
            DatumType::U16 => ints!(u16),
            DatumType::U32 => ints!(u32),
            DatumType::U64 => ints!(u64),
            DatumType::String => from_vec(
                &name,
                &shape,
                (0..n)
                    .map(|_| {
                        let len = 1 + rng.below(8) as usize;
                        (0..len)
                            .map(|_| (b'a' + rng.below(26) as u8) as char)
                            .collect::<String>()
                    })
                    .collect(),
            )?,
            other => return Err(tensor_err(&name, format!("cannot make random {other:?}"))),
        };
        tensors.push((name, t));
    }
    Ok(InputSet::new(format!("random seed {seed}"), tensors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::tensor_proto::DataType;
    use crate::onnx::proto::{
        tensor_shape_proto, type_proto, GraphProto, TensorShapeProto, TypeProto,
    };

    #[test]
    fn shape_specs() {
        assert_eq!(
            parse_input_shape("x=1,3,224,224").unwrap(),
            ("x".to_string(), vec![1, 3, 224, 224])
        );
        assert_eq!(
            parse_input_shape("sr=").unwrap(),
            ("sr".to_string(), vec![])
        );
        assert!(parse_input_shape("x").is_err());
        assert!(parse_input_shape("x=1,a").is_err());
        assert!(parse_input_shape("x=0,3").is_err());
        assert!(parse_input_shapes(&["x=1".into(), "y=2".into()]).is_ok());
        assert!(parse_input_shapes(&["x=1".into(), "x=2".into()]).is_err());
    }

    fn vi(name: &str, elem: DataType, dims: &[&str]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| tensor_shape_proto::Dimension {
                value: Some(match d.parse::<i64>() {
                    Ok(v) => DimValue::DimValue(v),
                    Err(_) => DimValue::DimParam(d.to_string()),
                }),
                ..Default::default()
            })
            .collect();
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(elem as i32),
                    shape: Some(TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn random_inputs_bind_symbols_and_respect_types() {
        let model = ModelProto {
            graph: Some(GraphProto {
                input: vec![
                    vi("x", DataType::Float, &["batch", "3"]),
                    vi("attention_mask", DataType::Int64, &["batch", "seq"]),
                    vi("ids", DataType::Int32, &["batch"]),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        // `seq` has no size and is not the first axis: an error naming the flag, never a 1.
        let err = random_inputs(&model, &[("x".into(), vec![4, 3])], 7)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("(`seq`)") && err.contains("`--input-shape attention_mask="),
            "{err}"
        );
        let shapes = [
            ("x".to_string(), vec![4, 3]),
            ("attention_mask".to_string(), vec![4, 5]),
        ];
        let set = random_inputs(&model, &shapes, 7).unwrap();
        let x = set.get("x").unwrap();
        assert_eq!(x.shape(), &[4, 3]);
        assert!(x
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .all(|v| (0.0..1.0).contains(v)));
        let m = set.get("attention_mask").unwrap();
        assert_eq!(m.shape(), &[4, 5]);
        assert!(m
            .to_plain_array_view::<i64>()
            .unwrap()
            .iter()
            .all(|v| (0..=1).contains(v)));
        let ids = set.get("ids").unwrap();
        assert_eq!(ids.shape(), &[4], "the batch symbol bound by `x`");
        assert!(ids
            .to_plain_array_view::<i32>()
            .unwrap()
            .iter()
            .all(|v| (0..10).contains(v)));
        // same seed, same values
        let again = random_inputs(&model, &shapes, 7).unwrap();
        assert_eq!(again.get("x"), set.get("x"));
        assert!(random_inputs(&model, &[("x".into(), vec![4, 4])], 7).is_err());
        assert!(random_inputs(&model, &[("nope".into(), vec![1])], 7).is_err());
    }
}
