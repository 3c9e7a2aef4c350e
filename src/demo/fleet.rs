//! A simulated Beijing fleet: the 12 national air-quality stations,
//! construction-site dust monitors, VOC and catering sources, and sewage
//! plants, with daily cycles, a winter pollution episode and sensor noise.
//! Readings are a pure function of (sensor, minute), so a run can be
//! repeated exactly.

use std::f64::consts::PI;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Ambient station; the factor scales its pollution (south is worse).
    Air(f64),
    Dust,
    Voc(&'static str),
    /// Sewage plant; the fraction of inflow it treats.
    Sewage(f64),
}

#[derive(Clone, Debug)]
pub struct Sensor {
    pub district: &'static str,
    pub site: &'static str,
    kind: Kind,
    /// Stable per-sensor seed for noise.
    seed: u64,
}

/// Beijing's 12 national stations (seeds/sites.toml, as CNEMC publishes
/// them), their districts, and how polluted each runs relative to the
/// city (the suburban ones cleaner).
pub const STATIONS: [(&str, &str, f64); 12] = [
    ("dongsi", "dongcheng", 1.05),
    ("tiantan", "dongcheng", 1.08),
    ("guanyuan", "xicheng", 1.02),
    ("wanshouxigong", "xicheng", 1.15),
    ("aotizhongxin", "chaoyang", 0.98),
    ("nongzhanguan", "chaoyang", 1.03),
    ("wanliu", "haidian", 0.92),
    ("dingling", "changping", 0.80),
    ("changpingzhen", "changping", 0.88),
    ("shunyixincheng", "shunyi", 0.95),
    ("huairouzhen", "huairou", 0.82),
    ("gucheng", "shijingshan", 1.00),
];

impl Sensor {
    pub fn topic(&self) -> String {
        match self.kind {
            Kind::Air(_) => format!("env/{}/{}/air/aq1", self.district, self.site),
            Kind::Dust => format!("env/{}/{}/dust/pm1", self.district, self.site),
            Kind::Voc(industry) => {
                format!("env/{}/{}/voc/{industry}/v1", self.district, self.site)
            }
            Kind::Sewage(_) => format!("env/{}/{}/sewage/flow1", self.district, self.site),
        }
    }
}

/// HJ 212 codes of the emission sources' fields, with the units the demo
/// sends them in: the standard's codes where there is one (a34002 PM10,
/// a24088 NMHC, w01018 COD, w00000 the discharged flow, e10101 the inlet
/// flow, …); a34041 and a34000 for catering oil fume and particulate, as
/// field devices send them (HJ 212 names no oil-fume code); and private
/// codes for a plant's reclaimed and bypassed flows (`xr0001`, `xb0001`),
/// as vendors add their own. The demo's devices map them back with
/// `fields`.
pub const HJ212_CODES: &[(&str, &str, &str)] = &[
    ("pm10", "a34002", "ug/m3"),
    ("nmhc", "a24088", "mg/m3"),
    ("tvoc", "a99054", "mg/m3"),
    ("oil_fume", "a34041", "mg/m3"),
    ("pm", "a34000", "mg/m3"),
    ("inflow_m3h", "e10101", "m3/h"),
    ("treated_m3h", "w00000", "m3/h"),
    ("reclaimed_m3h", "xr0001", "m3/h"),
    ("bypass_m3h", "xb0001", "m3/h"),
    ("cod", "w01018", "mg/l"),
    ("bod5", "w01017", "mg/l"),
    ("ss", "w01012", "mg/l"),
    ("tn", "w21001", "mg/l"),
    ("nh3n", "w21003", "mg/l"),
    ("tp", "w21011", "mg/l"),
];

/// The password of the demo's HJ 212 devices.
pub const HJ212_PASSWORD: &str = "123456";

impl Sensor {
    /// An emission source (dust, VOC, catering, sewage): it speaks HJ 212
    /// in the demo.
    pub fn is_emission(&self) -> bool {
        !matches!(self.kind, Kind::Air(_))
    }

    /// Its HJ 212 MN (24 characters, as HJ 212-2017 has them).
    pub fn mn(&self) -> String {
        format!("LTDEMO{:018}", self.seed)
    }

