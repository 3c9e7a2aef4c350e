//! The quantity registry: canonical unit and physical range of every known
//! quantity, unit conversion (ppb/ppm → µg/m³ or mg/m³ at 298.15 K and
//! 1013.25 hPa, GB 3095-2012 as amended in 2018), and the per-field check.

use std::collections::HashMap;

use crate::config::{QuantityOverride, UnknownFields};
use crate::reading::{Reason, Reject};

/// Molar volume of an ideal gas at 298.15 K and 1013.25 hPa, L/mol
/// (the reference state of GB 3095 since its 2018 amendment).
pub const MOLAR_VOLUME_298K: f64 = 24.465;

/// A unit lantian can convert between. Spellings are normalised by
/// [`Unit::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    MicrogramPerM3,
    MilligramPerM3,
    Ppb,
    Ppm,
    MilligramPerLitre,
    M3PerHour,
    M3PerSecond,
    M3PerDay,
    LitrePerSecond,
    Celsius,
    Percent,
    Millimetre,
}

impl Unit {
    /// Accepts the usual spellings, including SenML's (`Cel`, `%RH`, `m3/s`).
    pub fn parse(s: &str) -> Option<Unit> {
        let norm: String = s
            .trim()
            .chars()
            .map(|c| match c {
                'µ' | 'μ' => 'u',
                '³' => '3',
                _ => c.to_ascii_lowercase(),
            })
            .filter(|c| !c.is_whitespace())
            .collect();
        Some(match norm.as_str() {
            "ug/m3" => Unit::MicrogramPerM3,
            "mg/m3" => Unit::MilligramPerM3,
            "ppb" => Unit::Ppb,
            "ppm" => Unit::Ppm,
            "mg/l" => Unit::MilligramPerLitre,
            "m3/h" => Unit::M3PerHour,
            "m3/s" => Unit::M3PerSecond,
            "m3/d" => Unit::M3PerDay,
            "l/s" => Unit::LitrePerSecond,
            "cel" | "°c" | "c" | "degc" => Unit::Celsius,
            "%" | "%rh" => Unit::Percent,
            "mm" => Unit::Millimetre,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::MicrogramPerM3 => "ug/m3",
            Unit::MilligramPerM3 => "mg/m3",
            Unit::Ppb => "ppb",
            Unit::Ppm => "ppm",
            Unit::MilligramPerLitre => "mg/L",
            Unit::M3PerHour => "m3/h",
            Unit::M3PerSecond => "m3/s",
            Unit::M3PerDay => "m3/d",
            Unit::LitrePerSecond => "L/s",
            Unit::Celsius => "°C",
            Unit::Percent => "%",
            Unit::Millimetre => "mm",
        }
    }
}

/// One registry entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantity {
    /// The unit values are stored in.
    pub unit: Unit,
    /// Lowest plausible value (canonical unit), inclusive.
    pub min: f64,
    /// Highest plausible value (canonical unit), inclusive.
    pub max: f64,
    /// g/mol, for gases reported in ppb/ppm.
    pub molar_mass: Option<f64>,
}

const fn q(unit: Unit, min: f64, max: f64, molar_mass: Option<f64>) -> Quantity {
    Quantity {
        unit,
        min,
        max,
        molar_mass,
    }
}

/// The built-in registry. Ranges are physical plausibility (what a working
/// sensor can report), not regulatory limits: PM10 reached ~8,000 µg/m³ in
/// the Beijing dust storm of March 2021, so the PM10 ceiling is generous.
/// Molar masses (g/mol).
pub fn builtin() -> Vec<(&'static str, Quantity)> {
    use Unit::*;
    let flow = q(M3PerHour, 0.0, 500_000.0, None);
    let water = q(MilligramPerLitre, 0.0, 100_000.0, None);
    vec![
        ("pm25", q(MicrogramPerM3, 0.0, 5_000.0, None)),
        ("pm10", q(MicrogramPerM3, 0.0, 20_000.0, None)),
        ("so2", q(MicrogramPerM3, 0.0, 20_000.0, Some(64.066))),
        ("no2", q(MicrogramPerM3, 0.0, 10_000.0, Some(46.0055))),
        ("o3", q(MicrogramPerM3, 0.0, 5_000.0, Some(47.997))),
        ("co", q(MilligramPerM3, 0.0, 200.0, Some(28.010))),
        ("tvoc", q(MilligramPerM3, 0.0, 10_000.0, None)),
        ("nmhc", q(MilligramPerM3, 0.0, 10_000.0, None)),
        ("oil_fume", q(MilligramPerM3, 0.0, 1_000.0, None)),
        // Particulate at an emission source (catering, DB11/1488).
        ("pm", q(MilligramPerM3, 0.0, 1_000.0, None)),
        ("flow_m3h", flow.clone()),
        ("inflow_m3h", flow.clone()),
        ("treated_m3h", flow.clone()),
        ("bypass_m3h", flow.clone()),
        ("reclaimed_m3h", flow.clone()),
        ("runoff_m3h", flow.clone()),
        ("rainfall_m3h", flow),
        ("cod", water.clone()),
        ("bod5", water.clone()),
        ("ss", water.clone()),
        ("nh3n", water.clone()),
        ("tn", water.clone()),
        ("tp", water),
        ("temperature", q(Celsius, -60.0, 70.0, None)),
        ("humidity", q(Percent, 0.0, 100.0, None)),
        ("rainfall", q(Millimetre, 0.0, 1_000.0, None)),
    ]
}

