-- The shared audit trail of every abaco process on every VM (`abaco db init --audit`).
-- Each row is one record of a local audit log (audit.jsonl), verbatim in `record`; `host` is
-- the host id of the log it comes from. Run this as the role that should own the table (not
-- the role abaco writes with): the owner alone can drop or disable the triggers below, so the
-- writing role (`--audit-writer`, INSERT and SELECT only) can add rows and never change them.
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {table} (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    host        text        NOT NULL,
    seq         bigint      NOT NULL,
    recorded_at timestamptz NOT NULL,
    event       text        NOT NULL,
    run_id      text        NOT NULL,
    command     text        NOT NULL,
    exit_code   integer,
    prev_hash   text        NOT NULL,
    hash        text        NOT NULL,
    record      jsonb       NOT NULL,
    UNIQUE (host, hash)
);

-- The events of record_version 2 (tables made by earlier versions allowed only the first three).
ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {event_check};
ALTER TABLE {table} ADD CONSTRAINT {event_check}
    CHECK (event IN ('START', 'COMPLETE', 'FAIL', 'RECOVER', 'RESTORE', 'MIGRATE'));

CREATE INDEX IF NOT EXISTS {run_index} ON {table} (run_id);
CREATE INDEX IF NOT EXISTS {time_index} ON {table} (recorded_at);
CREATE INDEX IF NOT EXISTS {host_seq_index} ON {table} (host, seq);

-- Append-only: no UPDATE, DELETE or TRUNCATE, not even by the role that inserts.
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the abaco audit trail is append-only: % refused', TG_OP;
END
$$;

DROP TRIGGER IF EXISTS abaco_audit_append_only ON {table};
CREATE TRIGGER abaco_audit_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {function}();

-- One record per host and sequence number: the first copy received stays the record. The same
-- record sent again is skipped; a different record with a seq the host already has (a log
-- rewritten or restarted from seq 1, a cloned VM, a row forged with the writer's credentials)
-- is refused. received_at is the server's clock, whatever the inserting client sends.
CREATE OR REPLACE FUNCTION {insert_function}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    held text;
BEGIN
    NEW.received_at := now();
    SELECT hash INTO held FROM {table} WHERE host = NEW.host AND seq = NEW.seq ORDER BY id LIMIT 1;
    IF NOT FOUND THEN
        RETURN NEW;
    END IF;
    IF held = NEW.hash THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the abaco audit trail already holds a different record seq % of host %',
        NEW.seq, NEW.host;
END
$$;

DROP TRIGGER IF EXISTS abaco_audit_one_record_per_seq ON {table};
CREATE TRIGGER abaco_audit_one_record_per_seq
    BEFORE INSERT ON {table}
    FOR EACH ROW EXECUTE FUNCTION {insert_function}();
