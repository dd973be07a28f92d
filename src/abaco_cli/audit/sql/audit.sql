-- The shared audit trail of every abaco process on every VM (`abaco db init --audit`).
-- Each row is one record of a local audit log (audit.jsonl), verbatim in `record`.
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {table} (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    host        text        NOT NULL,
    seq         bigint      NOT NULL,
    recorded_at timestamptz NOT NULL,
    event       text        NOT NULL CHECK (event IN ('START', 'COMPLETE', 'FAIL')),
    run_id      text        NOT NULL,
    command     text        NOT NULL,
    exit_code   integer,
    prev_hash   text        NOT NULL,
    hash        text        NOT NULL,
    record      jsonb       NOT NULL,
    UNIQUE (host, hash)
);

CREATE INDEX IF NOT EXISTS {run_index} ON {table} (run_id);
CREATE INDEX IF NOT EXISTS {time_index} ON {table} (recorded_at);

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
