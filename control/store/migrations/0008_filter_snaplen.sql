-- Issue 11 (traffic selection): a tap flow's filter, a pcap-filter
-- expression exactly as the API accepted it (null: every frame), and the
-- snaplen of tap services and tap mirrors (null: whole frames). Rows of
-- older databases read as null, which is what they did before.
ALTER TABLE tap_flows ADD COLUMN filter TEXT;
ALTER TABLE tap_services ADD COLUMN snaplen INTEGER CHECK (snaplen IS NULL OR snaplen BETWEEN 64 AND 65535);
ALTER TABLE tap_mirrors ADD COLUMN snaplen INTEGER CHECK (snaplen IS NULL OR snaplen BETWEEN 64 AND 65535);
