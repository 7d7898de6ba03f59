SET client_min_messages = warning;

-- Indexes FerretDB's equality filters can use, in the database FerretDB keeps its collections in.
--
-- FerretDB v1 on PostgreSQL pushes an equality filter down as `_jsonb -> 'field' @> value` (a find by _id too),
-- while the indexes it creates are btree indexes over `_jsonb -> 'field'`, which `@>` cannot use: every read by
-- _id scanned the whole table (47 ms at 10,000 cases, growing with them). Beside each index FerretDB creates we
-- create a GIN index (jsonb_path_ops) over its first field, which `@>` can use; the planner picks it when the
-- filter is selective (a find by _id, a unit's referrals, a case's entries). FerretDB does not know of these
-- indexes and does not need to: they answer its own queries. Idempotent: applied at every start.

CREATE OR REPLACE FUNCTION waspada_lookup_index(ferret_index oid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  tbl regclass;
  field text;
  name text;
BEGIN
  SELECT i.indrelid, substring(pg_get_indexdef(i.indexrelid, 1, true) FROM '^\(_jsonb -> ''([^'']+)''::text\)$')
    INTO tbl, field
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
   WHERE i.indexrelid = ferret_index AND a.amname = 'btree';
  IF field IS NULL THEN
    RETURN;  -- not a FerretDB index over a top-level field (or one of ours)
  END IF;
  name := left((SELECT relname FROM pg_class WHERE oid = tbl), 40) || '_' || left(md5(field), 8) || '_lookup';
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s USING gin ((_jsonb -> %L) jsonb_path_ops)', name, tbl, field);
END $$;

CREATE OR REPLACE FUNCTION waspada_lookup_indexes() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE
  command record;
BEGIN
  FOR command IN SELECT objid FROM pg_event_trigger_ddl_commands()
                  WHERE command_tag = 'CREATE INDEX' AND object_type = 'index' LOOP
    PERFORM waspada_lookup_index(command.objid);
  END LOOP;
END $$;

DROP EVENT TRIGGER IF EXISTS waspada_lookup_indexes;
CREATE EVENT TRIGGER waspada_lookup_indexes ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
  EXECUTE FUNCTION waspada_lookup_indexes();

-- Collections made before the trigger existed.
DO $$
DECLARE
  ferret_index oid;
BEGIN
  FOR ferret_index IN SELECT i.indexrelid FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                        JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'public') LOOP
    PERFORM waspada_lookup_index(ferret_index);
  END LOOP;
END $$;

-- FerretDB's driver prepares its statements, field names as parameters (`_jsonb -> $1 @> $2`), and PostgreSQL
-- switches a prepared statement to a generic plan after five runs when that plan looks no dearer: a generic plan
-- cannot know $1 is '_id', so it scans the table, opening every stored document (7 ms for a read by _id among 600
-- cases of 8.5 KB, against 0.02 ms through the index above); a table's first rows make the scan look cheap.
-- Every statement of FerretDB's database is planned with its values.
DO $$
BEGIN
  EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = force_custom_plan', current_database());
END $$;