    /// Its HJ 212 system code.
    fn st(&self) -> &'static str {
        match self.kind {
            Kind::Dust => "39",
            Kind::Sewage(_) => "32",
            _ => "31",
        }
    }

    /// Its entry of `[[hj212.devices]]`: tags as its topic gives them,
    /// hourly data aggregated (one packet an hour, as regulators take
    /// them).
    pub fn hj212_device(&self) -> crate::config::Hj212Device {
        let (kind, industry) = match self.kind {
            Kind::Dust => ("dust", None),
            Kind::Voc(industry) => ("voc", Some(industry)),
            Kind::Sewage(_) => ("sewage", None),
            Kind::Air(_) => ("air", None),
        };
        let topic = self.topic();
        let sensor = topic.rsplit('/').next().map(str::to_owned);
        crate::config::Hj212Device {
            mn: self.mn(),
            password: Some(crate::units::Secret::new(HJ212_PASSWORD)),
            password_file: None,
            sm4_key: None,
            sm4_key_file: None,
            district: self.district.into(),
            site: self.site.into(),
            kind: kind.into(),
            sensor,
            tags: industry
                .map(|i| [("industry".to_owned(), i.to_owned())].into())
                .unwrap_or_default(),
            crc: "hj212".into(),
            units: HJ212_CODES
                .iter()
                .map(|(_, c, u)| ((*c).to_owned(), (*u).to_owned()))
                .collect(),
            fields: HJ212_CODES
                .iter()
                .map(|(f, c, _)| ((*c).to_owned(), (*f).to_owned()))
                .collect(),
            aggregate: "hour".into(),
            minute_interval: crate::config::HumanDuration::from_secs(600),
        }
    }
}

pub struct Fleet {
    pub sensors: Vec<Sensor>,
    /// Centre of the pollution episode (epoch ms).
    pub episode_ms: i64,
}

