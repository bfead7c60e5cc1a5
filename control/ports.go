package control

import (
	"context"
	"errors"

	"github.com/gofiber/fiber/v2"

	"github.com/taas-appliance/taas/control/store"
)

// Ports and networks: the minimum of Neutron's core API that the TaaS
// workflow needs (openstack port create, tap service --port NAME).

// portBody is a validated port body.
type portBody struct {
	projectBody
	namedBody
	NetworkID           string              `json:"network_id"`
	AdminStateUp        opt[bool]           `json:"admin_state_up"`
	MACAddress          opt[string]         `json:"mac_address"`
	DeviceID            opt[string]         `json:"device_id"`
	DeviceOwner         opt[string]         `json:"device_owner"`
	PortSecurityEnabled opt[bool]           `json:"port_security_enabled"`
	HostID              opt[string]         `json:"binding:host_id"`
	Profile             opt[bindingProfile] `json:"binding:profile"`
}

// bindingProfile is binding:profile: the appliance's binding.
type bindingProfile struct {
	Interface string `json:"interface,omitempty"`
}

// portView is a port as the API shows it.
type portView struct {
	AdminStateUp        bool           `json:"admin_state_up"`
	HostID              string         `json:"binding:host_id"`
	Profile             bindingProfile `json:"binding:profile"`
	Description         string         `json:"description"`
	DeviceID            string         `json:"device_id"`
	DeviceOwner         string         `json:"device_owner"`
	FixedIPs            []struct{}     `json:"fixed_ips"`
	ID                  string         `json:"id"`
	MACAddress          string         `json:"mac_address"`
	Name                string         `json:"name"`
	NetworkID           string         `json:"network_id"`
	PortSecurityEnabled bool           `json:"port_security_enabled"`
	ProjectID           string         `json:"project_id"`
	Status              string         `json:"status"`
	TenantID            string         `json:"tenant_id"`
}

func newPortView(p store.Port) portView {
	status := "DOWN"
	if p.Interface != "" && p.AdminStateUp {
		status = "ACTIVE"
	}
	return portView{ID: p.ID, TenantID: p.ProjectID, ProjectID: p.ProjectID, Name: p.Name,
		Description: p.Description, NetworkID: p.NetworkID, MACAddress: p.MACAddress,
		AdminStateUp: p.AdminStateUp, Status: status, DeviceOwner: p.DeviceOwner, DeviceID: p.DeviceID,
		PortSecurityEnabled: p.PortSecurityEnabled, HostID: p.HostID, Profile: bindingProfile{Interface: p.Interface},
		FixedIPs: []struct{}{}}
}

// networkBody is a validated network body.
type networkBody struct {
	projectBody
	Name         string `json:"name"`
	Description  string `json:"description"`
	AdminStateUp bool   `json:"admin_state_up"`
	Shared       bool   `json:"shared"`
}

// networkView is a network as the API shows it.
type networkView struct {
	AdminStateUp   bool       `json:"admin_state_up"`
	Description    string     `json:"description"`
	ID             string     `json:"id"`
	MTU            int        `json:"mtu"`
	Name           string     `json:"name"`
	ProjectID      string     `json:"project_id"`
	RouterExternal bool       `json:"router:external"`
	Shared         bool       `json:"shared"`
	Status         string     `json:"status"`
	Subnets        []struct{} `json:"subnets"`
	TenantID       string     `json:"tenant_id"`
}

