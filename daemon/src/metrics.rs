//! Prometheus metrics. One registry per hookd instance (no global state but the process's
//! log writer, of which there is one), so tests can run several instances in one process and
//! read each one's numbers.

use std::sync::OnceLock;
use std::time::Duration;

use common::Source;
use common::db::stats::Queue;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels<const N: usize> = [(&'static str, String); N];

/// Log lines waiting for a slow reader before the newest are dropped (about 2 MiB).
pub const LOG_BUFFER_LINES: usize = 8_192;

/// How many lines the process's log writer dropped, its reader behind (see `main`).
static DROPPED_LOG_LINES: OnceLock<tracing_appender::non_blocking::ErrorCounter> = OnceLock::new();

/// Has every instance report the log lines the process's writer drops; set once, by `main`.
pub fn report_dropped_log_lines(counter: tracing_appender::non_blocking::ErrorCounter) {
    let _ = DROPPED_LOG_LINES.set(counter);
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    received: Family<Labels<2>, Counter>,
    duplicates: Family<Labels<1>, Counter>,
    rejected: Family<Labels<2>, Counter>,
    processed: Family<Labels<2>, Counter>,
    attempt_seconds: Family<Labels<1>, Histogram, fn() -> Histogram>,
    ingest_seconds: Family<Labels<1>, Histogram, fn() -> Histogram>,
    queue_depth: Gauge,
    oldest_pending: Gauge<f64, std::sync::atomic::AtomicU64>,
    retrying: Gauge,
    dead: Gauge,
    log_lines_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hookd");
        let metrics = Metrics {
            received: Family::default(),
            duplicates: Family::default(),
            rejected: Family::default(),
            processed: Family::default(),
            attempt_seconds: Family::new_with_constructor(latency_histogram),
            ingest_seconds: Family::new_with_constructor(latency_histogram),
            queue_depth: Gauge::default(),
            oldest_pending: Gauge::default(),
            retrying: Gauge::default(),
            dead: Gauge::default(),
            log_lines_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "webhooks_received",
            "Webhooks stored, by source and event type",
            metrics.received.clone(),
        );
        registry.register(
            "webhooks_duplicate",
            "Redeliveries of events already stored",
            metrics.duplicates.clone(),
        );
        registry.register(
            "webhooks_rejected",
            "Webhooks refused, by source and reason",
            metrics.rejected.clone(),
        );
        registry.register(
            "events_processed",
            "Processing attempts, by source and outcome",
            metrics.processed.clone(),
        );
        registry.register(
            "attempt_duration_seconds",
            "Time of one processing attempt",
            metrics.attempt_seconds.clone(),
        );
        registry.register(
            "ingest_duration_seconds",
            "Time from request to acknowledgement",
            metrics.ingest_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Events waiting or in progress",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "oldest_pending_seconds",
            "Age of the oldest event waiting to be processed (0 when none is)",
            metrics.oldest_pending.clone(),
        );
        registry.register(
            "events_retrying",
            "Events waiting for a retry",
            metrics.retrying.clone(),
        );
        registry.register(
            "events_dead",
            "Events in the dead-letter queue",
            metrics.dead.clone(),
        );
        registry.register(
            "log_lines_dropped",
            format!("Log lines dropped because the log's reader fell behind by more than {LOG_BUFFER_LINES}"),
            metrics.log_lines_dropped.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub fn received(&self, source: Source, event_type: &str) {
        self.received
            .get_or_create(&[
                ("source", source.to_string()),
                ("event_type", event_type.to_owned()),
            ])
            .inc();
    }

    pub fn duplicate(&self, source: Source) {
        self.duplicates
            .get_or_create(&[("source", source.to_string())])
            .inc();
    }

    pub fn rejected(&self, source: Source, reason: &'static str) {
        self.rejected
            .get_or_create(&[
                ("source", source.to_string()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    pub fn ingest_latency(&self, source: Source, elapsed: Duration) {
        self.ingest_seconds
            .get_or_create(&[("source", source.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    pub fn processed(&self, source: Source, outcome: &str, elapsed: Duration) {
        self.processed
            .get_or_create(&[
                ("source", source.to_string()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        self.attempt_seconds
            .get_or_create(&[("source", source.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition text, with the queue gauges as of `queue` (read at scrape time).
    pub fn render(&self, queue: &Queue) -> String {
        self.queue_depth.set(queue.depth());
        self.oldest_pending
            .set(queue.oldest_pending_secs.unwrap_or(0.0));
        self.retrying.set(queue.retrying);
        self.dead.set(queue.dead);
        let dropped = DROPPED_LOG_LINES
            .get()
            .map_or(0, |c| c.dropped_lines() as u64);
        let reported = self.log_lines_dropped.get();
        if dropped > reported {
            self.log_lines_dropped.inc_by(dropped - reported);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let metrics = Metrics::default();
        metrics.received(Source::Stripe, "invoice.paid");
        metrics.received(Source::Stripe, "invoice.paid");
        metrics.rejected(Source::Telnyx, "signature");
        metrics.processed(Source::Custom, "succeeded", Duration::from_millis(3));
        let text = metrics.render(&Queue {
            pending: 2,
            retrying: 1,
            processing: 1,
            dead: 5,
            oldest_pending_secs: Some(12.5),
        });
        for line in [
            "hookd_webhooks_received_total{source=\"stripe\",event_type=\"invoice.paid\"} 2",
            "hookd_webhooks_rejected_total{source=\"telnyx\",reason=\"signature\"} 1",
            "hookd_events_processed_total{source=\"custom\",outcome=\"succeeded\"} 1",
            "hookd_attempt_duration_seconds_count{source=\"custom\"} 1",
            "hookd_queue_depth 4",
            "hookd_events_dead 5",
            "hookd_oldest_pending_seconds 12.5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
