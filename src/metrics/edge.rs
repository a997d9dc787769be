//! The edge routes' metrics: what `GET /edge/certificate` answered, its cache, the keys edges
//! received, and the names the edge index serves.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::OutcomeLabel;

/// A single `edge` label: an edge's name in `EDGE_TOKENS`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EdgeLabel {
    /// The edge's name.
    pub edge: String,
}

/// The edge routes' metrics.
pub struct EdgeMetrics {
    /// `GET /edge/certificate` answers by outcome: `served`, `none` (`204`), `bad_name`.
    pub certificate_requests: Family<OutcomeLabel, Counter>,
    /// Certificates (chain and key) found in the edge cache.
    pub cache_hits: Counter,
    /// Certificates read from the store because the edge cache did not hold them.
    pub cache_misses: Counter,
    /// Private keys handed to each edge, every read counted, by `GET /edge/certificate` and
    /// the certificate stream alike (only an edge's first read of a certificate is recorded:
    /// an event for the first, a row of `edge_key_deliveries` for the second).
    pub key_reads: Family<EdgeLabel, Counter>,
    /// Names (exact and wildcard) the edge index of this replica serves.
    pub index_names: Gauge,
}

impl EdgeMetrics {
    /// The metrics, registered in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let certificate_requests = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "edge_certificate_requests",
            "GET /edge/certificate answers by outcome: served, none, bad_name",
            certificate_requests.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "edge_certificate_cache_hits",
            "Certificates (chain and key) the edge routes found in their cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "edge_certificate_cache_misses",
            "Certificates the edge routes read from the store, not in their cache",
            cache_misses.clone(),
        );
        let key_reads = Family::<EdgeLabel, Counter>::default();
        registry.register(
            "edge_key_reads",
            "Private keys handed to each edge (its first read of a certificate is an event)",
            key_reads.clone(),
        );
        let index_names = Gauge::default();
        registry.register(
            "edge_index_names",
            "Names (exact and wildcard) the edge index of this replica serves",
            index_names.clone(),
        );
        Self {
            certificate_requests,
            cache_hits,
            cache_misses,
            key_reads,
            index_names,
        }
    }

    /// Counts one answer of `GET /edge/certificate`.
    pub fn certificate_request(&self, outcome: &'static str) {
        self.certificate_requests
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts one key handed to `edge`.
    pub fn key_read(&self, edge: &str) {
        self.keys_sent(edge, 1);
    }

    /// Counts `count` keys handed to `edge` at once (a chunk of the certificate stream).
    pub fn keys_sent(&self, edge: &str, count: u64) {
        self.key_reads
            .get_or_create(&EdgeLabel {
                edge: edge.to_owned(),
            })
            .inc_by(count);
    }
}
