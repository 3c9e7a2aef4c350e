//! Pure evaluation of readings and aggregates against standards: the Air
//! Quality Index (`aqi`). No I/O; time, where it matters, is a parameter.

pub mod aqi;
pub mod targets;
