//! The built-in handlers' effects for a whole batch at once: one statement per kind of effect
//! (and per round, see below) instead of one per event, on the caller's transaction, so the
//! effects still commit with the events' `succeeded` marks.
//!
//! A statement cannot apply two events to one row the way running them one after the other
//! would (`ON CONFLICT DO UPDATE` refuses to touch a row twice, `UPDATE .. FROM` silently
//! keeps one), so events that meet on a row are split into rounds: round `n` holds the `n`th
//! event of each row, in batch order, and the rounds run in order. A batch rarely has more
//! than one.
//!
//! Nothing here fails one event alone: an event whose business is missing is reported as
//! such and writes nothing, and a statement that fails fails the batch, whose caller then runs
//! the events one by one (see `daemon/src/worker`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::Hash;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::business::{Applied, BusinessRef, CallEvent, MessageEvent, Statements};
use super::schema::AppTables;

/// An `audit_logs` entry that owns what the payload does not hold as text.
#[derive(Debug, Clone)]
pub struct Audit<'a> {
    pub action: &'a str,
    /// A JSON object, written as the handler serialized it.
    pub details: Box<serde_json::value::RawValue>,
    pub customer: Option<&'a str>,
    pub subscription: Option<&'a str>,
    /// `businesses.id` as text.
    pub key: Option<Cow<'a, str>>,
    pub webhook_id: i64,
    pub source: crate::Source,
}

impl<'a> Audit<'a> {
    /// The business the entry concerns, as the one-event functions take it.
    pub fn business(&self) -> BusinessRef<'_> {
        match (self.customer, self.subscription, self.key.as_deref()) {
            (Some(c), _, _) => BusinessRef::Customer(c),
            (None, Some(s), _) => BusinessRef::Subscription(s),
            (None, None, Some(k)) => BusinessRef::Key(k),
            (None, None, None) => BusinessRef::None,
        }
    }
}

/// What a Stripe event does to its business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeKind {
    /// `customer.subscription.*`: the subscription's id, status, plan and start date, unless
    /// newer state was applied.
    Subscription,
    /// `invoice.payment_succeeded`: `last_payment_date` forward, never back.
    Paid,
    /// `invoice.payment_failed`: `past_due`, unless newer state was applied.
    Failed,
}

impl StripeKind {
    fn as_str(self) -> &'static str {
        match self {
            StripeKind::Subscription => "subscription",
            StripeKind::Paid => "paid",
            StripeKind::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StripeEffect<'a> {
    pub kind: StripeKind,
    pub customer_id: Option<&'a str>,
    pub subscription_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub plan: Option<&'a str>,
    pub start_date: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    /// The event's `created`: what orders Stripe's out-of-order deliveries.
    pub created: DateTime<Utc>,
    /// Written unless no business is linked; marked `"stale": true` when newer state won.
    pub audit: Audit<'a>,
}

/// The batch statements whose shape depends on the application's tables.
#[derive(Debug, Clone)]
pub struct BatchStatements {
    audit: String,
    lock: String,
    stripe: String,
    call: String,
    message: String,
}

/// The business an audit entry names, over the columns `customer`, `subscription` and (when
/// `keyed`) `key` of `t`, as [`super::business`]'s one-event statement finds it. A key is
/// looked up in the statement's `keyed` CTE (see [`keyed`]).
fn business_of(t: &str, keyed: bool) -> String {
    let by_key = if keyed {
        format!("(SELECT k.id FROM keyed k WHERE k.key = {t}.key LIMIT 1)")
    } else {
        "NULL".to_owned()
    };
    format!(
        "COALESCE(
            (SELECT id FROM businesses WHERE {t}.customer IS NOT NULL AND stripe_customer_id = {t}.customer LIMIT 1),
            (SELECT id FROM businesses WHERE {t}.subscription IS NOT NULL AND stripe_subscription_id = {t}.subscription LIMIT 1),
            {by_key})"
    )
}

