//! Breakpoint tables, transcribed from HJ 633 (Table 1) and the US EPA's AQI
//! (US EPA 2024). Each row names its source; nothing here is invented.
//!
//! Concentrations are held as integers in units of `10^-decimals` of the
//! input unit, so that interpolation, HJ 633's round-up and EPA's
//! truncation are exact integer arithmetic (see `super::Decimal`).

/// One pollutant scale: piecewise-linear segments from concentration
/// breakpoints to index breakpoints.
#[derive(Debug)]
pub struct Scale {
    /// Input key, as used by `lantian aqi` and in the `aqi` measurement.
    pub key: &'static str,
    /// Unit of the input value, for messages and docs.
    pub unit: &'static str,
    pub segments: Segments,
    /// HJ 633: the precision HJ 633-2026 rounds the concentration to
    /// before interpolating (integers; CO 0.1 mg/m³); HJ 633-2012 uses
    /// values exactly. EPA: the truncation precision. In decimal places.
    pub decimals: u32,
}

#[derive(Debug)]
pub enum Segments {
    /// HJ 633: concentration breakpoints for index 0, 50, 100, 150, 200,
    /// 300, 400, 500 (as many as given); a value on a breakpoint gets the
    /// same index from either side.
    Continuous(&'static [i64]),
    /// EPA: `(c_lo, c_hi, i_lo, i_hi)` bands, concentrations in units of
    /// `10^-decimals`; the concentration is truncated first, so the gaps
    /// between bands cannot be hit.
    Banded(&'static [(i64, i64, i64, i64)]),
}

/// HJ 633 index breakpoints.
pub const HJ_INDEX: [i64; 8] = [0, 50, 100, 150, 200, 300, 400, 500];

const fn hj(key: &'static str, unit: &'static str, conc: &'static [i64]) -> Scale {
    Scale {
        key,
        unit,
        segments: Segments::Continuous(conc),
        decimals: 0,
    }
}

// HJ 633-2012 (Table 1).
const SO2_24H: Scale = hj(
    "so2_24h",
    "µg/m³",
    &[0, 50, 150, 475, 800, 1600, 2100, 2620],
);
/// Ends at index 200; above 800 the 24 h value is used (see `super`).
const SO2_1H: Scale = hj("so2_1h", "µg/m³", &[0, 150, 500, 650, 800]);
const NO2_24H: Scale = hj("no2_24h", "µg/m³", &[0, 40, 80, 180, 280, 565, 750, 940]);
const NO2_1H: Scale = hj(
    "no2_1h",
    "µg/m³",
    &[0, 100, 200, 700, 1200, 2340, 3090, 3840],
);
/// CO is rounded to 0.1 mg/m³ under HJ 633-2026 (the others to integers).
const CO_24H: Scale = Scale {
    decimals: 1,
    ..hj("co_24h", "mg/m³", &[0, 2, 4, 14, 24, 36, 48, 60])
};
const CO_1H: Scale = Scale {
    decimals: 1,
    ..hj("co_1h", "mg/m³", &[0, 5, 10, 35, 60, 90, 120, 150])
};
const O3_1H: Scale = hj("o3_1h", "µg/m³", &[0, 160, 200, 300, 400, 800, 1000, 1200]);
/// Ends at index 300; above 800 the 1 h value is used (see `super`).
const O3_8H: Scale = hj("o3_8h", "µg/m³", &[0, 100, 160, 215, 265, 800]);
const PM10_2012: Scale = hj("pm10_24h", "µg/m³", &[0, 50, 150, 250, 350, 420, 500, 600]);
const PM25_2012: Scale = hj("pm25_24h", "µg/m³", &[0, 35, 75, 115, 150, 250, 350, 500]);
// HJ 633-2026 changes only the PM rows (as reported at publication; not yet checked against the text).
const PM10_2026: Scale = hj("pm10_24h", "µg/m³", &[0, 50, 120, 250, 350, 420, 500, 600]);
const PM25_2026: Scale = hj("pm25_24h", "µg/m³", &[0, 35, 60, 115, 150, 250, 350, 500]);

pub static HJ633_2012: [&Scale; 10] = [
    &PM25_2012, &PM10_2012, &SO2_24H, &SO2_1H, &NO2_24H, &NO2_1H, &CO_24H, &CO_1H, &O3_1H, &O3_8H,
];
pub static HJ633_2026: [&Scale; 10] = [
    &PM25_2026, &PM10_2026, &SO2_24H, &SO2_1H, &NO2_24H, &NO2_1H, &CO_24H, &CO_1H, &O3_1H, &O3_8H,
];

// US EPA AQI, 2024 revision (40 CFR 58 Appendix G, Table 2). Concentrations in
// units of the truncation precision: PM2.5 0.1 µg/m³, PM10 1 µg/m³, O3
// 0.001 ppm, CO 0.1 ppm, SO2 and NO2 1 ppb.
const EPA_PM25: Scale = Scale {
    key: "pm25_24h",
    unit: "µg/m³",
    segments: Segments::Banded(&[
        (0, 90, 0, 50),
        (91, 354, 51, 100),
        (355, 554, 101, 150),
        (555, 1254, 151, 200),
        (1255, 2254, 201, 300),
        (2255, 3254, 301, 500),
    ]),
    decimals: 1,
};
const EPA_PM10: Scale = Scale {
    key: "pm10_24h",
    unit: "µg/m³",
    segments: Segments::Banded(&[
        (0, 54, 0, 50),
        (55, 154, 51, 100),
        (155, 254, 101, 150),
        (255, 354, 151, 200),
        (355, 424, 201, 300),
        (425, 604, 301, 500),
    ]),
    decimals: 0,
};
/// 8 h ozone defines the index only up to 300; above 0.200 ppm the 1 h
/// value is used.
const EPA_O3_8H: Scale = Scale {
    key: "o3_8h",
    unit: "ppm",
    segments: Segments::Banded(&[
        (0, 54, 0, 50),
        (55, 70, 51, 100),
        (71, 85, 101, 150),
        (86, 105, 151, 200),
        (106, 200, 201, 300),
    ]),
    decimals: 3,
};
/// 1 h ozone defines the index only from 101 (0.125 ppm) up.
const EPA_O3_1H: Scale = Scale {
    key: "o3_1h",
    unit: "ppm",
    segments: Segments::Banded(&[
        (125, 164, 101, 150),
        (165, 204, 151, 200),
        (205, 404, 201, 300),
        (405, 604, 301, 500),
    ]),
    decimals: 3,
};
const EPA_CO_8H: Scale = Scale {
    key: "co_8h",
    unit: "ppm",
    segments: Segments::Banded(&[
        (0, 44, 0, 50),
        (45, 94, 51, 100),
        (95, 124, 101, 150),
        (125, 154, 151, 200),
        (155, 304, 201, 300),
        (305, 504, 301, 500),
    ]),
    decimals: 1,
};
/// 1 h SO2 defines the index only up to 200 (304 ppb); above, the 24 h
/// mean is used (see `super`).
const EPA_SO2_1H: Scale = Scale {
    key: "so2_1h",
    unit: "ppb",
    segments: Segments::Banded(&[
        (0, 35, 0, 50),
        (36, 75, 51, 100),
        (76, 185, 101, 150),
        (186, 304, 151, 200),
    ]),
    decimals: 0,
};
/// 24 h SO2 defines the index only from 201 (305 ppb) up.
const EPA_SO2_24H: Scale = Scale {
    key: "so2_24h",
    unit: "ppb",
    segments: Segments::Banded(&[(305, 604, 201, 300), (605, 1004, 301, 500)]),
    decimals: 0,
};
const EPA_NO2_1H: Scale = Scale {
    key: "no2_1h",
    unit: "ppb",
    segments: Segments::Banded(&[
        (0, 53, 0, 50),
        (54, 100, 51, 100),
        (101, 360, 101, 150),
        (361, 649, 151, 200),
        (650, 1249, 201, 300),
        (1250, 2049, 301, 500),
    ]),
    decimals: 0,
};

pub static EPA_2024: [&Scale; 8] = [
    &EPA_PM25,
    &EPA_PM10,
    &EPA_O3_8H,
    &EPA_O3_1H,
    &EPA_CO_8H,
    &EPA_SO2_1H,
    &EPA_SO2_24H,
    &EPA_NO2_1H,
];

/// An index category: level 1–6, machine name, colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Category {
    pub level: u8,
    pub name: &'static str,
    /// Chinese name (HJ 633) or the EPA's English label.
    pub label: &'static str,
    pub color: &'static str,
}

/// HJ 633 categories (HJ 633 Table 2); upper AQI bound of each.
pub static HJ_CATEGORIES: [(u32, Category); 6] = [
    (
        50,
        Category {
            level: 1,
            name: "excellent",
            label: "优",
            color: "#00E400",
        },
    ),
    (
        100,
        Category {
            level: 2,
            name: "good",
            label: "良",
            color: "#FFFF00",
        },
    ),
    (
        150,
        Category {
            level: 3,
            name: "lightly_polluted",
            label: "轻度污染",
            color: "#FF7E00",
        },
    ),
    (
        200,
        Category {
            level: 4,
            name: "moderately_polluted",
            label: "中度污染",
            color: "#FF0000",
        },
    ),
    (
        300,
        Category {
            level: 5,
            name: "heavily_polluted",
            label: "重度污染",
            color: "#99004C",
        },
    ),
    (
        u32::MAX,
        Category {
            level: 6,
            name: "severely_polluted",
            label: "严重污染",
            color: "#7E0023",
        },
    ),
];

/// EPA categories (bands from 40 CFR 58 Appendix G; colours from the EPA's AQI
/// technical assistance document).
pub static EPA_CATEGORIES: [(u32, Category); 6] = [
    (
        50,
        Category {
            level: 1,
            name: "good",
            label: "Good",
            color: "#00E400",
        },
    ),
    (
        100,
        Category {
            level: 2,
            name: "moderate",
            label: "Moderate",
            color: "#FFFF00",
        },
    ),
    (
        150,
        Category {
            level: 3,
            name: "unhealthy_for_sensitive_groups",
            label: "Unhealthy for Sensitive Groups",
            color: "#FF7E00",
        },
    ),
    (
        200,
        Category {
            level: 4,
            name: "unhealthy",
            label: "Unhealthy",
            color: "#FF0000",
        },
    ),
    (
        300,
        Category {
            level: 5,
            name: "very_unhealthy",
            label: "Very Unhealthy",
            color: "#8F3F97",
        },
    ),
    (
        u32::MAX,
        Category {
            level: 6,
            name: "hazardous",
            label: "Hazardous",
            color: "#7E0023",
        },
    ),
];