fn hash(a: u64, b: i64) -> f64 {
    // SplitMix64 of (seed, minute) → [0, 1).
    let mut z = a ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn round(v: f64, places: i32) -> f64 {
    let p = 10f64.powi(places);
    (v * p).round() / p
}

impl Fleet {
    /// The fleet, with its pollution episode peaking at `episode_ms`.
    pub fn beijing(episode_ms: i64) -> Fleet {
        let mut sensors = Vec::new();
        for (site, district, f) in STATIONS {
            sensors.push((district, site, Kind::Air(f)));
        }
        for (district, site) in [
            ("chaoyang", "cbd-z15"),
            ("daxing", "airport-east"),
            ("tongzhou", "subcenter-3"),
            ("haidian", "zgc-west"),
            ("fengtai", "lize-7"),
        ] {
            sensors.push((district, site, Kind::Dust));
        }
        for (district, site, industry) in [
            ("fangshan", "yanshan", "petrochemical"),
            ("daxing", "yizhuang-print", "printing"),
            ("chaoyang", "sihui-auto", "auto_repair"),
            ("dongcheng", "guijie-12", "catering"),
            ("haidian", "wudaokou-3", "catering"),
        ] {
            sensors.push((district, site, Kind::Voc(industry)));
        }
        for (district, site, treated) in [
            ("chaoyang", "gaobeidian", 0.985),
            ("haidian", "qinghe", 0.978),
            ("chaoyang", "xiaohongmen", 0.972),
            // Overloaded: part of its inflow bypasses treatment.
            ("fengtai", "huaifang", 0.91),
        ] {
            sensors.push((district, site, Kind::Sewage(treated)));
        }
        Fleet {
            sensors: sensors
                .into_iter()
                .enumerate()
                .map(|(i, (district, site, kind))| Sensor {
                    district,
                    site,
                    kind,
                    seed: 0x5EED_0000 + i as u64,
                })
                .collect(),
            episode_ms,
        }
    }

    /// Episode strength at `t`: 1 outside, up to 3.8 at its peak (a
    /// windless winter inversion, about 10 hours wide), times the weather:
    /// slow swings over days (fronts clearing the air, stagnant spells).
    fn episode(&self, t: i64) -> f64 {
        let x = (t - self.episode_ms) as f64 / (5.0 * HOUR as f64);
        let days = t as f64 / (24.0 * HOUR as f64);
        let bump = (-x * x).exp();
        let swing =
            0.35 * (2.0 * PI * days / 3.3).sin() + 0.2 * (2.0 * PI * days / 1.7 + 1.0).sin();
        // The episode itself is the same whatever the date (the weather
        // fades out around its peak), so the demo always shows it.
        let weather = 1.0 + swing * (1.0 - bump);
        (1.0 + 2.8 * bump) * weather.max(0.4)
    }

    /// The JSON payload of sensor `i` for the minute starting at `t`.
    pub fn payload(&self, i: usize, t: i64) -> String {
        let s = &self.sensors[i];
        let t = t - t.rem_euclid(MIN);
        let minute = t / MIN;
        let noise = |k: u64, spread: f64| 1.0 + (hash(s.seed * 31 + k, minute) - 0.5) * spread;
        // Local (Beijing, UTC+8) hour of day.
        let h = ((t + 8 * HOUR).rem_euclid(24 * HOUR)) as f64 / HOUR as f64;
        // Morning and evening traffic peaks; ozone in the afternoon.
        let traffic = 0.8
            + 0.35 * (-(h - 8.0) * (h - 8.0) / 4.0).exp()
            + 0.45 * (-(h - 19.0) * (h - 19.0) / 6.0).exp();
        let sun = (PI * (h - 6.0) / 14.0).sin().max(0.0);
        let e = self.episode(t);
        let m = Minute {
            t,
            h,
            traffic,
            sun,
            e,
            noise: &noise,
        };
        match s.kind {
            Kind::Air(f) => air(&m, f),
            Kind::Dust => dust(&m),
            Kind::Voc("catering") => catering(&m),
            Kind::Voc(_) => voc(&m),
            Kind::Sewage(treated) => sewage(&m, treated),
        }
    }
}

impl Fleet {
    /// Sensor `i`'s hour starting at `t` as an HJ 212 hourly-data packet
    /// (CN=2061, DataTime the hour's start in Beijing time, asking for an
    /// ACK), with its QN: each value the mean of its 60 minute payloads.
    pub fn hj212_packet(&self, i: usize, t: i64) -> (String, String) {
        let s = &self.sensors[i];
        let t = t - t.rem_euclid(HOUR);
        let mut sums = vec![0.0; HJ212_CODES.len()];
        let mut counts = vec![0u32; HJ212_CODES.len()];
        for m in 0..60 {
            let json: serde_json::Value =
                serde_json::from_str(&self.payload(i, t + m * MIN)).unwrap_or_default();
            for (k, (field, _, _)) in HJ212_CODES.iter().enumerate() {
                if let Some(v) = json.get(*field).and_then(serde_json::Value::as_f64) {
                    sums[k] += v;
                    counts[k] += 1;
                }
            }
        }
        let cp: Vec<String> = HJ212_CODES
            .iter()
            .enumerate()
            .filter(|(k, _)| counts[*k] > 0)
            .map(|(k, (_, code, _))| {
                let v = round(sums[k] / f64::from(counts[k]), 3);
                format!("{code}-Avg={v},{code}-Flag=N")
            })
            .collect();
        let local = chrono::DateTime::from_timestamp_millis(t + 8 * HOUR)
            .unwrap_or_default()
            .format("%Y%m%d%H%M%S")
            .to_string();
        let qn = format!("{local}{:03}", i % 1000);
        let data = format!(
            "QN={qn};ST={};CN=2061;PW={HJ212_PASSWORD};MN={};Flag=5;CP=&&DataTime={local};{}&&",
            s.st(),
            s.mn(),
            cp.join(";")
        );
        (crate::decode::hj212::build(&data), qn)
    }
}

/// One minute of the simulated city, for the payloads.
struct Minute<'a> {
    t: i64,
    /// Local hour of day (fractional).
    h: f64,
    /// Traffic factor (morning and evening peaks).
    traffic: f64,
    /// Sunshine, for ozone.
    sun: f64,
    /// The episode's factor.
    e: f64,
    /// Repeatable noise: (stream, spread) → factor around 1.
    noise: &'a dyn Fn(u64, f64) -> f64,
}

fn air(m: &Minute, f: f64) -> String {
    let t = m.t;
    let pm25 = 45.0 * m.traffic * m.e * f * (m.noise)(1, 0.16);
    let pm10 = pm25 * 1.45 * (m.noise)(2, 0.12) + 12.0;
    let no2 = 32.0 * m.traffic * (0.6 + 0.4 * m.e) * f * (m.noise)(3, 0.2);
    let so2 = 6.0 * (0.7 + 0.3 * m.e) * (m.noise)(4, 0.3);
    let co = 0.55 * m.traffic * (0.5 + 0.5 * m.e) * (m.noise)(5, 0.15);
    let o3 = (18.0 + 95.0 * m.sun / (0.6 + 0.4 * m.e)) * (m.noise)(6, 0.15);
    format!(
        "{{\"ts\":{t},\"pm25\":{},\"pm10\":{},\"so2\":{},\"no2\":{},\"co\":{},\"o3\":{}}}",
        round(pm25, 1),
        round(pm10, 1),
        round(so2, 1),
        round(no2, 1),
        round(co, 2),
        round(o3, 1)
    )
}

/// Work hours raise the dust.
fn dust(m: &Minute) -> String {
    let t = m.t;
    // Work hours raise the dust.
    let work = if (7.0..19.0).contains(&m.h) { 1.6 } else { 0.7 };
    let pm10 = 70.0 * work * (0.5 + 0.5 * m.e) * (m.noise)(1, 0.35);
    format!("{{\"ts\":{t},\"pm10\":{}}}", round(pm10, 1))
}

