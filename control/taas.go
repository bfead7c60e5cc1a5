package control

import (
	"context"
	"errors"
	"fmt"

	"github.com/taas-appliance/taas/control/store"
	"github.com/taas-appliance/taas/xdpprog"
)

// Tap services and tap flows: upstream's rules of §3 and §4 of taas-api.md.
// Deletion is immediate (204) whatever the status: PENDING_DELETE is not
// used, since the data plane drops a service or flow with the next plan.

// serviceBody is a validated tap_service body.
type serviceBody struct {
	projectBody
	namedBody
	snaplenBody
	PortID string `json:"port_id"`
}

// serviceView is a tap service as the API shows it.
type serviceView struct {
	Description string `json:"description"`
	ID          string `json:"id"`
	Name        string `json:"name"`
	PortID      string `json:"port_id"`
	ProjectID   string `json:"project_id"`
	Snaplen     *int   `json:"snaplen"`
	Status      string `json:"status"`
	// StatusReason says why the status is not ACTIVE (ours,
	// taas-status-reason); "" when ACTIVE.
	StatusReason string `json:"status_reason"`
	TenantID     string `json:"tenant_id"`
}

func newServiceView(t store.TapService) serviceView {
	return serviceView{ID: t.ID, TenantID: t.ProjectID, ProjectID: t.ProjectID, Name: t.Name,
		Description: t.Description, PortID: t.PortID, Snaplen: t.Snaplen, Status: t.Status, StatusReason: t.StatusReason}
}

// flowBody is a validated tap_flow body.
type flowBody struct {
	projectBody
	namedBody
	TapServiceID string  `json:"tap_service_id"`
	SourcePort   string  `json:"source_port"`
	Direction    string  `json:"direction"`
	VLANFilter   *string `json:"vlan_filter"`
	Filter       *string `json:"filter"`
}

// flowView is a tap flow as the API shows it.
type flowView struct {
	Description  string  `json:"description"`
	Direction    string  `json:"direction"`
	Filter       *string `json:"filter"`
	ID           string  `json:"id"`
	Name         string  `json:"name"`
	ProjectID    string  `json:"project_id"`
	SourcePort   string  `json:"source_port"`
	Status       string  `json:"status"`
	StatusReason string  `json:"status_reason"`
	TapServiceID string  `json:"tap_service_id"`
	TenantID     string  `json:"tenant_id"`
	VLANFilter   *string `json:"vlan_filter"`
}

func newFlowView(f store.TapFlow) flowView {
	return flowView{ID: f.ID, TenantID: f.ProjectID, ProjectID: f.ProjectID, Name: f.Name,
		Description: f.Description, TapServiceID: f.TapServiceID, SourcePort: f.SourcePort,
		Direction: f.Direction, Status: f.Status, StatusReason: f.StatusReason, VLANFilter: f.VLANFilter, Filter: f.Filter}
}

func (s *Server) serviceKind() *kind[store.TapService, serviceBody, serviceView] {
	return &kind[store.TapService, serviceBody, serviceView]{
		s: s, res: tapServiceRes, read: Identity.member, notFound: errTapServiceNotFound,
		list: s.st.ListTapServices, get: s.st.GetTapService,
		view: func(t store.TapService) serviceView {
			s.nodeStatus(t.ID, &t.Status, &t.StatusReason)
			return newServiceView(t)
		},
		ref:    func(t store.TapService) store.Ref { return store.Ref{ID: t.ID, ProjectID: t.ProjectID} },
		create: s.createTapService,
		update: edit[serviceBody](s.st.UpdateTapService, func(t *store.TapService) (*string, *string, **int) {
			return &t.Name, &t.Description, &t.Snaplen
		}),
		remove: func(ctx context.Context, project, id string) (store.TapService, []Event, error) {
			t, d, err := s.st.DeleteTapService(ctx, project, id)
			return t, refEvents("tap_flow", d.Flows), err
		},
	}
}

// namedBody is the name and description of a body, which PUT may change
// on a tap service, flow or mirror.
type namedBody struct {
	Name        opt[string] `json:"name"`
	Description opt[string] `json:"description"`
}

func (n namedBody) names() namedBody { return n }

// apply sets what the body named of name and description.
func (n namedBody) apply(name, description *string) {
	setOpt(name, n.Name)
	setOpt(description, n.Description)
}

// snaplenBody is the snaplen of a tap service or mirror body (ours,
// taas-snaplen, issue 11), which PUT may change too: nil is null.
type snaplenBody struct {
	Snaplen opt[*int] `json:"snaplen"`
}

func (s snaplenBody) snaplen() opt[*int] { return s.Snaplen }

// edit is the update of a tap service, flow or mirror, whose PUT changes
// name and description and, on services and mirrors, snaplen: update is
// its store method, fields its row's fields (snaplen nil for a flow).
func edit[B interface{ names() namedBody }, T any](
	update func(ctx context.Context, project, id string, fn func(*T) error) (T, error),
	fields func(*T) (name, description *string, snaplen **int)) func(context.Context, Identity, string, B) (T, error) {
	return func(ctx context.Context, id Identity, rowID string, b B) (T, error) {
		return update(ctx, id.scope(), rowID, func(t *T) error {
			name, description, snaplen := fields(t)
			b.names().apply(name, description)
			if sb, ok := any(b).(interface{ snaplen() opt[*int] }); ok && snaplen != nil {
				setOpt(snaplen, sb.snaplen())
			}
			return nil
		})
	}
}

