//! Prometheus metrics: one registry per process, served as text at `GET /metrics`.
//!
//! The metrics are process-wide statics rather than a value threaded through every actor: the
//! pollers, the ACME client, the event repository and the HTTP layer all record into them, and
//! a process only ever serves one registry. Domain counts are the exception: they are read from
//! the store at scrape time, so every replica reports the same, current numbers.

use std::sync::LazyLock;
use std::time::Duration;

use dns_handling_events::{CheckOutcome, DomainStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

mod edge;

pub use edge::{EdgeLabel, EdgeMetrics};

/// The content type of the text exposition format the endpoint serves.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the store says at a scrape, read by the store (`Store::scrape_figures`) so that every
/// replica reports the same, current numbers.
#[derive(Debug, Clone, Default)]
pub struct ScrapeFigures {
    /// Domains by status as the contract spells it (and `removed`).
    pub domains_by_status: Vec<(String, i64)>,
    /// Live domains by each check's worst outcome over their names: `((check, outcome), count)`.
    pub domains_by_health: Vec<((String, String), i64)>,
    /// Certificates in service ending within each horizon (`expired`, `1d`, `7d`, `30d`, `all`).
    pub certificates_expiring: [(&'static str, i64); 5],
    /// Seconds the most overdue renewal-scheduler work has waited (0 when none).
    pub renewal_lag_seconds: i64,
    /// Renewals whose order waits for its TXT records.
    pub renewals_waiting_for_records: i64,
}

/// Labels of `http_requests`: the matched route pattern (never the raw path, which would make
/// one series per domain id), the method and the status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route pattern, e.g. `/domains/{id}`; `unmatched` for unknown paths.
    pub route: String,
    /// The HTTP method.
    pub method: String,
    /// The response status code.
    pub status: u16,
}

/// Labels of `acme_requests`: which step of the protocol, and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcmeLabels {
    /// `new_account`, `new_order`, `challenge_ready`, `finalize`, `certificate`, …
    pub endpoint: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// A single `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// How the operation ended.
    pub outcome: &'static str,
}

/// A single `status` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// A domain status as the contract spells it, or `removed`.
    pub status: &'static str,
}

/// The labels of `domains_health`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    /// `routing`, `delegation` or `caa`.
    pub check: &'static str,
    /// The domain's worst outcome of that check: `ok`, `elsewhere`, `missing`, `forbidden`,
    /// `unknown`.
    pub outcome: &'static str,
}

