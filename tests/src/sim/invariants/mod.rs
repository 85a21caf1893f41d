//! One file per invariant (DESIGN.md §9). Each records what it finds; the run reports it.
pub mod acceptor;
pub mod agreement;
pub mod at_revision;
pub mod durability;
pub mod election;
pub mod lease;
pub mod list_append;
pub mod qlease;
pub mod staleness;

/// Findings of one run. Each kind keeps at most a few examples, but counts all.
#[derive(Default, Debug, Clone)]
pub struct Findings {
    pub agreement: u64,
    pub other: u64,
    pub examples: Vec<String>,
}

impl Findings {
    pub fn agreement(&mut self, what: String) {
        self.agreement += 1;
        self.example(what);
    }
    pub fn violation(&mut self, what: String) {
        self.other += 1;
        self.example(what);
    }
    fn example(&mut self, what: String) {
        if self.examples.len() < 8 {
            self.examples.push(what);
        }
    }
}
