-- Per-project quota overrides (PUT /v2.0/quotas/{project_id}), one row per
-- project and resource; a resource without a row has the configured
-- default. hard_limit -1 is unlimited, as in Neutron's quotas table.
CREATE TABLE quotas (
	project_id TEXT NOT NULL,
	resource   TEXT NOT NULL,
	hard_limit INTEGER NOT NULL CHECK (hard_limit >= -1),
	PRIMARY KEY (project_id, resource)
);
