// Package control is the control plane of the appliance: the Neutron
// Tap-as-a-Service REST API (fiber), Neutron conventions (wrapping,
// validation, filters, fields, paging, errors), authentication and project
// policy, and the reconciler that turns the store's desired state into a
// broker.Plan and writes realised status back. It never touches descriptors
// or rings; it sees the data plane only through the DataPlane interface.
//
// Files: routes.go lists every route; body.go and validate.go process
// request bodies in Neutron's order with its texts; query.go does filters,
// fields, sorting and pagination; neutronerr.go is the one error handler;
// auth.go the identity and policy; typed.go the one generic handler set
// (list, show, create, update, delete) over a kind per collection, whose
// specific rules and views are in ports.go (networks, ports), taas.go (tap
// services, tap flows) and mirrors.go (tap mirrors); view.go renders views
// with encoding/json; listcache.go keeps rendered lists per store
// generation;
// reconcile.go the reconciler; stats.go and events.go the taas-stats
// extension and the server-sent events stream; metrics.go /metrics (the
// data plane's counters, the tap mirrors' status from the reconciler);
// limits.go bounds what a
// request may cost and screens what fasthttp parsed; connlimit.go shares
// the connection slots among clients; path.go decodes request paths as
// Neutron does; quota.go is Neutron's quotas extension; roles.go checks
// bindings against the declared interfaces' roles and mirror loops.
// control/store owns SQLite.
//
// Goroutines: fiber's (one per connection; an events stream keeps its
// connection's), and the reconciler's, started by Server.Run. Passes are
// triggered after every write and never run on a request's path;
// publishing an event never blocks. A timer's goroutine returns memory to
// the kernel a second after the last large body (limits.go).
package control
