//! Where hookd lives inside the application's database.
//!
//! hookd's own tables (events, keys, attempts, counters, its migration history) live in a
//! schema of their own, [`Schema`], default `hookd`. The application's tables, the ones the
//! on-call runbook names (`businesses`, `audit_logs`, `call_logs`, `sms_logs`) and the views
//! `webhook_logs` and `failed_webhooks`, live in [`APP_SCHEMA`]. hookd creates a business
//! table only where the application has none; before it changes anything it checks that the
//! application's own tables have every column its handlers write ([`migrate`]).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, PgPool};

/// The application's schema: where the runbook's tables and views are, and what the
/// application's default `search_path` finds.
pub const APP_SCHEMA: &str = "public";

/// The name of hookd's own schema: a plain lower-case identifier, so it needs no quoting
/// anywhere (connection options carry it unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema(String);

impl Schema {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Schema {
    fn default() -> Self {
        Schema("hookd".to_owned())
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Schema {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        let plain = name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            return Err(format!(
                "expected a lower-case identifier (a-z, 0-9, _; at most 63), got {name:?}"
            ));
        }
        if name == APP_SCHEMA || name.starts_with("pg_") || name == "information_schema" {
            return Err(format!("{name:?} is not a schema hookd can own"));
        }
        Ok(Schema(name.to_owned()))
    }
}

/// Connection options that find hookd's tables first and the application's after them.
/// `hookd.schema` tells the migrations which schema is hookd's.
pub fn connect_options(options: PgConnectOptions, schema: &Schema) -> PgConnectOptions {
    options.options([
        ("search_path", format!("{schema},{APP_SCHEMA}")),
        ("hookd.schema", schema.to_string()),
    ])
}

/// Why hookd cannot migrate or start.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The application's tables lack what hookd's handlers write; nothing was changed.
    #[error("{}", Misfits(.0))]
    Misfit(Vec<Misfit>),
    #[error("applying hookd's migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl SchemaError {
    /// The database error underneath, if there is one: callers tell an unreachable database
    /// from one that refused what hookd asked.
    pub fn database(&self) -> Option<&sqlx::Error> {
        match self {
            SchemaError::Database(e)
            | SchemaError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => Some(e),
            _ => None,
        }
    }
}

/// One thing an application's table lacks, as one line of the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    pub table: String,
    pub column: String,
    pub problem: String,
}

impl Misfit {
    fn new(table: &str, column: &str, problem: impl Into<String>) -> Self {
        Misfit {
            table: table.to_owned(),
            column: column.to_owned(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}: {}", self.table, self.column, self.problem)
    }
}

struct Misfits<'a>(&'a [Misfit]);

impl fmt::Display for Misfits<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the application's tables in schema {APP_SCHEMA} lack what hookd writes; nothing was changed"
        )?;
        for misfit in self.0 {
            write!(f, "\n{misfit}")?;
        }
        Ok(())
    }
}

/// A column type hookd accepts for what it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `text`, `varchar` or `char`.
    Text,
    /// `timestamptz` or `timestamp`.
    Time,
    /// `jsonb` or `json`.
    Json,
    /// `bigint`.
    BigInt,
    /// Whatever type `businesses.id` has: hookd never reads a key into Rust, it only copies it
    /// from `businesses` in SQL.
    BusinessKey,
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Time => "timestamptz",
            Kind::Json => "jsonb",
            Kind::BigInt => "bigint",
            Kind::BusinessKey => "the type of businesses.id",
        }
    }

    fn accepts(self, typname: &str, business_key: Option<&str>, format: &str) -> bool {
        match self {
            Kind::Text => matches!(typname, "text" | "varchar" | "bpchar"),
            Kind::Time => matches!(typname, "timestamptz" | "timestamp"),
            Kind::Json => matches!(typname, "jsonb" | "json"),
            Kind::BigInt => typname == "int8",
            Kind::BusinessKey => business_key.is_none_or(|key| key == format),
        }
    }
}