/// A single `within` label: a horizon of time to expiry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WithinLabel {
    /// `expired`, `1d`, `7d`, `30d` or `all`.
    pub within: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Domains by status, refreshed from the store at each scrape.
    pub domains: Family<StatusLabel, Gauge>,
    /// Live domains by check and worst outcome, refreshed from the store at each scrape.
    pub domains_health: Family<HealthLabels, Gauge>,
    /// Seconds from `issue-certificate` to `active`, for the orders this process finished.
    pub issuance_duration: Histogram,
    /// TXT lookups of the pollers by outcome: `found`, `not_found`, `lookup_failed`.
    pub txt_polls: Family<OutcomeLabel, Counter>,
    /// Requests to the CA by endpoint and outcome.
    pub acme_requests: Family<AcmeLabels, Counter>,
    /// Order pollers alive in this process.
    pub live_pollers: Gauge,
    /// Pollers that died without finishing their order and were started again.
    pub poller_restarts: Counter,
    /// Background work that panicked and was started again, by task (`renewal-scheduler`,
    /// `zone-follower`, `webhook-driver`, …): see `crate::tasks`.
    pub background_restarts: Family<TaskLabel, Counter>,
    /// Domain views that had missed events and were folded again from their streams.
    pub view_rebuilds: Counter,
    /// Checkpoint signings refused because the log or a stored checkpoint was not what this
    /// service's key signed (an alert: someone wrote to the database around the service).
    pub checkpoint_refusals: Counter,
    /// Seconds to append one command's events to the store, by outcome.
    pub event_append_duration: HistogramFamily<OutcomeLabel>,
    /// Renewals by outcome (`started_ari`, `started_lifetime`, `started_manual`,
    /// `started_revoked`, `issued`, `failed`), as this process saw them.
    pub renewals: Family<OutcomeLabel, Counter>,
    /// Certificates in service ending within a horizon (`expired`, `1d`, `7d`, `30d`, `all`),
    /// from the store at each scrape: `within="7d"` above 0 means a certificate ends within a
    /// week and no renewal of it has succeeded.
    pub certificates_expiring: Family<WithinLabel, Gauge>,
    /// Seconds the most overdue renewal-scheduler work has waited (0 when none), from the store
    /// at each scrape.
    pub renewal_lag_seconds: Gauge,
    /// Renewals whose order waits for its TXT records, from the store at each scrape: where a
    /// person publishes them, each needs that person now.
    pub renewals_waiting_for_records: Gauge,
    /// Queries the delegation zone's DNS server answered, by response code (`noerror`,
    /// `nxdomain`, `refused`, `formerr`, …).
    pub dns_queries: Family<RcodeLabel, Counter>,
    /// Challenge values the delegation zone serves now.
    pub delegation_zone_values: Gauge,
    /// Events the delegation zone of this replica is behind the feed head (the head minus the
    /// position its zone follower applied; see `read::zone_lag`).
    pub delegation_zone_lag_events: Gauge,
    /// TCP connections the delegation zone's DNS server holds now.
    pub dns_tcp_connections: Gauge,
    /// TCP connections of the delegation zone's DNS server closed unserved, by `outcome`:
    /// `total` (the server held `DNS_TCP_MAX_CONNECTIONS`), `per_source` (the source held
    /// `DNS_TCP_MAX_CONNECTIONS_PER_ADDRESS`), `accept_error` (an accept failed, e.g. `EMFILE`).
    pub dns_tcp_refused: Family<OutcomeLabel, Counter>,
    /// Webhook delivery attempts by outcome: `delivered`, `retry`, `failed` (retries spent),
    /// `disabled` (the receiver answered 410).
    pub webhook_deliveries: Family<OutcomeLabel, Counter>,
    /// New orders left in the first CA's account budget, as last read at `GET /ca`.
    pub ca_new_orders_left: Gauge,
    /// Orders not placed because a budget was spent (`new_orders`, `failed_validations`), or
    /// because the CA said not now to a new order (`ca`, counted where its answer is met).
    pub ca_refusals: Family<BudgetLabel, Counter>,
    /// Orders whose CAA records forbade a configured CA: `fallback` (sent to another CA they
    /// permit), `refused` (they permit none: `CAA_CHECK=enforce`), `warned` (ordered anyway:
    /// `CAA_CHECK=warn`).
    pub caa_refusals: Family<OutcomeLabel, Counter>,
    /// CAA lookups before an order that failed (SERVFAIL, timeout): the order went on.
    pub caa_lookup_failures: Counter,
    /// Health checks of a domain made: `recorded` (given to the aggregate, which records only
    /// a change), `failed` (the report could not be recorded).
    pub health_checks: Family<OutcomeLabel, Counter>,
    /// Seconds from an event (the time it records, within milliseconds of its commit) to the
    /// delivery of its message, for messages delivered at their first attempt.
    pub webhook_delivery_lag: Histogram,
    /// 1 while a feed consumer (`zone_follower`, `webhook:<endpoint id>`) is stopped at an event
    /// it cannot read (see `read::stuck`), 0 once it reads on.
    pub feed_consumer_stuck: Family<ConsumerLabel, Gauge>,
    /// The edge routes' metrics (`edge_…`).
    pub edge: EdgeMetrics,
}

/// A single `consumer` label: a reader of the event feed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabel {
    /// `zone_follower`, or `webhook:<endpoint id>`.
    pub consumer: String,
}

/// A single `task` label: a kind of background work.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    /// `renewal-scheduler`, `supervisor`, `zone-follower`, `webhook-dispatch`, `webhook-driver`,
    /// `checkpoint-signer`, `projection-catch-up`, `commit-listener`.
    pub task: &'static str,
}

/// A single `budget` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabel {
    /// `new_orders`, `failed_validations`, or `ca` (the CA itself said "not now").
    pub budget: &'static str,
}

/// A single `rcode` label: a DNS response code in lower case.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RcodeLabel {
    /// The response code, e.g. `noerror` or `nxdomain`.
    pub rcode: String,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Statuses reported by the `domains` gauge, zero included, so a status never disappears from
/// the series when its last domain leaves it.
const STATUSES: [&str; 8] = [
    DomainStatus::Pending.as_str(),
    DomainStatus::Verified.as_str(),
    DomainStatus::CertificatePending.as_str(),
    DomainStatus::Active.as_str(),
    DomainStatus::Failed.as_str(),
    DomainStatus::Expired.as_str(),
    DomainStatus::Moved.as_str(),
    "removed",
];

/// The checks and outcomes reported by the `domains_health` gauge, zero included.
const HEALTH_CHECKS: [&str; 3] = ["routing", "delegation", "caa"];
const HEALTH_OUTCOMES: [CheckOutcome; 5] = [
    CheckOutcome::Ok,
    CheckOutcome::Elsewhere,
    CheckOutcome::Missing,
    CheckOutcome::Forbidden,
    CheckOutcome::Unknown,
];

