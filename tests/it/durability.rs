//! Durability with the spool: kill -9 under a steady stream, a long
//! InfluxDB outage under load, a full spool, and a broker restart — each
//! ends with exactly the published readings in InfluxDB, checked per sensor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

const SENSORS: usize = 1000;

fn topic(i: usize) -> String {
    format!("env/d{:02}/site{:03}/air/aq-{i:04}", i % 16, i / 4)
}

/// Reading `j` of sensor `i`: a unique timestamp per sensor and reading.
fn payload(i: usize, j: usize, base: i64) -> String {
    format!(
        "{{\"ts\":{},\"pm25\":{},\"pm10\":{}}}",
        base + j as i64 * 100,
        (i + j) % 500,
        (i * 3 + j) % 900
    )
}

/// Publishes readings `from..to` of every sensor at about `rate` msg/s.
async fn stream(p: &mut Publisher, base: i64, from: usize, to: usize, rate: u64) {
    let start = Instant::now();
    let mut sent = 0u64;
    for j in from..to {
        for i in 0..SENSORS {
            p.publish(&topic(i), payload(i, j, base)).await;
            sent += 1;
            if sent % 100 == 0 {
                let due = Duration::from_micros(sent * 1_000_000 / rate);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Every sensor has exactly `per_sensor` readings, and nothing else is there.
async fn assert_exact(influx: &Influx, per_sensor: usize) {
    let total = (SENSORS * per_sensor) as i64;
    let n = influx
        .wait_count(
            "SELECT count(pm25) FROM air",
            total,
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(n, total, "total readings");
    let series = influx
        .query("SELECT count(pm25) FROM air GROUP BY sensor")
        .await;
    assert_eq!(series.len(), SENSORS);
    for s in &series {
        assert_eq!(
            s["values"][0][1].as_i64(),
            Some(per_sensor as i64),
            "sensor {}",
            s["tags"]["sensor"]
        );
    }
    // Settled: nothing extra arrives later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(influx.scalar("SELECT count(pm25) FROM air").await, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_ten_times_under_a_steady_stream_loses_and_duplicates_nothing() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let lantian = Lantian::start(&Lantian::v1(broker.port, &influx));
    let mut publisher = Publisher::connect(broker.port, "kill9-publisher").await;
    lantian.wait_subscribed().await;
    let lantian = Arc::new(std::sync::Mutex::new(lantian));

    // 300 readings per sensor at 10,000 msg/s: 30 s of stream; the 10
    // kills come 1.0–2.7 s apart, all while it runs.
    let per_sensor = 300;
    let base = now_ms() - 3_600_000;
    let killer = {
        let lantian = lantian.clone();
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(9);
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(rng.u64(1000..2700))).await;
                lantian.lock().unwrap().restart(); // SIGKILL, then start again
            }
        })
    };
    stream(&mut publisher, base, 0, per_sensor, 10_000).await;
    assert!(killer.is_finished(), "all kills fell inside the stream");
    killer.await.unwrap();
    publisher.flush().await;
    assert_exact(&influx, per_sensor).await;
    let logs = lantian.lock().unwrap().logs();
    assert_eq!(
        logs.matches("lantian starting").count(),
        11,
        "10 kills, 11 runs"
    );
    assert!(
        logs.contains("spool: replaying"),
        "a restart replayed the spool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_pushes_back_to_the_broker_and_nothing_is_lost() {
    let broker = Mosquitto::start().await;
    let mut influx = Influx::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n[spool]\ndir = \"{}\"\nmax_bytes = \"1MiB\"\n",
        Lantian::v1(broker.port, &influx),
        dir.path().join("spool").display()
    );
    let lantian = Lantian::start(&config);
    let mut publisher = Publisher::connect(broker.port, "full-publisher").await;
    lantian.wait_subscribed().await;
    influx.proc.kill();
    // ~75 bytes a record: 1 MiB holds ~14,000 messages; publish 40,000.
    let base = now_ms() - 3_600_000;
    stream(&mut publisher, base, 0, 40, 20_000).await;
    publisher.flush().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lantian.logs().contains("spool full") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lantian.logs().contains("spool full: pausing MQTT intake"));
    let spool_bytes: u64 = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        spool_bytes <= 1 << 20,
        "spool within its limit: {spool_bytes}"
    );
    influx.restart().await;
    assert_exact(&influx, 40).await;
    assert!(lantian.logs().contains("MQTT intake resumed"));
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    let mut broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let lantian = Lantian::start(&Lantian::v1(broker.port, &influx));
    let mut publisher = Publisher::connect(broker.port, "restart-publisher").await;
    lantian.wait_subscribed().await;
    let base = now_ms() - 3_600_000;
    stream(&mut publisher, base, 0, 20, 20_000).await;
    publisher.flush().await;
    broker.restart().await;
    let t = Instant::now();
    let deadline = t + Duration::from_secs(30);
    while lantian.logs().matches("connected to MQTT broker").count() < 2
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reconnect = t.elapsed();
    assert_eq!(
        lantian.logs().matches("connected to MQTT broker").count(),
        2
    );
    println!("lantian reconnected {reconnect:?} after the broker came back");
    // The broker kept lantian's session (and with it what was queued for
    // lantian at the restart): without that, this test passes only when
    // lantian happened to have taken everything before the restart.
    let logs = lantian.logs();
    let again = logs
        .lines()
        .find(|l| l.contains("reconnected to MQTT broker"))
        .unwrap_or_default();
    assert!(again.contains("session_present=true"), "{logs}");
    stream(&mut publisher, base, 20, 40, 20_000).await;
    publisher.flush().await;
    assert_exact(&influx, 40).await;
}

