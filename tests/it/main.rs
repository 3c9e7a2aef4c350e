//! Integration tests against real Mosquitto, InfluxDB 1.x and
//! VictoriaMetrics processes and the real `lantian` binary. One test crate
//! (one link of the binary); `scripts/test.sh` installs the services.

mod alerts;
mod aqi_cli;
mod aqi_ref;
mod cli;
mod clock;
mod cluster;
mod conformance;
mod demo;
mod deploy;
mod durability;
mod harness;
mod hj212;
mod ingest;
mod ops;
mod outage;
mod package;
mod report;
mod windows;