/// A column hookd writes (or, for `businesses.id` and `phone_number`, reads). Required ones
/// must exist; optional ones are written where the table has them (hookd's own tables do).
struct Column {
    table: &'static str,
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn need(table: &'static str, name: &'static str, kind: Kind) -> Column {
    Column {
        table,
        name,
        kind,
        required: true,
    }
}

const fn may(table: &'static str, name: &'static str, kind: Kind) -> Column {
    Column {
        table,
        name,
        kind,
        required: false,
    }
}

/// The business tables, in the order they are checked and created.
pub const TABLES: [&str; 4] = ["businesses", "audit_logs", "call_logs", "sms_logs"];
/// The runbook's views, which hookd provides.
const VIEWS: [&str; 2] = ["webhook_logs", "failed_webhooks"];

const COLUMNS: &[Column] = &[
    may("businesses", "id", Kind::BusinessKey),
    need("businesses", "stripe_customer_id", Kind::Text),
    need("businesses", "stripe_subscription_id", Kind::Text),
    need("businesses", "subscription_status", Kind::Text),
    need("businesses", "subscription_plan", Kind::Text),
    need("businesses", "subscription_start_date", Kind::Time),
    need("businesses", "last_payment_date", Kind::Time),
    need("businesses", "updated_at", Kind::Time),
    // How a Telnyx call or message finds its business; without it the log rows have none.
    may("businesses", "phone_number", Kind::Text),
    need("audit_logs", "action", Kind::Text),
    need("audit_logs", "details", Kind::Json),
    need("audit_logs", "created_at", Kind::Time),
    may("audit_logs", "business_id", Kind::BusinessKey),
    may("audit_logs", "webhook_id", Kind::BigInt),
    may("audit_logs", "source", Kind::Text),
    need("call_logs", "call_id", Kind::Text),
    need("call_logs", "business_id", Kind::BusinessKey),
    need("call_logs", "customer_phone", Kind::Text),
    need("call_logs", "business_phone", Kind::Text),
    need("call_logs", "call_type", Kind::Text),
    need("call_logs", "status", Kind::Text),
    need("call_logs", "started_at", Kind::Time),
    need("call_logs", "answered_at", Kind::Time),
    need("call_logs", "ended_at", Kind::Time),
    need("call_logs", "hangup_cause", Kind::Text),
    need("call_logs", "created_at", Kind::Time),
    need("call_logs", "updated_at", Kind::Time),
    need("sms_logs", "message_id", Kind::Text),
    need("sms_logs", "business_id", Kind::BusinessKey),
    need("sms_logs", "customer_phone", Kind::Text),
    need("sms_logs", "business_phone", Kind::Text),
    need("sms_logs", "message_type", Kind::Text),
    need("sms_logs", "content", Kind::Text),
    need("sms_logs", "status", Kind::Text),
    need("sms_logs", "received_at", Kind::Time),
    need("sms_logs", "created_at", Kind::Time),
    may("sms_logs", "completed_at", Kind::Time),
    may("sms_logs", "updated_at", Kind::Time),
];

/// The columns hookd upserts on: each needs a unique index of its own.
const UPSERT_KEYS: [(&str, &str); 2] = [("call_logs", "call_id"), ("sms_logs", "message_id")];

/// What the application's tables turned out to hold: which of hookd's optional columns it
/// can write, and the type of the business key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppTables {
    present: BTreeSet<(&'static str, &'static str)>,
    business_key: Option<String>,
}

impl AppTables {
    /// Whether `table` has `column`, one that hookd writes where it can.
    pub fn has(&self, table: &str, column: &str) -> bool {
        self.present.contains(&(table, column))
    }

    /// The type of `businesses.id`, as PostgreSQL spells it (`bigint`, `uuid`, ...).
    pub fn business_key(&self) -> Option<&str> {
        self.business_key.as_deref()
    }

