-- The tunnel ids of every tap mirror, one row per direction, so that a
-- create's conflict check (taas-api.md 5.3 rule 2) is an index lookup: an
-- admin's create, which sees every project, used to read the directions
-- of every mirror with json_each inside the single writer (issue 10's
-- review: 11 ms at 10000 mirrors). type and atom are json_each's, so ids
-- still compare as upstream compares them, raw: 101 ('integer') and
-- "101" ('text') differ. The triggers keep the table in the transaction
-- that writes the mirror; deleting it (or its port) deletes its rows.
CREATE TABLE tap_mirror_tunnels (
	mirror_seq INTEGER NOT NULL REFERENCES tap_mirrors(seq) ON DELETE CASCADE,
	project_id TEXT NOT NULL,
	direction  TEXT NOT NULL,
	type       TEXT NOT NULL,
-- [sqlite]
	-- No type: the value as json_each gives it (INTEGER, REAL or TEXT).
	atom       NOT NULL
-- [end]
-- [postgres]
	atom       TEXT NOT NULL
-- [end]
);
CREATE INDEX tap_mirror_tunnels_id ON tap_mirror_tunnels(type, atom, project_id);
CREATE INDEX tap_mirror_tunnels_mirror ON tap_mirror_tunnels(mirror_seq);

-- [sqlite]
INSERT INTO tap_mirror_tunnels (mirror_seq, project_id, direction, type, atom)
	SELECT m.seq, m.project_id, e.key, e.type, e.atom FROM tap_mirrors m, json_each(m.directions) e;

CREATE TRIGGER tap_mirror_tunnels_insert AFTER INSERT ON tap_mirrors BEGIN
	INSERT INTO tap_mirror_tunnels (mirror_seq, project_id, direction, type, atom)
		SELECT NEW.seq, NEW.project_id, e.key, e.type, e.atom FROM json_each(NEW.directions) e;
END;
-- The API never changes a mirror's directions or project; a hand edit
-- keeps the table true all the same.
CREATE TRIGGER tap_mirror_tunnels_update AFTER UPDATE OF directions, project_id ON tap_mirrors BEGIN
	DELETE FROM tap_mirror_tunnels WHERE mirror_seq = OLD.seq;
	INSERT INTO tap_mirror_tunnels (mirror_seq, project_id, direction, type, atom)
		SELECT NEW.seq, NEW.project_id, e.key, e.type, e.atom FROM json_each(NEW.directions) e;
END;
-- [end]
-- [postgres]
-- taas_tunnels is json_each's type and atom for the ids the API accepts
-- (JSON integers and strings): 'integer' and the number (-0 is 0, as
-- SQLite reads it), or 'text' and the string. The store's conflict check
-- reads a new mirror's ids through it too.
CREATE FUNCTION taas_tunnels(dirs text) RETURNS TABLE (direction text, type text, atom text)
LANGUAGE sql IMMUTABLE AS $$
	SELECT e.key,
		CASE json_typeof(e.value) WHEN 'number' THEN 'integer' WHEN 'string' THEN 'text' ELSE json_typeof(e.value) END,
		CASE json_typeof(e.value) WHEN 'number' THEN (e.value #>> '{}')::numeric::text ELSE e.value #>> '{}' END
	FROM json_each(dirs::json) e
$$;

CREATE FUNCTION tap_mirror_tunnels_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'UPDATE' THEN
		DELETE FROM tap_mirror_tunnels WHERE mirror_seq = OLD.seq;
	END IF;
	INSERT INTO tap_mirror_tunnels (mirror_seq, project_id, direction, type, atom)
		SELECT NEW.seq, NEW.project_id, t.direction, t.type, t.atom FROM taas_tunnels(NEW.directions) t;
	RETURN NEW;
END $$;
CREATE TRIGGER tap_mirror_tunnels_insert AFTER INSERT ON tap_mirrors
	FOR EACH ROW EXECUTE FUNCTION tap_mirror_tunnels_sync();
CREATE TRIGGER tap_mirror_tunnels_update AFTER UPDATE OF directions, project_id ON tap_mirrors
	FOR EACH ROW EXECUTE FUNCTION tap_mirror_tunnels_sync();
-- [end]
