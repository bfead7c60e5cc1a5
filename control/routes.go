package control

import (
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
)

type route struct {
	method, path string
	handler      fiber.Handler
}

// routes registers every route of the API, in one list to read top to
// bottom. Methods a path does not list get fiber's 405 (upstream's answer
// on collections and items), except the extension URLs, which answer 404
// to anything but GET as upstream does. fiber.App.Get would also register
// HEAD, which upstream answers with 405, so routes are added by method.
func (s *Server) routes() {
	const (
		get, post, put, del = fiber.MethodGet, fiber.MethodPost, fiber.MethodPut, fiber.MethodDelete
	)
	// A handler bug answers 500 with a NeutronError body instead of
	// taking the process down.
	s.app.Use(recover.New())
	// First after recover: everything after it, the .json suffix,
	// authentication and the routes, sees the decoded path.
	s.app.Use(unescapePath)
	s.app.Use(requestID)
	s.app.Use(s.bodyLimits)
	if s.cfg.Mount != nil {
		s.cfg.Mount(s.app)
	}
	s.app.Add(get, "/", s.root) // version document: no authentication, as upstream
	s.app.Use("/v2.0", s.authenticate)

	list := []route{
		{get, "/v2.0/", s.v2root},
		{get, "/v2.0/extensions", s.listExtensions},
		{get, "/v2.0/extensions/:alias", s.showExtension},

		{get, "/v2.0/networks", s.networks.handleList},
		{post, "/v2.0/networks", s.networks.handleCreate},
		{get, "/v2.0/networks/:id", s.networks.handleShow},

		{get, "/v2.0/ports", s.ports.handleList},
		{post, "/v2.0/ports", s.ports.handleCreate},
		{get, "/v2.0/ports/:id", s.ports.handleShow},
		{put, "/v2.0/ports/:id", s.ports.handleUpdate},
		{del, "/v2.0/ports/:id", s.ports.handleDelete},

		// The quotas extension; the fixed paths before /:id.
		{get, "/v2.0/quotas", s.listQuotas},
		{post, "/v2.0/quotas", s.createQuota},
		{get, "/v2.0/quotas/project", s.quotaProject("project")},
		{get, "/v2.0/quotas/tenant", s.quotaProject("tenant")},
		{get, "/v2.0/quotas/:id", s.showQuota},
		{put, "/v2.0/quotas/:id", s.updateQuota},
		{del, "/v2.0/quotas/:id", s.deleteQuota},
		{get, "/v2.0/quotas/:id/default", s.showDefaultQuota},
		{get, "/v2.0/quotas/:id/details", s.showQuotaDetails},

		{get, "/v2.0/taas/stats", s.stats},
		{get, "/v2.0/taas/events", s.events},
		{get, "/v2.0/taas/nodes", s.listNodes},
	}
	// Upstream's router also finds the TaaS collections without "taas/".
	for _, prefix := range []string{"/v2.0/taas", "/v2.0"} {
		list = append(list,
			route{get, prefix + "/tap_services", s.services.handleList},
			route{post, prefix + "/tap_services", s.services.handleCreate},
			route{get, prefix + "/tap_services/:id", s.services.handleShow},
			route{put, prefix + "/tap_services/:id", s.services.handleUpdate},
			route{del, prefix + "/tap_services/:id", s.services.handleDelete},
			route{get, prefix + "/tap_services/:id/capture", s.services.handleCapture},

			route{get, prefix + "/tap_flows", s.flows.handleList},
			route{post, prefix + "/tap_flows", s.flows.handleCreate},
			route{get, prefix + "/tap_flows/:id", s.flows.handleShow},
			route{put, prefix + "/tap_flows/:id", s.flows.handleUpdate},
			route{del, prefix + "/tap_flows/:id", s.flows.handleDelete},
			route{get, prefix + "/tap_flows/:id/capture", s.flows.handleCapture},

			route{get, prefix + "/tap_mirrors", s.mirrors.handleList},
			route{post, prefix + "/tap_mirrors", s.mirrors.handleCreate},
			route{get, prefix + "/tap_mirrors/:id", s.mirrors.handleShow},
			route{put, prefix + "/tap_mirrors/:id", s.mirrors.handleUpdate},
			route{del, prefix + "/tap_mirrors/:id", s.mirrors.handleDelete},
			route{get, prefix + "/tap_mirrors/:id/capture", s.mirrors.handleCapture},
		)
	}
	for _, r := range list {
		s.app.Add(r.method, r.path, r.handler)
	}
	notFound := func(*fiber.Ctx) error { return errResourceNotFound }
	s.app.All("/v2.0/extensions", notFound)
	s.app.All("/v2.0/extensions/:alias", notFound)
}
