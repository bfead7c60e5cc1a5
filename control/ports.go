package control

import (
	"errors"

	"github.com/gofiber/fiber/v2"

	"github.com/taas-appliance/taas/control/store"
)

// Ports and networks: the minimum of Neutron's core API that the TaaS
// workflow needs (openstack port create, tap service --port NAME).

func portView(p store.Port) item {
	profile := map[string]any{}
	status := "DOWN"
	if p.Interface != "" {
		profile["interface"] = p.Interface
		if p.AdminStateUp {
			status = "ACTIVE"
		}
	}
	return item{"id": p.ID, "tenant_id": p.ProjectID, "project_id": p.ProjectID, "name": p.Name,
		"description": p.Description, "network_id": p.NetworkID, "mac_address": p.MACAddress,
		"admin_state_up": p.AdminStateUp, "status": status, "device_owner": p.DeviceOwner, "device_id": p.DeviceID,
		"port_security_enabled": p.PortSecurityEnabled, "binding:host_id": p.HostID, "binding:profile": profile,
		"fixed_ips": []any{}}
}

func networkView(n store.Network) item {
	return item{"id": n.ID, "tenant_id": n.ProjectID, "project_id": n.ProjectID, "name": n.Name,
		"description": n.Description, "admin_state_up": n.AdminStateUp, "status": "ACTIVE", "shared": n.Shared,
		"mtu": n.MTU, "subnets": []any{}, "router:external": false}
}

// profileIface is binding:profile's interface ("" for {} or null).
func profileIface(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["interface"].(string)
	return s
}

func errMACInUse(network, mac string) error {
	return conflict("MacAddressInUse", "Unable to complete operation for network "+network+
		". The mac address "+mac+" is in use.")
}

// errMACOnInterface is the 409 of a MAC already bound to the interface by
// another port, of any network and project. Only admins bind, but the
// message names neither that port nor its network either way.
func errMACOnInterface(iface, mac string) error {
	return conflict("MacAddressInUse", "Unable to complete operation for interface "+iface+
		". The mac address "+mac+" is in use by another port bound to it.")
}

func (s *Server) listPorts(c *fiber.Ctx) error {
	id := identity(c)
	var items []item
	if id.reader() {
		ps, err := s.st.ListPorts(c.UserContext(), id.scope())
		if err != nil {
			return err
		}
		for _, p := range ps {
			items = append(items, portView(p))
		}
	}
	return renderList(c, portRes, items)
}

func (s *Server) showPort(c *fiber.Ctx) error {
	id := identity(c)
	p, err := s.st.GetPort(c.UserContext(), id.scope(), c.Params("id"))
	if errors.Is(err, store.ErrNotFound) || err == nil && !id.reader() {
		return errPortNotFound(c.Params("id"))
	}
	if err != nil {
		return err
	}
	return renderOne(c, fiber.StatusOK, portRes, portView(p))
}

func (s *Server) createPort(c *fiber.Ctx) error {
	return createAll(s, c, portRes, "create_port", s.createOnePort,
		func(p store.Port) (item, Event) {
			return portView(p), Event{Resource: "port", ID: p.ID, Action: "create", ProjectID: p.ProjectID}
		})
}

// macRetries is how many generated MACs a port create tries before it
// gives up with 503 MacAddressGenerationFailure, as Neutron's
// mac_generation_retries (16). Collisions in fa:16:3e's 2^24 addresses
// are rare but real: 4 in 3,000 creates at 30,000 ports (issue 9).
const macRetries = 16

func errMACGeneration(network string) error {
	return &neutronError{Status: fiber.StatusServiceUnavailable, Type: "MacAddressGenerationFailure",
		Message: "Unable to generate unique mac on network " + network + "."}
}

func (s *Server) createOnePort(tx *store.Tx, id Identity, m map[string]any) (store.Port, error) {
	netID := canonicalUUID(getStr(m, "network_id"))
	network, err := tx.GetNetwork(id.scope(), netID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Port{}, errNetworkNotFound(getStr(m, "network_id"))
	} else if err != nil {
		return store.Port{}, err
	}
	// mac_address has no default: present is "explicitly set".
	_, given := m["mac_address"]
	iface := profileIface(m["binding:profile"])
	set := map[string]bool{"mac_address": given, "binding:host_id": getStr(m, "binding:host_id") != "",
		"binding:profile": iface != ""}
	if err := portPolicy(id, "create_port", network.ProjectID == id.ProjectID,
		func(a string) bool { return set[a] }); err != nil {
		return store.Port{}, err
	}
	if err := s.checkBindable(iface); err != nil {
		return store.Port{}, err
	}
	p := store.Port{ID: newID(), ProjectID: getStr(m, "project_id"), NetworkID: netID, Name: getStr(m, "name"),
		Description: getStr(m, "description"), MACAddress: normalMAC(m["mac_address"]),
		AdminStateUp: m["admin_state_up"].(bool), DeviceOwner: getStr(m, "device_owner"),
		DeviceID: getStr(m, "device_id"), PortSecurityEnabled: m["port_security_enabled"].(bool),
		HostID: getStr(m, "binding:host_id"), Interface: iface}
	for try := 1; ; try++ {
		if !given {
			p.MACAddress = s.cfg.newMAC()
		}
		// A conflicting insert undoes only itself: the transaction, and
		// the bulk's earlier items, stay.
		err := tx.CreatePort(p)
		// A generated MAC may be taken on the network or on the interface.
		taken := errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrMACInUse)
		switch {
		case errors.Is(err, store.ErrConflict) && given:
			return p, errMACInUse(netID, p.MACAddress)
		case errors.Is(err, store.ErrMACInUse) && given:
			return p, errMACOnInterface(p.Interface, p.MACAddress)
		case taken && try < macRetries:
			continue
		case taken:
			return p, errMACGeneration(netID)
		case errors.Is(err, store.ErrNotFound):
			return p, errNetworkNotFound(netID)
		case err != nil:
			return p, err
		}
		return p, nil
	}
}

