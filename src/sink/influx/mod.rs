//! The InfluxDB sink: line protocol encoding and the HTTP writer.

pub mod line;
pub mod writer;

pub use writer::{Lines, Outcome, Writer};
