//! The physical bound of DESIGN.md §6 for a report row: Meridian's paths and etcd's
//! (Raft: a put is rtt(c,L) + ql(L) like a Paxos write; a linearizable get is a ReadIndex —
//! the member asks the leader, the leader confirms its leadership with a heartbeat round to a
//! quorum — so rtt(c,L) + ql(L); a serializable get is answered by the local member).
use meridian_topology::model::{quorum_latency, QuorumShape};
use meridian_topology::RttMatrix;

/// Where the sites are and what the quorum looks like, in matrix indices.
pub struct Geometry<'a> {
    pub m: &'a RttMatrix,
    /// Matrix index of every site's region.
    pub sites: Vec<Option<usize>>,
    pub shape: QuorumShape,
}

impl Geometry<'_> {
    fn ql(&self, x: usize) -> f64 {
        quorum_latency(self.m, &self.sites, &self.shape, x)
    }
    fn site(&self, i: usize) -> usize {
        self.sites[i].expect("site region")
    }

    /// Meridian: a client in region `c` (matrix index), leader site `l`, quorum-lease holder
    /// sites `holders`, `op` write|read and the path asked for.
    pub fn meridian(&self, c: usize, l: usize, holders: &[usize], op: &str, path: &str) -> f64 {
        let lr = self.site(l);
        let farthest = holders
            .iter()
            .map(|&h| self.m.rtt(lr, self.site(h)))
            .fold(0.0, f64::max);
        let nearest = holders
            .iter()
            .map(|&h| self.m.rtt(c, self.site(h)))
            .fold(f64::INFINITY, f64::min);
        let leader = self.m.rtt(c, lr);
        let quorum = self.ql(c);
        match (op, path) {
            ("write", _) => leader + self.ql(lr).max(farthest),
            (_, "leader") => leader,
            (_, "quorum") => quorum,
            (_, "lease") => nearest,
            // serializable / bounded: the nearest replica.
            (_, p) if p == "serializable" || p.starts_with("bounded:") => self
                .sites
                .iter()
                .flatten()
                .map(|&s| self.m.rtt(c, s))
                .fold(f64::INFINITY, f64::min),
            _ => leader.min(quorum).min(nearest),
        }
    }

    /// etcd: a client in region `c` talking to the member in its region, leader member `l`.
    pub fn etcd(&self, c: usize, l: usize, op: &str, path: &str) -> f64 {
        let lr = self.site(l);
        match (op, path) {
            (_, "serializable") => 0.0,
            _ => self.m.rtt(c, lr) + self.ql(lr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_follow_design_section_6() {
        let m = RttMatrix::embedded();
        let names = [
            "us-east-1",
            "us-west-2",
            "eu-west-1",
            "ap-northeast-1",
            "eu-central-1",
        ];
        let idx: Vec<usize> = names.iter().map(|n| m.index(n).unwrap()).collect();
        let g = Geometry {
            m: &m,
            sites: idx.iter().map(|&i| Some(i)).collect(),
            shape: QuorumShape::Majority,
        };
        let (us, eu) = (idx[0], idx[2]);
        // The leader's own region writes in its quorum latency: the 3rd smallest of its RTTs.
        let mut from_us: Vec<f64> = idx.iter().map(|&s| m.rtt(us, s)).collect();
        from_us.sort_by(|a, b| a.total_cmp(b));
        assert_eq!(g.meridian(us, 0, &[], "write", "leader"), from_us[2]);
        assert_eq!(
            g.meridian(eu, 0, &[], "write", "leader"),
            m.rtt(eu, us) + from_us[2]
        );
        assert_eq!(g.meridian(eu, 0, &[], "read", "leader"), m.rtt(eu, us));
        // A holder in the reader's region: the lease path costs nothing on the WAN, and a
        // write waits for the farthest holder.
        assert_eq!(g.meridian(eu, 0, &[2], "read", "lease"), 0.0);
        assert_eq!(g.meridian(eu, 0, &[2], "read", "auto"), 0.0);
        assert!(
            g.meridian(us, 0, &[3], "write", "leader") >= m.rtt(us, idx[3]),
            "farthest holder"
        );
        // auto without holders: the cheaper of leader and quorum.
        let auto = g.meridian(eu, 0, &[], "read", "auto");
        assert_eq!(
            auto,
            g.meridian(eu, 0, &[], "read", "leader")
                .min(g.meridian(eu, 0, &[], "read", "quorum"))
        );
        // etcd: a linearizable get costs a put's WAN time, a serializable one nothing.
        assert_eq!(
            g.etcd(eu, 0, "read", "linearizable"),
            g.meridian(eu, 0, &[], "write", "leader")
        );
        assert_eq!(g.etcd(eu, 0, "read", "serializable"), 0.0);
    }
}
