//! Desktop notifications: when events are dead-lettered, and when the success rate drops. The
//! decisions are pure ([`Alerts`], driven by snapshots and the clock); sending goes through the
//! [`Notifier`] trait so tests can record instead of talking to D-Bus.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use common::db::dlq::DeadEvent;
use tokio::sync::mpsc;

use crate::action::Action;

/// A burst is over when no new event has died for this long...
pub const QUIET: TimeDelta = TimeDelta::seconds(3);
/// ...or when it has gone on this long, so a steady stream still gets reported.
pub const MAX_HOLD: TimeDelta = TimeDelta::seconds(30);

pub use crate::model::Notification;

pub trait Notifier: Send + Sync + 'static {
    /// Shows one notification. Blocking is allowed: it runs off the UI's threads.
    fn notify(&self, notification: &Notification) -> Result<(), String>;
}

/// The freedesktop notification service on the session bus, through notify-rust.
#[derive(Debug, Default)]
pub struct DesktopNotifier;

impl Notifier for DesktopNotifier {
    fn notify(&self, n: &Notification) -> Result<(), String> {
        let urgency = if n.critical {
            notify_rust::Urgency::Critical
        } else {
            notify_rust::Urgency::Normal
        };
        notify_rust::Notification::new()
            .appname("hooktop")
            .summary(&n.summary)
            .body(&n.body)
            .urgency(urgency)
            .show()
            .map(drop)
            .map_err(|e| short_reason(&e.to_string()))
    }
}

/// zbus's errors name socket paths and D-Bus error names; the status bar has room for a few
/// words.
pub fn short_reason(error: &str) -> String {
    if error.contains("Failed to connect") {
        "no D-Bus session".to_owned()
    } else if error.contains("ServiceUnknown") || error.contains("NameHasNoOwner") {
        "no notification service on D-Bus".to_owned()
    } else {
        error.chars().take(60).collect()
    }
}

/// Keeps what it is asked to show, for tests.
#[derive(Debug, Default, Clone)]
pub struct RecordingNotifier {
    pub sent: Arc<Mutex<Vec<Notification>>>,
}

impl RecordingNotifier {
    pub fn sent(&self) -> Vec<Notification> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Notifier for RecordingNotifier {
    fn notify(&self, n: &Notification) -> Result<(), String> {
        self.sent
            .lock()
            .map_err(|_| "recorder poisoned".to_owned())?
            .push(n.clone());
        Ok(())
    }
}

/// Sends notifications one at a time on a blocking thread, so a slow or absent D-Bus never
/// holds up the screen. A failure comes back as [`Action::NotifyFailed`].
pub fn spawn_dispatcher(
    notifier: Arc<dyn Notifier>,
    actions: mpsc::UnboundedSender<Action>,
) -> mpsc::UnboundedSender<Notification> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Notification>();
    tokio::spawn(async move {
        while let Some(n) = rx.recv().await {
            let notifier = notifier.clone();
            let result = tokio::task::spawn_blocking(move || notifier.notify(&n)).await;
            let failure = match result {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(_) => "the notifier crashed".to_owned(),
            };
            if actions.send(Action::NotifyFailed(failure)).is_err() {
                break;
            }
        }
    });
    tx
}

/// Both alerts, fed by every snapshot and tick.
#[derive(Debug, Clone)]
pub struct Alerts {
    pub dead: DeadAlerts,
    pub rate: RateAlert,
}

impl Alerts {
    pub fn new(threshold: f64) -> Self {
        Alerts {
            dead: DeadAlerts::default(),
            rate: RateAlert::new(threshold),
        }
    }
}

/// Collects newly dead events into bursts.
#[derive(Debug, Clone, Default)]
pub struct DeadAlerts {
    /// The newest death already accounted for, as (dead_at, id); `None` before the first look,
    /// whose backlog is on screen and is not news.
    seen: Option<Option<(DateTime<Utc>, i64)>>,
    pending: BTreeMap<String, u64>,
    /// Some deaths of the burst may be beyond the newest events read.
    saturated: bool,
    first_at: Option<DateTime<Utc>>,
    last_at: Option<DateTime<Utc>>,
}

impl DeadAlerts {
    /// `recent` holds the newest dead events, newest first, as read at `now`.
    pub fn observe(&mut self, now: DateTime<Utc>, recent: &[DeadEvent], limit: usize) {
        let newest = recent.iter().map(|e| (e.dead_at, e.id)).max();
        let Some(seen) = self.seen else {
            self.seen = Some(newest);
            return;
        };
        let fresh: Vec<&DeadEvent> = recent
            .iter()
            .filter(|e| seen.is_none_or(|s| (e.dead_at, e.id) > s))
            .collect();
        if fresh.is_empty() {
            return;
        }
        self.saturated |= fresh.len() >= limit;
        for e in &fresh {
            *self
                .pending
                .entry(format!("{} {}", e.source, e.event_type))
                .or_default() += 1;
        }
        self.seen = Some(newest.max(seen));
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
    }

    /// The burst's notification, once it is over.
    pub fn due(&mut self, now: DateTime<Utc>) -> Option<Notification> {
        let (first, last) = (self.first_at?, self.last_at?);
        if now - last < QUIET && now - first < MAX_HOLD {
            return None;
        }
        let total: u64 = self.pending.values().sum();
        let mut kinds: Vec<(&String, &u64)> = self.pending.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let shown: Vec<String> = kinds
            .iter()
            .take(5)
            .map(|(kind, n)| format!("{kind} ×{n}"))
            .collect();
        let mut body = shown.join(", ");
        if kinds.len() > 5 {
            body.push_str(&format!(", and {} more types", kinds.len() - 5));
        }
        let plus = if self.saturated { "+" } else { "" };
        let noun = if total == 1 && !self.saturated {
            "event"
        } else {
            "events"
        };
        let n = Notification {
            summary: format!("hookd: {total}{plus} {noun} dead-lettered"),
            body,
            critical: true,
        };
        self.pending.clear();
        self.saturated = false;
        self.first_at = None;
        self.last_at = None;
        Some(n)
    }
}

