//! Region metadata: failure domains (region, continent) and map coordinates.
use crate::error::Error;
use serde::Serialize;

pub const EMBEDDED_REGIONS_CSV: &str = include_str!("../data/aws-regions.csv");

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Region {
    pub name: String,
    pub city: String,
    pub country: String,
    pub continent: String,
    pub lat: f64,
    pub lon: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Regions(pub Vec<Region>);

impl Regions {
    pub fn embedded() -> Regions {
        Regions::from_csv(EMBEDDED_REGIONS_CSV).expect("embedded regions file is valid")
    }

    /// Parses `region,city,country,continent,lat,lon` (header required). City names may contain
    /// commas only if quoted.
    pub fn from_csv(text: &str) -> Result<Regions, Error> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines
            .next()
            .ok_or_else(|| Error::Regions("empty file".into()))?;
        if !header.starts_with("region,") {
            return Err(Error::Regions(format!(
                "header must start with 'region,', got '{header}'"
            )));
        }
        let mut out = Vec::new();
        for (i, line) in lines.enumerate() {
            let cells = split_csv(line);
            if cells.len() != 6 {
                return Err(Error::Regions(format!(
                    "line {}: expected 6 fields, got {}",
                    i + 2,
                    cells.len()
                )));
            }
            let num = |s: &str, what: &str| {
                s.trim().parse::<f64>().map_err(|_| {
                    Error::Regions(format!("line {}: {what} '{s}' is not a number", i + 2))
                })
            };
            out.push(Region {
                name: cells[0].trim().to_string(),
                city: cells[1].trim().to_string(),
                country: cells[2].trim().to_string(),
                continent: cells[3].trim().to_string(),
                lat: num(&cells[4], "lat")?,
                lon: num(&cells[5], "lon")?,
            });
        }
        Ok(Regions(out))
    }

    pub fn get(&self, name: &str) -> Option<&Region> {
        self.0.iter().find(|r| r.name == name)
    }
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_regions_cover_the_matrix() {
        let r = Regions::embedded();
        let m = crate::RttMatrix::embedded();
        for name in &m.regions {
            assert!(r.get(name).is_some(), "{name} missing from regions file");
        }
        assert_eq!(r.get("eu-west-1").unwrap().continent, "Europe");
    }

    #[test]
    fn bad_lines_are_named() {
        let e = Regions::from_csv("region,city,country,continent,lat,lon\nx,c,d,e,north,1\n")
            .unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(Regions::from_csv("bogus\n").is_err());
    }
}
