-- Bounded storage: processed events are kept for the retention and then dropped by whole days,
-- idempotency keys for the dedup window, both without deleting rows one by one.
--
-- Events. Succeeded and skipped events leave `events_live` for `events_done`, split by the UTC
-- day of `processed_at` (`events_done_YYYYMMDD`, plus `events_done_undated` for a day that has
-- no partition, or a legacy row without a `processed_at`). The UPDATE that finishes an event
-- moves it there, as dying moves one to `events_dead`: `events_live` is the queue alone again,
-- however much history is kept, and a day past the retention is one DROP TABLE. Ingest only
-- ever touches `events_live`; dropping a day locks `events_done` (not `events`) for
-- milliseconds.
--
-- Attempts follow their event: `event_attempts` keeps its dead side, and its other side is now
-- split by `done_at` (the finished event's `processed_at`) into `event_attempts_live` (events
-- still queued) and `event_attempts_done`, by the same days.
--
-- Keys. A unique index on a partitioned table must include the partition key, so day
-- partitions of `event_keys` could not say that a key is unique across days without probing
-- every day of the window on every insert (30 index descents per event at the default), and
-- even then two claims straddling midnight would not see each other's uncommitted rows. The
-- keys are instead split into generations, each about one dedup window long
-- (`event_keys_<gen>`), with the unique index (source, event_id, gen):
--   * a claim inserts into the newest generation, where the unique index decides between
--     concurrent claims, and probes the older generations (one, normally) for a key claimed
--     within the window: one insert and one index probe per event;
--   * a new generation is started by creating its partition, which takes an ACCESS EXCLUSIVE
--     lock on `event_keys`: it waits for every claim in flight to commit, and every claim after
--     it both sees the new generation and sees those commits. So no claim can miss a
--     concurrent claim of the same key in another generation;
--   * every key records when it was claimed, and a key older than the window is expired
--     wherever it sits: a delivery of it is a new event, exactly as the window promises (in the
--     newest generation the new claim takes the row over);
--   * a generation is dropped whole once the next one started longer ago than the window, so
--     keys are kept between one and two windows, and the drop is one DROP TABLE a window.
-- Keys are independent of events: they may outlive them (a late redelivery of a dropped event
-- is still a duplicate while its key is in the window) or expire first.
--
-- The settings hookd runs with are stored here (`retention_policy`), so every instance and
-- every writer of keys uses the same window, and hooktop can say what is retained.

