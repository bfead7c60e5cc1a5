package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"
)

// attr is one row of a resource's attribute map, as neutron-lib declares
// them: who may set it, its default, and its validator.
type attr struct {
	name      string
	post, put bool
	// required: allowed in POST and without a default.
	required bool
	// def gives the POST default; nil means the attribute stays absent.
	def func() any
	// boolean converts with convert_to_boolean before validation.
	boolean bool
	// check returns the validation failure reason, "" when valid.
	check func(v any) string
	// convert, when set, replaces a valid value by what the body struct
	// takes (a snaplen, a json.Number, becomes an int).
	convert func(v any) any
	// ordered: once valid, the value is kept as the JSON the client sent
	// (a json.RawMessage), so that an object's keys keep their order; a
	// map would come back sorted. A tap mirror's directions are echoed as
	// upstream's json.dumps writes the dict it stored, keys as sent.
	ordered bool
}

// resource describes one collection for body processing and listing.
type resource struct {
	singular, plural string
	attrs            []attr
	// sortable lists the attributes accepted as sort_key; upstream's TaaS
	// maps flag none, so sort_key is rejected there.
	sortable map[string]bool
}

func (r *resource) attr(name string) *attr {
	for i := range r.attrs {
		if r.attrs[i].name == name {
			return &r.attrs[i]
		}
	}
	return nil
}

func str(max int) func(any) string     { return func(v any) string { return validString(v, max) } }
func nameStr(max int) func(any) string { return func(v any) string { return validNameString(v, max) } }
func constant(v any) func() any        { return func() any { return v } }
func values(vs ...string) func(any) string {
	return func(v any) string { return validValues(v, vs...) }
}

// projectAttrs are tenant_id and its alias project_id, which every
// resource has: settable on POST only, defaulting to the caller's project.
var projectAttrs = []attr{
	{name: "tenant_id", post: true, check: str(255)},
	{name: "project_id", post: true, check: str(255)},
}

var (
	readOnlyID     = attr{name: "id"}
	readOnlyStatus = attr{name: "status"}
	// readOnlyStatusReason is ours (taas-status-reason): why status is not
	// ACTIVE. On tap services, flows and mirrors.
	readOnlyStatusReason = attr{name: "status_reason"}
)

var tapServiceRes = &resource{
	singular: "tap_service", plural: "tap_services",
	attrs: append([]attr{readOnlyID}, append(append([]attr{}, projectAttrs...),
		attr{name: "name", post: true, put: true, def: constant(""), check: nameStr(255)},
		attr{name: "description", post: true, put: true, def: constant(""), check: str(1024)},
		attr{name: "port_id", post: true, required: true, check: validUUID},
		readOnlyStatus,
		readOnlyStatusReason,
		snaplenAttr,
	)...),
}

// snaplenAttr is the snaplen of tap services and tap mirrors (ours,
// taas-snaplen, issue 11): null or 64..65535, settable by POST and PUT.
var snaplenAttr = attr{name: "snaplen", post: true, put: true, def: constant(nil), check: validSnaplen,
	convert: snaplenValue}

var tapFlowRes = &resource{
	singular: "tap_flow", plural: "tap_flows",
	attrs: append([]attr{readOnlyID}, append(append([]attr{}, projectAttrs...),
		attr{name: "name", post: true, put: true, def: constant(""), check: str(255)},
		attr{name: "description", post: true, put: true, def: constant(""), check: str(1024)},
		attr{name: "tap_service_id", post: true, required: true, check: validUUID},
		attr{name: "source_port", post: true, required: true, check: validUUID},
		attr{name: "direction", post: true, required: true, check: values("IN", "OUT", "BOTH")},
		readOnlyStatus,
		readOnlyStatusReason,
		attr{name: "vlan_filter", post: true, def: constant(nil), check: validVLANFilter},
		// Ours (taas-flow-filter, issue 11): a pcap-filter expression, set
		// at create only, as vlan_filter.
		attr{name: "filter", post: true, def: constant(nil), check: validFilter},
	)...),
}

var tapMirrorRes = &resource{
	singular: "tap_mirror", plural: "tap_mirrors",
	attrs: append([]attr{readOnlyID}, append(append([]attr{}, projectAttrs...),
		attr{name: "name", post: true, put: true, def: constant(""), check: nameStr(255)},
		attr{name: "description", post: true, put: true, def: constant(""), check: str(255)},
		attr{name: "port_id", post: true, required: true, check: validUUID},
		attr{name: "directions", post: true, required: true, check: validDirections, ordered: true},
		// Ours on top of type:ip_address: a unicast address.
		attr{name: "remote_ip", post: true, required: true, check: validRemoteIP},
		// Upstream's erspanv1 and gre; erspanv3 and vxlan are ours
		// (taas-mirror-types).
		attr{name: "mirror_type", post: true, required: true, check: values(mirrorTypes...)},
		snaplenAttr,
		// Ours (taas-status-reason): upstream's mirrors have no status.
		readOnlyStatus,
		readOnlyStatusReason,
	)...),
	sortable: map[string]bool{"tenant_id": true, "project_id": true},
}

