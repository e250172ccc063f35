-- A bulk action on the dead-letter queue acts on exactly the events its preview counted. The
-- preview records its snapshot (pg_current_snapshot()); an event belongs to the previewed set
-- when the transaction that dead-lettered it was visible to that snapshot. One that died
-- after the preview, or was retried and died again since, has a later transaction and is left
-- alone. A timestamp cannot say this: a death's now() is taken before its commit, so an event
-- can die "before" a preview that could not yet see it.
ALTER TABLE events ADD COLUMN dead_xid xid8;

CREATE FUNCTION hookd_mark_dead_xid() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    NEW.dead_xid := pg_current_xact_id();
    RETURN NEW;
END
$$;

-- Every way into the dead partitions is an insert there (a row moved by UPDATE is deleted
-- from its old partition and inserted into the new one), so dying, bulk loads and restored
-- archives are all marked, and rows that stay live pay nothing.
CREATE TRIGGER events_dead_xid BEFORE INSERT ON events_dead
    FOR EACH ROW EXECUTE FUNCTION hookd_mark_dead_xid();
