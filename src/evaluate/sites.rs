//! The site registry, as data: `seeds/sites.toml`, built into the binary —
//! Beijing's national air-quality stations with their CNEMC code, Chinese
//! name and position. People see the Chinese name beside the site tag; the
//! city-wide AQI pools these stations by default.

use std::sync::OnceLock;

use serde::Deserialize;

pub const SEED: &str = include_str!("../../seeds/sites.toml");

/// One registered site.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Site {
    /// The monitoring centre's station code (e.g. "1003A").
    pub code: String,
    /// The `site` tag.
    pub site: String,
    /// Its name in Chinese, as published.
    pub name_zh: String,
    /// The `district` tag.
    pub district: String,
    pub lon: f64,
    pub lat: f64,
}

#[derive(Deserialize)]
struct File {
    site: Vec<Site>,
}

/// The shipped registry (checked by the tests: an empty list if it did
/// not parse).
pub fn shipped() -> &'static [Site] {
    static SITES: OnceLock<Vec<Site>> = OnceLock::new();
    SITES.get_or_init(|| {
        config::Config::builder()
            .add_source(config::File::from_str(SEED, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<File>())
            .map(|f| f.site)
            .unwrap_or_default()
    })
}

/// The registered site of a `site` tag, if any.
pub fn find(site: &str) -> Option<&'static Site> {
    shipped().iter().find(|s| s.site == site)
}

/// The national stations' site tags: the default pool of the city-wide
/// AQI.
pub fn national() -> Vec<String> {
    shipped().iter().map(|s| s.site.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry is what CNEMC published: every Beijing station of its
    /// hourly release (tests/data/conformance/), with its code, Chinese
    /// name and position.
    #[test]
    fn the_registry_matches_the_published_stations() {
        let csv = include_str!("../../tests/data/conformance/cnemc-beijing-2023-03-22-hourly.csv");
        let mut published: Vec<(String, String, f64, f64)> = csv
            .lines()
            .skip(1)
            .map(|l| {
                let c: Vec<&str> = l.split(',').collect();
                (
                    c[1].to_owned(),
                    c[5].to_owned(),
                    c[2].parse().unwrap(),
                    c[3].parse().unwrap(),
                )
            })
            .collect();
        published.sort_by(|a, b| a.0.cmp(&b.0));
        published.dedup_by(|a, b| a.0 == b.0);
        let ours: Vec<(String, String, f64, f64)> = shipped()
            .iter()
            .map(|s| (s.code.clone(), s.name_zh.clone(), s.lon, s.lat))
            .collect();
        assert_eq!(ours, published);
        let tags = national();
        assert_eq!(tags.len(), 12);
        let mut unique = tags.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 12, "site tags are unique");
        assert_eq!(find("dongsi").unwrap().name_zh, "东四");
        assert!(find("nowhere").is_none());
    }
}