fn catering(m: &Minute) -> String {
    let t = m.t;
    let meal = 0.3
        + (-(m.h - 12.0) * (m.h - 12.0) / 1.5).exp()
        + 1.2 * (-(m.h - 18.5) * (m.h - 18.5) / 2.0).exp();
    format!(
        "{{\"ts\":{t},\"oil_fume\":{},\"pm\":{},\"nmhc\":{}}}",
        round(0.6 * meal * (m.noise)(1, 0.3), 3),
        round(2.2 * meal * (m.noise)(2, 0.3), 2),
        round(4.0 * meal * (m.noise)(3, 0.3), 2)
    )
}

fn voc(m: &Minute) -> String {
    let t = m.t;
    let shift = if (8.0..20.0).contains(&m.h) { 1.0 } else { 0.5 };
    format!(
        "{{\"ts\":{t},\"tvoc\":{}}}",
        round(18.0 * shift * (m.noise)(1, 0.4), 2)
    )
}

/// Inflow follows water use: low at night, peaks at 9 and 20.
fn sewage(m: &Minute, treated: f64) -> String {
    let t = m.t;
    // Inflow follows water use: low at night, peaks at 9 and 20.
    let use_ = 0.75
        + 0.3 * (-(m.h - 9.0) * (m.h - 9.0) / 5.0).exp()
        + 0.25 * (-(m.h - 20.0) * (m.h - 20.0) / 6.0).exp();
    let inflow = 42_000.0 * use_ * (m.noise)(1, 0.06);
    let tr = inflow * treated;
    format!(
        "{{\"ts\":{t},\"inflow_m3h\":{},\"treated_m3h\":{},\"bypass_m3h\":{},\"reclaimed_m3h\":{},\
         \"cod\":{},\"bod5\":{},\"ss\":{},\"tn\":{},\"nh3n\":{},\"tp\":{}}}",
        round(inflow, 0),
        round(tr, 0),
        round(inflow - tr, 0),
        round(tr * 0.32, 0),
        round(24.0 * (m.noise)(2, 0.2), 1),
        round(4.5 * (m.noise)(3, 0.2), 2),
        round(5.0 * (m.noise)(4, 0.25), 2),
        round(9.5 * (m.noise)(5, 0.15), 2),
        round(1.2 * (m.noise)(6, 0.4), 2),
        round(0.22 * (m.noise)(7, 0.25), 3)
    )
}

#[cfg(test)]
mod tests {
    /// The demo's stations are the registered national stations, in
    /// their districts.
    #[test]
    fn the_stations_are_the_national_ones() {
        for (site, district, _) in super::STATIONS {
            let s = crate::evaluate::sites::find(site).unwrap_or_else(|| panic!("{site}"));
            assert_eq!(s.district, district, "{site}");
        }
    }

    use super::*;

    #[test]
    fn the_fleet_has_the_twelve_stations_and_every_network() {
        let f = Fleet::beijing(0);
        let topics: Vec<String> = f.sensors.iter().map(|s| s.topic()).collect();
        assert_eq!(topics.iter().filter(|t| t.contains("/air/")).count(), 12);
        assert!(topics.contains(&"env/shunyi/shunyixincheng/air/aq1".to_owned()));
        assert!(topics.iter().any(|t| t.contains("/dust/")));
        assert!(topics.contains(&"env/dongcheng/guijie-12/voc/catering/v1".to_owned()));
        assert!(topics.iter().any(|t| t.contains("/sewage/")));
    }

    #[test]
    fn readings_are_repeatable_and_the_episode_raises_pm25() {
        let peak = 1_767_600_000_000;
        let f = Fleet::beijing(peak);
        assert_eq!(f.payload(0, peak), f.payload(0, peak + 30_000));
        let pm25 = |t: i64| -> f64 {
            let v: serde_json::Value = serde_json::from_str(&f.payload(9, t)).unwrap();
            v["pm25"].as_f64().unwrap()
        };
        // Averaged over an hour, the peak is several times a day earlier
        // (the weather changes too).
        let mean = |t0: i64| (0..60).map(|m| pm25(t0 + m * MIN)).sum::<f64>() / 60.0;
        let ratio = mean(peak) / mean(peak - 24 * HOUR);
        assert!((2.0..8.0).contains(&ratio), "{ratio}");
        assert!(
            mean(peak) > 150.5,
            "heavily polluted at the peak: {}",
            mean(peak)
        );
    }
}
