use super::*;

fn eval(st: Standard, inputs: &[(&str, f64)]) -> Evaluation {
    evaluate(st, inputs).unwrap()
}

fn one(st: Standard, key: &str, c: f64) -> Option<u32> {
    eval(st, &[(key, c)]).iaqi_of(key)
}

const HJ26: Standard = Standard::Hj633_2026;
const HJ12: Standard = Standard::Hj633_2012;
const EPA: Standard = Standard::Epa2024;

#[test]
fn every_hj_breakpoint_gives_its_index_exactly() {
    let index = [0, 50, 100, 150, 200, 300, 400, 500];
    for st in [HJ12, HJ26] {
        for scale in st.scales() {
            let Segments::Continuous(bp) = scale.segments else {
                panic!()
            };
            for (c, i) in bp.iter().zip(index) {
                assert_eq!(
                    one(st, scale.key, *c as f64),
                    Some(i),
                    "{st} {} {c}",
                    scale.key
                );
            }
        }
    }
}

#[test]
fn hj_rounds_up_exactly() {
    // 35.8 on 35–75 → 50 + 50/40·0.8 = 51 exactly (a float gives 51.000…)
    assert_eq!(one(HJ12, "pm25_24h", 35.8), Some(51));
    assert_eq!(one(HJ12, "pm25_24h", 35.81), Some(52));
    assert_eq!(one(HJ12, "pm25_24h", 35.0001), Some(51));
    // 2026 rounds the concentration first: PM2.5 (35–60 → 50–100) 47.3
    // → 47 → 74; 47.5 → 48 → 76 (unrounded, both would give 75).
    assert_eq!(one(HJ26, "pm25_24h", 47.3), Some(74));
    assert_eq!(one(HJ26, "pm25_24h", 47.5), Some(76));
    assert_eq!(one(HJ12, "pm25_24h", 47.3), Some(66));
    // CO to 0.1 mg/m³: 2.04 → 2.0 → 50 exactly; 2.05 → 2.1 → 53.
    assert_eq!(one(HJ26, "co_24h", 2.04), Some(50));
    assert_eq!(one(HJ26, "co_24h", 2.05), Some(53));
    assert_eq!(one(HJ12, "co_24h", 2.04), Some(51));
    // A mean that should be 1.15 but came out of a float sum a hair
    // under it still rounds as 1.15: 1.2 → 12.
    assert_eq!(one(HJ26, "co_1h", 1.1499999999999997), Some(12));
    assert_eq!(one(HJ26, "co_1h", 1.1499), Some(11));
    // The editions differ on PM. PM2.5 100: 2012 (75–115 → 100–150)
    // 100 + 50·25/40 = 131.25 → 132; 2026 (60–115) 100 + 50·40/55 =
    // 136.4 → 137.
    assert_eq!(one(HJ12, "pm25_24h", 100.0), Some(132));
    assert_eq!(one(HJ26, "pm25_24h", 100.0), Some(137));
    // PM10 130 (2026, 120–250): 100 + 50·10/130 = 103.8 → 104
    assert_eq!(one(HJ26, "pm10_24h", 130.0), Some(104));
}

#[test]
fn epa_checks_from_the_standard() {
    assert_eq!(one(EPA, "pm25_24h", 12.0), Some(56));
    assert_eq!(one(EPA, "pm25_24h", 100.0), Some(182));
    assert_eq!(one(EPA, "pm25_24h", 225.5), Some(301));
    // Truncation: 9.09 → 9.0 → 50; 35.49 → 35.4 → 100
    assert_eq!(one(EPA, "pm25_24h", 9.09), Some(50));
    assert_eq!(one(EPA, "pm25_24h", 35.49), Some(100));
    assert_eq!(one(EPA, "pm10_24h", 54.9), Some(50));
    assert_eq!(one(EPA, "o3_8h", 0.0709), Some(100));
    assert_eq!(one(EPA, "co_8h", 4.49), Some(50));
    assert_eq!(one(EPA, "so2_1h", 35.99), Some(50));
    assert_eq!(one(EPA, "no2_1h", 100.0), Some(100));
}

