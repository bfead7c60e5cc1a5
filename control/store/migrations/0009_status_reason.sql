-- Issue 13 (status reasons everywhere): tap mirrors keep their status and
-- its reason like services and flows (they were the reconciler's alone, so
-- the API could not show them). A mirror not yet realised is DOWN.
ALTER TABLE tap_mirrors ADD COLUMN status TEXT NOT NULL DEFAULT 'DOWN';
ALTER TABLE tap_mirrors ADD COLUMN status_reason TEXT NOT NULL DEFAULT '';