    /// Every table as hookd creates it: all optional columns present.
    pub fn full() -> Self {
        AppTables {
            present: COLUMNS.iter().map(|c| (c.table, c.name)).collect(),
            business_key: Some("bigint".to_owned()),
        }
    }
}

#[derive(sqlx::FromRow)]
struct Attribute {
    table: String,
    column: String,
    typname: String,
    format: String,
    /// NOT NULL, with nothing that fills it when hookd does not.
    unfilled: bool,
}

/// Reads the application's tables: what they fit, or everything they lack. Tables that do not
/// exist fit (hookd creates them). `webhook_logs` and `failed_webhooks` must not be tables of
/// the application's own.
pub async fn inspect(conn: &mut PgConnection) -> Result<AppTables, SchemaError> {
    let names: Vec<&str> = TABLES.iter().chain(&VIEWS).copied().collect();
    // A view counts as hookd's when it reads a table named `events` (hookd's, wherever an
    // earlier hookd put it); anything else of those names is the application's.
    let kinds: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text,
                CASE WHEN c.relkind = 'v' AND EXISTS (
                         SELECT FROM pg_rewrite r
                         JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                         JOIN pg_class t ON t.oid = d.refobjid
                         WHERE r.ev_class = c.oid AND t.relname IN ('events', 'event_attempts'))
                     THEN 'hookd' ELSE c.relkind::text END
         FROM pg_class c
         WHERE c.relnamespace = $1::regnamespace AND c.relname = ANY($2)",
    )
    .bind(APP_SCHEMA)
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    let attributes: Vec<Attribute> = sqlx::query_as(
        "SELECT c.relname::text AS table, a.attname::text AS column, t.typname::text AS typname,
                format_type(a.atttypid, a.atttypmod) AS format,
                a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
                    AS unfilled
         FROM pg_class c
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         JOIN pg_type t ON t.oid = a.atttypid
         WHERE c.relnamespace = $1::regnamespace AND c.relname = ANY($2)",
    )
    .bind(APP_SCHEMA)
    .bind(&TABLES[..])
    .fetch_all(&mut *conn)
    .await?;
    let unique: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text
         FROM pg_index i
         JOIN pg_class c ON c.oid = i.indrelid
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE c.relnamespace = $1::regnamespace AND i.indisunique AND i.indimmediate
           AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL",
    )
    .bind(APP_SCHEMA)
    .fetch_all(&mut *conn)
    .await?;
    fit(&kinds, &attributes, &unique)
}

