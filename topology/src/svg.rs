//! An SVG world map of a placement: candidate sites, chosen sites, the leader, its quorum
//! links, and each demand region coloured by its latency.
use crate::input::PlanInput;
use crate::regions::Regions;
use crate::search::Scored;
use std::fmt::Write;

const W: f64 = 1200.0;
const H: f64 = 620.0;

/// Equirectangular projection.
fn xy(lat: f64, lon: f64) -> (f64, f64) {
    (
        (lon + 180.0) / 360.0 * W,
        (90.0 - lat) / 180.0 * (H - 60.0) + 10.0,
    )
}

/// Green (fast) to red (slow) over 0..250 ms.
fn colour(ms: f64) -> String {
    let t = (ms / 250.0).clamp(0.0, 1.0);
    let (r, g) = if t < 0.5 {
        ((510.0 * t) as u8, 200u8)
    } else {
        (230u8, (200.0 * (2.0 - 2.0 * t)) as u8)
    };
    format!("#{r:02x}{g:02x}40")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn render(input: &PlanInput, regions: &Regions, best: &Scored, title: &str) -> String {
    let m = &input.matrix;
    let pos = |r: usize| regions.get(&m.regions[r]).map(|g| xy(g.lat, g.lon));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#eaf1f8"/>"##);
    // Land.
    for shape in crate::land::LAND {
        let pts: Vec<String> = shape
            .iter()
            .map(|&(lon, lat)| {
                let (x, y) = xy(lat, lon);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = writeln!(
            s,
            r##"<polygon points="{}" fill="#e3e8d9" stroke="#c5ccb8" stroke-width="0.8"/>"##,
            pts.join(" ")
        );
    }
    // Graticule.
    for lon in (-180..=180).step_by(30) {
        let (x, _) = xy(0.0, lon as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="10" x2="{x:.1}" y2="{:.1}" stroke="#dde3ea"/>"##,
            H - 50.0
        );
    }
    for lat in (-60..=90).step_by(30) {
        let (_, y) = xy(lat as f64, 0.0);
        let _ = writeln!(
            s,
            r##"<line x1="0" y1="{y:.1}" x2="{W}" y2="{y:.1}" stroke="#dde3ea"/>"##
        );
    }
    let a = &best.assessment;
    let leader = best.sites[a.leader];
    // Quorum links from the leader to every other site.
    if let Some((lx, ly)) = pos(leader) {
        for &r in &best.sites {
            if let Some((x, y)) = pos(r) {
                if r != leader {
                    let _ = writeln!(
                        s,
                        r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{x:.1}" y2="{y:.1}" stroke="#3b6fb6" stroke-width="2" stroke-opacity="0.6"><title>{} ms</title></line>"##,
                        m.rtt(leader, r)
                    );
                }
            }
        }
    }
    // Candidates.
    for &(r, _) in &input.candidates {
        if let Some((x, y)) = pos(r) {
            let _ = writeln!(
                s,
                r##"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="none" stroke="#8a96a3"><title>candidate {}</title></circle>"##,
                esc(&m.regions[r])
            );
        }
    }
    // Demand regions coloured by their latency (write/read mix).
    for rl in &a.per_region {
        if let Some((x, y)) = pos(rl.region) {
            let ms = (1.0 - rl.read_share) * rl.write_ms + rl.read_share * rl.read_ms;
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{}" stroke="#333" stroke-width="0.5"><title>{}: write {:.1} ms, read {:.1} ms</title></rect>"##,
                x + 5.0,
                y - 12.0,
                colour(ms),
                esc(&m.regions[rl.region]),
                rl.write_ms,
                rl.read_ms
            );
        }
    }
    // Chosen sites and the leader.
    for (p, &r) in best.sites.iter().enumerate() {
        if let Some((x, y)) = pos(r) {
            let (fill, rad) = if p == a.leader {
                ("#d62728", 8.0)
            } else {
                ("#1f4e8c", 6.0)
            };
            let holder = if a.holders.contains(&p) {
                r##" stroke="#f2b400" stroke-width="3""##
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r##"<circle cx="{x:.1}" cy="{y:.1}" r="{rad}" fill="{fill}"{holder}><title>{}</title></circle>"##,
                esc(&m.regions[r])
            );
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#1a1a1a">{}</text>"##,
                x + 9.0,
                y + 4.0,
                esc(&m.regions[r])
            );
        }
    }
    // Legend.
    let ly = H - 35.0;
    let _ = writeln!(
        s,
        r##"<text x="12" y="{:.1}" font-size="14" font-weight="bold">{}</text>"##,
        ly,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<circle cx="18" cy="{:.1}" r="7" fill="#d62728"/><text x="30" y="{:.1}" font-size="12">leader</text>"##,
        ly + 18.0,
        ly + 22.0
    );
    let _ = writeln!(
        s,
        r##"<circle cx="88" cy="{:.1}" r="6" fill="#1f4e8c"/><text x="99" y="{:.1}" font-size="12">replica</text>"##,
        ly + 18.0,
        ly + 22.0
    );
    let _ = writeln!(
        s,
        r##"<circle cx="162" cy="{:.1}" r="6" fill="#1f4e8c" stroke="#f2b400" stroke-width="3"/><text x="174" y="{:.1}" font-size="12">lease holder</text>"##,
        ly + 18.0,
        ly + 22.0
    );
    let _ = writeln!(
        s,
        r##"<circle cx="262" cy="{:.1}" r="4" fill="none" stroke="#8a96a3"/><text x="272" y="{:.1}" font-size="12">candidate</text>"##,
        ly + 18.0,
        ly + 22.0
    );
    for (i, ms) in [0.0, 50.0, 100.0, 150.0, 200.0, 250.0].iter().enumerate() {
        let x = 360.0 + i as f64 * 70.0;
        let _ = writeln!(
            s,
            r##"<rect x="{x}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12">{ms} ms</text>"##,
            ly + 12.0,
            colour(*ms),
            x + 14.0,
            ly + 22.0
        );
    }
    s.push_str("</svg>\n");
    s
}
