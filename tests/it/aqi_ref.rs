//! An independent reference for the AQI, written from HJ 633 and the EPA's AQI
//! for the tests (not shared with the crate). Inputs are integers in
//! units of 10^-d (d = DECIMALS), so every step is exact.

use std::collections::BTreeMap;

/// Input precision of HJ values: tenths.
pub const HJ_DECIMALS: u32 = 1;

const HJ_IDX: [i64; 8] = [0, 50, 100, 150, 200, 300, 400, 500];

/// (key, breakpoints) per HJ 633 edition.
pub fn hj_table(edition: u32) -> Vec<(&'static str, Vec<i64>)> {
    let (pm25, pm10) = if edition == 2026 {
        (
            vec![0, 35, 60, 115, 150, 250, 350, 500],
            vec![0, 50, 120, 250, 350, 420, 500, 600],
        )
    } else {
        (
            vec![0, 35, 75, 115, 150, 250, 350, 500],
            vec![0, 50, 150, 250, 350, 420, 500, 600],
        )
    };
    vec![
        ("pm25_24h", pm25),
        ("pm10_24h", pm10),
        ("so2_24h", vec![0, 50, 150, 475, 800, 1600, 2100, 2620]),
        ("so2_1h", vec![0, 150, 500, 650, 800]),
        ("no2_24h", vec![0, 40, 80, 180, 280, 565, 750, 940]),
        ("no2_1h", vec![0, 100, 200, 700, 1200, 2340, 3090, 3840]),
        ("co_24h", vec![0, 2, 4, 14, 24, 36, 48, 60]),
        ("co_1h", vec![0, 5, 10, 35, 60, 90, 120, 150]),
        ("o3_1h", vec![0, 160, 200, 300, 400, 800, 1000, 1200]),
        ("o3_8h", vec![0, 100, 160, 215, 265, 800]),
    ]
}

/// IAQI for `c` tenths on `bp`; None above the top.
fn hj_sub(bp: &[i64], c: i64) -> Option<i64> {
    let s = 10i64.pow(HJ_DECIMALS);
    let seg = (1..bp.len()).find(|&i| c <= bp[i] * s)?;
    let (clo, chi) = (bp[seg - 1] * s, bp[seg] * s);
    let (ilo, ihi) = (HJ_IDX[seg - 1], HJ_IDX[seg]);
    let num = (ihi - ilo) * (c - clo);
    let den = chi - clo;
    Some(ilo + (num + den - 1) / den)
}

/// Reference result: aqi, iaqi, primary.
#[derive(Debug, PartialEq)]
pub struct Ref {
    pub aqi: Option<i64>,
    pub iaqi: BTreeMap<String, i64>,
    pub primary: Vec<String>,
}

fn finish(iaqi: BTreeMap<String, i64>, order: &[&str]) -> Ref {
    let aqi = iaqi.values().copied().max();
    let primary = match aqi {
        Some(a) if a > 50 => order
            .iter()
            .filter(|k| iaqi.get(**k) == Some(&a))
            .map(|k| k.to_string())
            .collect(),
        _ => Vec::new(),
    };
    Ref { aqi, iaqi, primary }
}

/// HJ 633 with inputs in tenths. 2026 rounds each concentration first
/// (half up): to an integer, CO to 0.1 mg/m³.
pub fn hj(edition: u32, inputs: &BTreeMap<&str, i64>) -> Ref {
    let table = hj_table(edition);
    let inputs: BTreeMap<&str, i64> = inputs
        .iter()
        .map(|(&k, &c)| {
            let rounded = (c + 5) / 10 * 10;
            let c = if edition == 2026 && !k.starts_with("co_") {
                rounded
            } else {
                c
            };
            (k, c)
        })
        .collect();
    let mut iaqi = BTreeMap::new();
    for (key, bp) in &table {
        let Some(&c) = inputs.get(key) else { continue };
        let value = match hj_sub(bp, c) {
            Some(v) => Some(v),
            None => {
                let sub = match *key {
                    "so2_1h" => Some(("so2_24h", 200)),
                    "o3_8h" => Some(("o3_1h", 300)),
                    _ => None,
                };
                match sub {
                    None => Some(500),
                    Some((other, fixed)) => {
                        let other_bp = &table.iter().find(|t| t.0 == other).unwrap().1;
                        match inputs.get(other) {
                            Some(&oc) => Some(hj_sub(other_bp, oc).unwrap_or(500)),
                            None if edition == 2026 => Some(fixed),
                            None => None,
                        }
                    }
                }
            }
        };
        if let Some(v) = value {
            iaqi.insert(key.to_string(), v);
        }
    }
    let order: Vec<&str> = table.iter().map(|t| t.0).collect();
    finish(iaqi, &order)
}

