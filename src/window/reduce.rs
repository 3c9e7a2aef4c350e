//! One micro-batch of readings → base-window partials, with polars.
//!
//! The batch is a DataFrame `(key, t, v)`: `key` packs the series and
//! field ids, `t` is the event time. `group_by_dynamic` on `t` by `key`
//! gives tumbling base windows (left-closed, labelled by their start) with
//! sum, count, min and max. Runs on a blocking thread.

use polars::prelude::*;

use super::partial::Partial;

/// Readings of one micro-batch, column-wise.
#[derive(Debug, Default)]
pub struct Rows {
    /// `series << 32 | field`.
    pub key: Vec<u64>,
    /// Event time, ms since the epoch.
    pub time_ms: Vec<i64>,
    pub value: Vec<f64>,
}

impl Rows {
    pub fn push(&mut self, series: u32, field: u32, time_ms: i64, value: f64) {
        self.key.push(u64::from(series) << 32 | u64::from(field));
        self.time_ms.push(time_ms);
        self.value.push(value);
    }
    pub fn len(&self) -> usize {
        self.key.len()
    }
    pub fn is_empty(&self) -> bool {
        self.key.is_empty()
    }
}

/// One base window's partial aggregate for one series and field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BasePartial {
    pub series: u32,
    pub field: u32,
    pub start_ms: i64,
    pub partial: Partial,
}

/// Runs one tiny reduction, so polars creates its global thread pools
/// and async runtime (an epoll and an eventfd) now. Created lazily by the
/// first real batch instead, they panicked inside polars when that batch
/// met a process out of file descriptors (EMFILE), and the window stage
/// failed with it.
pub fn warm_up() -> PolarsResult<()> {
    let mut rows = Rows::default();
    rows.push(0, 0, 0, 1.0);
    rows.push(0, 0, 1, 2.0);
    reduce(rows, 60_000).map(drop)
}

/// Reduces `rows` to base windows of `base_ms`, aligned to the epoch.
pub fn reduce(rows: Rows, base_ms: i64) -> PolarsResult<Vec<BasePartial>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let df = DataFrame::new_infer_height(vec![
        Column::new("key".into(), rows.key),
        Column::new("t".into(), rows.time_ms)
            .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))?,
        Column::new("v".into(), rows.value),
    ])?;
    let every = Duration::parse(&format!("{base_ms}ms"));
    let out = df
        .lazy()
        .sort(["key", "t"], SortMultipleOptions::default())
        .group_by_dynamic(
            col("t"),
            [col("key")],
            DynamicGroupOptions {
                every,
                period: every,
                offset: Duration::parse("0ms"),
                label: Label::Left,
                include_boundaries: false,
                closed_window: ClosedWindow::Left,
                start_by: StartBy::WindowBound,
                ..Default::default()
            },
        )
        .agg([
            col("v").sum().alias("sum"),
            col("v").count().alias("n"),
            col("v").min().alias("min"),
            col("v").max().alias("max"),
        ])
        .collect()?;

    let key = out.column("key")?.u64()?;
    let start = out.column("t")?.cast(&DataType::Int64)?;
    let start = start.i64()?;
    let sum = out.column("sum")?.f64()?;
    let n = out.column("n")?.cast(&DataType::UInt64)?;
    let n = n.u64()?;
    let min = out.column("min")?.f64()?;
    let max = out.column("max")?.f64()?;
    let mut result = Vec::with_capacity(out.height());
    for i in 0..out.height() {
        let (Some(k), Some(s), Some(count)) = (key.get(i), start.get(i), n.get(i)) else {
            continue;
        };
        if count == 0 {
            continue;
        }
        result.push(BasePartial {
            series: (k >> 32) as u32,
            field: k as u32,
            start_ms: s,
            partial: Partial {
                sum: sum.get(i).unwrap_or(0.0),
                count,
                min: min.get(i).unwrap_or(f64::NAN),
                max: max.get(i).unwrap_or(f64::NAN),
            },
        });
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_minutes_per_key() {
        let mut rows = Rows::default();
        // series 1 field 2: two readings in minute 0, one in minute 1;
        // series 3 field 0: one reading in minute 0. Out of order on purpose.
        rows.push(1, 2, 61_000, 4.0);
        rows.push(1, 2, 1_000, 1.0);
        rows.push(3, 0, 59_999, 7.0);
        rows.push(1, 2, 59_000, 3.0);
        let mut out = reduce(rows, 60_000).unwrap();
        out.sort_by_key(|b| (b.series, b.field, b.start_ms));
        assert_eq!(
            out,
            vec![
                BasePartial {
                    series: 1,
                    field: 2,
                    start_ms: 0,
                    partial: Partial {
                        sum: 4.0,
                        count: 2,
                        min: 1.0,
                        max: 3.0
                    }
                },
                BasePartial {
                    series: 1,
                    field: 2,
                    start_ms: 60_000,
                    partial: Partial::of(4.0)
                },
                BasePartial {
                    series: 3,
                    field: 0,
                    start_ms: 0,
                    partial: Partial::of(7.0)
                },
            ]
        );
    }

    #[test]
    fn windows_align_to_the_epoch_not_the_first_reading() {
        let mut rows = Rows::default();
        rows.push(0, 0, 1_764_144_030_000, 1.0); // 30 s into a minute
        rows.push(0, 0, 1_764_144_089_000, 2.0); // next minute
        let out = reduce(rows, 60_000).unwrap();
        let starts: Vec<i64> = out.iter().map(|b| b.start_ms).collect();
        assert_eq!(starts, [1_764_144_000_000, 1_764_144_060_000]);
    }
}