/// The judgement of [`inspect`], on what it read.
fn fit(
    kinds: &[(String, String)],
    attributes: &[Attribute],
    unique: &[(String, String)],
) -> Result<AppTables, SchemaError> {
    let exists = |table: &str| kinds.iter().any(|(t, _)| t == table);
    let column = |table: &str, name: &str| {
        attributes
            .iter()
            .find(|a| a.table == table && a.column == name)
    };
    let mut misfits = Vec::new();
    for view in VIEWS {
        if kinds.iter().any(|(t, kind)| t == view && kind != "hookd") {
            misfits.push(Misfit::new(
                view,
                "*",
                format!(
                    "is the application's own; hookd provides {view} as a view of its \
                     events (rename yours first: ALTER TABLE {view} RENAME TO {view}_before_hookd)"
                ),
            ));
        }
    }
    // hookd creates `businesses` with a bigint key where the application has none.
    let business_key = match column("businesses", "id") {
        Some(a) => Some(a.format.clone()),
        None if !exists("businesses") => Some("bigint".to_owned()),
        None => None,
    };
    if exists("businesses") && business_key.is_none() {
        misfits.push(Misfit::new(
            "businesses",
            "id",
            "missing (hookd refers to businesses by it)",
        ));
    }
    let mut tables = AppTables {
        present: BTreeSet::new(),
        business_key: business_key.clone(),
    };
    for want in COLUMNS {
        if !exists(want.table) {
            // hookd creates it, with every column.
            tables.present.insert((want.table, want.name));
            continue;
        }
        match column(want.table, want.name) {
            None if want.required => misfits.push(Misfit::new(
                want.table,
                want.name,
                format!("missing (expected {})", want.kind.expected()),
            )),
            None => {}
            // An optional column hookd cannot write is simply not written.
            Some(a)
                if !want.required
                    && !want
                        .kind
                        .accepts(&a.typname, business_key.as_deref(), &a.format) => {}
            Some(a)
                if !want
                    .kind
                    .accepts(&a.typname, business_key.as_deref(), &a.format) =>
            {
                let expected = match want.kind {
                    Kind::BusinessKey => business_key.clone().unwrap_or_default(),
                    kind => kind.expected().to_owned(),
                };
                misfits.push(Misfit::new(
                    want.table,
                    want.name,
                    format!("is {} (expected {expected})", a.format),
                ));
            }
            Some(_) => {
                tables.present.insert((want.table, want.name));
            }
        }
    }
    for (table, key) in UPSERT_KEYS {
        if exists(table)
            && column(table, key).is_some()
            && !unique.iter().any(|(t, c)| t == table && c == key)
        {
            misfits.push(Misfit::new(
                table,
                key,
                format!(
                    "has no unique index of its own (hookd upserts on it: \
                     CREATE UNIQUE INDEX ON {table} ({key}))"
                ),
            ));
        }
    }
    // Rows hookd inserts must be complete without the columns it does not know.
    for a in attributes
        .iter()
        .filter(|a| a.unfilled && a.table != "businesses")
    {
        let written = COLUMNS
            .iter()
            .any(|c| c.table == a.table && c.name == a.column);
        if !written {
            misfits.push(Misfit::new(
                &a.table,
                &a.column,
                "is NOT NULL without a default, and hookd does not write it",
            ));
        }
    }
    if misfits.is_empty() {
        Ok(tables)
    } else {
        Err(SchemaError::Misfit(misfits))
    }
}