/// The businesses a batch names by key (`$keys`, text): the key may be of any type, so it is
/// compared as text, which no index serves; one scan per batch instead of one per event.
pub(crate) fn keyed(keys: &str) -> String {
    format!(
        "keyed AS MATERIALIZED (
             SELECT b.id, b.id::text AS key FROM businesses b WHERE b.id::text = ANY({keys}))"
    )
}

/// `INSERT INTO audit_logs` of the rows of `from` (columns `action`, `details`, `created_at`,
/// `webhook_id`, `source`, `customer`, `subscription`, `key`, `n`), optional columns where the
/// table has them.
fn audit_insert(tables: &AppTables, from: &str, keyed: bool) -> String {
    let business = business_of("a", keyed);
    let mut cols = String::new();
    let mut vals = String::new();
    for (column, value) in [
        ("business_id", business.as_str()),
        ("webhook_id", "a.webhook_id"),
        ("source", "a.source"),
    ] {
        if tables.has("audit_logs", column) {
            cols.push_str(&format!(", {column}"));
            vals.push_str(&format!(", {value}"));
        }
    }
    format!(
        "INSERT INTO audit_logs (action, details, created_at{cols})
         SELECT a.action, a.details, a.created_at{vals}
         FROM {from} a ORDER BY a.n"
    )
}

