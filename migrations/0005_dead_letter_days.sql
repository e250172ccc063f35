-- Dead events are kept in one partition per day they died, so purging the dead-letter queue
-- drops whole days instead of deleting rows one by one.
--
-- Deleting a million dead events rewrote every page they sat on, with their attempts about
-- 1.7 GB of WAL: 24 s, against a target of 2 s. `events` is now partitioned by state: every
-- live state in `events_live`, `dead` in `events_dead`, which is split by `dead_at` into days
-- (`events_dead_YYYYMMDD`, UTC) plus `events_dead_undated` for any dead event whose day has no
-- partition. Attempts follow their event: `event_attempts` carries the event's `dead_at` and is
-- split the same way, so a day's events and their history go together. Only the dead side ever
-- changes shape; ingest and processing touch `events_live` alone and are never blocked by it.
--
-- A unique index on a partitioned table must include the partition key, so (source, event id)
-- moves to its own table, `event_keys`: ingest claims an event's key before inserting it, and
-- a trigger adds the keys of events inserted any other way. The key outlives its event: a
-- provider's late redelivery of a purged event is still a duplicate.

CREATE TABLE event_keys (
    source   text   NOT NULL,
    event_id text   NOT NULL,
    -- The event in `events`.
    id       bigint NOT NULL,
    PRIMARY KEY (source, event_id)
);

DROP VIEW webhook_logs;
DROP VIEW failed_webhooks;
DROP INDEX events_due_idx, events_dead_idx, events_state_type_idx,
           event_attempts_event_id_idx, event_attempts_started_at_idx;
ALTER TABLE events RENAME TO events_unpartitioned;
ALTER TABLE events_unpartitioned RENAME CONSTRAINT events_pkey TO events_unpartitioned_pkey;
ALTER TABLE events_unpartitioned
    RENAME CONSTRAINT events_source_event_id_key TO events_unpartitioned_key;
ALTER SEQUENCE events_id_seq RENAME TO events_unpartitioned_id_seq;
ALTER TABLE event_attempts RENAME TO event_attempts_unpartitioned;
ALTER TABLE event_attempts_unpartitioned
    RENAME CONSTRAINT event_attempts_pkey TO event_attempts_unpartitioned_pkey;
ALTER SEQUENCE event_attempts_id_seq RENAME TO event_attempts_unpartitioned_id_seq;

CREATE TABLE events (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    source          text        NOT NULL CHECK (source IN ('stripe', 'telnyx', 'custom')),
    event_id        text        NOT NULL,
    event_type      text        NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'processing', 'succeeded', 'retrying', 'dead', 'skipped')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- When the event is next due. While `processing` it equals `locked_until`, so an expired lease
    -- makes the event due again through the same index as a scheduled retry.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    last_error      text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    dead_at         timestamptz,
    -- Exactly the bytes that were signed, for audits and forwarding; `payload` is the parsed copy.
    body            bytea       NOT NULL,
    payload         jsonb       NOT NULL
) PARTITION BY LIST (state);
CREATE TABLE events_live PARTITION OF events
    FOR VALUES IN ('pending', 'processing', 'succeeded', 'retrying', 'skipped');
CREATE TABLE events_dead PARTITION OF events FOR VALUES IN ('dead') PARTITION BY RANGE (dead_at);
CREATE TABLE events_dead_undated PARTITION OF events_dead DEFAULT;

CREATE INDEX events_id_idx ON events (id);
-- Workers claim from the live side only.
CREATE INDEX events_due_idx ON events_live (next_attempt_at)
    WHERE state IN ('pending', 'retrying', 'processing');
CREATE INDEX events_dead_idx ON events (dead_at DESC) WHERE state = 'dead';
CREATE INDEX events_state_type_idx ON events (source, event_type) INCLUDE (state)
    WHERE state IN ('retrying', 'dead');

CREATE TABLE event_attempts (
    id            bigint      GENERATED ALWAYS AS IDENTITY,
    event_id      bigint      NOT NULL,
    attempt       integer     NOT NULL,
    started_at    timestamptz NOT NULL,
    duration_ms   integer     NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'dead', 'skipped')),
    error         text,
    http_status   integer,
    response_body text,
    -- The event's `dead_at`, NULL while it is not dead: it puts the attempt in the partition of
    -- its event's day.
    dead_at       timestamptz
) PARTITION BY LIST ((dead_at IS NULL));
CREATE TABLE event_attempts_live PARTITION OF event_attempts FOR VALUES IN (true);
CREATE TABLE event_attempts_dead PARTITION OF event_attempts FOR VALUES IN (false)
    PARTITION BY RANGE (dead_at);
CREATE TABLE event_attempts_dead_undated PARTITION OF event_attempts_dead DEFAULT;

CREATE INDEX event_attempts_event_id_idx ON event_attempts (event_id, attempt);
CREATE INDEX event_attempts_started_at_idx ON event_attempts (started_at);

-- The partitions of one day, for events and their attempts, unless they exist. False when
-- another session created them first, or when rows of that day already sit in an undated
-- partition (they stay there; purging deletes them row by row).
CREATE FUNCTION hookd_create_dead_day(day date) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    suffix text := to_char(day, 'YYYYMMDD');
    low    text := day::text || ' 00:00:00+00';
    high   text := (day + 1)::text || ' 00:00:00+00';
BEGIN
    IF to_regclass('events_dead_' || suffix) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Events before attempts: the order every writer locks them in.
    EXECUTE format('CREATE TABLE %I PARTITION OF events_dead FOR VALUES FROM (%L) TO (%L)',
                   'events_dead_' || suffix, low, high);
    EXECUTE format('CREATE TABLE %I PARTITION OF event_attempts_dead FOR VALUES FROM (%L) TO (%L)',
                   'event_attempts_dead_' || suffix, low, high);
    RETURN true;