/// Brings the database to hookd's schema: checks the application's tables first (and on a
/// misfit changes nothing), creates hookd's schema, moves the migration history of an install
/// made before hookd had a schema of its own, applies the migrations, and returns what the
/// application's tables hold. Safe to run from several hookd processes at once.
pub async fn migrate(pool: &PgPool, schema: &Schema) -> Result<AppTables, SchemaError> {
    let mut conn = pool.acquire().await?;
    // Migrations wait for their locks and take the time they need, whatever the pool's
    // sessions are limited to. Two hookd processes starting together take turns, for the
    // whole of it: the second must see where the first left the history.
    for sql in [
        "SET statement_timeout = 0",
        "SET lock_timeout = 0",
        "SELECT pg_advisory_lock(hashtext('hookd schema'))",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    let result = migrate_locked(&mut conn, schema).await;
    let mut unlocked = Ok(());
    for sql in [
        "SELECT pg_advisory_unlock(hashtext('hookd schema'))",
        "RESET statement_timeout",
        "RESET lock_timeout",
    ] {
        if let Err(e) = sqlx::query(sql).execute(&mut *conn).await {
            unlocked = Err(e);
        }
    }
    let tables = result?;
    unlocked?;
    Ok(tables)
}

async fn migrate_locked(
    conn: &mut PgConnection,
    schema: &Schema,
) -> Result<AppTables, SchemaError> {
    let (own_history, app_history, hookd_in_app): (bool, bool, bool) = sqlx::query_as(
        "SELECT to_regclass(format('%I._sqlx_migrations', $1::text)) IS NOT NULL,
                to_regclass(format('%I._sqlx_migrations', $2::text)) IS NOT NULL,
                to_regclass(format('%I.events', $2::text)) IS NOT NULL
                AND to_regclass(format('%I.events', $1::text)) IS NULL",
    )
    .bind(schema.as_str())
    .bind(APP_SCHEMA)
    .fetch_one(&mut *conn)
    .await?;
    // An install made before hookd had a schema of its own keeps its history in the
    // application's schema: hookd's if its first migration is ours.
    let ours = crate::MIGRATOR.iter().next().map(|m| m.checksum.to_vec());
    let legacy = !own_history && app_history && hookd_in_app && {
        let first: Option<Vec<u8>> = sqlx::query_scalar(&format!(
            "SELECT checksum FROM {APP_SCHEMA}._sqlx_migrations WHERE version = 1"
        ))
        .fetch_optional(&mut *conn)
        .await?;
        first.is_some() && first == ours
    };
    let search_path = if legacy {
        // Its migrations run where its history is; migration 0006 moves history and tables
        // into hookd's schema in the same transaction, so a failure leaves the install as it
        // was, for the previous release to run on.
        APP_SCHEMA.to_owned()
    } else {
        // Such an install created the business tables itself, and the migrations rename
        // them; anyone else's must already fit.
        inspect(&mut *conn).await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut *conn)
            .await?;
        format!("{schema},{APP_SCHEMA}")
    };
    // On this connection, whatever pool it came from.
    sqlx::query(
        "SELECT set_config('search_path', $1, false), set_config('hookd.schema', $2, false)",
    )
    .bind(&search_path)
    .bind(schema.as_str())
    .execute(&mut *conn)
    .await?;
    crate::MIGRATOR.run_direct(&mut *conn).await?;
    sqlx::query("SELECT set_config('search_path', $1, false)")
        .bind(format!("{schema},{APP_SCHEMA}"))
        .execute(&mut *conn)
        .await?;
    inspect(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert_eq!("hookd".parse::<Schema>().unwrap().as_str(), "hookd");
        assert_eq!("hookd_2".parse::<Schema>().unwrap().as_str(), "hookd_2");
        for bad in [
            "", "Hookd", "public", "pg_hookd", "hook d", "a\"b", "1hookd",
        ] {
            assert!(bad.parse::<Schema>().is_err(), "{bad:?} must be refused");
        }
    }

    fn attribute(table: &str, column: &str, typname: &str) -> Attribute {
        Attribute {
            table: table.into(),
            column: column.into(),
            typname: typname.into(),
            format: match typname {
                "int8" => "bigint".into(),
                "timestamptz" => "timestamp with time zone".into(),
                other => other.into(),
            },
            unfilled: false,
        }
    }

    #[test]
    fn absent_tables_fit_with_every_column() {
        assert_eq!(fit(&[], &[], &[]).unwrap(), AppTables::full());
    }

    #[test]
    fn a_business_table_with_the_runbook_columns_fits_and_one_without_is_named() {
        let kinds = [("businesses".to_owned(), "r".to_owned())];
        let mut columns: Vec<Attribute> = [
            ("id", "uuid"),
            ("stripe_customer_id", "text"),
            ("stripe_subscription_id", "varchar"),
            ("subscription_status", "text"),
            ("subscription_plan", "text"),
            ("subscription_start_date", "timestamptz"),
            ("last_payment_date", "timestamp"),
            ("updated_at", "timestamptz"),
        ]
        .into_iter()
        .map(|(c, t)| attribute("businesses", c, t))
        .collect();
        let tables = fit(&kinds, &columns, &[]).unwrap();
        assert_eq!(tables.business_key(), Some("uuid"));
        assert!(!tables.has("businesses", "phone_number"));
        assert!(
            tables.has("call_logs", "business_id"),
            "call_logs is created"
        );

        columns.retain(|a| a.column != "last_payment_date");
        columns.push(attribute("businesses", "subscription_plan", "int8"));
        columns.retain(|a| !(a.column == "subscription_plan" && a.typname == "text"));
        let Err(SchemaError::Misfit(misfits)) = fit(&kinds, &columns, &[]) else {
            panic!("must not fit");
        };
        let lines: Vec<String> = misfits.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "businesses.subscription_plan: is bigint (expected text)",
                "businesses.last_payment_date: missing (expected timestamptz)",
            ]
        );
    }
}
