//! Autoscaling: the Azure Batch formula language, the samples it reads, and the pool's target.

mod formula;

pub use formula::{Evaluation, Formula, FormulaError, Inputs, Value};
