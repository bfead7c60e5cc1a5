-- Issue 14 (a fleet of appliances on one database): each taasd is a node,
-- named by --node, that realises the ports whose binding:host_id names it.
-- A node registers here at start and, in a fleet, heartbeats: last_seen is
-- what every node's API reads to show a silent node's resources DOWN.
-- instance is a random id of one run of taasd: a heartbeat updates only its
-- own run's row, so two taasd under one name cannot both believe they own
-- it. stopped_at is set when that run stopped cleanly (0 while it runs), so
-- the others need not wait for the timeout to know it gone. Times are Unix milliseconds written by taasd (no database clock
-- function: this SQL runs on SQLite and PostgreSQL alike).
CREATE TABLE nodes (
	name        TEXT PRIMARY KEY,
	instance    TEXT NOT NULL,
	version     TEXT NOT NULL DEFAULT '',
	api_address TEXT NOT NULL DEFAULT '',
	started_at  BIGINT NOT NULL,
	last_seen   BIGINT NOT NULL,
	stopped_at  BIGINT NOT NULL DEFAULT 0
);

-- Each node's data-plane counters (control's JSON of its broker.Stats
-- snapshot), replaced every heartbeat in a fleet, so that any node's
-- taas/stats and /metrics show the whole fleet's: one row a node, whose
-- size follows the resources the node realises.
CREATE TABLE node_stats (
	node       TEXT PRIMARY KEY REFERENCES nodes(name) ON DELETE CASCADE,
	updated_at BIGINT NOT NULL,
	stats      TEXT NOT NULL
);
