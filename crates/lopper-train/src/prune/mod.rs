//! Pruning during training: masks keyed by parameter path, the criteria that choose them and
//! the schedules that say when and how much.

pub mod dynamic;
pub mod masks;
pub mod regrow_state;
pub mod schedule;
pub mod select;

pub use masks::{LayerInfo, Masks};
pub use schedule::Schedule;
pub use select::{Allocation, Criterion, PrunePlan};
