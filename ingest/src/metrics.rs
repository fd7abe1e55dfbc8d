//! Prometheus metrics of the ingest service, served on `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RowLabels {
    /// `committed`, `rejected` or `ignored`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    /// Why: `unreadable` (no payload of any format), `refused_items` (some items refused,
    /// the others stored), `refused_by_database` (PostgreSQL refused its data every try).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommitLabels {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    rows: Family<RowLabels, Counter>,
    commits: Family<CommitLabels, Counter>,
    staged_commits: Counter,
    dead_letters: Family<DeadLetterLabels, Counter>,
    commit_rows: Histogram,
    commit_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("smartregion_ingest");
        let requests = Family::<RequestLabels, Counter>::default();
        let rows = Family::<RowLabels, Counter>::default();
        let commits = Family::<CommitLabels, Counter>::default();
        let commit_rows = Histogram::new([1.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0]);
        let commit_seconds =
            Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]);
        registry.register(
            "requests",
            "HTTP requests, by endpoint and status",
            requests.clone(),
        );
        registry.register("rows", "Items received, by outcome", rows.clone());
        registry.register("commits", "Group commits, by result", commits.clone());
        let staged_commits = Counter::default();
        registry.register(
            "staged_commits",
            "Group commits that met a row already stored and were redone the duplicate-skipping way",
            staged_commits.clone(),
        );
        let dead_letters = Family::<DeadLetterLabels, Counter>::default();
        registry.register(
            "mqtt_dead_letters",
            "MQTT messages (or their refused items) set aside on the dead-letter topic, by reason",
            dead_letters.clone(),
        );
        registry.register(
            "commit_rows",
            "Rows in one group commit",
            commit_rows.clone(),
        );
        registry.register(
            "commit_seconds",
            "Time one group commit took",
            commit_seconds.clone(),
        );
        Metrics {
            registry,
            requests,
            rows,
            commits,
            staged_commits,
            dead_letters,
            commit_rows,
            commit_seconds,
        }
    }
}

impl Metrics {
    pub fn request(&self, endpoint: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                status,
            })
            .inc();
    }

    pub fn rows(&self, outcome: &'static str, count: usize) {
        self.rows
            .get_or_create(&RowLabels { outcome })
            .inc_by(count as u64);
    }

    pub fn staged_commit(&self) {
        self.staged_commits.inc();
    }

    pub fn dead_letter(&self, reason: &'static str) {
        self.dead_letters
            .get_or_create(&DeadLetterLabels { reason })
            .inc();
    }

    pub fn observe_commit(&self, rows: usize, took: Duration, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.commits.get_or_create(&CommitLabels { result }).inc();
        if ok {
            self.commit_rows.observe(rows as f64);
            self.commit_seconds.observe(took.as_secs_f64());
        }
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
