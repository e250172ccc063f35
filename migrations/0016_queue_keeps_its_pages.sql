-- The queue's partition fills and empties all day: every settled event leaves it. A vacuum
-- that gives its emptied tail back to the file system (the default) first waits for an
-- exclusive lock on the queue, up to five seconds, while claims and ingest come and go, and
-- then the next burst's inserts extend the file again, one page at a time under the
-- relation's extension lock. Kept, the pages are reused from the free space map instead.
ALTER TABLE events_live SET (vacuum_truncate = false);
