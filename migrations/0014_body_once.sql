-- Each event's body is stored once. Every row held the signed bytes (`body`) and their parse
-- (`payload`) side by side: ~2.2 kB for a Stripe invoice event, over PostgreSQL's 2 kB TOAST
-- threshold, so every insert compressed a column, and the queue, the days of processed
-- events and the WAL carried each body twice. `payload` is now kept only where SQL reads it,
-- the dead-letter queue (the runbook's failed_webhooks.webhook_data, the index that finds
-- superseded Stripe events); everything else parses `body`. Ingest still casts each body to
-- jsonb before it answers, so what it stores is exactly what this trigger can parse. Rows
-- written before keep their payload: readers take it where it is there.
ALTER TABLE events ALTER COLUMN payload DROP NOT NULL;

CREATE FUNCTION hookd_parse_dead_payload() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload IS NULL THEN
        NEW.payload := convert_from(NEW.body, 'UTF8')::jsonb;
    END IF;
    RETURN NEW;
END $$;

-- Every way into the dead partitions is an insert there (see migration 0010).
CREATE TRIGGER events_dead_payload BEFORE INSERT ON events_dead
    FOR EACH ROW EXECUTE FUNCTION hookd_parse_dead_payload();
