//! Verification in tract: load input sets, prepare a model so tract can run it, run it, and
//! compare the outputs of two models.

pub mod compare;
pub mod given;
pub mod inputs;
pub mod metric;
pub mod prepare;
pub mod runner;
pub mod segment;
mod tensor;

pub use compare::{
    compare_outputs, compare_tensors, judge, relative_l2_error, report_from_outputs, verify,
    verify_against, verify_labeled, Comparison, SetReport, VerifyReport,
};
pub use inputs::{
    load_inputs, load_npy, load_npz, load_test_data_set, load_test_data_sets, parse_input_shape,
    parse_input_shapes, random_inputs, read_tensor_proto, tensor_from_proto, InputSet,
};
pub use metric::{Budget, Metric, Worst};
pub use prepare::{prepare, IfDecision, Prepared};
pub use runner::{run, run_each, run_many, run_prepared, Outputs};
pub use segment::{verify_within, Segmented};
