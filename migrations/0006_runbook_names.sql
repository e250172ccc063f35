-- The runbook's names, and hookd in a schema of its own inside the application's database.
--
-- The on-call runbook and the application it belongs to (CloudGreet) read and write
-- `businesses`, `audit_logs`, `call_logs`, `sms_logs`, `webhook_logs` and `failed_webhooks`
-- under their own column names. From here on:
--   * hookd's own objects (events, their keys and attempts, counters, its migration history,
--     its functions) live in hookd's schema: `hookd.schema`, set by hookd on its connections,
--     default `hookd`;
--   * the application's tables live in `public`, under the runbook's names. hookd creates one
--     only where the application has none; one the application already has is left as it is
--     (hookd checks its columns before it migrates: common/src/db/schema.rs);
--   * `webhook_logs` (one row per processing attempt) and `failed_webhooks` are views in
--     `public` over hookd's tables, so the runbook's SQL runs verbatim.
--
-- Two layouts arrive here. Every install made before this migration has all of hookd's
-- objects in `public`, with the business tables it created under hookd's former names: those
-- objects move to hookd's schema and the business tables are renamed in place, keeping every
-- row. A new install made by `hookd migrate` ran 0001-0005 inside hookd's schema already: the
-- empty business tables they made there are dropped, and the application's are used or made.

DO $migration$
DECLARE
    own      text := coalesce(nullif(current_setting('hookd.schema', true), ''), 'hookd');
    app      constant text := 'public';
    legacy   boolean;
    moving   text[];
    rel      text;
    fn       record;
    id_type  text;
    refs     text;
