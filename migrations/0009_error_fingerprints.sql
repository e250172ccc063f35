-- Dead events are grouped by why they died: the last error with what varies between events of
-- one cause (ids, numbers, timestamps, quoted values) normalised away. The fingerprint is
-- stored when an event dies (events::complete), so grouping a million dead events reads one
-- index instead of rewriting every message.
CREATE FUNCTION hookd_error_fingerprint(error text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog
AS $$
    SELECT btrim(regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(coalesce(error, ''),
            -- quoted values
            '''[^'']*''|"[^"]*"', '?', 'g'),
            -- timestamps (ISO 8601, with or without zone)
            '\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?', '<time>', 'g'),
            -- UUIDs
            '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}', '<id>', 'g'),
            -- provider ids: a short lower-case prefix, _, and a token with a capital or digit
            -- (cus_A, evt_1QhookdDemo, v3:... call ids), but not words such as not_found
            '\m[a-z]{2,10}_[A-Za-z0-9]*[A-Z0-9][A-Za-z0-9]*\M', '<id>', 'g'),
            -- other tokens of letters and digits mixed (Telnyx call ids, opaque keys)
            '\m(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{6,}\M', '<id>', 'g'),
            -- long hex strings (hashes, signatures)
            '\m[0-9a-fA-F]{16,}\M', '<hex>', 'g'),
            -- numbers
            '\d+(\.\d+)?', '<n>', 'g'),
            -- runs of white space
            '\s+', ' ', 'g'));
$$;

ALTER TABLE events ADD COLUMN error_fingerprint text;
UPDATE events SET error_fingerprint = hookd_error_fingerprint(last_error) WHERE state = 'dead';
CREATE INDEX events_dead_clusters_idx
    ON events_dead (source, event_type, error_fingerprint, dead_at, id);