/// The registry in force: built-ins with the config's overrides applied.
#[derive(Clone, Debug)]
pub struct Registry {
    quantities: HashMap<String, Quantity>,
    unknown: UnknownFields,
}

impl Registry {
    /// Apply overrides. Errors name the quantity and say what is wrong.
    pub fn new(
        overrides: &std::collections::BTreeMap<String, QuantityOverride>,
        unknown: UnknownFields,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut quantities: HashMap<String, Quantity> = builtin()
            .into_iter()
            .map(|(n, q)| (n.to_owned(), q))
            .collect();
        let mut errors = Vec::new();
        for (name, o) in overrides {
            let base = quantities.get(name).cloned();
            let unit = match (&o.unit, &base) {
                (Some(u), _) => match Unit::parse(u) {
                    Some(u) => u,
                    None => {
                        errors.push((format!("{name}.unit"), format!("unknown unit {u:?}")));
                        continue;
                    }
                },
                (None, Some(b)) => b.unit,
                (None, None) => {
                    errors.push((format!("{name}.unit"), "a new quantity needs a unit".into()));
                    continue;
                }
            };
            let min = o.min.or(base.as_ref().map(|b| b.min)).unwrap_or(f64::MIN);
            let max = o.max.or(base.as_ref().map(|b| b.max)).unwrap_or(f64::MAX);
            if min.is_nan() || max.is_nan() || min > max {
                errors.push((name.clone(), format!("min {min} is above max {max}")));
                continue;
            }
            let molar_mass = base.and_then(|b| b.molar_mass);
            quantities.insert(name.clone(), q(unit, min, max, molar_mass));
        }
        if errors.is_empty() {
            Ok(Self {
                quantities,
                unknown,
            })
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, name: &str) -> Option<&Quantity> {
        self.quantities.get(name)
    }

    /// Check one field and convert it to its canonical unit.
    pub fn check(&self, name: &str, value: f64, unit: Option<&str>) -> Result<f64, Reject> {
        if !value.is_finite() {
            return Err(Reject::new(Reason::NotFinite, format!("{name} is {value}")));
        }
        let Some(q) = self.quantities.get(name) else {
            return match self.unknown {
                UnknownFields::Store => Ok(value),
                UnknownFields::Reject => Err(Reject::new(
                    Reason::UnknownQuantity,
                    format!("{name} is not a known quantity"),
                )),
            };
        };
        let v = match unit {
            None => value,
            Some(u) => {
                let from = Unit::parse(u).ok_or_else(|| {
                    Reject::new(Reason::BadUnit, format!("{name}: unknown unit {u:?}"))
                })?;
                convert(value, from, q).ok_or_else(|| {
                    Reject::new(
                        Reason::BadUnit,
                        format!("{name}: cannot convert {u} to {}", q.unit.as_str()),
                    )
                })?
            }
        };
        if !v.is_finite() {
            return Err(Reject::new(
                Reason::NotFinite,
                format!("{name} converts to {v}"),
            ));
        }
        if v < q.min || v > q.max {
            return Err(Reject::new(
                Reason::OutOfRange,
                format!(
                    "{name} = {v} {} is outside [{}, {}]",
                    q.unit.as_str(),
                    q.min,
                    q.max
                ),
            ));
        }
        Ok(v)
    }
}

/// Convert `value` in `from` to the quantity's canonical unit, if possible.
pub fn convert(value: f64, from: Unit, q: &Quantity) -> Option<f64> {
    use Unit::*;
    if from == q.unit {
        return Some(value);
    }
    // Everything mass-per-volume goes through µg/m³.
    let ug_m3 = |v: f64| -> Option<f64> {
        match from {
            MicrogramPerM3 => Some(v),
            MilligramPerM3 => Some(v * 1000.0),
            Ppb => q.molar_mass.map(|m| v * m / MOLAR_VOLUME_298K),
            Ppm => q.molar_mass.map(|m| v * 1000.0 * m / MOLAR_VOLUME_298K),
            _ => None,
        }
    };
    match q.unit {
        MicrogramPerM3 => ug_m3(value),
        MilligramPerM3 => ug_m3(value).map(|v| v / 1000.0),
        M3PerHour => match from {
            M3PerSecond => Some(value * 3600.0),
            M3PerDay => Some(value / 24.0),
            LitrePerSecond => Some(value * 3.6),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn registry() -> Registry {
        Registry::new(&BTreeMap::new(), UnknownFields::Store).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn gases_convert_at_298k() {
        let r = registry();
        // µg/m³ = ppb × M / 24.465 (298.15 K, 1013.25 hPa).
        assert!(close(
            r.check("no2", 100.0, Some("ppb")).unwrap(),
            100.0 * 46.0055 / 24.465
        ));
        assert!(close(
            r.check("so2", 1.0, Some("ppm")).unwrap(),
            1000.0 * 64.066 / 24.465
        ));
        assert!(close(
            r.check("o3", 50.0, Some("ppb")).unwrap(),
            50.0 * 47.997 / 24.465
        ));
        // CO is stored in mg/m³: ppm × 28.010 / 24.465.
        assert!(close(
            r.check("co", 2.0, Some("ppm")).unwrap(),
            2.0 * 28.010 / 24.465
        ));
        assert!(close(r.check("co", 500.0, Some("ug/m3")).unwrap(), 0.5));
        assert!(close(r.check("pm25", 0.035, Some("mg/m³")).unwrap(), 35.0));
        assert!(close(
            r.check("inflow_m3h", 1.0, Some("m3/s")).unwrap(),
            3600.0
        ));
    }

    #[test]
    fn ppb_without_molar_mass_is_a_bad_unit() {
        let e = registry().check("pm25", 10.0, Some("ppb")).unwrap_err();
        assert_eq!(e.reason, Reason::BadUnit);
        assert_eq!(
            registry()
                .check("pm25", 10.0, Some("furlongs"))
                .unwrap_err()
                .reason,
            Reason::BadUnit
        );
    }

    #[test]
    fn ranges_and_non_finite_values_are_rejected() {
        let r = registry();
        let e = r.check("pm25", -5.0, None).unwrap_err();
        assert_eq!(e.reason, Reason::OutOfRange);
        assert_eq!(e.detail, "pm25 = -5 ug/m3 is outside [0, 5000]");
        assert_eq!(
            r.check("humidity", 100.5, None).unwrap_err().reason,
            Reason::OutOfRange
        );
        assert_eq!(
            r.check("pm25", f64::NAN, None).unwrap_err().reason,
            Reason::NotFinite
        );
        assert_eq!(r.check("pm10", 5000.0, None), Ok(5000.0));
    }

    #[test]
    fn unknown_fields_follow_the_config() {
        assert_eq!(registry().check("rssi_dbm", -71.0, Some("dBm")), Ok(-71.0));
        let strict = Registry::new(&BTreeMap::new(), UnknownFields::Reject).unwrap();
        assert_eq!(
            strict.check("rssi_dbm", -71.0, None).unwrap_err().reason,
            Reason::UnknownQuantity
        );
    }

    #[test]
    fn overrides_change_ranges_and_add_quantities() {
        let mut o = BTreeMap::new();
        o.insert(
            "pm25".into(),
            QuantityOverride {
                unit: None,
                min: None,
                max: Some(1000.0),
            },
        );
        o.insert(
            "noise_db".into(),
            QuantityOverride {
                unit: None,
                min: Some(0.0),
                max: Some(200.0),
            },
        );
        let errs = Registry::new(&o, UnknownFields::Store).unwrap_err();
        assert_eq!(
            errs,
            vec![(
                "noise_db.unit".to_string(),
                "a new quantity needs a unit".to_string()
            )]
        );
        o.remove("noise_db");
        o.insert(
            "ss".into(),
            QuantityOverride {
                unit: None,
                min: Some(10.0),
                max: Some(1.0),
            },
        );
        assert_eq!(
            Registry::new(&o, UnknownFields::Store).unwrap_err()[0].0,
            "ss"
        );
        o.remove("ss");
        let r = Registry::new(&o, UnknownFields::Store).unwrap();
        assert_eq!(
            r.check("pm25", 1200.0, None).unwrap_err().reason,
            Reason::OutOfRange
        );
    }
}
