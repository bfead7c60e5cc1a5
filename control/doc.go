// Package control is the control plane of the appliance: the Neutron
// Tap-as-a-Service REST API (fiber), Neutron conventions (wrapping,
// validation, filters, fields, paging, errors), authentication and project
// policy, and the reconciler that turns the store's desired state into a
// broker.Plan and writes realised status back. It never touches descriptors
// or rings; it sees the data plane only through the DataPlane interface.
package control
