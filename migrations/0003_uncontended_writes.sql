-- Concurrent writers no longer wait for each other's commits.
--
-- A transaction that sends NOTIFY holds a database-wide lock from its pre-commit until its
-- commit is flushed, so every ingest batch queued behind the previous one's fsync. hookd now
-- wakes its own workers in-process and sends the notifications from a side task after the
-- commit (see daemon/src/announce.rs).
DROP TRIGGER events_notify_insert ON events;
DROP FUNCTION hookd_notify_new_events();

-- Every batch added to the same few counter rows (this minute, this source and type) and held
-- their row locks until its commit was flushed: one writer at a time. Each connection now adds
-- to its own shard of the row, and readers sum the shards. hookd folds the shards of past
-- minutes back into shard 0, so dashboards read about one row per minute and type.
ALTER TABLE stats_minute ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE stats_minute DROP CONSTRAINT stats_minute_pkey;
ALTER TABLE stats_minute ADD PRIMARY KEY (bucket, source, event_type, shard);
CREATE INDEX stats_minute_shards_idx ON stats_minute (bucket) WHERE shard <> 0;

-- The shard of the connection running the statement.
CREATE FUNCTION hookd_counter_shard() RETURNS smallint LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT (1 + pg_backend_pid() % 8)::smallint $$;

CREATE OR REPLACE FUNCTION hookd_count_received() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_minute (bucket, source, event_type, shard, received)
    SELECT date_trunc('minute', n.received_at), n.source, n.event_type, hookd_counter_shard(),
           count(*)
    FROM new_events n
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (bucket, source, event_type, shard)
    DO UPDATE SET received = stats_minute.received + EXCLUDED.received;
    RETURN NULL;
END $$;
