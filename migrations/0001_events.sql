-- The queue is this table: one row per accepted webhook, keyed by (source, provider event id) so
-- a redelivery can never create a second row.
CREATE TABLE events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source          text        NOT NULL CHECK (source IN ('stripe', 'telnyx', 'custom')),
    event_id        text        NOT NULL,
    event_type      text        NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'processing', 'succeeded', 'retrying', 'dead', 'skipped')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- When the event is next due. While `processing` it equals `locked_until`, so an expired lease
    -- makes the event due again through the same index as a scheduled retry.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    last_error      text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    dead_at         timestamptz,
    -- Exactly the bytes that were signed, for audits and forwarding; `payload` is the parsed copy.
    body            bytea       NOT NULL,
    payload         jsonb       NOT NULL,
    CONSTRAINT events_source_event_id_key UNIQUE (source, event_id)
);

-- Workers claim from this: small, since finished events leave it.
CREATE INDEX events_due_idx ON events (next_attempt_at)
    WHERE state IN ('pending', 'retrying', 'processing');
-- The dead-letter queue, newest first, and purges by age.
CREATE INDEX events_dead_idx ON events (dead_at DESC) WHERE state = 'dead';

CREATE TABLE event_attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      bigint      NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    attempt       integer     NOT NULL,
    started_at    timestamptz NOT NULL,
    duration_ms   integer     NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'dead', 'skipped')),
    error         text,
    http_status   integer,
    response_body text
);
CREATE INDEX event_attempts_event_id_idx ON event_attempts (event_id, attempt);
CREATE INDEX event_attempts_started_at_idx ON event_attempts (started_at);

-- Wakes workers (and hooktop) when new work arrives. Statement level: a batch insert notifies
-- once, and identical notifications in one transaction are folded by PostgreSQL.
CREATE FUNCTION hookd_notify_new_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hookd_events', 'new');
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify_insert AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION hookd_notify_new_events();

-- Business tables the built-in handlers write.
CREATE TABLE businesses (
    id                        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                      text        NOT NULL,
    phone_number              text UNIQUE,
    stripe_customer_id        text UNIQUE,
    stripe_subscription_id    text,
    subscription_status       text,
    plan_id                   text,
    subscription_started_at   timestamptz,
    last_payment_at           timestamptz,
    -- `created` of the newest Stripe subscription event applied: older deliveries must not win.
    stripe_state_at           timestamptz,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX businesses_stripe_subscription_id_idx ON businesses (stripe_subscription_id);

CREATE TABLE audit_logs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id bigint REFERENCES businesses (id) ON DELETE SET NULL,
    -- The webhook that caused the entry; no foreign key, audit rows outlive purged events.
    webhook_id  bigint,
    source      text        NOT NULL,
    action      text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_business_id_idx ON audit_logs (business_id, created_at);

CREATE TABLE call_logs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_control_id text        NOT NULL UNIQUE,
    business_id     bigint REFERENCES businesses (id) ON DELETE SET NULL,
    direction       text,
    from_number     text,
    to_number       text,
    -- The furthest stage seen: 1 initiated, 2 answered, 3 hangup. Events may arrive in any order,
    -- so each one fills its own columns and the stage only moves forward.
    stage           smallint    NOT NULL DEFAULT 0,
    status          text        NOT NULL,
    started_at      timestamptz,
    answered_at     timestamptz,
    ended_at        timestamptz,
    hangup_cause    text,
    duration_secs   integer GENERATED ALWAYS AS
                    (CAST(EXTRACT(EPOCH FROM (ended_at - COALESCE(answered_at, started_at))) AS integer)) STORED,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX call_logs_business_id_idx ON call_logs (business_id, created_at);

CREATE TABLE sms_logs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id   text        NOT NULL UNIQUE,
    business_id  bigint REFERENCES businesses (id) ON DELETE SET NULL,
    direction    text,
    from_number  text,
    to_number    text,
    body         text,
    -- As for calls: 1 received or sent, 2 finalized; the status of the furthest stage wins.
    stage        smallint    NOT NULL DEFAULT 0,
    status       text        NOT NULL,
    sent_at      timestamptz,
    completed_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sms_logs_business_id_idx ON sms_logs (business_id, created_at);

-- The on-call runbook's names. Both are simple views over `events`, so PostgreSQL can update
-- through them: `DELETE FROM failed_webhooks WHERE failed_at < ...` deletes dead events.
CREATE VIEW webhook_logs AS
SELECT id, source, event_id, event_type, state AS status, attempts, last_error AS error,
       payload, received_at, processed_at
FROM events;

CREATE VIEW failed_webhooks AS
SELECT id, source, event_id, event_type, payload, last_error AS error, attempts,
       received_at, dead_at AS failed_at
FROM events
WHERE state = 'dead';
