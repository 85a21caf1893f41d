//! Planner inputs and the parsing of their command-line forms.
use crate::error::Error;
use crate::model::QuorumShape;
use crate::rtt::RttMatrix;

/// Client demand from one region: weight and the share of its operations that are reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    pub region: usize,
    pub weight: f64,
    pub read_share: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Survive {
    Site,
    Region,
    Continent,
}

impl Survive {
    pub fn parse(s: &str) -> Result<Survive, Error> {
        match s {
            "site" => Ok(Survive::Site),
            "region" => Ok(Survive::Region),
            "continent" => Ok(Survive::Continent),
            o => Err(Error::Invalid(format!(
                "--survive must be site, region or continent, not '{o}'"
            ))),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Survive::Site => "site",
            Survive::Region => "region",
            Survive::Continent => "continent",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumKind {
    Majority,
    /// 9 sites as 3 groups of 3.
    Hierarchical,
}

/// Everything a planning run needs.
#[derive(Clone, Debug)]
pub struct PlanInput {
    pub matrix: RttMatrix,
    /// Continent per matrix region (failure domain above the region).
    pub continent: Vec<String>,
    /// Candidate regions with the most sites each may host.
    pub candidates: Vec<(usize, usize)>,
    pub demand: Vec<Demand>,
    pub replicas: usize,
    pub quorum: QuorumKind,
    pub survive: Survive,
    pub leases: bool,
    pub top: usize,
}

/// `us-east-1,us-east-2*2` -> [(us-east-1, 1), (us-east-2, 2)].
pub fn parse_sites(m: &RttMatrix, list: &str) -> Result<Vec<(usize, usize)>, Error> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, count) = match item.split_once('*') {
            Some((n, c)) => {
                let c: usize = c.trim().parse().map_err(|_| {
                    Error::Invalid(format!("'{item}': count after '*' must be a number"))
                })?;
                if c == 0 {
                    return Err(Error::Invalid(format!(
                        "'{item}': count must be at least 1"
                    )));
                }
                (n.trim(), c)
            }
            None => (item, 1),
        };
        let idx = m.index(name)?;
        match out.iter_mut().find(|(r, _)| *r == idx) {
            Some(e) => e.1 += count,
            None => out.push((idx, count)),
        }
    }
    if out.is_empty() {
        return Err(Error::Invalid("empty site list".into()));
    }
    Ok(out)
}

/// `us-east-1=40,eu-west-1=30:0.9` (weight, optional read share, default 0.5).
pub fn parse_demand(m: &RttMatrix, list: &str) -> Result<Vec<Demand>, Error> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = item.split_once('=').ok_or_else(|| {
            Error::Invalid(format!(
                "demand '{item}' must look like region=weight[:read_share]"
            ))
        })?;
        let (w, r) = match rest.split_once(':') {
            Some((w, r)) => (w, Some(r)),
            None => (rest, None),
        };
        let weight: f64 = w.trim().parse().map_err(|_| {
            Error::Invalid(format!("demand '{item}': weight '{w}' is not a number"))
        })?;
        let read_share: f64 = match r {
            Some(r) => r.trim().parse().map_err(|_| {
                Error::Invalid(format!("demand '{item}': read share '{r}' is not a number"))
            })?,
            None => 0.5,
        };
        if !(weight >= 0.0 && weight.is_finite() && (0.0..=1.0).contains(&read_share)) {
            return Err(Error::Invalid(format!(
                "demand '{item}': weight must be >= 0 and read share within 0..1"
            )));
        }
        out.push(Demand {
            region: m.index(name.trim())?,
            weight,
            read_share,
        });
    }
    if out.iter().map(|d| d.weight).sum::<f64>() <= 0.0 {
        return Err(Error::Invalid("demand weights sum to zero".into()));
    }
    Ok(out)
}

impl PlanInput {
    pub fn shape(&self) -> QuorumShape {
        match self.quorum {
            QuorumKind::Majority => QuorumShape::Majority,
            QuorumKind::Hierarchical => QuorumShape::three_by_three(),
        }
    }

    /// Checks the combination of inputs; errors say what is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        if self.replicas != 5 && self.replicas != 9 {
            return Err(Error::Invalid(format!(
                "--replicas must be 5 or 9, not {}",
                self.replicas
            )));
        }
        if self.quorum == QuorumKind::Hierarchical && self.replicas != 9 {
            return Err(Error::Invalid(
                "hierarchical quorums need --replicas 9 (3 groups of 3)".into(),
            ));
        }
        let slots: usize = self.candidates.iter().map(|c| c.1).sum();
        if slots < self.replicas {
            return Err(Error::Infeasible(format!(
                "{} candidate sites cannot hold {} replicas",
                slots, self.replicas
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_lists_with_multiplicity() {
        let m = RttMatrix::embedded();
        let s = parse_sites(&m, "us-east-2*2,us-east-1,us-east-2").unwrap();
        assert_eq!(
            s,
            vec![
                (m.index("us-east-2").unwrap(), 3),
                (m.index("us-east-1").unwrap(), 1)
            ]
        );
        assert!(matches!(
            parse_sites(&m, "mars-1"),
            Err(Error::UnknownRegion(_))
        ));
        assert!(parse_sites(&m, "us-east-1*x").is_err());
        assert!(parse_sites(&m, "us-east-1*0").is_err());
    }

    #[test]
    fn demand_defaults_read_share_to_half() {
        let m = RttMatrix::embedded();
        let d = parse_demand(&m, "us-east-1=40,eu-west-1=30:0.9").unwrap();
        assert_eq!((d[0].weight, d[0].read_share), (40.0, 0.5));
        assert_eq!((d[1].weight, d[1].read_share), (30.0, 0.9));
        assert!(parse_demand(&m, "us-east-1").is_err());
        assert!(parse_demand(&m, "us-east-1=1:2").is_err());
        assert!(parse_demand(&m, "us-east-1=0").is_err());
    }
}