impl BatchStatements {
    pub fn new(tables: &AppTables, call: &str, message: &str) -> Self {
        let audit = audit_insert(
            tables,
            "(SELECT u.action, u.details::jsonb AS details, $3::timestamptz AS created_at,
                     u.webhook_id, u.source, u.customer, u.subscription, u.key, u.n
              FROM unnest($1::text[], $2::text[], $4::bigint[], $5::text[], $6::text[],
                          $7::text[], $8::text[])
                   WITH ORDINALITY AS u(action, details, webhook_id, source, customer,
                                        subscription, key, n))",
            true,
        );
        let audit = format!("WITH {} {audit}", keyed("$8::text[]"));
        // One statement takes every business row the batch's Stripe events touch, in key
        // order: batches that share businesses queue behind each other instead of
        // deadlocking, and nothing else in the batch locks a business row. The customer of a
        // failed invoice that names only its subscription is found as the one-event path
        // finds it.
        let order = if tables.has("businesses", "id") {
            "b.id"
        } else {
            "b.stripe_customer_id, b.stripe_subscription_id"
        };
        let lock = format!(
            "SELECT count(*) FROM (
                 SELECT FROM businesses b
                 WHERE b.stripe_customer_id = ANY($1)
                    OR b.stripe_subscription_id = ANY($2)
                    OR b.stripe_customer_id IN (SELECT s.stripe_customer_id FROM businesses s
                                                WHERE s.stripe_subscription_id = ANY($3))
                 ORDER BY {order}
                 FOR NO KEY UPDATE OF b
             ) l"
        );
        // One round of Stripe events, at most one per business row (see `stripe_rounds`).
        // The rows are already locked, so this statement's snapshot holds their latest
        // state. An event applies when its business exists and, for subscription state, when
        // it is not older than the newest applied (`stripe_state`, by `created`): the upsert
        // that records it says which won, and only those update the business.
        let stripe_audit = audit_insert(
            tables,
            "(SELECT e.action,
                     CASE WHEN e.kind <> 'paid'
                               AND e.state_customer NOT IN (SELECT customer_id FROM won)
                          THEN e.details || '{\"stale\": true}' ELSE e.details END AS details,
                     $14::timestamptz AS created_at, e.webhook_id, 'stripe' AS source,
                     e.audit_customer AS customer, e.audit_subscription AS subscription,
                     NULL::text AS key, e.n
              FROM e WHERE e.n IN (SELECT n FROM target))",
            // Stripe events name their business by customer or subscription only.
            false,
        );
        let stripe = format!(
            "WITH u AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                      $5::text[], $6::timestamptz[], $7::timestamptz[],
                                      $8::timestamptz[], $9::text[], $10::text[],
                                      $11::bigint[], $12::text[], $13::text[])
                      WITH ORDINALITY AS u(kind, customer, subscription, status, plan,
                                           start_date, paid_at, created, action, details_text,
                                           webhook_id, audit_customer, audit_subscription, n)
             ), e AS (
                 SELECT u.*, u.details_text::jsonb AS details,
                        -- Whose state it judges: the customer, or its subscription's.
                        CASE WHEN u.kind <> 'paid' THEN COALESCE(u.customer,
                            (SELECT s.stripe_customer_id FROM businesses s
                             WHERE s.stripe_subscription_id = u.subscription LIMIT 1))
                        END AS state_customer
                 FROM u
             ), target AS (
                 -- The business rows each event updates, as the one-event statements match them.
                 SELECT e.n, b.ctid AS brow FROM e JOIN businesses b
                     ON b.stripe_customer_id = CASE WHEN e.kind = 'paid' THEN e.customer
                                                    ELSE e.state_customer END
                 UNION ALL
                 SELECT e.n, b.ctid FROM e JOIN businesses b
                     ON e.kind = 'paid' AND e.customer IS NULL
                        AND b.stripe_subscription_id = e.subscription
             ), won AS (
                 INSERT INTO stripe_state AS s (customer_id, state_at)
                 SELECT e.state_customer, e.created FROM e
                 WHERE e.kind <> 'paid' AND e.n IN (SELECT n FROM target)
                 ORDER BY e.state_customer
                 ON CONFLICT (customer_id) DO UPDATE SET state_at = EXCLUDED.state_at
                 WHERE s.state_at <= EXCLUDED.state_at
                 RETURNING s.customer_id
             ), applied AS (
                 SELECT e.* FROM e
                 WHERE e.kind = 'paid' OR e.state_customer IN (SELECT customer_id FROM won)
             ), updated AS (
                 UPDATE businesses b SET
                     stripe_subscription_id = CASE a.kind
                         WHEN 'subscription' THEN a.subscription
                         WHEN 'paid' THEN COALESCE(b.stripe_subscription_id, a.subscription)
                         ELSE b.stripe_subscription_id END,
                     subscription_status = CASE a.kind
                         WHEN 'subscription' THEN a.status
                         WHEN 'failed' THEN 'past_due'
                         ELSE b.subscription_status END,
                     subscription_plan = CASE WHEN a.kind = 'subscription'
                         THEN COALESCE(a.plan, b.subscription_plan)
                         ELSE b.subscription_plan END,
                     subscription_start_date = CASE WHEN a.kind = 'subscription'
                         THEN COALESCE(a.start_date, b.subscription_start_date)
                         ELSE b.subscription_start_date END,
                     last_payment_date = CASE WHEN a.kind = 'paid'
                         THEN GREATEST(b.last_payment_date, a.paid_at)
                         ELSE b.last_payment_date END,
                     updated_at = now()
                 FROM applied a JOIN target t USING (n)
                 WHERE b.ctid = t.brow
                 RETURNING a.n
             ), audited AS (
                 {stripe_audit}
             )
             SELECT e.n::int8, e.n IN (SELECT n FROM target),
                    COALESCE(e.kind = 'paid' OR e.state_customer IN (SELECT customer_id FROM won),
                             false)
             FROM e ORDER BY e.n"
        );
        BatchStatements {
            audit,
            lock,
            stripe,
            call: call.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// Splits `items` into rounds in which no key appears twice, keeping each key's items in
/// order: item `i` goes to round `k`, where `k` is how many earlier items share its key.
fn rounds<K: Eq + Hash>(keys: impl IntoIterator<Item = K>) -> Vec<Vec<usize>> {
    let mut seen: HashMap<K, usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let round = seen.entry(key).or_insert(0);
        if *round == rounds.len() {
            rounds.push(Vec::new());
        }
        rounds[*round].push(i);
        *round += 1;
    }
    rounds
}