EXCEPTION
    WHEN duplicate_table OR unique_violation OR check_violation THEN
        RETURN false;
END $$;

-- The days that have partitions.
CREATE FUNCTION hookd_dead_days() RETURNS SETOF date LANGUAGE sql STABLE AS $$
    SELECT to_date(right(c.relname, 8), 'YYYYMMDD')
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'events_dead'::regclass AND c.relname ~ '^events_dead_[0-9]{8}$'
    ORDER BY 1
$$;

-- How many dead events a day holds, counting at most `up_to` of them (all when NULL); NULL
-- when the day has no partition. Run it in a transaction of its own before dropping the day:
-- read under the drop's locks, it would hold everything up, and read before them in the same
-- transaction, it could deadlock with another session dropping the same day.
CREATE FUNCTION hookd_dead_day_events(day date, up_to bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM (SELECT FROM %I LIMIT $1) d',
                   'events_dead_' || to_char(day, 'YYYYMMDD'))
        INTO n USING up_to;
    RETURN n;
EXCEPTION
    WHEN undefined_table THEN
        RETURN NULL;
END $$;

-- Drops one day of dead events and their attempts; false when the day has no partition, or,
-- with `only_if_empty`, when it has events.
CREATE FUNCTION hookd_drop_dead_day(day date, only_if_empty boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    events_day   text := 'events_dead_' || to_char(day, 'YYYYMMDD');
    attempts_day text := 'event_attempts_dead_' || to_char(day, 'YYYYMMDD');
    held         boolean;
BEGIN
    -- Parents before their partitions and events before attempts, as writers take them.
    LOCK TABLE ONLY events_dead IN ACCESS EXCLUSIVE MODE;
    IF to_regclass(events_day) IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', events_day);
    LOCK TABLE ONLY event_attempts_dead IN ACCESS EXCLUSIVE MODE;
    IF to_regclass(attempts_day) IS NOT NULL THEN
        EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', attempts_day);
    END IF;
    IF only_if_empty THEN
        -- Under the locks: an event that died into the day meanwhile is seen, or waited for.
        EXECUTE format('SELECT EXISTS (SELECT FROM %I)', events_day) INTO held;
        IF held THEN
            RETURN false;
        END IF;
    END IF;
    EXECUTE format('DROP TABLE %I', events_day);
    IF to_regclass(attempts_day) IS NOT NULL THEN
        EXECUTE format('DROP TABLE %I', attempts_day);
    END IF;
    RETURN true;
END $$;

-- Move what exists. Every day with dead events gets its partition (the next purge drops the
-- old ones), so the undated partitions stay empty: creating a day scans them.
SELECT hookd_create_dead_day(day)
FROM (
    SELECT DISTINCT (dead_at AT TIME ZONE 'UTC')::date AS day
    FROM events_unpartitioned
    WHERE state = 'dead' AND dead_at IS NOT NULL
    UNION
    SELECT ((now() AT TIME ZONE 'UTC')::date + ahead) FROM generate_series(0, 3) AS ahead
) days
ORDER BY day;

INSERT INTO events (id, source, event_id, event_type, state, attempts, next_attempt_at,
                    locked_until, last_error, received_at, processed_at, dead_at, body, payload)
OVERRIDING SYSTEM VALUE
SELECT id, source, event_id, event_type, state, attempts, next_attempt_at, locked_until,
       last_error, received_at, processed_at, dead_at, body, payload
FROM events_unpartitioned;
INSERT INTO event_keys (source, event_id, id)
SELECT source, event_id, id FROM events_unpartitioned;
INSERT INTO event_attempts (id, event_id, attempt, started_at, duration_ms, outcome, error,
                            http_status, response_body, dead_at)
OVERRIDING SYSTEM VALUE
SELECT a.id, a.event_id, a.attempt, a.started_at, a.duration_ms, a.outcome, a.error,
       a.http_status, a.response_body, e.dead_at
FROM event_attempts_unpartitioned a
LEFT JOIN events_unpartitioned e ON e.id = a.event_id AND e.state = 'dead';
-- Ids are never reused, even those of events purged before today.
SELECT setval(pg_get_serial_sequence('events', 'id'), last_value, is_called)
FROM events_unpartitioned_id_seq;
SELECT setval(pg_get_serial_sequence('event_attempts', 'id'), last_value, is_called)
FROM event_attempts_unpartitioned_id_seq;
DROP TABLE events_unpartitioned, event_attempts_unpartitioned;

-- Every event has its key. Ingest claims the keys itself, before inserting (see
-- common/src/db/events.rs), so for its rows this only finds them there; an insert that does
-- not claim keys, such as a bulk load, gets them here. Such a load must not repeat a key: it
-- would store a second event that owns none, and nothing checks that.
CREATE FUNCTION hookd_add_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_keys (source, event_id, id)
    SELECT source, event_id, id FROM new_events ORDER BY source, event_id
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER events_add_keys AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION hookd_add_keys();
CREATE TRIGGER events_count_received AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION hookd_count_received();
CREATE TRIGGER events_delete_attempts AFTER DELETE ON events
    REFERENCING OLD TABLE AS gone_events
    FOR EACH STATEMENT EXECUTE FUNCTION hookd_delete_attempts();

-- The on-call runbook's names, as before.
CREATE VIEW webhook_logs AS
SELECT id, source, event_id, event_type, state AS status, attempts, last_error AS error,
       payload, received_at, processed_at
FROM events;

CREATE VIEW failed_webhooks AS
SELECT id, source, event_id, event_type, payload, last_error AS error, attempts,
       received_at, dead_at AS failed_at
FROM events
WHERE state = 'dead';
