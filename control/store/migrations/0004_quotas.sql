-- Per-project quota overrides (PUT /v2.0/quotas/{project_id}), one row per
-- project and resource; a resource without a row has the configured
-- default. hard_limit -1 is unlimited, as in Neutron's quotas table.
CREATE TABLE quotas (
	project_id TEXT NOT NULL,
	resource   TEXT NOT NULL,
	hard_limit INTEGER NOT NULL CHECK (hard_limit >= -1),
	PRIMARY KEY (project_id, resource)
);

-- What each project uses, kept by the triggers below (cascaded deletes
-- fire them too): a create checks its quota with one lookup instead of
-- counting up to 10,000 index entries inside the write transaction.
CREATE TABLE quota_usages (
	project_id TEXT NOT NULL,
	resource   TEXT NOT NULL,
	in_use     INTEGER NOT NULL,
	PRIMARY KEY (project_id, resource)
-- [sqlite]
) WITHOUT ROWID;
-- [end]
-- [postgres]
);
-- [end]

INSERT INTO quota_usages (project_id, resource, in_use)
	SELECT project_id, 'port', count(*) FROM ports GROUP BY project_id;
INSERT INTO quota_usages (project_id, resource, in_use)
	SELECT project_id, 'tap_service', count(*) FROM tap_services GROUP BY project_id;
INSERT INTO quota_usages (project_id, resource, in_use)
	SELECT project_id, 'tap_flow', count(*) FROM tap_flows GROUP BY project_id;

-- [sqlite]
CREATE TRIGGER ports_usage_insert AFTER INSERT ON ports BEGIN
	INSERT OR IGNORE INTO quota_usages VALUES (NEW.project_id, 'port', 0);
	UPDATE quota_usages SET in_use = in_use + 1 WHERE project_id = NEW.project_id AND resource = 'port';
END;
CREATE TRIGGER ports_usage_delete AFTER DELETE ON ports BEGIN
	UPDATE quota_usages SET in_use = in_use - 1 WHERE project_id = OLD.project_id AND resource = 'port';
END;
CREATE TRIGGER tap_services_usage_insert AFTER INSERT ON tap_services BEGIN
	INSERT OR IGNORE INTO quota_usages VALUES (NEW.project_id, 'tap_service', 0);
	UPDATE quota_usages SET in_use = in_use + 1 WHERE project_id = NEW.project_id AND resource = 'tap_service';
END;
CREATE TRIGGER tap_services_usage_delete AFTER DELETE ON tap_services BEGIN
	UPDATE quota_usages SET in_use = in_use - 1 WHERE project_id = OLD.project_id AND resource = 'tap_service';
END;
CREATE TRIGGER tap_flows_usage_insert AFTER INSERT ON tap_flows BEGIN
	INSERT OR IGNORE INTO quota_usages VALUES (NEW.project_id, 'tap_flow', 0);
	UPDATE quota_usages SET in_use = in_use + 1 WHERE project_id = NEW.project_id AND resource = 'tap_flow';
END;
CREATE TRIGGER tap_flows_usage_delete AFTER DELETE ON tap_flows BEGIN
	UPDATE quota_usages SET in_use = in_use - 1 WHERE project_id = OLD.project_id AND resource = 'tap_flow';
END;
-- [end]
-- [postgres]
-- One trigger function, the resource its argument.
CREATE FUNCTION quota_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		INSERT INTO quota_usages (project_id, resource, in_use) VALUES (NEW.project_id, TG_ARGV[0], 1)
			ON CONFLICT (project_id, resource) DO UPDATE SET in_use = quota_usages.in_use + 1;
		RETURN NEW;
	END IF;
	UPDATE quota_usages SET in_use = in_use - 1 WHERE project_id = OLD.project_id AND resource = TG_ARGV[0];
	RETURN OLD;
END $$;
CREATE TRIGGER ports_usage AFTER INSERT OR DELETE ON ports
	FOR EACH ROW EXECUTE FUNCTION quota_usage('port');
CREATE TRIGGER tap_services_usage AFTER INSERT OR DELETE ON tap_services
	FOR EACH ROW EXECUTE FUNCTION quota_usage('tap_service');
CREATE TRIGGER tap_flows_usage AFTER INSERT OR DELETE ON tap_flows
	FOR EACH ROW EXECUTE FUNCTION quota_usage('tap_flow');
-- [end]