/// Writes audit entries, in order, in one statement.
pub async fn insert_audits(
    conn: &mut PgConnection,
    statements: &Statements,
    entries: &[Audit<'_>],
) -> sqlx::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let details: Vec<&str> = entries.iter().map(|a| a.details.get()).collect();
    sqlx::query(&statements.batch.audit)
        .bind(entries.iter().map(|a| a.action).collect::<Vec<_>>())
        .bind(&details)
        .bind(Utc::now())
        .bind(entries.iter().map(|a| a.webhook_id).collect::<Vec<_>>())
        .bind(
            entries
                .iter()
                .map(|a| a.source.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(entries.iter().map(|a| a.customer).collect::<Vec<_>>())
        .bind(entries.iter().map(|a| a.subscription).collect::<Vec<_>>())
        .bind(entries.iter().map(|a| a.key.as_deref()).collect::<Vec<_>>())
        .execute(conn)
        .await?;
    Ok(())
}

/// Applies Stripe events with the out-of-order rule of [`super::business::apply_subscription`]
/// and [`super::business::apply_invoice`], as if one after the other in slice order, and
/// audits each one that found its business. Returns what became of each.
pub async fn apply_stripe(
    conn: &mut PgConnection,
    statements: &Statements,
    effects: &[StripeEffect<'_>],
) -> sqlx::Result<Vec<Applied>> {
    if effects.is_empty() {
        return Ok(Vec::new());
    }
    let customers: Vec<&str> = effects.iter().filter_map(|e| e.customer_id).collect();
    let by_subscription: Vec<&str> = effects
        .iter()
        .filter(|e| e.customer_id.is_none())
        .filter_map(|e| e.subscription_id)
        .collect();
    let failed_by_subscription: Vec<&str> = effects
        .iter()
        .filter(|e| e.customer_id.is_none() && e.kind != StripeKind::Paid)
        .filter_map(|e| e.subscription_id)
        .collect();
    sqlx::query(&statements.batch.lock)
        .bind(&customers)
        .bind(&by_subscription)
        .bind(&failed_by_subscription)
        .execute(&mut *conn)
        .await?;
    let mut outcomes = vec![Applied::NoBusiness; effects.len()];
    for round in stripe_rounds(effects) {
        let of = |f: &dyn Fn(&StripeEffect<'_>) -> Option<String>| -> Vec<Option<String>> {
            round.iter().map(|&i| f(&effects[i])).collect()
        };
        let times = |f: &dyn Fn(&StripeEffect<'_>) -> Option<DateTime<Utc>>| {
            round.iter().map(|&i| f(&effects[i])).collect::<Vec<_>>()
        };
        let rows: Vec<(i64, bool, bool)> = sqlx::query_as(&statements.batch.stripe)
            .bind(of(&|e| Some(e.kind.as_str().to_owned())))
            .bind(of(&|e| e.customer_id.map(str::to_owned)))
            .bind(of(&|e| e.subscription_id.map(str::to_owned)))
            .bind(of(&|e| e.status.map(str::to_owned)))
            .bind(of(&|e| e.plan.map(str::to_owned)))
            .bind(times(&|e| e.start_date))
            .bind(times(&|e| e.paid_at))
            .bind(times(&|e| Some(e.created)))
            .bind(of(&|e| Some(e.audit.action.to_owned())))
            .bind(of(&|e| Some(e.audit.details.to_string())))
            .bind(
                round
                    .iter()
                    .map(|&i| effects[i].audit.webhook_id)
                    .collect::<Vec<_>>(),
            )
            .bind(of(&|e| e.audit.customer.map(str::to_owned)))
            .bind(of(&|e| e.audit.subscription.map(str::to_owned)))
            .bind(Utc::now())
            .fetch_all(&mut *conn)
            .await?;
        for (n, found, won) in rows {
            let i = round[usize::try_from(n - 1).expect("ordinality starts at 1")];
            outcomes[i] = match (found, won) {
                (false, _) => Applied::NoBusiness,
                (true, true) => Applied::Updated,
                (true, false) => Applied::Stale,
            };
        }
    }
    Ok(outcomes)
}

/// Rounds of Stripe events in which no business row is matched twice. An event that names
/// its customer matches that customer's rows alone, so a run of such events splits into rounds
/// by customer; an event that names only a subscription may reach any row (which one depends
/// on what ran before it), so it runs in a round of its own, after everything before it and
/// before everything after it. Each customer's events thus keep their order, which with
/// `created` is all the out-of-order rule looks at.
fn stripe_rounds(effects: &[StripeEffect<'_>]) -> Vec<Vec<usize>> {
    let mut all = Vec::new();
    let mut run: Vec<usize> = Vec::new();
    let close = |run: &mut Vec<usize>, all: &mut Vec<Vec<usize>>| {
        let keys = run.iter().map(|&i| effects[i].customer_id);
        all.extend(
            rounds(keys)
                .into_iter()
                .map(|round| round.into_iter().map(|j| run[j]).collect::<Vec<_>>()),
        );
        run.clear();
    };
    for (i, effect) in effects.iter().enumerate() {
        if effect.customer_id.is_some() {
            run.push(i);
        } else {
            close(&mut run, &mut all);
            all.push(vec![i]);
        }
    }
    close(&mut run, &mut all);
    all
}

/// Upserts Telnyx call events, each as [`super::business::upsert_call`] would, in order.
pub async fn upsert_calls(
    conn: &mut PgConnection,
    statements: &Statements,
    calls: &[CallEvent<'_>],
) -> sqlx::Result<()> {
    for round in rounds(calls.iter().map(|c| c.call_id)) {
        let rows: Vec<&CallEvent<'_>> = round.iter().map(|&i| &calls[i]).collect();
        sqlx::query(&statements.batch.call)
            .bind(rows.iter().map(|c| c.call_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|c| c.customer_phone).collect::<Vec<_>>())
            .bind(rows.iter().map(|c| c.business_phone).collect::<Vec<_>>())
            .bind(rows.iter().map(|c| c.call_type).collect::<Vec<_>>())
            .bind(rows.iter().map(|c| c.status).collect::<Vec<_>>())
            .bind(rows.iter().map(|c| c.started_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|c| c.answered_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|c| c.ended_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|c| c.hangup_cause).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|c| c.business_key.as_deref())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Upserts Telnyx message events, each as [`super::business::upsert_message`] would, in order.
pub async fn upsert_messages(
    conn: &mut PgConnection,
    statements: &Statements,
    messages: &[MessageEvent<'_>],
) -> sqlx::Result<()> {
    for round in rounds(messages.iter().map(|m| m.message_id)) {
        let rows: Vec<&MessageEvent<'_>> = round.iter().map(|&i| &messages[i]).collect();
        sqlx::query(&statements.batch.message)
            .bind(rows.iter().map(|m| m.message_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|m| m.customer_phone).collect::<Vec<_>>())
            .bind(rows.iter().map(|m| m.business_phone).collect::<Vec<_>>())
            .bind(rows.iter().map(|m| m.message_type).collect::<Vec<_>>())
            .bind(rows.iter().map(|m| m.content).collect::<Vec<_>>())
            .bind(rows.iter().map(|m| m.status).collect::<Vec<_>>())
            .bind(rows.iter().map(|m| m.received_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|m| m.completed_at).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|m| m.business_key.as_deref())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rounds;

    #[test]
    fn rounds_keep_each_key_once_and_in_order() {
        let keys = ["a", "b", "a", "c", "a", "b"];
        assert_eq!(rounds(keys), vec![vec![0, 1, 3], vec![2, 5], vec![4]]);
        assert!(rounds(Vec::<&str>::new()).is_empty());
    }
}