/// EPA: (key, truncation decimals, bands (c_lo, c_hi, i_lo, i_hi) in
/// units of 10^-decimals).
/// `(c_lo, c_hi, i_lo, i_hi)`.
pub type Band = (i64, i64, i64, i64);

pub fn epa_table() -> Vec<(&'static str, u32, Vec<Band>)> {
    let i = [
        (0, 50),
        (51, 100),
        (101, 150),
        (151, 200),
        (201, 300),
        (301, 500),
    ];
    let band = |c: &[(i64, i64)], from: usize| -> Vec<Band> {
        c.iter()
            .zip(&i[from..])
            .map(|(c, i)| (c.0, c.1, i.0, i.1))
            .collect()
    };
    vec![
        (
            "pm25_24h",
            1,
            band(
                &[
                    (0, 90),
                    (91, 354),
                    (355, 554),
                    (555, 1254),
                    (1255, 2254),
                    (2255, 3254),
                ],
                0,
            ),
        ),
        (
            "pm10_24h",
            0,
            band(
                &[
                    (0, 54),
                    (55, 154),
                    (155, 254),
                    (255, 354),
                    (355, 424),
                    (425, 604),
                ],
                0,
            ),
        ),
        (
            "o3_8h",
            3,
            band(&[(0, 54), (55, 70), (71, 85), (86, 105), (106, 200)], 0),
        ),
        (
            "o3_1h",
            3,
            band(&[(125, 164), (165, 204), (205, 404), (405, 604)], 2),
        ),
        (
            "co_8h",
            1,
            band(
                &[
                    (0, 44),
                    (45, 94),
                    (95, 124),
                    (125, 154),
                    (155, 304),
                    (305, 504),
                ],
                0,
            ),
        ),
        // 1 h SO2 up to 200 only; 201+ from the 24 h mean.
        (
            "so2_1h",
            0,
            band(&[(0, 35), (36, 75), (76, 185), (186, 304)], 0),
        ),
        ("so2_24h", 0, band(&[(305, 604), (605, 1004)], 4)),
        (
            "no2_1h",
            0,
            band(
                &[
                    (0, 53),
                    (54, 100),
                    (101, 360),
                    (361, 649),
                    (650, 1249),
                    (1250, 2049),
                ],
                0,
            ),
        ),
    ]
}

/// EPA with each input in units of 10^-(decimals + 1) (one digit more than
/// the truncation keeps).
pub fn epa(inputs: &BTreeMap<&str, i64>) -> Ref {
    let table = epa_table();
    let sub = |key: &str, c: i64| -> Option<Option<i64>> {
        let (_, _, bands) = table.iter().find(|t| t.0 == key).unwrap();
        let t = c / 10; // truncate the extra digit
        if t < bands[0].0 {
            return Some(None); // below the scale: no index
        }
        for &(clo, chi, ilo, ihi) in bands {
            if t <= chi {
                let num = (ihi - ilo) * (t - clo);
                let den = chi - clo;
                // nearest, halves up
                return Some(Some(ilo + (2 * num + den) / (2 * den)));
            }
        }
        None // beyond
    };
    let mut iaqi = BTreeMap::new();
    for (key, _, _) in &table {
        let Some(&c) = inputs.get(key) else { continue };
        let v = match sub(key, c) {
            Some(v) => v,
            None if *key == "o3_8h" => match inputs.get("o3_1h") {
                Some(&oc) => sub("o3_1h", oc).map_or(Some(500), |x| x),
                None => None,
            },
            // Above 304 ppb: the 24 h mean's index, else 200.
            None if *key == "so2_1h" => match inputs.get("so2_24h").map(|&c| sub("so2_24h", c)) {
                Some(None) => Some(500),
                Some(Some(Some(v))) => Some(v),
                _ => Some(200),
            },
            None => Some(500),
        };
        if let Some(v) = v {
            iaqi.insert(key.to_string(), v);
        }
    }
    let order: Vec<&str> = table.iter().map(|t| t.0).collect();
    finish(iaqi, &order)
}

/// Decimal text of `n × 10^-d`.
pub fn text(n: i64, d: u32) -> String {
    if d == 0 {
        return n.to_string();
    }
    let p = 10i64.pow(d);
    format!("{}.{:0width$}", n / p, n % p, width = d as usize)
}
