// Package store owns the appliance's SQLite database: the schema (numbered,
// embedded migrations recorded in schema_migrations), the networks, ports,
// tap services, tap flows and tap mirrors, and the status the reconciler
// writes back. Every other package reaches the database through its methods, which take
// a context first. It knows nothing of HTTP, Neutron bodies or the data
// plane. It runs one goroutine, from Open to Close: the writer, which runs
// every write transaction and commits the writes queued together once
// (group commit, tx.go).
package store
