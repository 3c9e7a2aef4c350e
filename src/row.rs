//! Rows: what every stage hands to the sinks. A stage says what to store
//! (measurement, tags, fields, time); the sinks decide how (`sink::Sinks`
//! encodes each row once as line protocol for InfluxDB and once as columns
//! for the Parquet archive).
//!
//! Imports nothing of the crate but `reading` (the raw reading is a row as
//! it comes out of validation, moved in and out without copying).

use crate::reading::{Point, Reason};

/// A field value of a computed row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    F(f64),
    I(i64),
    B(bool),
    S(String),
}

impl Value {
    /// At most the bytes its line-protocol text takes (before escaping).
    fn size(&self) -> usize {
        match self {
            Value::F(_) => 24,
            Value::I(_) => 21,
            Value::B(_) => 5,
            Value::S(s) => s.len() + 2,
        }
    }
}

/// A computed point: window aggregates, AQI, alert notices.
#[derive(Clone, Debug, PartialEq)]
pub struct Derived {
    pub measurement: String,
    /// Sorted by key.
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, Value)>,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
}

impl Derived {
    /// A row of `measurement` at `time_ms`; the tags are sorted here.
    pub fn new(
        measurement: impl Into<String>,
        tags: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
        fields: Vec<(String, Value)>,
        time_ms: i64,
    ) -> Self {
        let mut tags: Vec<(String, String)> = tags
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        tags.sort_unstable();
        Derived {
            measurement: measurement.into(),
            tags,
            fields,
            time_ms,
        }
    }
}

/// Input set aside, and why. Unless it carries a time of its own, the
/// sinks stamp it with their quarantine clock (strictly increasing, so two
/// records never overwrite each other).
#[derive(Clone, Debug, PartialEq)]
pub struct Quarantined {
    pub reason: Reason,
    pub detail: String,
    pub topic: String,
    /// Leading bytes of the payload.
    pub sample: Vec<u8>,
    /// Full payload length.
    pub payload_bytes: usize,
    /// Its time (ns), when it must be the same each time the message is
    /// handled (a cluster partition replayed from its checkpoint: the
    /// record overwrites itself).
    pub time_ns: Option<i64>,
}

/// One row for the sinks.
#[derive(Clone, Debug, PartialEq)]
pub enum Row {
    /// A validated reading: the raw series.
    Reading(Point),
    Derived(Derived),
    Quarantined(Quarantined),
}

impl Row {
    /// At most about the bytes of its line protocol (escaping aside): how
    /// batches are kept within `influxdb.batch_max_bytes` before encoding.
    pub fn size(&self) -> usize {
        let tags = |t: &[(String, String)]| -> usize {
            t.iter().map(|(k, v)| k.len() + v.len() + 2).sum()
        };
        match self {
            Row::Reading(p) => {
                let fields: usize = p.fields.iter().map(|(k, _)| k.len() + 25).sum();
                p.kind.len() + tags(&p.tags) + fields + 21
            }
            Row::Derived(d) => {
                let fields: usize = d.fields.iter().map(|(k, v)| k.len() + 1 + v.size()).sum();
                d.measurement.len() + tags(&d.tags) + fields + 21
            }
            Row::Quarantined(q) => {
                q.detail.len() + q.topic.len() + 2 * q.sample.len() + q.reason.as_str().len() + 96
            }
        }
    }

    /// The measurement the row is stored in.
    pub fn measurement(&self) -> &str {
        match self {
            Row::Reading(p) => &p.kind,
            Row::Derived(d) => &d.measurement,
            Row::Quarantined(_) => "quarantine",
        }
    }
}

/// Rows being collected for one write, with their estimated size.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    rows: Vec<Row>,
    size: usize,
}

impl Rows {
    pub fn push(&mut self, row: Row) {
        self.size += row.size();
        self.rows.push(row);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Estimated bytes of line protocol (see [`Row::size`]).
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn as_slice(&self) -> &[Row] {
        &self.rows
    }

    /// Empties the rows, handing them out in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Row> {
        self.size = 0;
        self.rows.drain(..)
    }
}

impl Extend<Row> for Rows {
    fn extend<I: IntoIterator<Item = Row>>(&mut self, iter: I) {
        for row in iter {
            self.push(row);
        }
    }
}