var portRes = &resource{
	singular: "port", plural: "ports",
	attrs: append([]attr{readOnlyID}, append(append([]attr{}, projectAttrs...),
		attr{name: "name", post: true, put: true, def: constant(""), check: str(255)},
		attr{name: "description", post: true, put: true, def: constant(""), check: str(255)},
		attr{name: "network_id", post: true, required: true, check: validUUID},
		attr{name: "admin_state_up", post: true, put: true, def: constant(true), boolean: true},
		// No default: createOnePort generates it, and retries on collision.
		attr{name: "mac_address", post: true, put: true, check: validMAC},
		attr{name: "device_id", post: true, put: true, def: constant(""), check: str(255)},
		attr{name: "device_owner", post: true, put: true, def: constant(""), check: str(255)},
		readOnlyStatus,
		attr{name: "port_security_enabled", post: true, put: true, def: constant(true), boolean: true},
		attr{name: "binding:host_id", post: true, put: true, def: constant(""), check: str(255)},
		attr{name: "binding:profile", post: true, put: true, def: constant(map[string]any{}), check: validBindingProfile},
		attr{name: "fixed_ips"},
	)...),
	sortable: map[string]bool{"id": true, "name": true, "mac_address": true, "network_id": true, "status": true,
		"tenant_id": true, "project_id": true, "device_owner": true, "device_id": true},
}

var networkRes = &resource{
	singular: "network", plural: "networks",
	attrs: append([]attr{readOnlyID}, append(append([]attr{}, projectAttrs...),
		attr{name: "name", post: true, put: true, def: constant(""), check: str(255)},
		attr{name: "description", post: true, put: true, def: constant(""), check: str(255)},
		attr{name: "admin_state_up", post: true, put: true, def: constant(true), boolean: true},
		attr{name: "shared", post: true, put: true, def: constant(false), boolean: true},
		attr{name: "mtu", post: false},
		readOnlyStatus,
		attr{name: "subnets"},
		attr{name: "router:external"},
	)...),
	sortable: map[string]bool{"id": true, "name": true, "status": true, "tenant_id": true, "project_id": true},
}

// errNoBody is what an empty body gets on POST and PUT.
func errNoBody(r *resource) error {
	return badRequest("Unable to find '%s' in request body", r.singular)
}

// decodeJSON parses a whole body as one JSON value, numbers kept as
// json.Number so that 1.0 and "1" stay distinguishable. Trailing data is
// an error, as in Python's json.loads, and so is invalid UTF-8, which
// encoding/json would silently replace with U+FFFD.
func decodeJSON(b []byte) (any, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after JSON value")
	}
	return v, nil
}

// decodeObject parses a body that must be one JSON object.
func decodeObject(raw []byte) (map[string]any, error) {
	v, err := decodeJSON(raw)
	if err != nil {
		return nil, badRequest("Body contains invalid data")
	}
	body, ok := v.(map[string]any)
	if !ok {
		return nil, badRequest("Body contains invalid data")
	}
	return body, nil
}

// decodeBody processes a POST or PUT body the way Neutron's
// prepare_request_body does, in its order, so the first failure reported
// is upstream's. It returns one attribute map per resource (several for a
// bulk create, which only POST allows) with defaults filled in and values
// validated and converted.
func (r *resource) decodeBody(raw []byte, create bool, id Identity) (items []map[string]any, bulk bool, err error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, false, errNoBody(r)
	}
	body, err := decodeObject(raw)
	if err != nil {
		return nil, false, err
	}
	if list, ok := body[r.plural]; ok && create {
		l, ok := list.([]any)
		if !ok {
			return nil, true, badRequest("Body contains invalid data")
		}
		if len(l) == 0 {
			return nil, true, badRequest("Resources required")
		}
		rawList := make([]json.RawMessage, len(l))
		if r.hasOrdered() {
			// The list decoded above, so this fails only on a bug.
			if err := json.Unmarshal(rawMember(raw, r.plural), &rawList); err != nil || len(rawList) != len(l) {
				return nil, true, fmt.Errorf("decode %s: %v", r.plural, err)
			}
		}
		if err := r.checkFilterCount(l); err != nil {
			return nil, true, err
		}
		for i, e := range l {
			// Bulk items may be bare or wrapped in the singular key.
			m, ok := e.(map[string]any)
			rawItem := rawList[i]
			if inner, wrapped := m[r.singular]; ok && wrapped {
				m, ok = inner.(map[string]any)
				if rawItem != nil {
					rawItem = rawMember(rawItem, r.singular)
				}
			}
			if !ok {
				return nil, true, badRequest("Object '%s' contains invalid data", r.singular)
			}
			if err := r.processItem(m, create, id); err != nil {
				return nil, true, err
			}
			r.keepOrder(m, rawItem)
			items = append(items, m)
		}
		return items, true, nil
	}
	res, ok := body[r.singular]
	if !ok {
		return nil, false, errNoBody(r)
	}
	m, ok := res.(map[string]any)
	if !ok {
		return nil, false, badRequest("Object '%s' contains invalid data", r.singular)
	}
	if err := r.processItem(m, create, id); err != nil {
		return nil, false, err
	}
	if r.hasOrdered() {
		r.keepOrder(m, rawMember(raw, r.singular))
	}
	return []map[string]any{m}, false, nil
}

