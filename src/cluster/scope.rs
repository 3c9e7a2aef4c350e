//! The city scope across partitions: the city-wide AQI (the mean of the
//! city sites' concentrations), the districts' construction dust (the
//! mean of each district's dust sites) and the city's water metrics
//! (treatment rate, reclaimed-water pace: every plant's volumes) need
//! readings that partitions hold between them. Each partition's lane publishes the
//! stored readings that feed them to the stream `LT_SCOPE` (one message
//! per reading, its deduplication id a hash of it) before handing them to
//! its own windows; one worker — whoever holds the city unit's lease, the
//! unit after the partitions — runs the city lane: that stream, read in
//! order from its checkpoint, into a window engine and an alert engine
//! that compute what a single process computes, and notify only what is
//! city-wide (`scope=city`); the sites' own values come from their
//! partitions.

use std::collections::HashSet;

use async_nats::jetstream;
use tokio::sync::mpsc;
use tracing::error;

use crate::config::ClusterConfig;
use crate::envelope::{Ack, Message, Pos};
use crate::reading::{Coverage, Point};

pub const STREAM: &str = "LT_SCOPE";
pub const SUBJECT: &str = "lt.scope.city";

/// The city unit's number in the leases and checkpoints: the one after
/// the partitions.
pub fn city_unit(partitions: u32) -> u32 {
    partitions
}

/// The scope stream, made if missing.
pub async fn stream(js: &jetstream::Context, c: &ClusterConfig) -> jetstream::stream::Stream {
    super::log_stream(js, c, (STREAM, SUBJECT), 7).await
}

/// Which readings feed the city scope: those of the city sites, those of
/// the dust sites (per-district figures), and those with a flow the water
/// metrics are made of.
#[derive(Clone, Debug)]
pub struct CityFeed {
    sites: HashSet<String>,
}

impl CityFeed {
    pub fn new(city_sites: &[String]) -> Self {
        CityFeed {
            sites: city_sites.iter().cloned().collect(),
        }
    }

    pub fn feeds(&self, p: &Point) -> bool {
        if p.coverage == Coverage::Raw {
            return false;
        }
        let city_site = p
            .tags
            .iter()
            .any(|(k, v)| k == "site" && self.sites.contains(v));
        city_site
            || p.kind == "dust"
            || p.fields.iter().any(|(f, _)| {
                crate::alert::derive::FLOWS.contains(&f.as_str()) || f == "bypass_m3h"
            })
    }
}

/// The deduplication id of a reading: a hash of all of it, so the same
/// reading published again (a partition replayed from its checkpoint) is
/// dropped, and a corrected one is not.
fn dedup_id(body: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, body);
    let hex: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("scope-{hex}")
}

/// Between a partition's pipeline and its windows: publishes the stored
/// readings that feed the city scope (each acknowledged by JetStream, a
/// failed publish sent again), then hands the batch on. What the
/// partition's next checkpoint covers has been published.
pub async fn tee(
    js: jetstream::Context,
    feed: CityFeed,
    mut rx: mpsc::Receiver<(Vec<Point>, Option<Pos>)>,
    tx: mpsc::Sender<(Vec<Point>, Option<Pos>)>,
) {
    while let Some((points, pos)) = rx.recv().await {
        for p in points.iter().filter(|p| feed.feeds(p)) {
            publish(&js, p).await;
        }
        if tx.send((points, pos)).await.is_err() {
            return;
        }
    }
}

async fn publish(js: &jetstream::Context, p: &Point) {
    let body = bytes::Bytes::from(serde_json::to_vec(p).unwrap_or_default());
    let id = dedup_id(&body);
    super::publish_until_acked(js, SUBJECT, &id, body, "a reading for the city scope").await;
}

/// The city lane's input: the scope stream's messages (one reading each)
/// as the window stage takes them, with their stream position.
pub async fn readings(
    mut rx: mpsc::Receiver<Message>,
    tx: mpsc::Sender<(Vec<Point>, Option<Pos>)>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut points = Vec::with_capacity(batch.len());
        let mut last = None;
        for m in batch {
            if let Ack::Spool(pos) = m.ack {
                last = last.max(Some(pos));
            }
            match serde_json::from_slice::<Point>(&m.payload) {
                Ok(p) => points.push(p),
                Err(e) => {
                    error!(error = %e, "a message on the scope stream is not a reading; skipped")
                }
            }
        }
        if tx.send((points, last)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(site: &str, fields: &[&str]) -> Point {
        Point {
            kind: "air".into(),
            tags: vec![("site".into(), site.into())],
            time_ms: 1_767_542_400_000,
            fields: fields.iter().map(|f| (f.to_string(), 1.0)).collect(),
            coverage: Coverage::Kind,
        }
    }

    #[test]
    fn city_sites_dust_sites_and_water_flows_feed_the_city_scope() {
        let feed = CityFeed::new(&["dongsi".into()]);
        assert!(feed.feeds(&point("dongsi", &["pm25"])));
        assert!(!feed.feeds(&point("site7", &["pm25"])));
        let dust = Point {
            kind: "dust".into(),
            ..point("site7", &["pm10"])
        };
        assert!(feed.feeds(&dust));
        assert!(feed.feeds(&point("plant-1", &["inflow_m3h"])));
        assert!(feed.feeds(&point("plant-1", &["bypass_m3h"])));
        let raw = Point {
            coverage: Coverage::Raw,
            ..point("dongsi", &["pm25"])
        };
        assert!(!feed.feeds(&raw));
    }

    #[test]
    fn a_reading_keeps_its_id_and_a_corrected_one_gets_another() {
        let a = serde_json::to_vec(&point("dongsi", &["pm25"])).unwrap();
        let mut corrected = point("dongsi", &["pm25"]);
        corrected.fields[0].1 = 2.0;
        let b = serde_json::to_vec(&corrected).unwrap();
        assert_eq!(dedup_id(&a), dedup_id(&a.clone()));
        assert_ne!(dedup_id(&a), dedup_id(&b));
        let back: Point = serde_json::from_slice(&a).unwrap();
        assert_eq!(back, point("dongsi", &["pm25"]));
    }
}
