//! The functions the capture triggers of mirrored tables run
//! (docs/tables.md), installed in the deployment's schema by the apply:
//! `capture_rows()` queues a statement's changed rows, `capture()` is the
//! row-level one earlier versions put on tables (kept for their triggers
//! until the next apply), `refuse_truncate()` refuses `TRUNCATE`.

use sqlx::PgConnection;

use super::mirror::{origin, q};
use crate::store::StoreError;

/// The trigger functions, in Ferry's schema. They run with the rights of
/// Ferry's role (`SECURITY DEFINER`, with a fixed `search_path`), so an app
/// whose role may not touch Ferry's tables still has its writes captured.
/// A captured row keeps only the mirrored columns (the trigger's
/// arguments after the collection; the space column first).
pub async fn install(tx: &mut PgConnection, namespace: &str) -> Result<(), StoreError> {
    let ns = q(namespace);
    let origin = origin(namespace);
    let channel = super::namespace::channel(namespace);
    run(tx, &format!(
        r#"
CREATE OR REPLACE FUNCTION {ns}.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
#variable_conflict use_variable
DECLARE
    kept text[] := TG_ARGV[1:];
    row_new jsonb;
    row_old jsonb;
BEGIN
    IF current_setting('ferry.origin', true) = '{origin}' THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT jsonb_object_agg(key, value) INTO row_new
        FROM jsonb_each(to_jsonb(NEW)) WHERE key = ANY (kept);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        SELECT jsonb_object_agg(key, value) INTO row_old
        FROM jsonb_each(to_jsonb(OLD)) WHERE key = ANY (kept);
    END IF;
    INSERT INTO {ns}.captured (collection, space, op, new_row, old_row)
    VALUES (TG_ARGV[0], coalesce(row_new, row_old) ->> TG_ARGV[1], TG_OP, row_new, row_old);
    PERFORM pg_notify('{channel}', 'k');
    RETURN NULL;
END
$fn$;
REVOKE EXECUTE ON FUNCTION {ns}.capture() FROM PUBLIC;
CREATE OR REPLACE FUNCTION {ns}.capture_rows() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
#variable_conflict use_variable
DECLARE
    ferry_kept text[] := TG_ARGV[1:];
    -- The table's other columns, left out of each queued row (one
    -- catalog read per statement; each row then loses them in one step).
    ferry_other text[] := ARRAY(
        SELECT attname::text FROM pg_attribute
        WHERE attrelid = TG_RELID AND attnum > 0 AND NOT attisdropped
          AND attname::text <> ALL (ferry_kept));
    ferry_queued bigint;
BEGIN
    -- `t.*`: the whole row, whatever columns the table has (a column
    -- named like the alias is never taken for it).
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {ns}.captured (collection, space, op, new_row)
        SELECT TG_ARGV[0], n.r ->> TG_ARGV[1], 'INSERT', n.r
        FROM (SELECT to_jsonb(t.*) - ferry_other AS r FROM new_rows t) n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {ns}.captured (collection, space, op, old_row)
        SELECT TG_ARGV[0], o.r ->> TG_ARGV[1], 'DELETE', o.r
        FROM (SELECT to_jsonb(t.*) - ferry_other AS r FROM old_rows t) o;
    ELSE
        -- Each row's old and new versions, paired by the record's key (a
        -- null key pairs with nothing); a row whose key changed is queued
        -- as two halves, which Ferry refuses (the key names the record).
        INSERT INTO {ns}.captured (collection, space, op, new_row, old_row)
        SELECT TG_ARGV[0], coalesce(n.r, o.r) ->> TG_ARGV[1], 'UPDATE', n.r, o.r
        FROM (SELECT to_jsonb(t.*) - ferry_other AS r FROM new_rows t) n
        FULL JOIN (SELECT to_jsonb(t.*) - ferry_other AS r FROM old_rows t) o
          ON (n.r ->> TG_ARGV[1]) = (o.r ->> TG_ARGV[1])
         AND (n.r ->> TG_ARGV[2]) = (o.r ->> TG_ARGV[2]);
    END IF;
    GET DIAGNOSTICS ferry_queued = ROW_COUNT;
    IF ferry_queued > 0 THEN
        PERFORM pg_notify('{channel}', 'k');
    END IF;
    RETURN NULL;
END
$fn$;
REVOKE EXECUTE ON FUNCTION {ns}.capture_rows() FROM PUBLIC;
CREATE OR REPLACE FUNCTION {ns}.refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'Ferry mirrors the collection % into %.%: delete its rows instead of truncating (docs/tables.md)',
        TG_ARGV[0], TG_TABLE_SCHEMA, TG_TABLE_NAME;
END
$fn$;
"#
    )).await?;
    Ok(())
}

/// Runs `sql`, one or more statements without parameters.
async fn run(tx: &mut PgConnection, sql: &str) -> Result<(), StoreError> {
    sqlx::Executor::execute(tx, sql).await?;
    Ok(())
}