func (s *Server) updatePort(c *fiber.Ctx) error {
	id := identity(c)
	ms, _, err := portRes.decodeBody(c.Body(), false, id)
	if err != nil {
		return err
	}
	if !id.member() {
		return errPortNotFound(c.Params("id"))
	}
	m := ms[0]
	if err := portPolicy(id, "update_port", false, func(a string) bool { _, ok := m[a]; return ok }); err != nil {
		return err
	}
	ctx := c.UserContext()
	p, err := s.st.UpdatePort(ctx, id.scope(), c.Params("id"), func(p *store.Port) error {
		oldIface := p.Interface
		for k, v := range m {
			switch k {
			case "name":
				p.Name = v.(string)
			case "description":
				p.Description = v.(string)
			case "admin_state_up":
				p.AdminStateUp = v.(bool)
			case "mac_address":
				p.MACAddress = normalMAC(v)
			case "device_id":
				p.DeviceID = v.(string)
			case "device_owner":
				p.DeviceOwner = v.(string)
			case "port_security_enabled":
				p.PortSecurityEnabled = v.(bool)
			case "binding:host_id":
				p.HostID = v.(string)
			case "binding:profile":
				p.Interface = profileIface(v)
			}
		}
		if p.Interface == oldIface {
			return nil
		}
		// Inside the write transaction: no other write can add a use of
		// the port or a binding meanwhile.
		return s.checkRebind(ctx, *p)
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errPortNotFound(c.Params("id"))
	case errors.Is(err, store.ErrConflict):
		return errMACInUse(p.NetworkID, p.MACAddress)
	case errors.Is(err, store.ErrMACInUse):
		return errMACOnInterface(p.Interface, p.MACAddress)
	case err != nil:
		return err
	}
	s.afterChange(Event{Resource: "port", ID: p.ID, Action: "update", ProjectID: p.ProjectID})
	return renderOne(c, fiber.StatusOK, portRes, portView(p))
}

// deletePort deletes the port and, as upstream's port-delete callback,
// the tap services on it with their flows and the flows it is the source
// of.
func (s *Server) deletePort(c *fiber.Ctx) error {
	if err := noBody(c); err != nil {
		return err
	}
	id := identity(c)
	if !id.member() {
		return errPortNotFound(c.Params("id"))
	}
	p, d, err := s.st.DeletePort(c.UserContext(), id.scope(), c.Params("id"))
	if errors.Is(err, store.ErrNotFound) {
		return errPortNotFound(c.Params("id"))
	}
	if err != nil {
		return err
	}
	evs := flowDeleted(d.Flows)
	for _, r := range d.Services {
		evs = append(evs, Event{Resource: "tap_service", ID: r.ID, Action: "delete", ProjectID: r.ProjectID})
	}
	evs = append(evs, Event{Resource: "port", ID: p.ID, Action: "delete", ProjectID: p.ProjectID})
	s.afterChange(evs...)
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) listNetworks(c *fiber.Ctx) error {
	id := identity(c)
	ns, err := s.st.ListNetworks(c.UserContext(), id.scope())
	if err != nil {
		return err
	}
	items := make([]item, 0, len(ns))
	for _, n := range ns {
		items = append(items, networkView(n))
	}
	return renderList(c, networkRes, items)
}

func (s *Server) showNetwork(c *fiber.Ctx) error {
	id := identity(c)
	n, err := s.st.GetNetwork(c.UserContext(), id.scope(), c.Params("id"))
	if errors.Is(err, store.ErrNotFound) {
		return errNetworkNotFound(c.Params("id"))
	}
	if err != nil {
		return err
	}
	return renderOne(c, fiber.StatusOK, networkRes, networkView(n))
}

func (s *Server) createNetwork(c *fiber.Ctx) error {
	id := identity(c)
	if !id.member() {
		return errPolicy("create_network")
	}
	ms, bulk, err := networkRes.decodeBody(c.Body(), true, id)
	if err != nil {
		return err
	}
	if bulk {
		return badRequest("Bulk operation not supported")
	}
	m := ms[0]
	if m["shared"].(bool) && !id.Admin {
		return errPolicy("create_network", "shared")
	}
	n := store.Network{ID: newID(), ProjectID: getStr(m, "project_id"), Name: getStr(m, "name"),
		Description: getStr(m, "description"), AdminStateUp: m["admin_state_up"].(bool), Shared: m["shared"].(bool),
		MTU: 1500}
	// The quota counts inside the insert's write transaction, as for the
	// other resources (createAll): concurrent creates cannot overshoot.
	err = s.st.Write(c.UserContext(), func(tx *store.Tx) error {
		if err := s.checkQuota(tx, networkRes.singular, ms); err != nil {
			return err
		}
		return tx.CreateNetwork(n)
	})
	if err != nil {
		return err
	}
	s.afterChange(Event{Resource: "network", ID: n.ID, Action: "create", ProjectID: n.ProjectID})
	return renderOne(c, fiber.StatusCreated, networkRes, networkView(n))
}
