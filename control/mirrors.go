package control

import (
	"context"
	"errors"
	"fmt"

	"github.com/taas-appliance/taas/control/store"
)

// Tap mirrors: upstream's §5 of taas-api.md (issue 10 step 2). A mirror
// sends a port's traffic, per direction, to remote_ip in a tunnel whose
// key (GRE), session id (ERSPAN) or VNI (VXLAN) is the direction's id. It
// has no status, as upstream. Beyond upstream (taas-mirror-types):
// mirror_type erspanv3 and vxlan, each direction's id checked against the
// range of its tunnel type, a unicast remote_ip, the port on the capture
// side and a tap_mirror quota. Deleting the port deletes its mirrors, as
// upstream's tap_mirror_plugin.handle_delete_port does.

// mirrorTypes are the accepted mirror_type values.
var mirrorTypes = []string{"erspanv1", "gre", "erspanv3", "vxlan"}

// tunnelRange is the largest tunnel id of each mirror type, and what the
// id is there.
var tunnelRange = map[string]struct {
	max  uint32
	what string
}{
	"gre":      {1<<32 - 1, "the 32-bit GRE key"},
	"erspanv1": {1<<10 - 1, "the 10-bit ERSPAN session id"},
	"erspanv3": {1<<10 - 1, "the 10-bit ERSPAN session id"},
	"vxlan":    {1<<24 - 1, "the 24-bit VXLAN VNI"},
}

// checkTunnelIDs refuses a direction id outside the range of the mirror
// type (upstream checks none, and a data plane would truncate it). The id
// is printed as the 409 of a conflict prints it (MirrorTunnel.Text): "-1"
// reads tunnel id -1.
func checkTunnelIDs(mirrorType string, dirs store.Directions) error {
	r := tunnelRange[mirrorType]
	for _, t := range dirs {
		if n, err := t.Uint32(); err != nil || n > r.max {
			return invalidInput("directions", fmt.Sprintf("tunnel id %s of direction %s must be an integer from 0 to %d "+
				"for mirror_type %s (%s)", t.Text(), t.Direction, r.max, mirrorType, r.what))
		}
	}
	return nil
}

// mirrorBody is a validated tap_mirror body.
type mirrorBody struct {
	projectBody
	namedBody
	snaplenBody
	PortID     string           `json:"port_id"`
	Directions store.Directions `json:"directions"`
	RemoteIP   string           `json:"remote_ip"`
	MirrorType string           `json:"mirror_type"`
}

// mirrorView is a tap mirror as the API shows it.
type mirrorView struct {
	Description string           `json:"description"`
	Directions  store.Directions `json:"directions"`
	ID          string           `json:"id"`
	MirrorType  string           `json:"mirror_type"`
	Name        string           `json:"name"`
	PortID      string           `json:"port_id"`
	ProjectID   string           `json:"project_id"`
	RemoteIP    string           `json:"remote_ip"`
	Snaplen     *int             `json:"snaplen"`
	// Status and StatusReason are ours (taas-status-reason): upstream's
	// tap mirrors have neither.
	Status       string `json:"status"`
	StatusReason string `json:"status_reason"`
	TenantID     string `json:"tenant_id"`
}

func newMirrorView(m store.TapMirror) mirrorView {
	return mirrorView{ID: m.ID, TenantID: m.ProjectID, ProjectID: m.ProjectID, Name: m.Name,
		Description: m.Description, PortID: m.PortID, Directions: m.Directions, RemoteIP: m.RemoteIP,
		MirrorType: m.MirrorType, Snaplen: m.Snaplen, Status: m.Status, StatusReason: m.StatusReason}
}

func errTapMirrorNotFound(id string) error {
	return notFound("TapMirrorNotFound", "Tap Mirror %s does not exist", id)
}

func (s *Server) mirrorKind() *kind[store.TapMirror, mirrorBody, mirrorView] {
	return &kind[store.TapMirror, mirrorBody, mirrorView]{
		// get_tap_mirror is ADMIN_OR_PROJECT_READER, unlike services and
		// flows.
		s: s, res: tapMirrorRes, read: Identity.reader, notFound: errTapMirrorNotFound,
		list: s.st.ListTapMirrors, get: s.st.GetTapMirror,
		view: func(m store.TapMirror) mirrorView {
			s.nodeStatus(m.ID, &m.Status, &m.StatusReason)
			return newMirrorView(m)
		},
		ref:           func(m store.TapMirror) store.Ref { return store.Ref{ID: m.ID, ProjectID: m.ProjectID} },
		forbidVisible: true, noBulk: true,
		create: s.createTapMirror,
		update: edit[mirrorBody](s.st.UpdateTapMirror, func(m *store.TapMirror) (*string, *string, **int) {
			return &m.Name, &m.Description, &m.Snaplen
		}),
		remove: func(ctx context.Context, project, id string) (store.TapMirror, []Event, error) {
			m, err := s.st.DeleteTapMirror(ctx, project, id)
			return m, nil, err
		},
	}
}

func (s *Server) createTapMirror(tx *store.Tx, id Identity, b mirrorBody) (store.TapMirror, error) {
	if err := checkTunnelIDs(b.MirrorType, b.Directions); err != nil {
		return store.TapMirror{}, err
	}
	port, err := s.ownPort(tx, id, b.PortID, b.ProjectID, RoleCapture, useMirror)
	if err != nil {
		return store.TapMirror{}, err
	}
	portID := port.ID
	m := store.TapMirror{ID: newID(), ProjectID: b.ProjectID, Name: b.Name.V, Description: b.Description.V,
		PortID: portID, Directions: b.Directions, RemoteIP: b.RemoteIP, MirrorType: b.MirrorType, Snaplen: b.Snaplen.V, Status: "DOWN"}
	// Upstream checks the tunnel ids against the mirrors the caller sees.
	var tc *store.TunnelConflictError
	switch err := tx.CreateTapMirror(m, id.scope()); {
	case errors.As(err, &tc):
		return m, conflict("TapMirrorTunnelConflict", "Tap Mirror with tunnel_id "+tc.Tunnel.Text()+" already exists")
	case errors.Is(err, store.ErrNotFound):
		return m, errPortNotFound(portID)
	case err != nil:
		return m, err
	}
	return m, nil
}
