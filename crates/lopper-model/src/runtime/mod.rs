//! The sparse runtime: [`plan`] picks a format and kernel per layer by measurement, [`exec`]
//! runs a model under a plan with preallocated buffers, [`cache`] keeps measured plans next to
//! the model file, [`ops`] holds the non-matmul ops, [`general`] those only imported graphs use.

mod buf;
pub mod cache;
pub mod exec;
pub mod general;
mod matmul;
pub mod ops;
pub mod plan;
pub mod pools;

pub use exec::Executor;
pub use plan::{make_plan, plan_cached, Plan, PlanMode};