// ownPort returns the port a tap service or mirror of project is
// created on, by the id as the body gave it: 404 when the caller cannot
// see it, 403 when it is another project's, 400 when it is bound outside
// role (checkUse).
func (s *Server) ownPort(tx *store.Tx, id Identity, rawID, project, role, what string) (store.Port, error) {
	port, err := tx.GetPort(id.scope(), canonicalUUID(rawID))
	if errors.Is(err, store.ErrNotFound) {
		return port, errPortNotFound(rawID)
	}
	if err != nil {
		return port, err
	}
	if port.ProjectID != project {
		return port, forbidden("PortDoesNotBelongToTenant", "The specified port does not belong to the tenant")
	}
	return port, s.checkUse(tx, port, role, what)
}

func (s *Server) createTapService(tx *store.Tx, id Identity, b serviceBody) (store.TapService, error) {
	port, err := s.ownPort(tx, id, b.PortID, b.ProjectID, RoleMonitor, useService)
	if err != nil {
		return store.TapService{}, err
	}
	portID := port.ID
	t := store.TapService{ID: newID(), ProjectID: b.ProjectID, Name: b.Name.V,
		Description: b.Description.V, PortID: portID, Snaplen: b.Snaplen.V, Status: "DOWN"}
	switch err := tx.CreateTapService(t, s.cfg.MaxTapServices); {
	case errors.Is(err, store.ErrLimitReached):
		return t, conflict("TapServiceLimitReached", "Reached the maximum quota for Tap Services")
	case errors.Is(err, store.ErrNotFound):
		return t, errPortNotFound(portID)
	case err != nil:
		return t, err
	}
	return t, nil
}

func (s *Server) flowKind() *kind[store.TapFlow, flowBody, flowView] {
	return &kind[store.TapFlow, flowBody, flowView]{
		s: s, res: tapFlowRes, read: Identity.member, notFound: errTapFlowNotFound,
		list: s.st.ListTapFlows, get: s.st.GetTapFlow,
		view: func(f store.TapFlow) flowView {
			s.nodeStatus(f.ID, &f.Status, &f.StatusReason)
			return newFlowView(f)
		},
		ref:    func(f store.TapFlow) store.Ref { return store.Ref{ID: f.ID, ProjectID: f.ProjectID} },
		create: s.createTapFlow,
		update: edit[flowBody](s.st.UpdateTapFlow, func(f *store.TapFlow) (*string, *string, **int) {
			return &f.Name, &f.Description, nil
		}),
		remove: func(ctx context.Context, project, id string) (store.TapFlow, []Event, error) {
			f, err := s.st.DeleteTapFlow(ctx, project, id)
			return f, nil, err
		},
	}
}

func (s *Server) createTapFlow(tx *store.Tx, id Identity, b flowBody) (store.TapFlow, error) {
	svcID := canonicalUUID(b.TapServiceID)
	svc, err := tx.GetTapService(id.scope(), svcID)
	if errors.Is(err, store.ErrNotFound) {
		return store.TapFlow{}, errTapServiceNotFound(b.TapServiceID)
	}
	if err != nil {
		return store.TapFlow{}, err
	}
	if svc.ProjectID != b.ProjectID {
		return store.TapFlow{}, forbidden("TapServiceNotBelongToTenant", "Specified Tap Service does not belong to the tenant")
	}
	// Upstream's plugin leaves the source port unchecked; its reference
	// driver answers 404 for a port the caller cannot see, and so do we.
	srcID := canonicalUUID(b.SourcePort)
	src, err := tx.GetPort(id.scope(), srcID)
	if errors.Is(err, store.ErrNotFound) {
		return store.TapFlow{}, errPortNotFound(b.SourcePort)
	} else if err != nil {
		return store.TapFlow{}, err
	}
	if err := s.checkUse(tx, src, RoleCapture, useSource); err != nil {
		return store.TapFlow{}, err
	}
	if err := s.checkFastFilters(tx, src, b.Filter); err != nil {
		return store.TapFlow{}, err
	}
	f := store.TapFlow{ID: newID(), ProjectID: b.ProjectID, Name: b.Name.V, Description: b.Description.V,
		TapServiceID: svcID, SourcePort: srcID, Direction: b.Direction, Status: "DOWN", VLANFilter: b.VLANFilter,
		Filter: b.Filter}
	if err := tx.CreateTapFlow(f); errors.Is(err, store.ErrNotFound) {
		// Not reached: the transaction saw both rows.
		return f, errTapServiceNotFound(svcID)
	} else if err != nil {
		return f, err
	}
	return f, nil
}

// checkFastFilters refuses a filter that would be the
// xdpprog.MaxFastFilters+1-th distinct expression among the flows whose
// sources are bound to src's capture interface: the fast path would fall
// back to the AF_XDP path for that whole interface, every project's flows
// on it with it. Flows repeating an expression already there, and flows
// without a filter, are always accepted. The count runs inside the write
// transaction (tx), so a bulk or a batch sees its own earlier flows.
func (s *Server) checkFastFilters(tx *store.Tx, src store.Port, filter *string) error {
	if filter == nil || src.Interface == "" {
		return nil
	}
	t, err := s.bindTarget(src, false)
	if err != nil {
		return err
	}
	n, has, err := tx.InterfaceFilters(t.hosts(), src.Interface, *filter)
	if err != nil {
		return err
	}
	if !has && n >= xdpprog.MaxFastFilters {
		return conflict("TapFlowFilterLimit", fmt.Sprintf("The capture interface %s already carries %d distinct "+
			"filter expressions, the most its fast path holds (%d): use one of them, or no filter",
			src.Interface, n, xdpprog.MaxFastFilters))
	}
	return nil
}