/// Fires once each time the event success rate falls below the threshold.
#[derive(Debug, Clone)]
pub struct RateAlert {
    pub threshold: f64,
    below: bool,
}

impl RateAlert {
    pub fn new(threshold: f64) -> Self {
        RateAlert {
            threshold,
            below: false,
        }
    }

    pub fn is_below(&self) -> bool {
        self.below
    }

    /// `rate` is `None` when nothing finished in the window: no news either way.
    pub fn observe(&mut self, rate: Option<f64>) -> Option<Notification> {
        let rate = rate?;
        let below = rate < self.threshold;
        let crossed = below && !self.below;
        self.below = below;
        crossed.then(|| Notification {
            summary: format!(
                "hookd: event success rate {:.1}% (last 5 min)",
                rate * 100.0
            ),
            body: format!(
                "below the alert threshold of {:.1}%",
                self.threshold * 100.0
            ),
            critical: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn dead(id: i64, at: i64, kind: &str) -> DeadEvent {
        DeadEvent {
            id,
            source: "stripe".into(),
            event_id: format!("evt_{id}"),
            event_type: kind.into(),
            attempts: 4,
            last_error: Some("boom".into()),
            received_at: t(at - 10),
            dead_at: t(at),
            superseded: false,
        }
    }

    #[test]
    fn the_backlog_at_start_is_not_news() {
        let mut alerts = DeadAlerts::default();
        alerts.observe(t(0), &[dead(2, 0, "a"), dead(1, -5, "a")], 100);
        assert_eq!(alerts.due(t(100)), None);
    }

    #[test]
    fn a_burst_becomes_one_notification_after_a_quiet_spell() {
        let mut alerts = DeadAlerts::default();
        alerts.observe(t(0), &[], 100);
        alerts.observe(t(1), &[dead(1, 1, "invoice.paid")], 100);
        assert_eq!(alerts.due(t(2)), None, "the burst may go on");
        let later = [
            dead(3, 2, "invoice.paid"),
            dead(2, 2, "customer.created"),
            dead(1, 1, "invoice.paid"),
        ];
        alerts.observe(t(2), &later, 100);
        alerts.observe(t(3), &later, 100);
        assert_eq!(alerts.due(t(4)), None);
        let n = alerts.due(t(5)).expect("quiet for 3 s");
        assert_eq!(n.summary, "hookd: 3 events dead-lettered");
        assert_eq!(n.body, "stripe invoice.paid ×2, stripe customer.created ×1");
        assert_eq!(alerts.due(t(60)), None, "reported once");
        alerts.observe(t(61), &later, 100);
        assert_eq!(alerts.due(t(70)), None, "nothing new");
    }

    #[test]
    fn a_steady_stream_is_reported_every_max_hold() {
        let mut alerts = DeadAlerts::default();
        alerts.observe(t(0), &[], 100);
        for s in 1..=31 {
            alerts.observe(t(s), &[dead(s, s, "x")], 100);
            if s < 31 {
                assert_eq!(alerts.due(t(s)), None, "at {s}");
            }
        }
        let n = alerts.due(t(31)).expect("held long enough");
        assert_eq!(n.summary, "hookd: 31 events dead-lettered");
    }

    #[test]
    fn more_deaths_than_read_are_marked_as_a_lower_bound() {
        let mut alerts = DeadAlerts::default();
        alerts.observe(t(0), &[], 2);
        alerts.observe(t(1), &[dead(9, 1, "x"), dead(8, 1, "x")], 2);
        let n = alerts.due(t(10)).unwrap();
        assert_eq!(n.summary, "hookd: 2+ events dead-lettered");
    }

    #[test]
    fn the_rate_alert_fires_once_per_crossing() {
        let mut rate = RateAlert::new(0.9);
        assert_eq!(rate.observe(Some(0.95)), None);
        let n = rate.observe(Some(0.5)).expect("crossed");
        assert_eq!(n.summary, "hookd: event success rate 50.0% (last 5 min)");
        assert_eq!(n.body, "below the alert threshold of 90.0%");
        assert_eq!(rate.observe(Some(0.4)), None, "still below");
        assert_eq!(rate.observe(None), None, "no data keeps the state");
        assert!(rate.is_below());
        assert_eq!(rate.observe(Some(0.9)), None, "recovered");
        assert!(rate.observe(Some(0.89)).is_some(), "crossed again");
    }

    #[test]
    fn reasons_are_short() {
        assert_eq!(
            short_reason(
                "Failed to connect to address `unix:path=/run/user/0/bus`: No such file or \
                 directory (os error 2)"
            ),
            "no D-Bus session"
        );
        assert_eq!(
            short_reason("org.freedesktop.DBus.Error.ServiceUnknown: The name is not activatable"),
            "no notification service on D-Bus"
        );
    }

    #[tokio::test]
    async fn the_dispatcher_reports_a_missing_notification_service() {
        struct NoBus;
        impl Notifier for NoBus {
            fn notify(&self, _: &Notification) -> Result<(), String> {
                Err("no D-Bus session".into())
            }
        }
        let (actions, mut rx) = mpsc::unbounded_channel();
        let tx = spawn_dispatcher(Arc::new(NoBus), actions);
        tx.send(Notification {
            summary: "s".into(),
            body: "b".into(),
            critical: false,
        })
        .unwrap();
        match rx.recv().await {
            Some(Action::NotifyFailed(e)) => assert_eq!(e, "no D-Bus session"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
