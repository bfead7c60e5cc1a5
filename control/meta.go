package control

import (
	"strings"

	"github.com/gofiber/fiber/v2"
)

// extension is one entry of /v2.0/extensions.
type extension struct {
	Name        string   `json:"name"`
	Alias       string   `json:"alias"`
	Description string   `json:"description"`
	Updated     string   `json:"updated"`
	Links       []string `json:"links"`
}

// extensions are what the appliance advertises: upstream's TaaS aliases
// with upstream's strings, Neutron's quota extensions, and its own
// stats, events, mirror types, flow filter and snaplen extensions.
var extensions = []extension{
	{Name: "Neutron Tap as a Service", Alias: "taas",
		Description: "Neutron Tap as a Service Extension.", Updated: "2015-01-14T10:00:00-00:00", Links: []string{}},
	{Name: "VLAN filtering for Neutron Tap as a Service", Alias: "taas-vlan-filter",
		Description: "Neutron Tap as a Service Extension for filtering VLANs.", Updated: "2018-01-14T10:00:00-00:00",
		Links: []string{}},
	{Name: "Tap as a Service GRE or ERSPAN mirror", Alias: "tap-mirror",
		Description: "Neutron Tap as a Service extension for GRE or ERSPAN mirroring.",
		Updated:     "2023-05-05T11:45:00-00:00", Links: []string{}},
	{Name: "Tap as a Service mirror with BOTH direction support", Alias: "tap-mirror-both-direction",
		Description: "Neutron Tap as a Service extension mirroring with support for BOTH direction.",
		Updated:     "2025-12-15T11:45:00-00:00", Links: []string{}},
	{Name: "TaaS mirror types", Alias: "taas-mirror-types",
		Description: "Tap mirrors also take mirror_type erspanv3 (ERSPAN type III) and vxlan, besides upstream's " +
			"erspanv1 and gre. Each direction's tunnel id must fit its type: 0 to 2^32-1 for gre (the GRE key), " +
			"0 to 1023 for erspanv1 and erspanv3 (the session id), 0 to 2^24-1 for vxlan (the VNI).",
		Updated: "2026-12-03T00:00:00-00:00", Links: []string{}},
	{Name: "TaaS flow filter", Alias: "taas-flow-filter",
		Description: "Tap flows take filter, a pcap-filter expression (tcpdump's syntax, such as 'tcp port 443'), " +
			"set at create only: a flow copies only the frames it accepts, applied to the frame with its VLAN " +
			"tags removed. null (the default) copies every frame. vlan is refused (vlan_filter selects VLANs), " +
			"and so are host names (addresses only).",
		Updated: "2026-12-03T00:00:00-00:00", Links: []string{}},
	{Name: "TaaS snaplen", Alias: "taas-snaplen",
		Description: "Tap services and tap mirrors take snaplen, settable at create and by update: their copies " +
			"are truncated to so many bytes (64 to 65535). null (the default) sends whole frames.",
		Updated: "2026-12-03T00:00:00-00:00", Links: []string{}},
	{Name: "TaaS status reason", Alias: "taas-status-reason",
		Description: "Tap services, tap flows and tap mirrors carry status_reason, why their status is not ACTIVE " +
			"(empty when it is); tap mirrors also carry status (ACTIVE, DOWN or ERROR), as services and flows do.",
		Updated: "2026-12-03T00:00:00-00:00", Links: []string{}},
	{Name: "TaaS live capture", Alias: "taas-live-capture",
		Description: "GET /v2.0/taas/{tap_services,tap_flows,tap_mirrors}/{id}/capture streams a pcapng " +
			"(application/x-pcapng) of what the tap service delivers, the tap flow matches or the tap mirror sends, " +
			"for duration seconds (default 10, at most 3600) or count frames, cut to snaplen bytes; at most 8 " +
			"captures run at once per appliance (409 beyond). A capture never changes what monitors receive: frames " +
			"a slow reader cannot take are dropped and counted in the stream's interface statistics.",
		Updated: "2026-12-03T00:00:00-00:00", Links: []string{}},
	{Name: "Quota management support", Alias: "quotas",
		Description: "Expose functions for quotas management per project", Updated: "2012-07-29T10:00:00-00:00",
		Links: []string{}},
	{Name: "Quota details management support", Alias: "quota_details",
		Description: "Expose functions for quotas usage statistics per project", Updated: "2017-02-10T10:00:00-00:00",
		Links: []string{}},
	{Name: "TaaS data-plane statistics", Alias: "taas-stats",
		Description: "Per-interface, per-tap-service and per-tap-flow counters of the appliance's data plane, " +
			"with each service's and flow's status reason, at GET /v2.0/taas/stats; and a server-sent event " +
			"stream of changes at GET /v2.0/taas/events.",
		Updated: "2026-11-24T00:00:00-00:00", Links: []string{}},
	{Name: "TaaS nodes", Alias: "taas-nodes",
		Description: "GET /v2.0/taas/nodes (admins only) lists the taasd nodes sharing this API's database, each with " +
			"its version, API address, start, last heartbeat and whether it is alive. A port's binding:host_id names " +
			"the node that realises it; the resources of a node not heard from for the node timeout show DOWN with " +
			"the reason \"node X not seen since T\", and taas/stats entries carry their node.",
		Updated: "2026-12-03T00:00:00-00:00", Links: []string{}},
	{Name: "TaaS change events", Alias: "taas-events",
		Description: "Server-sent events (text/event-stream) at GET /v2.0/taas/events: one event per create, " +
			"update, delete or status change of a port, tap service, tap flow or tap mirror the caller may see.",
		Updated: "2026-11-24T00:00:00-00:00", Links: []string{}},
}

// root is the version document keystoneauth and openstacksdk discover the
// API with. A browser (Accept: text/html) is sent to the dashboard when
// one is mounted.
func (s *Server) root(c *fiber.Ctx) error {
	if s.cfg.Mount != nil && strings.Contains(c.Get(fiber.HeaderAccept), "text/html") {
		return c.Redirect("/ui/", fiber.StatusFound)
	}
	return renderJSON(c, fiber.StatusOK, map[string]any{"versions": []any{map[string]any{
		"id": "v2.0", "status": "CURRENT",
		"links": []any{map[string]string{"rel": "self", "href": c.BaseURL() + "/v2.0/"}},
	}}})
}

func (s *Server) v2root(c *fiber.Ctx) error {
	var res []any
	for _, r := range [][2]string{{"network", "networks"}, {"subnet", "subnets"}, {"subnetpool", "subnetpools"},
		{"port", "ports"}} {
		res = append(res, map[string]any{"name": r[0], "collection": r[1],
			"links": []any{map[string]string{"rel": "self", "href": c.BaseURL() + "/v2.0/" + r[1]}}})
	}
	return renderJSON(c, fiber.StatusOK, map[string]any{"resources": res})
}

func (s *Server) listExtensions(c *fiber.Ctx) error {
	return renderJSON(c, fiber.StatusOK, map[string]any{"extensions": extensions})
}

func (s *Server) showExtension(c *fiber.Ctx) error {
	alias := c.Params("alias")
	for _, e := range extensions {
		if e.Alias == alias {
			return renderJSON(c, fiber.StatusOK, map[string]any{"extension": e})
		}
	}
	return notFound("HTTPNotFound", "Extension with alias %s does not exist", alias)
}