func (r *resource) hasOrdered() bool {
	return slices.ContainsFunc(r.attrs, func(a attr) bool { return a.ordered })
}

// keepOrder replaces the value of each ordered attribute in m, validated,
// by its JSON in rawItem (the item's object as sent).
func (r *resource) keepOrder(m map[string]any, rawItem json.RawMessage) {
	for _, a := range r.attrs {
		if _, present := m[a.name]; present && a.ordered {
			if v := rawMember(rawItem, a.name); v != nil {
				m[a.name] = v
			}
		}
	}
}

// rawMember is the JSON of obj's member key, nil when obj is not an
// object or lacks it. A key given twice is its last value, as in
// decodeJSON's map and Python's json.
func rawMember(obj json.RawMessage, key string) json.RawMessage {
	var members map[string]json.RawMessage
	if json.Unmarshal(obj, &members) != nil {
		return nil
	}
	return members[key]
}

func (r *resource) processItem(m map[string]any, create bool, id Identity) error {
	// 1. tenant_id and project_id: one implies the other, both must agree,
	// and only admins may name another project.
	t, hasT := m["tenant_id"]
	p, hasP := m["project_id"]
	switch {
	case hasT && hasP && pyStr(t) != pyStr(p):
		return badRequest("'project_id' and 'tenant_id' do not match")
	case hasT && !hasP:
		m["project_id"], p, hasP = t, t, true
	case hasP && !hasT:
		m["tenant_id"] = p
	}
	if hasP && !id.Admin {
		if s, ok := p.(string); !ok || s != id.ProjectID {
			return badRequest("Specifying 'project_id' other than the authenticated project in request is not allowed for the current user.")
		}
	}
	if create && !hasP {
		m["tenant_id"], m["project_id"] = id.ProjectID, id.ProjectID
	}
	// 2. Unknown attributes.
	var extra []string
	for k := range m {
		if r.attr(k) == nil {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return badRequest("Unrecognized attribute(s) '%s'", strings.Join(extra, ", "))
	}
	// 3. Who may set what, required attributes and defaults, in map order.
	for _, a := range r.attrs {
		_, present := m[a.name]
		switch {
		case create && present && !a.post:
			return badRequest("Attribute '%s' not allowed in POST", a.name)
		case create && !present && a.required:
			return badRequest("Failed to parse request. Required attribute '%s' not specified", a.name)
		case create && !present && a.def != nil:
			m[a.name] = a.def()
		case !create && present && !a.put:
			return badRequest("Cannot update read-only attribute %s", a.name)
		}
	}
	// 4. Conversion and validation, in map order.
	for _, a := range r.attrs {
		v, present := m[a.name]
		if !present {
			continue
		}
		if a.boolean {
			b, ok := toBool(v)
			if !ok {
				return &neutronError{Status: 400, Type: "InvalidInput",
					Message: fmt.Sprintf("Invalid input for operation: '%s' cannot be converted to boolean.", pyStr(v))}
			}
			m[a.name] = b
			continue
		}
		if a.check != nil {
			if reason := a.check(v); reason != "" {
				return invalidInput(a.name, reason)
			}
		}
		if a.convert != nil {
			m[a.name] = a.convert(v)
		}
	}
	return nil
}

// checkFilterCount refuses a bulk whose items carry more than
// maxRequestFilters distinct filter expressions, before any is compiled
// (filtercache.go).
func (r *resource) checkFilterCount(items []any) error {
	if r.attr("filter") == nil {
		return nil
	}
	seen := map[string]bool{}
	for _, e := range items {
		m, _ := e.(map[string]any)
		if inner, ok := m[r.singular].(map[string]any); ok {
			m = inner
		}
		if s, ok := m["filter"].(string); ok {
			seen[s] = true
		}
	}
	if len(seen) > maxRequestFilters {
		return badRequest("The request holds %d distinct filter expressions: the limit is %d", len(seen), maxRequestFilters)
	}
	return nil
}
