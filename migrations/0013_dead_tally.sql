-- Counting the dead-letter queue without reading it. hooktop's clusters pane, every bulk
-- preview and every purge preview count dead events by source, type and cause, and by the
-- day they died; at a million dead events a GROUP BY over them took seconds. Now every change
-- to events_dead appends a row of +1 or -1 to dead_tally in the same transaction, keyed by the
-- partition and day the event is in and its cluster, so a sum read from it is exactly the
-- count of the rows in the same snapshot. Rows are only appended, so no two writers ever wait
-- on one counter; hookd_compact_dead_tally, which hookd runs every minute, folds them into
-- one row per partition and cluster. A day dropped whole (hookd_drop_dead_day) takes its rows
-- with it.

-- The fingerprint is a function of the last error, kept by the database for every dead row,
-- whoever writes it: the tally and the clusters' index read the stored value alone.
CREATE FUNCTION hookd_fingerprint_dead() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.error_fingerprint := hookd_error_fingerprint(NEW.last_error);
    RETURN NEW;
END $$;

UPDATE events SET error_fingerprint = hookd_error_fingerprint(last_error)
WHERE state = 'dead' AND error_fingerprint IS NULL;

CREATE TABLE dead_tally (
    -- The partition of events_dead the rows are in: a day's, or events_dead_undated.
    part        text   NOT NULL,
    -- The UTC day of their dead_at (NULL for an undated row without one).
    day         date,
    source      text   NOT NULL,
    event_type  text   NOT NULL,
    fingerprint text   NOT NULL,
    n           bigint NOT NULL
);
-- Readers sum every row, from this index alone once vacuum has seen the table, so a table
-- left long by a bulk change (a million rows folded into a thousand) costs them nothing.
CREATE INDEX dead_tally_cluster_idx ON dead_tally (source, event_type, fingerprint, day)
    INCLUDE (n);

CREATE FUNCTION hookd_tally_dead() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO dead_tally
        VALUES (TG_TABLE_NAME, (OLD.dead_at AT TIME ZONE 'UTC')::date, OLD.source,
                OLD.event_type, OLD.error_fingerprint, -1);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO dead_tally
        VALUES (TG_TABLE_NAME, (NEW.dead_at AT TIME ZONE 'UTC')::date, NEW.source,
                NEW.event_type, NEW.error_fingerprint, 1);
    END IF;
    RETURN NULL;
END $$;

-- Serialises folding with dropping a day: a drop that missed the rows a concurrent fold
-- inserted would leave the dropped day counted.
CREATE FUNCTION hookd_lock_dead_tally() RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.dead_tally'))
$$;

-- Folds the tally into one row per partition and cluster, when there is anything to fold;
-- returns the rows it read.
CREATE FUNCTION hookd_compact_dead_tally() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    folded bigint;
BEGIN
    PERFORM hookd_lock_dead_tally();
    IF (SELECT count(*) FROM dead_tally)
       = (SELECT count(*) FROM (SELECT DISTINCT part, day, source, event_type, fingerprint
                                FROM dead_tally) k) THEN
        RETURN 0;
    END IF;
    WITH gone AS (
        DELETE FROM dead_tally RETURNING *
    ), kept AS (
        INSERT INTO dead_tally
        SELECT part, day, source, event_type, fingerprint, sum(n)
        FROM gone GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0
    )
    SELECT count(*) INTO folded FROM gone;
    RETURN folded;
END $$;

-- Whether a dead event is superseded is decided by its customer's applied state, so they are
-- counted from stripe_state: each customer's dead events created before its state, a range of
-- this index, instead of every dead event's payload read. `created` is compared as the JSON
-- number it is (numeric), which no payload can make overflow.
CREATE INDEX events_dead_customer_idx ON events_dead
    ((payload #>> '{data,object,customer}'), ((payload -> 'created')::numeric))
    WHERE source = 'stripe'
      AND event_type IN ('customer.subscription.created', 'customer.subscription.updated',
                         'customer.subscription.deleted', 'invoice.payment_failed')
      AND jsonb_typeof(payload -> 'created') = 'number';

-- Counts events_dead afresh: after a TRUNCATE, which no row trigger sees, and for repairs.
CREATE FUNCTION hookd_retally_dead() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM hookd_lock_dead_tally();
    DELETE FROM dead_tally;
    INSERT INTO dead_tally
    SELECT tableoid::regclass::text, (dead_at AT TIME ZONE 'UTC')::date, source, event_type,
           error_fingerprint, count(*)
    FROM events_dead GROUP BY 1, 2, 3, 4, 5;
    RETURN NULL;
END $$;

INSERT INTO dead_tally
SELECT tableoid::regclass::text, (dead_at AT TIME ZONE 'UTC')::date, source, event_type,
       error_fingerprint, count(*)
FROM events_dead GROUP BY 1, 2, 3, 4, 5;

CREATE TRIGGER events_dead_fingerprint BEFORE INSERT OR UPDATE OF last_error ON events_dead
    FOR EACH ROW EXECUTE FUNCTION hookd_fingerprint_dead();
-- A row moved into or out of the dead partitions (dying, a retry) is an insert there or a
-- delete, as is a move between days.
CREATE TRIGGER events_dead_tally AFTER INSERT OR DELETE ON events_dead
    FOR EACH ROW EXECUTE FUNCTION hookd_tally_dead();
CREATE TRIGGER events_dead_tally_changed AFTER UPDATE ON events_dead
    FOR EACH ROW
    WHEN ((OLD.source, OLD.event_type, OLD.error_fingerprint)
          IS DISTINCT FROM (NEW.source, NEW.event_type, NEW.error_fingerprint))
    EXECUTE FUNCTION hookd_tally_dead();
CREATE TRIGGER events_truncated_tally AFTER TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION hookd_retally_dead();
CREATE TRIGGER events_dead_truncated_tally AFTER TRUNCATE ON events_dead
    FOR EACH STATEMENT EXECUTE FUNCTION hookd_retally_dead();

-- Migration 0005's drop of a day, and the day's tally with it in the same transaction.
ALTER FUNCTION hookd_drop_dead_day(date, boolean) RENAME TO hookd_drop_dead_day_untallied;
CREATE FUNCTION hookd_drop_dead_day(day date, only_if_empty boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    events_day text := 'events_dead_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF NOT hookd_drop_dead_day_untallied(day, only_if_empty) THEN
        RETURN false;
    END IF;
    PERFORM hookd_lock_dead_tally();
    DELETE FROM dead_tally t WHERE t.part = events_day;
    RETURN true;
END $$;

-- Functions find hookd's tables whoever calls them (see migration 0006).
DO $$
DECLARE
    own text := current_schema();
    fn  text;
BEGIN
    FOREACH fn IN ARRAY ARRAY['hookd_fingerprint_dead()', 'hookd_tally_dead()',
                              'hookd_lock_dead_tally()', 'hookd_compact_dead_tally()',
                              'hookd_retally_dead()', 'hookd_drop_dead_day(date, boolean)'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', fn, own);
    END LOOP;
    -- The triggers also fire for the runbook's DELETE FROM failed_webhooks, which may come
    -- from the application's role, which need not see hookd's schema (see migration 0006).
    FOREACH fn IN ARRAY ARRAY['hookd_fingerprint_dead()', 'hookd_tally_dead()',
                              'hookd_retally_dead()'] LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER', fn);
    END LOOP;
END
$$;