/// EPA SO2: the 1 h value defines the index only up to 200 (304 ppb);
/// 201 and above come from the 24 h mean.
#[test]
fn epa_so2_above_304_ppb_takes_the_24_hour_mean() {
    assert_eq!(one(EPA, "so2_1h", 304.0), Some(200));
    // 400 ppb with no 24 h mean: 200, noted.
    let e = eval(EPA, &[("so2_1h", 400.0)]);
    assert_eq!(e.aqi, Some(200));
    assert!(e.notes[0].contains("so2_24h"), "{:?}", e.notes);
    // With a 24 h mean of 400 ppb: 201 + 99·95/299 = 232.45 → 232.
    let e = eval(EPA, &[("so2_1h", 400.0), ("so2_24h", 400.0)]);
    assert_eq!(e.iaqi_of("so2_24h"), Some(232));
    assert_eq!(e.iaqi_of("so2_1h"), Some(232));
    assert_eq!(e.aqi, Some(232));
    // A 24 h mean under 305 ppb defines no index: the 1 h value's 200.
    let e = eval(EPA, &[("so2_1h", 400.0), ("so2_24h", 120.0)]);
    assert_eq!(e.iaqi_of("so2_24h"), None);
    assert_eq!(e.aqi, Some(200));
}

#[test]
fn epa_ozone_rules() {
    // 1 h below 0.125 ppm: no index, noted.
    let e = eval(EPA, &[("o3_1h", 0.1)]);
    assert_eq!(e.aqi, None);
    assert!(e.notes[0].contains("o3_1h"));
    // 8 h above 0.200: the 1 h value is used.
    let e = eval(EPA, &[("o3_8h", 0.25), ("o3_1h", 0.41)]);
    // 1 h 0.410 on .405–.604 → 301–500: 301 + 199·5/199 = 306
    assert_eq!(e.iaqi_of("o3_8h"), Some(306));
    assert_eq!(e.iaqi_of("o3_1h"), Some(306));
    assert!(e.beyond_index.is_empty());
    let e = eval(EPA, &[("o3_8h", 0.25)]);
    assert_eq!(e.iaqi_of("o3_8h"), None);
    assert_eq!(e.beyond_index, ["o3_8h"]);
}

#[test]
fn so2_1h_above_800() {
    // 2012 and 2026 with the 24 h value: its IAQI.
    for st in [HJ12, HJ26] {
        let e = eval(st, &[("so2_1h", 900.0), ("so2_24h", 200.0)]);
        // so2_24h 200 on 150–475 → 100–150: 100 + 50·50/325 = 107.7 → 108
        assert_eq!(e.iaqi_of("so2_1h"), Some(108), "{st}");
        assert_eq!(e.iaqi_of("so2_24h"), Some(108));
        assert_eq!(e.primary, ["so2_24h", "so2_1h"]);
        assert!(e.beyond_index.is_empty());
    }
    // Without it: 2026 → 200 (unconfirmed, noted); 2012 → beyond index.
    let e = eval(HJ26, &[("so2_1h", 900.0)]);
    assert_eq!(e.aqi, Some(200));
    assert!(e.notes[0].contains("unconfirmed"));
    let e = eval(HJ12, &[("so2_1h", 900.0), ("pm25_24h", 10.0)]);
    assert_eq!(e.iaqi_of("so2_1h"), None);
    assert_eq!(e.beyond_index, ["so2_1h"]);
    assert_eq!(e.aqi, Some(15));
    // exactly 800 is on the scale: 200
    assert_eq!(one(HJ12, "so2_1h", 800.0), Some(200));
}

#[test]
fn o3_8h_above_800() {
    let e = eval(HJ26, &[("o3_8h", 801.0), ("o3_1h", 900.0)]);
    // o3_1h 900 on 800–1000 → 300–400: 350
    assert_eq!(e.iaqi_of("o3_8h"), Some(350));
    assert_eq!(e.aqi, Some(350));
    let e = eval(HJ26, &[("o3_8h", 801.0)]);
    assert_eq!(e.aqi, Some(300));
    let e = eval(HJ12, &[("o3_8h", 801.0)]);
    assert_eq!(e.aqi, None);
    assert_eq!(e.beyond_index, ["o3_8h"]);
}