BEGIN
    IF own = app OR own LIKE 'pg\_%' OR own = 'information_schema' THEN
        RAISE EXCEPTION 'hookd''s schema must be its own, not %', own;
    END IF;
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', own);
    -- Everything below, and sqlx's bookkeeping after it on this connection, resolves names in
    -- hookd's schema first.
    PERFORM set_config('search_path', format('%I,%I', own, app), false);

    legacy := to_regclass(format('%I.events', own)) IS NULL;

    IF legacy THEN
        -- Partitions are tables of their own: each one moves by itself.
        WITH RECURSIVE tree(oid) AS (
            SELECT c.oid FROM pg_class c
            WHERE c.relnamespace = app::regnamespace
              AND (c.relname IN ('events', 'event_attempts', 'event_keys', 'stats_minute')
                   OR c.relname = '_sqlx_migrations'
                      AND to_regclass(format('%I._sqlx_migrations', own)) IS NULL)
            UNION ALL
            SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid
        )
        SELECT array_agg(format('%I.%I', n.nspname, c.relname))
        INTO moving
        FROM tree t JOIN pg_class c ON c.oid = t.oid JOIN pg_namespace n ON n.oid = c.relnamespace;
        IF to_regclass(format('%I.events', app)) IS NULL THEN
            RAISE EXCEPTION 'hookd''s tables are in neither % nor %', own, app;
        END IF;
        EXECUTE format('DROP VIEW IF EXISTS %I.webhook_logs, %I.failed_webhooks', app, app);
        FOREACH rel IN ARRAY moving LOOP
            EXECUTE format('ALTER TABLE %s SET SCHEMA %I', rel, own);
        END LOOP;
        FOR fn IN
            SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args
            FROM pg_proc p
            WHERE p.pronamespace = app::regnamespace AND p.proname LIKE 'hookd\_%'
        LOOP
            EXECUTE format('ALTER FUNCTION %I.%I(%s) SET SCHEMA %I', app, fn.proname, fn.args, own);
        END LOOP;
    ELSE
        EXECUTE format('DROP VIEW IF EXISTS %I.webhook_logs, %I.failed_webhooks', own, own);
        EXECUTE format('DROP TABLE %I.audit_logs, %I.call_logs, %I.sms_logs, %I.businesses',
                       own, own, own, own);
    END IF;

    -- The `created` of the newest Stripe subscription state applied per customer: an older
    -- delivery must not overwrite newer state. It was a column of `businesses`; an
    -- application's own table has no room for it.
    CREATE TABLE stripe_state (
        customer_id text        PRIMARY KEY,
        state_at    timestamptz NOT NULL
    );

    IF legacy THEN
        ALTER TABLE public.businesses RENAME COLUMN plan_id TO subscription_plan;
        ALTER TABLE public.businesses RENAME COLUMN subscription_started_at TO subscription_start_date;
        ALTER TABLE public.businesses RENAME COLUMN last_payment_at TO last_payment_date;
        INSERT INTO stripe_state (customer_id, state_at)
        SELECT stripe_customer_id, stripe_state_at FROM public.businesses
        WHERE stripe_customer_id IS NOT NULL AND stripe_state_at IS NOT NULL;
        ALTER TABLE public.businesses DROP COLUMN stripe_state_at;

        -- The runbook speaks of the customer and the business, not of caller and callee:
        -- which is which follows the direction.
        ALTER TABLE public.call_logs RENAME COLUMN call_control_id TO call_id;
        ALTER TABLE public.call_logs RENAME CONSTRAINT call_logs_call_control_id_key TO call_logs_call_id_key;
        ALTER TABLE public.call_logs RENAME COLUMN direction TO call_type;
        ALTER TABLE public.call_logs RENAME COLUMN from_number TO customer_phone;
        ALTER TABLE public.call_logs RENAME COLUMN to_number TO business_phone;
        UPDATE public.call_logs
        SET call_type = CASE call_type WHEN 'outgoing' THEN 'outbound' ELSE 'inbound' END,
            customer_phone = CASE call_type WHEN 'outgoing' THEN business_phone ELSE customer_phone END,
            business_phone = CASE call_type WHEN 'outgoing' THEN customer_phone ELSE business_phone END
        WHERE call_type IN ('incoming', 'outgoing');
        -- The furthest stage is now read off the status itself.
        ALTER TABLE public.call_logs DROP COLUMN stage;

        ALTER TABLE public.sms_logs RENAME COLUMN direction TO message_type;
        ALTER TABLE public.sms_logs RENAME COLUMN from_number TO customer_phone;
        ALTER TABLE public.sms_logs RENAME COLUMN to_number TO business_phone;
        ALTER TABLE public.sms_logs RENAME COLUMN body TO content;
        ALTER TABLE public.sms_logs RENAME COLUMN sent_at TO received_at;
        UPDATE public.sms_logs
        SET customer_phone = business_phone, business_phone = customer_phone
        WHERE message_type = 'outbound';
        ALTER TABLE public.sms_logs DROP COLUMN stage;

        -- Stripe entries took the event type as their action; the runbook names actions.
        UPDATE public.audit_logs
        SET action = CASE action
                WHEN 'customer.subscription.created' THEN 'subscription_created'
                WHEN 'customer.subscription.updated' THEN 'subscription_updated'
                WHEN 'customer.subscription.deleted' THEN 'subscription_deleted'
                WHEN 'invoice.payment_succeeded' THEN 'payment_succeeded'
                ELSE 'payment_failed' END,
            details = details || jsonb_strip_nulls(jsonb_build_object(
                CASE WHEN action LIKE 'invoice.%' THEN 'invoice_id' ELSE 'subscription_id' END,
                details -> 'object_id'))
        WHERE source = 'stripe'
          AND action IN ('customer.subscription.created', 'customer.subscription.updated',
                         'customer.subscription.deleted', 'invoice.payment_succeeded',
                         'invoice.payment_failed');
    ELSE
        IF to_regclass('public.businesses') IS NULL THEN
            CREATE TABLE public.businesses (
                id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                name                    text        NOT NULL,
                -- The number Telnyx calls and messages reach: how they find their business.
                phone_number            text UNIQUE,
                stripe_customer_id      text UNIQUE,
                stripe_subscription_id  text,
                subscription_status     text,
                subscription_plan       text,
                subscription_start_date timestamptz,
                last_payment_date       timestamptz,
                created_at              timestamptz NOT NULL DEFAULT now(),
                updated_at              timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX businesses_stripe_subscription_id_idx
                ON public.businesses (stripe_subscription_id);
        END IF;
        -- New tables refer to the application's businesses by its own key type, and with a
        -- foreign key only where that key is unique.
        SELECT format_type(a.atttypid, a.atttypmod) INTO id_type
        FROM pg_attribute a
        WHERE a.attrelid = 'public.businesses'::regclass AND a.attname = 'id' AND NOT a.attisdropped;
        IF id_type IS NULL THEN
            RAISE EXCEPTION 'public.businesses has no id column';
        END IF;
        refs := CASE WHEN EXISTS (
                    SELECT FROM pg_index i
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                    WHERE i.indrelid = 'public.businesses'::regclass AND i.indisunique
                      AND i.indnkeyatts = 1 AND i.indpred IS NULL AND a.attname = 'id')
                THEN ' REFERENCES public.businesses (id) ON DELETE SET NULL' ELSE '' END;

        IF to_regclass('public.audit_logs') IS NULL THEN
            EXECUTE format($ddl$
                CREATE TABLE public.audit_logs (
                    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    business_id %s%s,
                    -- The webhook that caused the entry; no foreign key, audit rows outlive
                    -- purged events.
                    webhook_id  bigint,
                    source      text,
                    action      text        NOT NULL,
                    details     jsonb       NOT NULL DEFAULT '{}',
                    created_at  timestamptz NOT NULL DEFAULT now()
                )$ddl$, id_type, refs);
            CREATE INDEX audit_logs_business_id_idx ON public.audit_logs (business_id, created_at);
        END IF;
        IF to_regclass('public.call_logs') IS NULL THEN
            EXECUTE format($ddl$
                CREATE TABLE public.call_logs (
                    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    call_id        text        NOT NULL UNIQUE,
                    business_id    %s%s,
                    customer_phone text,
                    business_phone text,
                    call_type      text,
                    status         text        NOT NULL,
                    started_at     timestamptz,
                    answered_at    timestamptz,
                    ended_at       timestamptz,
                    hangup_cause   text,
                    duration_secs  integer GENERATED ALWAYS AS (CAST(EXTRACT(EPOCH FROM
                                   (ended_at - COALESCE(answered_at, started_at))) AS integer)) STORED,
                    created_at     timestamptz NOT NULL DEFAULT now(),
                    updated_at     timestamptz NOT NULL DEFAULT now()
                )$ddl$, id_type, refs);
            CREATE INDEX call_logs_business_id_idx ON public.call_logs (business_id, created_at);
        END IF;
        IF to_regclass('public.sms_logs') IS NULL THEN
            EXECUTE format($ddl$
                CREATE TABLE public.sms_logs (
                    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    message_id     text        NOT NULL UNIQUE,
                    business_id    %s%s,
                    customer_phone text,
                    business_phone text,
                    message_type   text,
                    content        text,
                    status         text        NOT NULL,
                    received_at    timestamptz,
                    completed_at   timestamptz,
                    created_at     timestamptz NOT NULL DEFAULT now(),
                    updated_at     timestamptz NOT NULL DEFAULT now()
                )$ddl$, id_type, refs);
            CREATE INDEX sms_logs_business_id_idx ON public.sms_logs (business_id, created_at);
        END IF;
    END IF;

    -- `webhook_logs` is one row per processing, ordered and filtered by when it finished.
    ALTER TABLE event_attempts ADD COLUMN processed_at timestamptz;
    UPDATE event_attempts SET processed_at = started_at + duration_ms * interval '1 millisecond';
    -- hookd writes it; the default serves other writers, such as a bulk load.
    ALTER TABLE event_attempts ALTER COLUMN processed_at SET NOT NULL,
                               ALTER COLUMN processed_at SET DEFAULT now();
    DROP INDEX event_attempts_started_at_idx;
    CREATE INDEX event_attempts_processed_at_idx ON event_attempts (processed_at);

    -- Triggers fire with the search path of whoever changes the table, such as an engineer
    -- running the runbook's DELETE in psql: hookd's functions must find hookd's tables anyway.
    FOR fn IN
        SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args
        FROM pg_proc p
        WHERE p.pronamespace = own::regnamespace AND p.proname LIKE 'hookd\_%'
    LOOP
        EXECUTE format('ALTER FUNCTION %I.%I(%s) SET search_path = %I, pg_temp', own,
                       fn.proname, fn.args, own);
    END LOOP;
    -- The runbook's `DELETE FROM failed_webhooks` may come from the application's role, which
    -- need not see hookd's schema: the attempts of the deleted events go with them anyway.
    EXECUTE format('ALTER FUNCTION %I.hookd_delete_attempts() SECURITY DEFINER', own);

    -- The runbook's views, in the application's schema.
    CREATE VIEW public.webhook_logs AS
    SELECT a.id,
           e.event_type,
           e.event_id,
           CASE WHEN a.outcome IN ('succeeded', 'skipped') THEN 'success' ELSE 'failure' END
               AS status,
           a.error AS error_message,
           a.processed_at,
           e.source,
           a.event_id AS webhook_id,
           a.attempt,
           a.duration_ms
    FROM event_attempts a
    JOIN events e ON e.id = a.event_id;

    -- A simple view, so the runbook's `DELETE FROM failed_webhooks WHERE ...` deletes dead
    -- events (and, through the trigger, their attempts).
    CREATE VIEW public.failed_webhooks AS
    SELECT id,
           payload AS webhook_data,
           last_error AS error_message,
           dead_at AS failed_at,
           source,
           event_type,
           event_id,
           attempts,
           received_at
    FROM events
    WHERE state = 'dead';
END
$migration$;
