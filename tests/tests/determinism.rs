//! One seed reproduces a whole run exactly (TigerBeetle VOPR style).
use meridian_testkit::sim::{run_seed, SimConfig};

#[test]
fn same_seed_same_trace_hash_and_history() {
    for sites in [5, 9] {
        let cfg = SimConfig::for_sites(sites).unwrap();
        let a = run_seed(&cfg, 42);
        let b = run_seed(&cfg, 42);
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "{sites} sites: trace differs between identical runs"
        );
        assert_eq!(a.history, b.history);
        let c = run_seed(&cfg, 43);
        assert_ne!(
            a.trace_hash, c.trace_hash,
            "different seeds should give different runs"
        );
    }
}
