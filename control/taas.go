package control

import (
	"errors"

	"github.com/gofiber/fiber/v2"

	"github.com/taas-appliance/taas/control/store"
)

// Tap services and tap flows: upstream's rules of §3 and §4 of taas-api.md.
// Deletion is immediate (204) whatever the status: PENDING_DELETE is not
// used, since the data plane drops a service or flow with the next plan.

func serviceView(t store.TapService) item {
	return item{"id": t.ID, "tenant_id": t.ProjectID, "project_id": t.ProjectID, "name": t.Name,
		"description": t.Description, "port_id": t.PortID, "status": t.Status}
}

func flowView(f store.TapFlow) item {
	var vf any
	if f.VLANFilter != nil {
		vf = *f.VLANFilter
	}
	return item{"id": f.ID, "tenant_id": f.ProjectID, "project_id": f.ProjectID, "name": f.Name,
		"description": f.Description, "tap_service_id": f.TapServiceID, "source_port": f.SourcePort,
		"direction": f.Direction, "status": f.Status, "vlan_filter": vf}
}

// createAll answers a create of r: one resource, or several from a bulk
// body. Every item is checked (quota first, as upstream reserves quota
// before it creates) and inserted by create in one write transaction, so a
// bulk is all or nothing and invisible to other clients until it commits;
// only then does the data plane hear of it and the events stream announce
// it (issue 9).
func createAll[T any](s *Server, c *fiber.Ctx, r *resource, action string,
	create func(*store.Tx, Identity, map[string]any) (T, error), view func(T) (item, Event)) error {
	id := identity(c)
	if !id.member() {
		return errPolicy(action)
	}
	ms, bulk, err := r.decodeBody(c.Body(), true, id)
	if err != nil {
		return err
	}
	done := make([]T, 0, len(ms))
	err = s.st.Write(c.UserContext(), func(tx *store.Tx) error {
		if err := s.checkQuota(tx, r.singular, ms); err != nil {
			return err
		}
		for _, m := range ms {
			v, err := create(tx, id, m)
			if err != nil {
				return err
			}
			done = append(done, v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	items := make([]item, len(done))
	evs := make([]Event, len(done))
	for i, d := range done {
		items[i], evs[i] = view(d)
	}
	s.afterChange(evs...)
	if bulk {
		return renderJSON(c, fiber.StatusCreated, map[string]any{r.plural: items})
	}
	return renderOne(c, fiber.StatusCreated, r, items[0])
}

// noBody rejects a DELETE with a body, as upstream does.
func noBody(c *fiber.Ctx) error {
	if len(c.Body()) > 0 {
		return badRequest("Request body is not supported in DELETE.")
	}
	return nil
}

func (s *Server) listTapServices(c *fiber.Ctx) error {
	id := identity(c)
	var items []item
	if id.member() {
		ts, err := s.st.ListTapServices(c.UserContext(), id.scope())
		if err != nil {
			return err
		}
		for _, t := range ts {
			items = append(items, serviceView(t))
		}
	}
	return renderList(c, tapServiceRes, items)
}

func (s *Server) showTapService(c *fiber.Ctx) error {
	id := identity(c)
	t, err := s.st.GetTapService(c.UserContext(), id.scope(), c.Params("id"))
	if errors.Is(err, store.ErrNotFound) || err == nil && !id.member() {
		return errTapServiceNotFound(c.Params("id"))
	}
	if err != nil {
		return err
	}
	return renderOne(c, fiber.StatusOK, tapServiceRes, serviceView(t))
}

func (s *Server) createTapServices(c *fiber.Ctx) error {
	return createAll(s, c, tapServiceRes, "create_tap_service", s.createTapService,
		func(t store.TapService) (item, Event) {
			return serviceView(t), Event{Resource: "tap_service", ID: t.ID, Action: "create", ProjectID: t.ProjectID}
		})
}

func (s *Server) createTapService(tx *store.Tx, id Identity, m map[string]any) (store.TapService, error) {
	portID := canonicalUUID(getStr(m, "port_id"))
	port, err := tx.GetPort(id.scope(), portID)
	if errors.Is(err, store.ErrNotFound) {
		return store.TapService{}, errPortNotFound(getStr(m, "port_id"))
	}
	if err != nil {
		return store.TapService{}, err
	}
	project := getStr(m, "project_id")
	if port.ProjectID != project {
		return store.TapService{}, forbidden("PortDoesNotBelongToTenant", "The specified port does not belong to the tenant")
	}
	if err := s.checkUse(tx.BoundInterfaces, port, RoleMonitor); err != nil {
		return store.TapService{}, err
	}
	t := store.TapService{ID: newID(), ProjectID: project, Name: getStr(m, "name"),
		Description: getStr(m, "description"), PortID: portID, Status: "DOWN"}
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

func (s *Server) updateTapService(c *fiber.Ctx) error {
	id := identity(c)
	ms, _, err := tapServiceRes.decodeBody(c.Body(), false, id)
	if err != nil {
		return err
	}
	if !id.member() {
		return errTapServiceNotFound(c.Params("id"))
	}
	m := ms[0]
	t, err := s.st.UpdateTapService(c.UserContext(), id.scope(), c.Params("id"), func(t *store.TapService) error {
		if v, ok := m["name"]; ok {
			t.Name = v.(string)
		}
		if v, ok := m["description"]; ok {
			t.Description = v.(string)
		}
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return errTapServiceNotFound(c.Params("id"))
	}
	if err != nil {
		return err
	}
	s.afterChange(Event{Resource: "tap_service", ID: t.ID, Action: "update", ProjectID: t.ProjectID})
	return renderOne(c, fiber.StatusOK, tapServiceRes, serviceView(t))
}

func (s *Server) deleteTapService(c *fiber.Ctx) error {
	if err := noBody(c); err != nil {
		return err
	}
	id := identity(c)
	if !id.member() {
		return errTapServiceNotFound(c.Params("id"))
	}
	t, d, err := s.st.DeleteTapService(c.UserContext(), id.scope(), c.Params("id"))
	if errors.Is(err, store.ErrNotFound) {
		return errTapServiceNotFound(c.Params("id"))
	}
	if err != nil {
		return err
	}
	evs := flowDeleted(d.Flows)
	s.afterChange(append(evs, Event{Resource: "tap_service", ID: t.ID, Action: "delete", ProjectID: t.ProjectID})...)
	return c.SendStatus(fiber.StatusNoContent)
}

func flowDeleted(refs []store.Ref) []Event {
	var evs []Event
	for _, r := range refs {
		evs = append(evs, Event{Resource: "tap_flow", ID: r.ID, Action: "delete", ProjectID: r.ProjectID})
	}
	return evs
}

func (s *Server) listTapFlows(c *fiber.Ctx) error {
	id := identity(c)
	var items []item
	if id.member() {
		fs, err := s.st.ListTapFlows(c.UserContext(), id.scope())
		if err != nil {
			return err
		}
		items = make([]item, 0, len(fs))
		for _, f := range fs {
			items = append(items, flowView(f))
		}
	}
	return renderList(c, tapFlowRes, items)
}

func (s *Server) showTapFlow(c *fiber.Ctx) error {
	id := identity(c)
	f, err := s.st.GetTapFlow(c.UserContext(), id.scope(), c.Params("id"))
	if errors.Is(err, store.ErrNotFound) || err == nil && !id.member() {
		return errTapFlowNotFound(c.Params("id"))
	}
	if err != nil {
		return err
	}
	return renderOne(c, fiber.StatusOK, tapFlowRes, flowView(f))
}

func (s *Server) createTapFlows(c *fiber.Ctx) error {
	return createAll(s, c, tapFlowRes, "create_tap_flow", s.createTapFlow,
		func(f store.TapFlow) (item, Event) {
			return flowView(f), Event{Resource: "tap_flow", ID: f.ID, Action: "create", ProjectID: f.ProjectID}
		})
}

func (s *Server) createTapFlow(tx *store.Tx, id Identity, m map[string]any) (store.TapFlow, error) {
	svcID := canonicalUUID(getStr(m, "tap_service_id"))
	svc, err := tx.GetTapService(id.scope(), svcID)
	if errors.Is(err, store.ErrNotFound) {
		return store.TapFlow{}, errTapServiceNotFound(getStr(m, "tap_service_id"))
	}
	if err != nil {
		return store.TapFlow{}, err
	}
	project := getStr(m, "project_id")
	if svc.ProjectID != project {
		return store.TapFlow{}, forbidden("TapServiceNotBelongToTenant", "Specified Tap Service does not belong to the tenant")
	}
	// Upstream's plugin leaves the source port unchecked; its reference
	// driver answers 404 for a port the caller cannot see, and so do we.
	srcID := canonicalUUID(getStr(m, "source_port"))
	src, err := tx.GetPort(id.scope(), srcID)
	if errors.Is(err, store.ErrNotFound) {
		return store.TapFlow{}, errPortNotFound(getStr(m, "source_port"))
	} else if err != nil {
		return store.TapFlow{}, err
	}
	if err := s.checkUse(tx.BoundInterfaces, src, RoleCapture); err != nil {
		return store.TapFlow{}, err
	}
	f := store.TapFlow{ID: newID(), ProjectID: project, Name: getStr(m, "name"), Description: getStr(m, "description"),
		TapServiceID: svcID, SourcePort: srcID, Direction: getStr(m, "direction"), Status: "DOWN"}
	if vf, ok := m["vlan_filter"].(string); ok {
		f.VLANFilter = &vf
	}
	if err := tx.CreateTapFlow(f); errors.Is(err, store.ErrNotFound) {
		// Not reached: the transaction saw both rows.
		return f, errTapServiceNotFound(svcID)
	} else if err != nil {
		return f, err
	}
	return f, nil
}

func (s *Server) updateTapFlow(c *fiber.Ctx) error {
	id := identity(c)
	ms, _, err := tapFlowRes.decodeBody(c.Body(), false, id)
	if err != nil {
		return err
	}
	if !id.member() {
		return errTapFlowNotFound(c.Params("id"))
	}
	m := ms[0]
	f, err := s.st.UpdateTapFlow(c.UserContext(), id.scope(), c.Params("id"), func(f *store.TapFlow) error {
		if v, ok := m["name"]; ok {
			f.Name = v.(string)
		}
		if v, ok := m["description"]; ok {
			f.Description = v.(string)
		}
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return errTapFlowNotFound(c.Params("id"))
	}
	if err != nil {
		return err
	}
	s.afterChange(Event{Resource: "tap_flow", ID: f.ID, Action: "update", ProjectID: f.ProjectID})
	return renderOne(c, fiber.StatusOK, tapFlowRes, flowView(f))
}

func (s *Server) deleteTapFlow(c *fiber.Ctx) error {
	if err := noBody(c); err != nil {
		return err
	}
	id := identity(c)
	if !id.member() {
		return errTapFlowNotFound(c.Params("id"))
	}
	f, err := s.st.DeleteTapFlow(c.UserContext(), id.scope(), c.Params("id"))
	if errors.Is(err, store.ErrNotFound) {
		return errTapFlowNotFound(c.Params("id"))
	}
	if err != nil {
		return err
	}
	s.afterChange(Event{Resource: "tap_flow", ID: f.ID, Action: "delete", ProjectID: f.ProjectID})
	return c.SendStatus(fiber.StatusNoContent)
}