/// InfluxDB down for `LANTIAN_OUTAGE_SECS` (default 600) under a steady
/// 2,000 msg/s: nothing lost, the backlog drains faster than it came in,
/// and lantian's memory stays bounded (the backlog is on disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_down_for_ten_minutes_under_load_loses_nothing() {
    let outage: u64 = std::env::var("LANTIAN_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let broker = Mosquitto::start().await;
    let mut influx = Influx::start().await;
    let lantian = Lantian::start(&Lantian::v1(broker.port, &influx));
    let mut publisher = Publisher::connect(broker.port, "outage-publisher").await;
    lantian.wait_subscribed().await;
    let rate = 2_000u64;
    let per_sensor = (outage * rate / SENSORS as u64) as usize;
    let base = now_ms() - 3_600_000;
    influx.proc.kill();
    let t0 = Instant::now();
    stream(&mut publisher, base, 0, per_sensor, rate).await;
    publisher.flush().await;
    let ingest_secs = t0.elapsed().as_secs_f64();
    let pid = lantian.pid();
    let hwm_during = peak_rss_kib(pid);
    influx.restart().await;
    let t1 = Instant::now();
    assert_exact(&influx, per_sensor).await;
    let drain_secs = t1.elapsed().as_secs_f64();
    let n = (per_sensor * SENSORS) as f64;
    println!(
        "outage {outage} s: {n} readings in {ingest_secs:.1} s ({:.0} msg/s), drained in {drain_secs:.1} s ({:.0} msg/s); lantian peak RSS {} MB during the outage, {} MB after",
        n / ingest_secs,
        n / drain_secs,
        hwm_during / 1024,
        peak_rss_kib(pid) / 1024
    );
    // The backlog waited on disk, not in memory.
    assert!(hwm_during < 200 * 1024, "peak RSS {hwm_during} KiB");
    drop(broker);
}

/// Windows open at a kill -9 are restored from their snapshot, and the
/// spool replays what came after it: the hour that straddles the crash
/// still counts all 60 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_windows_survive_kill_9() {
    const MIN: i64 = 60_000;
    const HOUR: i64 = 3_600_000;
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let config = format!(
        "{}\n[windows]\nsnapshot_interval = \"1s\"\nflush_interval = \"200ms\"\n",
        Lantian::v1(broker.port, &influx)
    );
    let mut lantian = Lantian::start(&config);
    let mut publisher = Publisher::connect(broker.port, "windows-publisher").await;
    lantian.wait_subscribed().await;
    let now = now_ms();
    let hour0 = now - now.rem_euclid(HOUR) - 3 * HOUR;
    let publish = async |p: &mut Publisher, minutes: std::ops::Range<i64>| {
        for m in minutes {
            for i in 0..10 {
                let body = format!(
                    "{{\"ts\":{},\"pm25\":{}}}",
                    hour0 + m * MIN,
                    20 + (i * 7 + m) % 40
                );
                p.publish(&format!("env/d{i}/site{i}/air/aq-{i}"), body)
                    .await;
            }
        }
        p.flush().await;
    };
    // Hour 0 and the first 10 minutes of hour 1, then a crash.
    publish(&mut publisher, 0..70).await;
    influx
        .wait_count("SELECT count(pm25) FROM air", 700, Duration::from_secs(30))
        .await;
    // One more message more than a second later, so the spool cursor is
    // saved as current: a restart without the snapshot would then lose
    // minutes 60–69 from the open hour.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    publisher
        .publish(
            "env/dx/sitex/dust/dm-1",
            format!("{{\"ts\":{},\"pm10\":50}}", hour0 + 69 * MIN),
        )
        .await;
    publisher.flush().await;
    influx
        .wait_count("SELECT count(pm10) FROM dust", 1, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // a snapshot after delivery
    lantian.restart(); // SIGKILL
    publish(&mut publisher, 70..125).await;
    let q = format!(
        "SELECT count(pm25_count) FROM air_1h WHERE scope = 'sensor' AND time = {}ms",
        hour0 + HOUR
    );
    assert_eq!(influx.wait_count(&q, 10, Duration::from_secs(30)).await, 10);
    let rows = influx
        .query(&format!(
            "SELECT pm25_count, pm25_valid FROM air_1h WHERE scope = 'sensor' AND time = {}ms",
            hour0 + HOUR
        ))
        .await;
    for v in rows[0]["values"].as_array().unwrap() {
        assert_eq!(v[1], 60, "the hour that straddles the crash: {v}");
        assert_eq!(v[2], true);
    }
    assert!(
        lantian
            .logs()
            .contains("windows restored from their snapshot"),
        "{}",
        lantian.logs()
    );
    drop(broker);
}

