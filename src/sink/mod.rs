pub mod archive;
pub mod influx;
