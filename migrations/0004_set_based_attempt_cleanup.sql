-- An event's attempts go with it, one statement per DELETE instead of one trigger call per row.
--
-- The foreign key's ON DELETE CASCADE ran a referential-integrity trigger for every deleted
-- event, and its check ran for every attempt a worker recorded. Attempts are only ever written
-- by the worker holding the event's row lock, and events are only deleted once dead, so the
-- key guarded nothing the queue's own locking does not; what it did was make purging a million
-- dead events take half a minute. Deletes through the `failed_webhooks` view land here too.
ALTER TABLE event_attempts DROP CONSTRAINT event_attempts_event_id_fkey;

CREATE FUNCTION hookd_delete_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- An array rather than a join: the transition table has no statistics, and a misjudged
    -- join would read every attempt ever recorded.
    DELETE FROM event_attempts WHERE event_id = ANY (ARRAY(SELECT id FROM gone_events));
    RETURN NULL;
END $$;
CREATE TRIGGER events_delete_attempts AFTER DELETE ON events
    REFERENCING OLD TABLE AS gone_events
    FOR EACH STATEMENT EXECUTE FUNCTION hookd_delete_attempts();
