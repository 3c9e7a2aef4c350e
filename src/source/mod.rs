pub mod hj212;
pub mod mqtt;