/// A byte flipped in a spooled record on disk: the record goes to
/// quarantine as `spool_corrupt`, everything else is delivered, and no one
/// has to delete anything by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_spool_record_is_quarantined_and_the_rest_delivered() {
    let broker = Mosquitto::start().await;
    let mut influx = Influx::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let config = format!(
        "{}\n[spool]\ndir = \"{}\"\n",
        Lantian::v1(broker.port, &influx),
        spool.display()
    );
    let mut lantian = Lantian::start(&config);
    let mut publisher = Publisher::connect(broker.port, "corrupt-publisher").await;
    lantian.wait_subscribed().await;
    // InfluxDB down: 100 readings wait in the spool; then stop lantian.
    influx.proc.kill();
    let base = now_ms() - 3_600_000;
    for j in 0..100 {
        publisher.publish(&topic(7), payload(7, j, base)).await;
    }
    publisher.flush().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    lantian.proc.signal("TERM");
    assert!(lantian.proc.wait_timeout(Duration::from_secs(30)).is_some());
    // Flip one byte in the middle of the first segment's records.
    let seg = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .min()
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    assert!(
        bytes.len() > 5000,
        "the readings are in the spool: {}",
        bytes.len()
    );
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    influx.restart().await;
    lantian.restart();
    let q = "SELECT count(detail) FROM quarantine WHERE reason = 'spool_corrupt'";
    assert_eq!(
        influx.wait_count(q, 1, Duration::from_secs(30)).await,
        1,
        "{}",
        lantian.logs()
    );
    let stored = influx
        .wait_count("SELECT count(pm25) FROM air", 99, Duration::from_secs(30))
        .await;
    assert_eq!(stored, 99, "all but the corrupt record");
    assert!(lantian.logs().contains("spool: corrupt bytes"));
    drop(broker);
}

/// A stage that fails ends the process with a non-zero status and a clear
/// error line, so systemd's `Restart=on-failure` restarts it (a clean exit
/// 0 would leave the daemon down). Here the spool directory is swapped for
/// a plain file under the running writer: its next segment cannot be
/// created. Nothing unsynced was acknowledged, so the broker keeps the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_that_cannot_be_written_ends_the_process_with_an_error() {
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let config = Lantian::v1(broker.port, &influx)
        + &format!(
            "[spool]\ndir = \"{}\"\nsegment_bytes = \"64KiB\"\n",
            spool.display()
        );
    let mut lantian = Lantian::start(&config);
    let mut p = Publisher::connect(broker.port, "spool-fail-publisher").await;
    lantian.wait_subscribed().await;
    let base = now_ms() - 3_600_000;
    for i in 0..10 {
        p.publish(&topic(i), payload(i, 0, base)).await;
    }
    influx
        .wait_count("SELECT count(pm25) FROM air", 10, Duration::from_secs(60))
        .await;
    std::fs::rename(&spool, dir.path().join("spool.gone")).unwrap();
    std::fs::write(&spool, b"not a directory").unwrap();
    // More than a segment's worth: the writer must start a new segment.
    for j in 1..3 {
        for i in 0..SENSORS {
            p.publish(&topic(i), payload(i, j, base)).await;
        }
    }
    let status = lantian
        .proc
        .wait_timeout(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("lantian did not exit\n{}", lantian.logs()));
    let logs = lantian.logs();
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(
        logs.contains("stage failed") && logs.contains("spool-writer"),
        "{logs}"
    );
    assert!(logs.contains("spool write in"), "{logs}");
}

