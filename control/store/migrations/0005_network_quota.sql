-- Networks count against a per-project quota too, as in Neutron's quota
-- engine: a member created networks without any limit (issue 9). Usage is
-- kept as 0004 keeps it for ports, tap services and tap flows.
INSERT INTO quota_usages (project_id, resource, in_use)
	SELECT project_id, 'network', count(*) FROM networks GROUP BY project_id;

-- [sqlite]
CREATE TRIGGER networks_usage_insert AFTER INSERT ON networks BEGIN
	INSERT OR IGNORE INTO quota_usages VALUES (NEW.project_id, 'network', 0);
	UPDATE quota_usages SET in_use = in_use + 1 WHERE project_id = NEW.project_id AND resource = 'network';
END;
CREATE TRIGGER networks_usage_delete AFTER DELETE ON networks BEGIN
	UPDATE quota_usages SET in_use = in_use - 1 WHERE project_id = OLD.project_id AND resource = 'network';
END;
-- [end]
-- [postgres]
CREATE TRIGGER networks_usage AFTER INSERT OR DELETE ON networks
	FOR EACH ROW EXECUTE FUNCTION quota_usage('network');
-- [end]