#[test]
fn beyond_the_top_is_capped_and_flagged() {
    let e = eval(HJ26, &[("pm25_24h", 650.0)]);
    assert_eq!(e.aqi, Some(500));
    assert_eq!(e.beyond_index, ["pm25_24h"]);
    assert_eq!(e.category.unwrap().name, "severely_polluted");
    let e = eval(EPA, &[("pm25_24h", 1000.0)]);
    assert_eq!(e.aqi, Some(500));
    assert_eq!(e.category.unwrap().name, "hazardous");
    // absurd values do not overflow
    assert_eq!(eval(HJ26, &[("co_1h", 1e300)]).aqi, Some(500));
}

#[test]
fn primary_only_above_50_and_all_on_a_tie() {
    let e = eval(HJ26, &[("pm25_24h", 35.0), ("pm10_24h", 50.0)]);
    assert_eq!(e.aqi, Some(50));
    assert!(e.primary.is_empty());
    assert_eq!(e.category.unwrap().name, "excellent");
    // 60 PM2.5 (2026) and 120 PM10 (2026) are both 100
    let e = eval(
        HJ26,
        &[("pm10_24h", 120.0), ("pm25_24h", 60.0), ("no2_1h", 10.0)],
    );
    assert_eq!(e.aqi, Some(100));
    assert_eq!(e.primary, ["pm25_24h", "pm10_24h"]);
    assert_eq!(e.category.unwrap().name, "good");
}

#[test]
fn categories_at_the_edges() {
    let names = |st: Standard| {
        [0, 50, 51, 100, 101, 150, 151, 200, 201, 300, 301, 500].map(|a| st.category(a).level)
    };
    assert_eq!(names(HJ26), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]);
    assert_eq!(names(EPA), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]);
    assert_eq!(HJ26.category(103).color, "#FF7E00");
    assert_eq!(EPA.category(250).name, "very_unhealthy");
}

#[test]
fn bad_input_is_a_clear_error() {
    let err = evaluate(HJ26, &[("pm25_1h", 1.0)]).unwrap_err();
    assert!(err.to_string().contains("pm25_24h pm10_24h"), "{err}");
    assert!(matches!(
        evaluate(EPA, &[("co_24h", 1.0)]),
        Err(Error::UnknownKey { .. })
    ));
    assert!(matches!(
        evaluate(HJ26, &[("co_1h", -1.0)]),
        Err(Error::Negative { .. })
    ));
    assert!(matches!(
        evaluate(HJ26, &[("co_1h", f64::NAN)]),
        Err(Error::NotFinite { .. })
    ));
    assert!(matches!(
        evaluate(HJ26, &[("co_1h", 1.0), ("co_1h", 2.0)]),
        Err(Error::Duplicate { .. })
    ));
}

#[test]
fn missing_keys_are_listed_and_nothing_given_is_no_index() {
    let e = eval(HJ26, &[]);
    assert_eq!(e.aqi, None);
    assert_eq!(e.missing.len(), 10);
    let j = e.to_json();
    assert_eq!(j["aqi"], Value::Null);
    assert_eq!(j["category"], Value::Null);
}

#[test]
fn json_shape() {
    let e = eval(HJ26, &[("pm25_24h", 80.0), ("o3_8h", 120.0)]);
    let j = e.to_json();
    // pm25 80 on 60–115 → 100 + 50·20/55 = 118.18 → 119; o3_8h 120 on
    // 100–160 → 50 + 50·20/60 = 66.7 → 67
    assert_eq!(j["aqi"], 119);
    assert_eq!(j["iaqi"]["pm25_24h"], 119);
    assert_eq!(j["iaqi"]["o3_8h"], 67);
    assert_eq!(j["primary"], json!(["pm25_24h"]));
    assert_eq!(j["category"], "lightly_polluted");
    assert_eq!(j["level"], 3);
    assert_eq!(j["color"], "#FF7E00");
}

#[test]
fn decimal_is_the_typed_number() {
    assert_eq!(
        Decimal::from_f64(35.8),
        Some(Decimal {
            mant: 358,
            scale: 1
        })
    );
    assert_eq!(Decimal::from_f64(0.0), Some(Decimal { mant: 0, scale: 0 }));
    assert_eq!(Decimal::from_f64(0.070).unwrap().truncate(3), 70);
    assert_eq!(Decimal::from_f64(12.0).unwrap().truncate(1), 120);
    assert_eq!(Decimal::from_f64(1e16), None);
}
