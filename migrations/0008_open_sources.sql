-- Sources are providers' names, and a provider is one module (or a few lines of the operator's
-- configuration): a new one must not need a migration. hookd checks the name's form before
-- it stores an event (common::Source::register). The constraint's name depends on the
-- install's history (events_source_check, events_source_check1), so it is found by what it
-- checks; dropping it on the partitioned table drops it on every partition.
DO $$
DECLARE
    name text;
BEGIN
    FOR name IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = 'events'::regclass AND contype = 'c'
          AND pg_get_constraintdef(oid) LIKE '%source%'
    LOOP
        EXECUTE format('ALTER TABLE events DROP CONSTRAINT %I', name);
    END LOOP;
END
$$;
