-- Tap mirrors (upstream's remote mirroring, taas-api.md section 5): a
-- port's traffic, per direction, to remote_ip in mirror_type's tunnel.
-- directions is the JSON object as the API received it, keys and values
-- in order ({"IN": 101, "OUT": "102"}): upstream echoes an integer as an
-- integer and a numeric string as a string, and compares the raw values
-- for its tunnel-id conflict check. Deleting the port deletes its mirrors,
-- as upstream's port-delete callback does.
CREATE TABLE tap_mirrors (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	id          TEXT NOT NULL UNIQUE,
	project_id  TEXT NOT NULL,
	name        TEXT NOT NULL DEFAULT '',
	description TEXT NOT NULL DEFAULT '',
	port_id     TEXT NOT NULL REFERENCES ports(id) ON DELETE CASCADE,
	directions  TEXT NOT NULL CHECK (json_valid(directions) AND json_type(directions) = 'object'),
	remote_ip   TEXT NOT NULL,
	mirror_type TEXT NOT NULL CHECK (mirror_type IN ('gre', 'erspanv1', 'erspanv3', 'vxlan'))
);
CREATE INDEX tap_mirrors_port ON tap_mirrors(port_id);
CREATE INDEX tap_mirrors_project ON tap_mirrors(project_id);

-- The tap_mirror quota resource, kept as 0004 keeps the others.
CREATE TRIGGER tap_mirrors_usage_insert AFTER INSERT ON tap_mirrors BEGIN
	INSERT OR IGNORE INTO quota_usages VALUES (NEW.project_id, 'tap_mirror', 0);
	UPDATE quota_usages SET in_use = in_use + 1 WHERE project_id = NEW.project_id AND resource = 'tap_mirror';
END;
CREATE TRIGGER tap_mirrors_usage_delete AFTER DELETE ON tap_mirrors BEGIN
	UPDATE quota_usages SET in_use = in_use - 1 WHERE project_id = OLD.project_id AND resource = 'tap_mirror';
END;