CREATE TABLE retention_policy (
    only_row      boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    retention     interval    NOT NULL DEFAULT '30 days',
    dedup_window  interval    NOT NULL DEFAULT '30 days'
                  -- Stripe retries a delivery for up to 3 days.
                  CHECK (dedup_window >= interval '3 days'),
    dlq_retention interval,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO retention_policy DEFAULT VALUES;

-- Events -------------------------------------------------------------------------------------

ALTER TABLE events DETACH PARTITION events_live;
ALTER TABLE events_live RENAME TO events_live_before_retention;
ALTER INDEX events_due_idx RENAME TO events_due_before_retention;
ALTER INDEX events_claimed_by_idx RENAME TO events_claimed_by_before_retention;

CREATE TABLE events_live PARTITION OF events FOR VALUES IN ('pending', 'processing', 'retrying');
CREATE TABLE events_done PARTITION OF events FOR VALUES IN ('succeeded', 'skipped')
    PARTITION BY RANGE (processed_at);
CREATE TABLE events_done_undated PARTITION OF events_done DEFAULT;

-- Attempts -----------------------------------------------------------------------------------

ALTER TABLE event_attempts DETACH PARTITION event_attempts_live;
ALTER TABLE event_attempts_live RENAME TO event_attempts_live_before_retention;
ALTER TABLE event_attempts ADD COLUMN done_at timestamptz;
CREATE TABLE event_attempts_not_dead PARTITION OF event_attempts FOR VALUES IN (true)
    PARTITION BY LIST ((done_at IS NULL));
CREATE TABLE event_attempts_live PARTITION OF event_attempts_not_dead FOR VALUES IN (true);
CREATE TABLE event_attempts_done PARTITION OF event_attempts_not_dead FOR VALUES IN (false)
    PARTITION BY RANGE (done_at);
CREATE TABLE event_attempts_done_undated PARTITION OF event_attempts_done DEFAULT;

-- The partitions of one day of processed events and their attempts, unless they exist. False
-- when another session created them first, or when rows of that day already sit in an
-- undated partition (they stay there; retention deletes them in batches).
CREATE FUNCTION hookd_create_done_day(day date) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    suffix text := to_char(day, 'YYYYMMDD');
    low    text := day::text || ' 00:00:00+00';
    high   text := (day + 1)::text || ' 00:00:00+00';
BEGIN
    IF to_regclass('events_done_' || suffix) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Events before attempts: the order every writer locks them in.
    EXECUTE format('CREATE TABLE %I PARTITION OF events_done FOR VALUES FROM (%L) TO (%L)',
                   'events_done_' || suffix, low, high);
    EXECUTE format('CREATE TABLE %I PARTITION OF event_attempts_done FOR VALUES FROM (%L) TO (%L)',
                   'event_attempts_done_' || suffix, low, high);
    RETURN true;
EXCEPTION
    WHEN duplicate_table OR unique_violation OR check_violation THEN
        RETURN false;
END $$;

-- The days of processed events that have partitions.
CREATE FUNCTION hookd_done_days() RETURNS SETOF date LANGUAGE sql STABLE AS $$
    SELECT to_date(right(c.relname, 8), 'YYYYMMDD')
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'events_done'::regclass AND c.relname ~ '^events_done_[0-9]{8}$'
    ORDER BY 1
$$;

-- How many processed events a day holds; NULL when the day has no partition. Run it in a
-- transaction of its own before dropping the day, for the reason hookd_dead_day_events gives.
CREATE FUNCTION hookd_done_day_events(day date) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %I', 'events_done_' || to_char(day, 'YYYYMMDD'))
        INTO n;
    RETURN n;
EXCEPTION
    WHEN undefined_table THEN
        RETURN NULL;
END $$;

-- Drops one day of processed events and their attempts; false when the day has no partition.
CREATE FUNCTION hookd_drop_done_day(day date) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    events_day   text := 'events_done_' || to_char(day, 'YYYYMMDD');
    attempts_day text := 'event_attempts_done_' || to_char(day, 'YYYYMMDD');
BEGIN
    -- Parents before their partitions and events before attempts, as writers take them.
    LOCK TABLE ONLY events_done IN ACCESS EXCLUSIVE MODE;
    IF to_regclass(events_day) IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', events_day);
    LOCK TABLE ONLY event_attempts_done IN ACCESS EXCLUSIVE MODE;
    IF to_regclass(attempts_day) IS NOT NULL THEN
        EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', attempts_day);
    END IF;
    EXECUTE format('DROP TABLE %I', events_day);
    IF to_regclass(attempts_day) IS NOT NULL THEN
        EXECUTE format('DROP TABLE %I', attempts_day);
    END IF;
    RETURN true;
END $$;

-- Every day with processed events gets its partition, and the next few days too, so the
-- undated partitions stay empty (creating a day scans them).
SELECT hookd_create_done_day(day)
FROM (
    SELECT DISTINCT (processed_at AT TIME ZONE 'UTC')::date AS day
    FROM events_live_before_retention
    WHERE state IN ('succeeded', 'skipped') AND processed_at IS NOT NULL
    UNION
    SELECT ((now() AT TIME ZONE 'UTC')::date + ahead) FROM generate_series(0, 3) AS ahead
) days
ORDER BY day;

-- Straight into the partitions: through `events` the insert triggers would count every event
-- as received again and claim keys it already has.
INSERT INTO events_live OVERRIDING SYSTEM VALUE SELECT * FROM events_live_before_retention
WHERE state IN ('pending', 'processing', 'retrying');
INSERT INTO events_done OVERRIDING SYSTEM VALUE SELECT * FROM events_live_before_retention
WHERE state IN ('succeeded', 'skipped');
INSERT INTO event_attempts_not_dead OVERRIDING SYSTEM VALUE
SELECT a.*, e.processed_at
FROM event_attempts_live_before_retention a
LEFT JOIN events_done e ON e.id = a.event_id;
DROP TABLE events_live_before_retention, event_attempts_live_before_retention;

CREATE INDEX events_due_idx ON events_live (next_attempt_at)
    WHERE state IN ('pending', 'retrying', 'processing');
CREATE INDEX events_claimed_by_idx ON events_live (claimed_by) WHERE state = 'processing';

-- Keys ---------------------------------------------------------------------------------------

CREATE TABLE event_key_generations (
    gen        integer     PRIMARY KEY,
    -- When the generation's partition was created; claims go to the newest generation.
    started_at timestamptz NOT NULL
);

-- The keys held so far become generation 0 in place (two columns with constant defaults and a
-- new index, no rewrite), claimed as of now: each is kept at least one window from here.
ALTER TABLE event_keys RENAME TO event_keys_0;
ALTER TABLE event_keys_0
    ADD COLUMN gen integer NOT NULL DEFAULT 0,
    ADD COLUMN claimed_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE event_keys_0 DROP CONSTRAINT event_keys_pkey;
ALTER TABLE event_keys_0 ADD CONSTRAINT event_keys_0_pkey PRIMARY KEY (source, event_id, gen);

CREATE TABLE event_keys (
    source     text        NOT NULL,
    event_id   text        NOT NULL,
    -- The event in `events`.
    id         bigint      NOT NULL,
    gen        integer     NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id, gen)
) PARTITION BY LIST (gen);
ALTER TABLE event_keys ATTACH PARTITION event_keys_0 FOR VALUES IN (0);
ALTER TABLE event_keys_0 ALTER COLUMN gen DROP DEFAULT, ALTER COLUMN claimed_at DROP DEFAULT;
INSERT INTO event_key_generations VALUES (0, '-infinity');

