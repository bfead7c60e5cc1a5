-- Issue 14 (a fleet): a port is bound to an interface of the node its
-- binding:host_id names, and whichever node's API takes the request checks
-- the binding against that node's interfaces, not its own. Each node
-- publishes here what it declares: JSON, as control writes it (its
-- [[interfaces]] with their roles, and which of them close a mirror loop
-- on that node); '' until a node of this version registers.
ALTER TABLE nodes ADD COLUMN interfaces TEXT NOT NULL DEFAULT '';

-- One MAC on one interface of one node (0003's rule). On PostgreSQL, the
-- database of a fleet, eth1 of node a and eth1 of node b are two netdevs:
-- the rule takes the port's node (binding:host_id) too. SQLite is a single
-- appliance's database, which realises every port whatever its host_id,
-- so there the rule stays per interface.
-- [postgres]
CREATE INDEX ports_host_iface_mac ON ports(host_id, iface, mac_address);
CREATE OR REPLACE FUNCTION ports_iface_mac() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.iface <> '' AND (TG_OP = 'INSERT' OR NEW.iface <> OLD.iface OR NEW.mac_address <> OLD.mac_address
			OR NEW.host_id <> OLD.host_id)
		AND EXISTS (SELECT 1 FROM ports WHERE host_id = NEW.host_id AND iface = NEW.iface
			AND mac_address = NEW.mac_address AND id <> NEW.id) THEN
		RAISE EXCEPTION 'mac address in use on interface';
	END IF;
	RETURN NEW;
END $$;
DROP TRIGGER ports_iface_mac ON ports;
CREATE TRIGGER ports_iface_mac BEFORE INSERT OR UPDATE OF iface, mac_address, host_id ON ports
	FOR EACH ROW EXECUTE FUNCTION ports_iface_mac();
-- [end]
