//! CPU cost of the per-message path: decode + validate + encode a line,
//! for a flat JSON air-station message, a SenML pack and a rejected one.
//! (End-to-end throughput against real Mosquitto and InfluxDB is measured
//! by `scripts/bench-e2e.sh`.)

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lantian::config::UnknownFields;
use lantian::decode::{Decoder, Template, TopicMap};
use lantian::row::Row;
use lantian::sink::influx::Lines;
use lantian::validate::Registry;

const NOW: i64 = 1_764_144_000_000;

fn decoder() -> Decoder {
    Decoder {
        topics: TopicMap::new(
            vec![Template::parse("env/{district}/{site}/{kind}/{sensor}").unwrap()],
            ["air", "dust", "voc", "sewage"].map(String::from).to_vec(),
        ),
        registry: Registry::new(&BTreeMap::new(), UnknownFields::Store).unwrap(),
        max_payload_bytes: 65536,
        max_future_ms: 300_000,
        max_age_ms: 7 * 86_400_000,
        hj212: Default::default(),
    }
}

fn bench(c: &mut Criterion) {
    let d = decoder();
    let topic = "env/dongcheng/dongsi/air/aq-0012";
    let cases: [(&str, &[u8]); 3] = [
        (
            "json_air_6_fields",
            br#"{"ts":1764144000000,"pm25":35,"pm10":62,"no2":21,"so2":4,"o3":58,"co":0.7,"units":{"no2":"ppb"}}"#,
        ),
        (
            "senml_2_records",
            br#"[{"bn":"urn:dev:mac:0024befffe804ff1:","bt":1764144000,"bu":"ug/m3","n":"pm25","v":48},{"n":"pm10","v":80}]"#,
        ),
        ("bad_json", br#"{"pm25": 12,"#),
    ];
    let mut g = c.benchmark_group("decode_validate_encode");
    g.throughput(Throughput::Elements(1));
    for (name, payload) in cases {
        let mut lines = Lines::default();
        g.bench_function(name, |b| {
            b.iter(|| {
                lines.clear();
                let decoded = d.decode(black_box(topic), black_box(payload), NOW);
                let rejects = decoded.rejects.len();
                for p in decoded.points {
                    let t = p.time_ms * 1_000_000;
                    lines.push(&Row::Reading(p), t);
                }
                black_box((&lines, rejects));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
