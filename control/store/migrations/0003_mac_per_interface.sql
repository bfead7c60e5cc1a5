-- A MAC identifies a source port on the interface it is bound to (issue 9):
-- two bound ports with one MAC on one interface would each receive the
-- other's traffic, across networks and projects. A partial unique index
-- would refuse to build on a database that already holds such duplicates,
-- so triggers refuse new ones instead, inside the writing transaction, and
-- leave the old ones (and writes that keep them as they are) alone.
-- RAISE(ABORT) is SQLITE_CONSTRAINT_TRIGGER with this message, which the
-- store maps to ErrMACInUse.
CREATE INDEX ports_iface_mac ON ports(iface, mac_address);

-- [sqlite]
CREATE TRIGGER ports_iface_mac_insert BEFORE INSERT ON ports
WHEN NEW.iface != '' AND EXISTS (
	SELECT 1 FROM ports WHERE iface = NEW.iface AND mac_address = NEW.mac_address)
BEGIN
	SELECT RAISE(ABORT, 'mac address in use on interface');
END;

CREATE TRIGGER ports_iface_mac_update BEFORE UPDATE OF iface, mac_address ON ports
WHEN NEW.iface != '' AND (NEW.iface != OLD.iface OR NEW.mac_address != OLD.mac_address) AND EXISTS (
	SELECT 1 FROM ports WHERE iface = NEW.iface AND mac_address = NEW.mac_address AND id != NEW.id)
BEGIN
	SELECT RAISE(ABORT, 'mac address in use on interface');
END;
-- [end]
-- [postgres]
-- One trigger function for both: RAISE EXCEPTION is SQLSTATE P0001 with
-- this message, which the store maps to ErrMACInUse.
CREATE FUNCTION ports_iface_mac() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.iface <> '' AND (TG_OP = 'INSERT' OR NEW.iface <> OLD.iface OR NEW.mac_address <> OLD.mac_address)
		AND EXISTS (SELECT 1 FROM ports WHERE iface = NEW.iface AND mac_address = NEW.mac_address AND id <> NEW.id) THEN
		RAISE EXCEPTION 'mac address in use on interface';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER ports_iface_mac BEFORE INSERT OR UPDATE OF iface, mac_address ON ports
	FOR EACH ROW EXECUTE FUNCTION ports_iface_mac();
-- [end]
