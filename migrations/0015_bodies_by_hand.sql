-- A body that is not JSON. Ingest refuses one before it answers, but a row written by hand
-- (an import, a test, an operator's INSERT) can hold anything. Its handler refuses it and
-- it dies; parsing it there must not fail the statement that moves it, or every event in
-- its worker's batch would fail to complete, again at each retry. Such a body is kept in
-- the payload as a JSON string of its bytes, the way `encode(.., 'escape')` shows them.
CREATE FUNCTION hookd_body_json(body bytea) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN convert_from(body, 'UTF8')::jsonb;
EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
    RETURN to_jsonb(encode(body, 'escape'));
END $$;

CREATE OR REPLACE FUNCTION hookd_parse_dead_payload() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload IS NULL THEN
        NEW.payload := hookd_body_json(NEW.body);
    END IF;
    RETURN NEW;
END $$;

-- Counting received events, in one place: the statement trigger on `events` counts inserts
-- made by hand or in bulk, and ingest's own statement, which inserts into the partition,
-- calls it for what it stored. In minute, source and type order, so two callers upsert the
-- same counter rows in the same order and never deadlock.
CREATE FUNCTION hookd_add_received(ats timestamptz[], sources text[], types text[])
    RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    added bigint;
BEGIN
    INSERT INTO stats_minute (bucket, source, event_type, shard, received)
    SELECT date_trunc('minute', r.at), r.source, r.event_type, hookd_counter_shard(), count(*)
    FROM unnest(ats, sources, types) AS r (at, source, event_type)
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (bucket, source, event_type, shard)
    DO UPDATE SET received = stats_minute.received + EXCLUDED.received;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN added;
END $$;

CREATE OR REPLACE FUNCTION hookd_count_received() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM hookd_add_received(array_agg(received_at), array_agg(source), array_agg(event_type))
    FROM new_events;
    RETURN NULL;
END $$;