func newNetworkView(n store.Network) networkView {
	return networkView{ID: n.ID, TenantID: n.ProjectID, ProjectID: n.ProjectID, Name: n.Name,
		Description: n.Description, AdminStateUp: n.AdminStateUp, Status: "ACTIVE", Shared: n.Shared,
		MTU: n.MTU, Subnets: []struct{}{}}
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

func (s *Server) portKind() *kind[store.Port, portBody, portView] {
	return &kind[store.Port, portBody, portView]{
		s: s, res: portRes, read: Identity.reader, notFound: errPortNotFound,
		list: s.st.ListPorts, get: s.st.GetPort, view: newPortView,
		ref:    func(p store.Port) store.Ref { return store.Ref{ID: p.ID, ProjectID: p.ProjectID} },
		create: s.createPort, update: s.updatePort,
		// As upstream's port-delete callbacks (taas_plugin's and
		// tap_mirror_plugin's handle_delete_port): the tap services on the
		// port with their flows, the flows it is the source of, and the
		// tap mirrors on it.
		remove: func(ctx context.Context, project, id string) (store.Port, []Event, error) {
			p, d, err := s.st.DeletePort(ctx, project, id)
			evs := append(refEvents("tap_flow", d.Flows), refEvents("tap_service", d.Services)...)
			return p, append(evs, refEvents("tap_mirror", d.Mirrors)...), err
		},
	}
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

func (s *Server) createPort(tx *store.Tx, id Identity, b portBody) (store.Port, error) {
	netID := canonicalUUID(b.NetworkID)
	network, err := tx.GetNetwork(id.scope(), netID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Port{}, errNetworkNotFound(b.NetworkID)
	} else if err != nil {
		return store.Port{}, err
	}
	// mac_address has no default: present is "explicitly set".
	given := b.MACAddress.Set
	iface := b.Profile.V.Interface
	set := map[string]bool{"mac_address": given, "binding:host_id": b.HostID.V != "",
		"binding:profile": iface != ""}
	if err := portPolicy(id, "create_port", network.ProjectID == id.ProjectID,
		func(a string) bool { return set[a] }); err != nil {
		return store.Port{}, err
	}
	p := store.Port{ID: newID(), ProjectID: b.ProjectID, NetworkID: netID, Name: b.Name.V,
		Description: b.Description.V, MACAddress: normalMAC(b.MACAddress.V),
		AdminStateUp: b.AdminStateUp.V, DeviceOwner: b.DeviceOwner.V,
		DeviceID: b.DeviceID.V, PortSecurityEnabled: b.PortSecurityEnabled.V,
		HostID: b.HostID.V, Interface: iface}
	if err := s.checkBindable(p); err != nil {
		return store.Port{}, err
	}
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

// updatePort applies a port update: admin-only attributes by policy, and
// a new interface binding checked against what uses the port.
func (s *Server) updatePort(ctx context.Context, id Identity, portID string, b portBody) (store.Port, error) {
	set := map[string]bool{"mac_address": b.MACAddress.Set, "binding:host_id": b.HostID.Set,
		"binding:profile": b.Profile.Set}
	if err := portPolicy(id, "update_port", false, func(a string) bool { return set[a] }); err != nil {
		return store.Port{}, err
	}
	p, err := s.st.UpdatePort(ctx, id.scope(), portID, func(tx *store.Tx, p *store.Port) error {
		oldIface, oldHost := p.Interface, p.HostID
		b.apply(&p.Name, &p.Description)
		setOpt(&p.AdminStateUp, b.AdminStateUp)
		if b.MACAddress.Set {
			p.MACAddress = normalMAC(b.MACAddress.V)
		}
		setOpt(&p.DeviceID, b.DeviceID)
		setOpt(&p.DeviceOwner, b.DeviceOwner)
		setOpt(&p.PortSecurityEnabled, b.PortSecurityEnabled)
		setOpt(&p.HostID, b.HostID)
		if b.Profile.Set {
			p.Interface = b.Profile.V.Interface
		}
		// A port that moves to another node of a fleet is bound to that
		// node's interface of that name.
		if p.Interface == oldIface && (p.HostID == oldHost || !s.cfg.Fleet) {
			return nil
		}
		// Inside the write transaction, read through tx: no other write
		// can add a use of the port or a binding meanwhile, and those
		// added earlier in the batch are seen.
		return s.checkRebind(tx, *p)
	})
	switch {
	case errors.Is(err, store.ErrConflict):
		return p, errMACInUse(p.NetworkID, p.MACAddress)
	case errors.Is(err, store.ErrMACInUse):
		return p, errMACOnInterface(p.Interface, p.MACAddress)
	}
	return p, err
}

// setOpt sets *dst to o's value when the body named it.
func setOpt[T any](dst *T, o opt[T]) {
	if o.Set {
		*dst = o.V
	}
}

func (s *Server) networkKind() *kind[store.Network, networkBody, networkView] {
	return &kind[store.Network, networkBody, networkView]{
		s: s, res: networkRes, notFound: errNetworkNotFound,
		list: s.st.ListNetworks, get: s.st.GetNetwork, view: newNetworkView,
		ref:    func(n store.Network) store.Ref { return store.Ref{ID: n.ID, ProjectID: n.ProjectID} },
		noBulk: true,
		precheck: func(id Identity, b networkBody) error {
			if b.Shared && !id.Admin {
				return errPolicy("create_network", "shared")
			}
			return nil
		},
		create: func(tx *store.Tx, _ Identity, b networkBody) (store.Network, error) {
			n := store.Network{ID: newID(), ProjectID: b.ProjectID, Name: b.Name, Description: b.Description,
				AdminStateUp: b.AdminStateUp, Shared: b.Shared, MTU: 1500}
			return n, tx.CreateNetwork(n)
		},
	}
}
