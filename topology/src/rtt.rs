//! The RTT matrix: symmetric round-trip times in milliseconds between named regions.
use crate::error::Error;
use serde::{Deserialize, Serialize};

/// The shipped matrix (32 AWS regions, one-year p50; see shared/data/README.md).
pub const EMBEDDED_RTT_CSV: &str = include_str!("../data/aws-rtt-p50.csv");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RttMatrix {
    pub regions: Vec<String>,
    /// `ms[i][j]`: round trip between region i and j.
    pub ms: Vec<Vec<f64>>,
}

impl RttMatrix {
    pub fn embedded() -> RttMatrix {
        RttMatrix::from_csv(EMBEDDED_RTT_CSV).expect("embedded matrix is valid")
    }

    /// Parses `region,<r1>,..` then `<ri>,<ms>,..` rows; checks shape, numbers, zero diagonal
    /// and symmetry (within 0.5 ms).
    pub fn from_csv(text: &str) -> Result<RttMatrix, Error> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines
            .next()
            .ok_or_else(|| Error::Matrix("empty file".into()))?;
        let regions: Vec<String> = header
            .split(',')
            .skip(1)
            .map(|s| s.trim().to_string())
            .collect();
        if regions.is_empty() {
            return Err(Error::Matrix("header names no regions".into()));
        }
        let mut ms = Vec::new();
        for (row, line) in lines.enumerate() {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let name = cells[0];
            if regions.get(row).map(String::as_str) != Some(name) {
                return Err(Error::Matrix(format!(
                    "row {} is '{name}', expected '{}'",
                    row + 2,
                    regions.get(row).map_or("<none>", |s| s)
                )));
            }
            if cells.len() != regions.len() + 1 {
                return Err(Error::Matrix(format!(
                    "row '{name}' has {} values, expected {}",
                    cells.len() - 1,
                    regions.len()
                )));
            }
            let vals = cells[1..]
                .iter()
                .enumerate()
                .map(|(j, c)| match c.parse::<f64>() {
                    Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
                    _ => Err(Error::Matrix(format!(
                        "row '{name}', column '{}': '{c}' is not a non-negative number",
                        regions[j]
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            ms.push(vals);
        }
        let m = RttMatrix { regions, ms };
        m.validate()?;
        Ok(m)
    }

    /// Checks a matrix built by hand or read from JSON.
    pub fn validate(&self) -> Result<(), Error> {
        let n = self.regions.len();
        if self.ms.len() != n || self.ms.iter().any(|r| r.len() != n) {
            return Err(Error::Matrix(format!(
                "not square: {n} regions, {} rows",
                self.ms.len()
            )));
        }
        for i in 0..n {
            if self.ms[i][i] != 0.0 {
                return Err(Error::Matrix(format!(
                    "diagonal entry of '{}' is {}, expected 0",
                    self.regions[i], self.ms[i][i]
                )));
            }
            for j in 0..i {
                let (a, b) = (self.ms[i][j], self.ms[j][i]);
                if !a.is_finite() || a < 0.0 || (a - b).abs() > 0.5 {
                    return Err(Error::Matrix(format!(
                        "asymmetric or invalid: '{}'->'{}' is {a} ms but '{}'->'{}' is {b} ms",
                        self.regions[i], self.regions[j], self.regions[j], self.regions[i]
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn index(&self, region: &str) -> Result<usize, Error> {
        self.regions
            .iter()
            .position(|r| r == region)
            .ok_or_else(|| Error::UnknownRegion(region.to_string()))
    }

    pub fn rtt(&self, a: usize, b: usize) -> f64 {
        self.ms[a][b]
    }

    pub fn rtt_by_name(&self, a: &str, b: &str) -> Result<f64, Error> {
        Ok(self.rtt(self.index(a)?, self.index(b)?))
    }
}

/// Test fixture: four regions on a line at 0, 10, 30 and 60 ms (hand-computable latencies).
#[cfg(test)]
pub(crate) fn line() -> RttMatrix {
    let pos = [0.0, 10.0, 30.0, 60.0];
    RttMatrix {
        regions: (0..4).map(|i| format!("r{i}")).collect(),
        ms: pos
            .iter()
            .map(|a: &f64| pos.iter().map(|b| (a - b).abs()).collect())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_matrix_has_32_regions_and_known_values() {
        let m = RttMatrix::embedded();
        assert_eq!(m.regions.len(), 32);
        assert_eq!(m.rtt_by_name("us-east-1", "us-east-2").unwrap(), 15.4);
        assert_eq!(m.rtt_by_name("us-east-2", "us-east-1").unwrap(), 15.4);
        assert!(matches!(
            m.rtt_by_name("us-east-1", "mars-1"),
            Err(Error::UnknownRegion(_))
        ));
    }

    #[test]
    fn malformed_matrices_are_refused_with_the_reason() {
        let asym = "region,a,b\na,0,10\nb,20,0\n";
        assert!(
            matches!(RttMatrix::from_csv(asym), Err(Error::Matrix(m)) if m.contains("asymmetric"))
        );
        let short = "region,a,b\na,0\nb,1,0\n";
        assert!(
            matches!(RttMatrix::from_csv(short), Err(Error::Matrix(m)) if m.contains("values"))
        );
        let nan = "region,a,b\na,0,x\nb,x,0\n";
        assert!(
            matches!(RttMatrix::from_csv(nan), Err(Error::Matrix(m)) if m.contains("not a non-negative"))
        );
        let diag = "region,a,b\na,1,2\nb,2,0\n";
        assert!(
            matches!(RttMatrix::from_csv(diag), Err(Error::Matrix(m)) if m.contains("diagonal"))
        );
        assert!(RttMatrix::from_csv("").is_err());
    }
}
