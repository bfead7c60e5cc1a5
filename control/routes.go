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

		{get, "/v2.0/networks", s.listNetworks},
		{post, "/v2.0/networks", s.createNetwork},
		{get, "/v2.0/networks/:id", s.showNetwork},

		{get, "/v2.0/ports", s.listPorts},
		{post, "/v2.0/ports", s.createPort},
		{get, "/v2.0/ports/:id", s.showPort},
		{put, "/v2.0/ports/:id", s.updatePort},
		{del, "/v2.0/ports/:id", s.deletePort},

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
	}
	// Upstream's router also finds the TaaS collections without "taas/".
	for _, prefix := range []string{"/v2.0/taas", "/v2.0"} {
		list = append(list,
			route{get, prefix + "/tap_services", s.listTapServices},
			route{post, prefix + "/tap_services", s.createTapServices},
			route{get, prefix + "/tap_services/:id", s.showTapService},
			route{put, prefix + "/tap_services/:id", s.updateTapService},
			route{del, prefix + "/tap_services/:id", s.deleteTapService},

			route{get, prefix + "/tap_flows", s.listTapFlows},
			route{post, prefix + "/tap_flows", s.createTapFlows},
			route{get, prefix + "/tap_flows/:id", s.showTapFlow},
			route{put, prefix + "/tap_flows/:id", s.updateTapFlow},
			route{del, prefix + "/tap_flows/:id", s.deleteTapFlow},
		)
	}
	for _, r := range list {
		s.app.Add(r.method, r.path, r.handler)
	}
	notFound := func(*fiber.Ctx) error { return errResourceNotFound }
	s.app.All("/v2.0/extensions", notFound)
	s.app.All("/v2.0/extensions/:alias", notFound)
}
