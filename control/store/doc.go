// Package store owns the appliance's database, SQLite or (for a fleet,
// issue 14) PostgreSQL: the schema (numbered, embedded migrations recorded
// in schema_migrations, one set for both engines, dialect.go), the
// networks, ports, tap services, tap flows and tap mirrors, and the status
// the reconciler writes back. Every other package reaches the database
// through its methods, which take a context first. It knows nothing of
// HTTP, Neutron bodies or the data plane. It runs one goroutine, from Open
// to Close: the writer, which runs every write transaction and commits the
// writes queued together once (group commit, tx.go), but for PostgreSQL's
// heartbeats, which run on their own connection in the caller's goroutine
// (Heartbeat); on PostgreSQL a second, the listener, which learns of other
// taasd's writes (notify.go).
package store
