-- The Neutron-style resources the appliance keeps. Ids are canonical UUID
-- strings; seq keeps creation order for listings and pagination.
CREATE TABLE networks (
	seq            INTEGER PRIMARY KEY AUTOINCREMENT,
	id             TEXT NOT NULL UNIQUE,
	project_id     TEXT NOT NULL,
	name           TEXT NOT NULL DEFAULT '',
	description    TEXT NOT NULL DEFAULT '',
	admin_state_up INTEGER NOT NULL DEFAULT 1,
	shared         INTEGER NOT NULL DEFAULT 0,
	mtu            INTEGER NOT NULL DEFAULT 1500
);

CREATE TABLE ports (
	seq                   INTEGER PRIMARY KEY AUTOINCREMENT,
	id                    TEXT NOT NULL UNIQUE,
	project_id            TEXT NOT NULL,
	network_id            TEXT NOT NULL REFERENCES networks(id),
	name                  TEXT NOT NULL DEFAULT '',
	description           TEXT NOT NULL DEFAULT '',
	mac_address           TEXT NOT NULL,
	admin_state_up        INTEGER NOT NULL DEFAULT 1,
	device_owner          TEXT NOT NULL DEFAULT '',
	device_id             TEXT NOT NULL DEFAULT '',
	port_security_enabled INTEGER NOT NULL DEFAULT 1,
	host_id               TEXT NOT NULL DEFAULT '',
	-- binding:profile {"interface": ...}; '' when the port is not bound.
	iface                 TEXT NOT NULL DEFAULT '',
	UNIQUE (network_id, mac_address)
);
CREATE INDEX ports_project ON ports(project_id);

CREATE TABLE tap_services (
	seq           INTEGER PRIMARY KEY AUTOINCREMENT,
	id            TEXT NOT NULL UNIQUE,
	project_id    TEXT NOT NULL,
	name          TEXT NOT NULL DEFAULT '',
	description   TEXT NOT NULL DEFAULT '',
	port_id       TEXT NOT NULL REFERENCES ports(id) ON DELETE CASCADE,
	status        TEXT NOT NULL DEFAULT 'DOWN',
	status_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX tap_services_port ON tap_services(port_id);
CREATE INDEX tap_services_project ON tap_services(project_id);

CREATE TABLE tap_flows (
	seq            INTEGER PRIMARY KEY AUTOINCREMENT,
	id             TEXT NOT NULL UNIQUE,
	project_id     TEXT NOT NULL,
	name           TEXT NOT NULL DEFAULT '',
	description    TEXT NOT NULL DEFAULT '',
	tap_service_id TEXT NOT NULL REFERENCES tap_services(id) ON DELETE CASCADE,
	source_port    TEXT NOT NULL REFERENCES ports(id) ON DELETE CASCADE,
	direction      TEXT NOT NULL CHECK (direction IN ('IN', 'OUT', 'BOTH')),
	-- NULL is the API's null: every VLAN.
	vlan_filter    TEXT,
	status         TEXT NOT NULL DEFAULT 'DOWN',
	status_reason  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX tap_flows_service ON tap_flows(tap_service_id);
CREATE INDEX tap_flows_source ON tap_flows(source_port);
CREATE INDEX tap_flows_project ON tap_flows(project_id);
