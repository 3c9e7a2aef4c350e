pub mod influx;