-- Starts the next generation of keys and returns its number. Creating the partition waits for
-- every claim in flight (see above), so run it with a short lock_timeout.
CREATE FUNCTION hookd_start_key_generation() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    fresh integer;
BEGIN
    -- Before reading the newest: two sessions start one after the other, not the same one.
    LOCK TABLE ONLY event_keys IN ACCESS EXCLUSIVE MODE;
    SELECT coalesce(max(gen), -1) + 1 INTO fresh FROM event_key_generations;
    EXECUTE format('CREATE TABLE %I PARTITION OF event_keys FOR VALUES IN (%s)',
                   'event_keys_' || fresh, fresh);
    INSERT INTO event_key_generations VALUES (fresh, now());
    RETURN fresh;
END $$;

-- Drops one generation of keys, unless it is the newest; false when it was not there.
CREATE FUNCTION hookd_drop_key_generation(old integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE ONLY event_keys IN ACCESS EXCLUSIVE MODE;
    IF old >= (SELECT max(gen) FROM event_key_generations)
       OR to_regclass('event_keys_' || old) IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE %I', 'event_keys_' || old);
    DELETE FROM event_key_generations WHERE gen = old;
    RETURN true;
END $$;

SELECT hookd_start_key_generation();

-- Events inserted without claiming their key (a bulk load, pgbench) get it here, in the
-- newest generation, claimed when the event was received.
CREATE OR REPLACE FUNCTION hookd_add_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_keys (source, event_id, id, gen, claimed_at)
    SELECT source, event_id, id, (SELECT max(gen) FROM event_key_generations), received_at
    FROM new_events ORDER BY source, event_id
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

-- Functions find hookd's tables whoever calls them (see migration 0006).
DO $$
DECLARE
    own text := current_schema();
    fn  text;
BEGIN
    FOREACH fn IN ARRAY ARRAY['hookd_create_done_day(date)', 'hookd_done_days()',
                              'hookd_done_day_events(date)', 'hookd_drop_done_day(date)',
                              'hookd_start_key_generation()', 'hookd_drop_key_generation(integer)',
                              'hookd_add_keys()'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', fn, own);
    END LOOP;
END
$$;
