-- Orphaned claims are returned within seconds of their process's death, not after the lease.
--
-- Every hookd process holds a session-level advisory lock, (hookd_owner_space(), its owner
-- number), on a connection of its own for as long as it lives, and names that number in the
-- claims it makes. PostgreSQL drops the lock the moment the process's connection goes, on a
-- crash, an OOM kill or a lost host (keepalives), so any other process can tell a dead owner
-- from a live one by trying the lock, and return the dead one's claims at once. The lease stays
-- the last resort for what the lock cannot tell (a process alive but cut off from the
-- database), and the attempt number stays the fencing token: a late worker cannot complete an
-- event claimed again since.
ALTER TABLE events ADD COLUMN claimed_by integer;

-- The rescuer looks only at claims in flight.
CREATE INDEX events_claimed_by_idx ON events_live (claimed_by) WHERE state = 'processing';

-- The first key of hookd's owner locks, apart from any other advisory lock in the database.
CREATE FUNCTION hookd_owner_space() RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 1752132452 $$;