/// A small tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Needs root (CI runs as root); without it the test fails and says so.
    fn mount(path: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test fills a small tmpfs and needs root to mount it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The spool's disk fills (a 1 MiB tmpfs, InfluxDB down): lantian pauses
/// intake (the broker holds the rest), says it is not ready and logs an
/// error, and does not exit; when InfluxDB returns the spool drains, its
/// segments are deleted, space returns, intake resumes, and every reading
/// is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_pauses_intake_and_loses_nothing() {
    let broker = Mosquitto::start().await;
    let mut influx = Influx::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let _disk = Tmpfs::mount(&spool, "1m");
    let config = Lantian::v1(broker.port, &influx)
        + &format!(
            "[spool]\ndir = \"{}\"\nsegment_bytes = \"64KiB\"\n[windows]\nenabled = false\n[alerts]\nenabled = false\n",
            spool.display()
        );
    influx.proc.kill();
    let lantian = Lantian::start(&config);
    let mut p = Publisher::connect(broker.port, "disk-full-publisher").await;
    lantian.wait_subscribed().await;
    let base = now_ms() - 3_600_000;
    // 20 readings of 1,000 sensors: about 2 MB of spool records.
    let readings = 20;
    for j in 0..readings {
        for i in 0..SENSORS {
            p.publish(&topic(i), payload(i, j, base)).await;
        }
    }
    let blocked = async || lantian.metric("lantian_spool_write_blocked").await == Some(1.0);
    let t = Instant::now();
    while !blocked().await {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the spool never said it was blocked\n{}",
            lantian.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, why) = lantian.admin("/readyz").await;
    assert_eq!(code, 503);
    assert!(why.contains("spool: cannot be written"), "{why}");
    assert!(
        lantian.logs().contains("cannot write the spool"),
        "{}",
        lantian.logs()
    );
    let held = lantian
        .metric("lantian_messages_acked_total")
        .await
        .unwrap_or(0.0);
    println!(
        "disk full after {held} acknowledged of {}",
        readings * SENSORS
    );
    assert!(
        held < (readings * SENSORS) as f64,
        "the disk filled before all were taken"
    );

    influx.restart().await;
    p.flush().await;
    let want = (readings * SENSORS) as i64;
    let stored = influx
        .wait_count(
            "SELECT count(pm25) FROM air",
            want,
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(stored, want, "{}", lantian.logs());
    assert_eq!(
        lantian.metric("lantian_spool_write_blocked").await,
        Some(0.0)
    );
    assert!(
        lantian.logs().contains("spool writable again"),
        "{}",
        lantian.logs()
    );
    // Exactly once per sensor and reading.
    let per_sensor = influx
        .query("SELECT count(pm25) FROM air GROUP BY sensor")
        .await;
    assert_eq!(per_sensor.len(), SENSORS);
    for s in per_sensor {
        assert_eq!(s["values"][0][1].as_i64(), Some(readings as i64), "{s}");
    }
}

/// Fills the file system of `file` with it, to the last byte it takes.
fn fill(file: &std::path::Path) {
    use std::io::Write as _;
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
    else {
        return;
    };
    for chunk in [1 << 20, 4096, 1] {
        let bytes = vec![0u8; chunk];
        while f.write_all(&bytes).is_ok() {}
    }
}

/// The chaos run: 300,000 readings at 5,000 msg/s while, in turn, a proxy
/// in front of InfluxDB answers 400 for 30 s, lantian is kill -9'd, the
/// spool's disk (a 48 MiB tmpfs) fills and frees, lantian is kill -9'd
/// again, and the admin port is flooded with 200 idle connections.
/// InfluxDB ends with exactly the published readings, nothing is
/// quarantined, and between the kills the process never exited on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_400_proxy_a_full_disk_an_admin_flood_and_two_kills_lose_nothing() {
    use std::sync::atomic::Ordering::Relaxed;
    let broker = Mosquitto::start().await;
    let influx = Influx::start().await;
    let proxy = FaultProxy::start(influx.port).await;
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let _disk = Tmpfs::mount(&disk, "48m");
    let filler = disk.join("filler");
    let section = format!(
        "api = \"v1\"\nurl = \"{}\"\ndatabase = \"env\"\nretry_initial = \"50ms\"\n\
         request_timeout = \"5s\"",
        proxy.url()
    );
    let config = Lantian::config(broker.port, &section, "")
        + &format!(
            "[spool]\ndir = \"{}\"\nsegment_bytes = \"1MiB\"\n",
            disk.join("spool").display()
        );
    let mut lantian = Lantian::start(&config);
    let publisher = Publisher::connect(broker.port, "chaos-publisher").await;
    lantian.wait_subscribed().await;

    let t0 = Instant::now();
    let say = |what: &str| println!("{:>6.1} s  {what}", t0.elapsed().as_secs_f64());
    let per_sensor = 300;
    let base = now_ms() - 3_600_000;
    let streaming = tokio::spawn(async move {
        let mut publisher = publisher;
        stream(&mut publisher, base, 0, per_sensor, 5_000).await;
        publisher
    });
    let alive = |l: &mut Lantian| {
        let exited = l.proc.child.try_wait().unwrap();
        assert!(exited.is_none(), "lantian exited: {exited:?}\n{}", l.logs());
    };
    let count = |l: &Lantian, line: &str| l.logs().matches(line).count();

    // 1. A gateway in front of InfluxDB answers 400 for 30 s.
    lantian
        .wait_metric(
            "lantian_messages_acked_total",
            5_000.0,
            Duration::from_secs(120),
        )
        .await;
    proxy.set(Fault::Answer400);
    let refused = Instant::now();
    say("the proxy answers 400");
    wait_for(
        "a 400 kept and retried, /readyz 503",
        Duration::from_secs(60),
        async || {
            proxy.met.answered_400.load(Relaxed) >= 1 && lantian.admin("/readyz").await.0 == 503
        },
    )
    .await;
    // The fault's length is the scenario's, not a wait for lantian.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(refused.elapsed())).await;
    proxy.set(Fault::Forward);
    say(&format!(
        "the proxy forwards again ({} requests answered 400)",
        proxy.met.answered_400.load(Relaxed)
    ));
    alive(&mut lantian);

    // 2. kill -9.
    lantian.restart();
    lantian.wait_subscribed().await;
    say("kill -9; subscribed again");

    // 3. The spool's disk fills (kept full until lantian says so), then frees.
    let blocked = count(&lantian, "cannot write the spool");
    wait_for(
        "the spool blocked on a full disk, /readyz 503",
        Duration::from_secs(120),
        async || {
            fill(&filler);
            count(&lantian, "cannot write the spool") > blocked
                && lantian.admin("/readyz").await.1.contains("spool")
        },
    )
    .await;
    say("the spool's disk is full; lantian paused intake");
    std::fs::remove_file(&filler).unwrap();
    let freed = count(&lantian, "spool writable again");
    wait_for(
        "the spool writable again",
        Duration::from_secs(120),
        async || count(&lantian, "spool writable again") > freed,
    )
    .await;
    say("space freed; intake resumed");
    alive(&mut lantian);

    // 4. kill -9 again.
    lantian.restart();
    lantian.wait_subscribed().await;
    say("kill -9; subscribed again");

    // 5. 200 idle connections on the admin port: they are closed after the
    // header timeout, 64 at a time, and the endpoint answers through them.
    // (Past the 64 and the listen backlog the kernel drops the SYNs and the
    // last connects here complete on a retransmission, after ~10 s.)
    let port = lantian.admin_port().await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    say("200 idle connections on the admin port");
    wait_for(
        "the admin endpoint answering through the flood",
        Duration::from_secs(180),
        async || lantian.admin("/metrics").await.0 == 200,
    )
    .await;
    say("the admin endpoint answered");
    alive(&mut lantian);
    drop(idle);

    let publisher = streaming.await.unwrap();
    say("all 300,000 published");
    publisher.flush().await;
    assert_exact(&influx, per_sensor).await;
    say("InfluxDB holds exactly the 300,000 readings");
    alive(&mut lantian);
    assert_eq!(
        influx
            .scalar("SELECT count(payload_bytes) FROM quarantine")
            .await,
        0,
        "nothing quarantined"
    );
    let logs = lantian.logs();
    assert_eq!(logs.matches("lantian starting").count(), 3, "two kills");
    for line in [
        "InfluxDB refused the write; keeping the data",
        "cannot write the spool",
        "spool writable again",
    ] {
        assert!(logs.contains(line), "{line}\n{logs}");
    }
}
