//! Pure evaluation of readings and aggregates against standards: the Air
//! Quality Index (`aqi`), the targets as data (`targets`) and the values
//! they are judged on (`observation`). No I/O; time, where it matters, is a
//! parameter. Imports only the leaf modules.

pub mod aqi;
pub mod observation;
pub mod sites;
pub mod targets;

pub use observation::{DERIVED, Observation, metric_known};