fn append_histogram() -> Histogram {
    // 0.1 ms … ~3.3 s: a SQLite append is well under a millisecond, a loaded PostgreSQL more.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("dns_handling");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        let domains = Family::<StatusLabel, Gauge>::default();
        registry.register("domains", "Domains by status", domains.clone());
        let domains_health = Family::<HealthLabels, Gauge>::default();
        registry.register(
            "domains_health",
            "Live domains by health check and the worst outcome over their names",
            domains_health.clone(),
        );
        // 1 s … ~2.3 h: a certificate takes seconds once DNS is right, minutes while it is not.
        let issuance_duration = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "issuance_duration_seconds",
            "Time from issue-certificate to active, for orders finished by this process",
            issuance_duration.clone(),
        );
        let txt_polls = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "txt_polls",
            "TXT lookups of pending orders by outcome",
            txt_polls.clone(),
        );
        let acme_requests = Family::<AcmeLabels, Counter>::default();
        registry.register(
            "acme_requests",
            "Requests to the ACME CA by endpoint and outcome",
            acme_requests.clone(),
        );
        let live_pollers = Gauge::default();
        registry.register(
            "live_pollers",
            "Order pollers alive in this process",
            live_pollers.clone(),
        );
        let poller_restarts = Counter::default();
        registry.register(
            "poller_restarts",
            "Pollers that died without finishing their order and were started again",
            poller_restarts.clone(),
        );
        let background_restarts = Family::<TaskLabel, Counter>::default();
        registry.register(
            "background_restarts",
            "Background work that panicked and was started again, by task",
            background_restarts.clone(),
        );
        let view_rebuilds = Counter::default();
        registry.register(
            "view_rebuilds",
            "Domain views that had missed events and were folded again from their streams",
            view_rebuilds.clone(),
        );
        let checkpoint_refusals = Counter::default();
        registry.register(
            "checkpoint_refusals",
            "Checkpoint signings refused because the log no longer matches its checkpoints",
            checkpoint_refusals.clone(),
        );
        let event_append_duration =
            HistogramFamily::<OutcomeLabel>::new_with_constructor(append_histogram);
        registry.register(
            "event_append_duration_seconds",
            "Time to append one command's events to the store",
            event_append_duration.clone(),
        );
        let renewals = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "renewals",
            "Renewals by outcome: started_ari, started_lifetime, started_manual, started_revoked, issued, failed",
            renewals.clone(),
        );
        let certificates_expiring = Family::<WithinLabel, Gauge>::default();
        registry.register(
            "certificates_expiring",
            "Certificates in service ending within a horizon (expired, 1d, 7d, 30d, all)",
            certificates_expiring.clone(),
        );
        let renewal_lag_seconds = Gauge::default();
        registry.register(
            "renewal_lag_seconds",
            "Seconds the most overdue renewal-scheduler work has waited",
            renewal_lag_seconds.clone(),
        );
        let renewals_waiting_for_records = Gauge::default();
        registry.register(
            "renewals_waiting_for_records",
            "Renewals whose order waits for its TXT records to be published",
            renewals_waiting_for_records.clone(),
        );
        let dns_queries = Family::<RcodeLabel, Counter>::default();
        registry.register(
            "dns_queries",
            "Queries the delegation zone's DNS server answered, by response code",
            dns_queries.clone(),
        );
        let delegation_zone_lag_events = Gauge::default();
        registry.register(
            "delegation_zone_lag_events",
            "Events this replica's delegation zone is behind the event feed",
            delegation_zone_lag_events.clone(),
        );
        let delegation_zone_values = Gauge::default();
        registry.register(
            "delegation_zone_values",
            "Challenge values the delegation zone serves now",
            delegation_zone_values.clone(),
        );
        let dns_tcp_connections = Gauge::default();
        registry.register(
            "dns_tcp_connections",
            "TCP connections the delegation zone's DNS server holds now",
            dns_tcp_connections.clone(),
        );
        let dns_tcp_refused = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "dns_tcp_refused",
            "TCP connections of the delegation zone's DNS server closed unserved, by reason",
            dns_tcp_refused.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome",
            webhook_deliveries.clone(),
        );
        let webhook_delivery_lag = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "webhook_delivery_lag_seconds",
            "Seconds from an event (its own time) to its message's delivery (first attempts)",
            webhook_delivery_lag.clone(),
        );
        let ca_new_orders_left = Gauge::default();
        registry.register(
            "ca_new_orders_left",
            "New orders left in the account's budget, as this process last saw it",
            ca_new_orders_left.clone(),
        );
        let ca_refusals = Family::<BudgetLabel, Counter>::default();
        registry.register(
            "ca_refusals",
            "Orders not placed because a budget was spent or the CA said not now",
            ca_refusals.clone(),
        );
        let caa_refusals = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "caa_refusals",
            "Orders whose CAA records forbade a configured CA, by what was done",
            caa_refusals.clone(),
        );
        let caa_lookup_failures = Counter::default();
        registry.register(
            "caa_lookup_failures",
            "CAA lookups before an order that failed; the order went on",
            caa_lookup_failures.clone(),
        );
        let health_checks = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "health_checks",
            "Health checks of a domain's DNS made, by whether their report was recorded",
            health_checks.clone(),
        );
        let feed_consumer_stuck = Family::<ConsumerLabel, Gauge>::default();
        registry.register(
            "feed_consumer_stuck",
            "1 while a feed consumer is stopped at an event it cannot read",
            feed_consumer_stuck.clone(),
        );
        let edge = EdgeMetrics::register(&mut registry);
        Self {
            edge,
            registry,
            domains_health,
            feed_consumer_stuck,
            ca_new_orders_left,
            ca_refusals,
            caa_refusals,
            caa_lookup_failures,
            health_checks,
            webhook_deliveries,
            webhook_delivery_lag,
            dns_queries,
            delegation_zone_values,
            delegation_zone_lag_events,
            dns_tcp_connections,
            dns_tcp_refused,
            renewals,
            renewals_waiting_for_records,
            certificates_expiring,
            renewal_lag_seconds,
            http_requests,
            domains,
            issuance_duration,
            txt_polls,
            acme_requests,
            live_pollers,
            poller_restarts,
            background_restarts,
            view_rebuilds,
            checkpoint_refusals,
            event_append_duration,
        }
    }

    /// Counts one request to the CA.
    pub fn acme_request<T, E>(&self, endpoint: &'static str, result: &Result<T, E>) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.acme_requests
            .get_or_create(&AcmeLabels { endpoint, outcome })
            .inc();
    }

    /// Counts one TCP connection of the delegation zone's DNS server closed unserved.
    pub fn dns_tcp_refusal(&self, reason: &'static str) {
        self.dns_tcp_refused
            .get_or_create(&OutcomeLabel { outcome: reason })
            .inc();
    }

    /// Counts one TXT poll.
    pub fn txt_poll(&self, outcome: &'static str) {
        self.txt_polls
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts a renewal started for `reason` (`ari`, `lifetime`, `manual`, `revoked`).
    pub fn renewal_started(&self, reason: &'static str) {
        let outcome = match reason {
            "ari" => "started_ari",
            "manual" => "started_manual",
            "revoked" => "started_revoked",
            _ => "started_lifetime",
        };
        self.renewals.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts an order whose CAA records forbade a CA (`fallback`, `refused`, `warned`).
    pub fn caa_refusal(&self, outcome: &'static str) {
        self.caa_refusals
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts a CAA lookup before an order that failed.
    pub fn caa_lookup_failed(&self) {
        self.caa_lookup_failures.inc();
    }

    /// Counts a health check of a domain (`recorded` or `failed`).
    pub fn health_check(&self, outcome: &'static str) {
        self.health_checks
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts a renewal that ended (`issued` or `failed`).
    pub fn renewal_finished(&self, outcome: &'static str) {
        self.renewals.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Records one append of events.
    pub fn event_append(&self, elapsed: Duration, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.event_append_duration
            .get_or_create(&OutcomeLabel { outcome })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the figures read from the store for this scrape and renders every metric as text.
    pub fn render(&self, figures: &ScrapeFigures) -> String {
        for status in STATUSES {
            let count = figures
                .domains_by_status
                .iter()
                .find(|(stored, _)| stored == status)
                .map_or(0, |(_, count)| *count);
            self.domains
                .get_or_create(&StatusLabel { status })
                .set(count);
        }
        for check in HEALTH_CHECKS {
            for outcome in HEALTH_OUTCOMES.map(CheckOutcome::as_str) {
                let count = figures
                    .domains_by_health
                    .iter()
                    .find(|((known_check, known_outcome), _)| {
                        known_check == check && known_outcome == outcome
                    })
                    .map_or(0, |(_, count)| *count);
                self.domains_health
                    .get_or_create(&HealthLabels { check, outcome })
                    .set(count);
            }
        }
        for (within, count) in figures.certificates_expiring {
            self.certificates_expiring
                .get_or_create(&WithinLabel { within })
                .set(count);
        }
        self.renewal_lag_seconds.set(figures.renewal_lag_seconds);
        self.renewals_waiting_for_records
            .set(figures.renewals_waiting_for_records);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
