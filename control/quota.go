package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/taas-appliance/taas/control/store"
)

// Quotas are per-project limits on what a project may create, answered as
// Neutron's quota engine answers them: 409 OverQuota beyond, and the
// quotas extension's /v2.0/quotas API to read them and, for admins, to
// override them per project. One request created 30,000 ports (issue 9).

// Quotas are the default limit of each resource per project. Each field
// is a count; 0 means the default given, -1 unlimited.
type Quotas struct {
	// Network: networks per project; default 1,000. Neutron's is 100; a
	// network costs little here, and ports need none of their own (the
	// shared default network serves them), so the limit only stops a
	// runaway script (issue 9).
	Network int
	// Port: ports per project; default 10,000.
	Port int
	// TapService: tap services per project; default 1,000.
	TapService int
	// TapFlow: tap flows per project; default 10,000.
	TapFlow int
	// TapMirror: tap mirrors per project; default 1,000.
	TapMirror int
}

// DefaultQuotas are the limits of Quotas' zero fields: generous enough for
// every deployment we know of, small enough that a runaway script stops
// long before the database or a plan grows unwieldy.
var DefaultQuotas = Quotas{Network: 1000, Port: 10000, TapService: 1000, TapFlow: 10000, TapMirror: 1000}

// maxQuota is the largest limit, Neutron's DB_INTEGER_MAX_VALUE.
const maxQuota = math.MaxInt32

// validate fills in defaults and checks every limit.
func (q *Quotas) validate() error {
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{{"network", &q.Network, DefaultQuotas.Network}, {"port", &q.Port, DefaultQuotas.Port},
		{"tap_service", &q.TapService, DefaultQuotas.TapService}, {"tap_flow", &q.TapFlow, DefaultQuotas.TapFlow},
		{"tap_mirror", &q.TapMirror, DefaultQuotas.TapMirror}} {
		switch {
		case *f.v == 0:
			*f.v = f.def
		case *f.v < -1 || *f.v > maxQuota:
			return fmt.Errorf("control: quota %s %d: want -1 (unlimited) to %d", f.name, *f.v, maxQuota)
		}
	}
	return nil
}

// limits returns q keyed by quota resource.
func (q Quotas) limits() store.Limits {
	return store.Limits{store.QuotaNetwork: q.Network, store.QuotaPort: q.Port, store.QuotaTapService: q.TapService,
		store.QuotaTapFlow: q.TapFlow, store.QuotaTapMirror: q.TapMirror}
}

// effective is the defaults with a project's overrides applied.
func (s *Server) effective(overrides store.Limits) store.Limits {
	l := s.cfg.Quotas.limits()
	for r, n := range overrides {
		l[r] = n
	}
	return l
}

func errOverQuota(resource string) error {
	return conflict("OverQuota", fmt.Sprintf("Quota exceeded for resources: ['%s'].", resource))
}

// checkQuota refuses, before anything is inserted, a create of resource
// whose items (one per entry of itemProjects, its project) would take a
// project beyond its limit: a bulk is refused whole. It counts inside the
// create's write transaction, so concurrent creates cannot overshoot.
func (s *Server) checkQuota(tx *store.Tx, resource string, itemProjects []string) error {
	if !isQuotaResource(resource) {
		return nil
	}
	want := map[string]int{}
	var projects []string
	for _, p := range itemProjects {
		if want[p] == 0 {
			projects = append(projects, p)
		}
		want[p]++
	}
	for _, p := range projects {
		o, err := tx.QuotaOverrides(p)
		if err != nil {
			return err
		}
		limit := s.effective(o)[resource]
		if limit < 0 {
			continue
		}
		used, err := tx.Count(resource, p)
		if err != nil {
			return err
		}
		if used+want[p] > limit {
			return errOverQuota(resource)
		}
	}
	return nil
}

// quotaView is a project's limits as the API shows them.
func quotaView(l store.Limits) item {
	it := item{}
	for _, r := range store.QuotaResources {
		it[r] = l[r]
	}
	return it
}

// mayReadQuota is the quotas extension's rule: anyone may read their own
// project's quota, only admins (get_quota) another's.
func mayReadQuota(id Identity, project string) error {
	if project != id.ProjectID && !id.Admin {
		return errPolicy("get_quota")
	}
	return nil
}

// listQuotas lists the projects with overrides, each with all its limits.
func (s *Server) listQuotas(c *fiber.Ctx) error {
	if !identity(c).Admin {
		return errPolicy("get_quota")
	}
	byProject, projects, err := s.st.ListQuotaOverrides(c.UserContext())
	if err != nil {
		return err
	}
	items := make([]item, 0, len(projects))
	for _, p := range projects {
		it := quotaView(s.effective(byProject[p]))
		it["project_id"], it["tenant_id"] = p, p
		items = append(items, it)
	}
	return renderJSON(c, fiber.StatusOK, map[string]any{"quotas": items})
}

// quotaProject answers GET /v2.0/quotas/project (and /tenant): the
// caller's project.
func (s *Server) quotaProject(key string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		return renderJSON(c, fiber.StatusOK, map[string]any{key: map[string]string{key + "_id": identity(c).ProjectID}})
	}
}

func (s *Server) showQuota(c *fiber.Ctx) error {
	project := c.Params("id")
	if err := mayReadQuota(identity(c), project); err != nil {
		return err
	}
	return s.renderQuota(c, project)
}

// renderQuota answers with project's limits.
func (s *Server) renderQuota(c *fiber.Ctx, project string) error {
	o, err := s.st.QuotaOverrides(c.UserContext(), project)
	if err != nil {
		return err
	}
	return renderJSON(c, fiber.StatusOK, map[string]any{"quota": quotaView(s.effective(o))})
}

func (s *Server) showDefaultQuota(c *fiber.Ctx) error {
	if err := mayReadQuota(identity(c), c.Params("id")); err != nil {
		return err
	}
	return renderJSON(c, fiber.StatusOK, map[string]any{"quota": quotaView(s.cfg.Quotas.limits())})
}

// showQuotaDetails is the quota_details extension: limit, used and
// reserved (always 0: creates count inside their transaction) per
// resource.
func (s *Server) showQuotaDetails(c *fiber.Ctx) error {
	project := c.Params("id")
	if err := mayReadQuota(identity(c), project); err != nil {
		return err
	}
	o, err := s.st.QuotaOverrides(c.UserContext(), project)
	if err != nil {
		return err
	}
	used, err := s.st.Usage(c.UserContext(), project)
	if err != nil {
		return err
	}
	l := s.effective(o)
	it := item{}
	for _, r := range store.QuotaResources {
		it[r] = map[string]int{"limit": l[r], "used": used[r], "reserved": 0}
	}
	return renderJSON(c, fiber.StatusOK, map[string]any{"quota": it})
}

func (s *Server) updateQuota(c *fiber.Ctx) error {
	if !identity(c).Admin {
		return errPolicy("update_quota")
	}
	project := c.Params("id")
	l, checkLimit, err := decodeQuotaBody(c.Body())
	if err != nil {
		return err
	}
	var check func(string, int, int) error
	if checkLimit {
		check = func(r string, limit, used int) error {
			if limit >= 0 && used > limit {
				return badRequest("Quota limit %d for %s must be greater than or equal to already used %d", limit, r, used)
			}
			return nil
		}
	}
	if err := s.st.SetQuotas(c.UserContext(), project, l, check); err != nil {
		return err
	}
	return s.renderQuota(c, project)
}

func (s *Server) deleteQuota(c *fiber.Ctx) error {
	if !identity(c).Admin {
		return errPolicy("delete_quota")
	}
	project := c.Params("id")
	if err := s.st.DeleteQuotas(c.UserContext(), project); errors.Is(err, store.ErrNotFound) {
		return notFound("TenantQuotaNotFound", "Quota for tenant %s could not be found.", project)
	} else if err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) createQuota(*fiber.Ctx) error {
	return &neutronError{Status: http.StatusNotImplemented, Type: "HTTPNotImplemented",
		Message: "POST requests are not supported on this resource."}
}

// decodeQuotaBody reads PUT /v2.0/quotas/{id}'s {"quota": {"port": N, ...}}
// as Neutron does: "force" and "check_limit" are options, every other key
// must be a quota resource, and each limit converts as Python's int() and
// lies in [-1, 2^31-1].
func decodeQuotaBody(raw []byte) (l store.Limits, checkLimit bool, err error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, false, badRequest("Resource body required")
	}
	body, err := decodeObject(raw)
	if err != nil {
		return nil, false, err
	}
	q, present := body["quota"]
	if !present {
		return nil, false, badRequest("Unable to find 'quota' in request body")
	}
	m, ok := q.(map[string]any)
	if !ok {
		return nil, false, badRequest("Object 'quota' contains invalid data")
	}
	if b, ok := toBool(m["check_limit"]); ok && b {
		checkLimit = true
	}
	var extra []string
	for k := range m {
		if k == "force" || k == "check_limit" {
			continue
		}
		if !isQuotaResource(k) {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return nil, false, badRequest("Unrecognized attribute(s) '%s'", strings.Join(extra, ", "))
	}
	l = store.Limits{}
	for _, r := range store.QuotaResources {
		x, present := m[r]
		if !present {
			continue
		}
		n, ok := pyInt(x)
		if !ok {
			return nil, false, &neutronError{Status: http.StatusBadRequest, Type: "InvalidInput",
				Message: fmt.Sprintf("Invalid input for operation: '%s' is not an integer.", pyStr(x))}
		}
		switch {
		case n.Cmp(big.NewInt(-1)) < 0:
			return nil, false, invalidInput(r, fmt.Sprintf("'%s' is too small - must be at least '-1'", n))
		case n.Cmp(big.NewInt(maxQuota)) > 0:
			return nil, false, invalidInput(r, fmt.Sprintf("'%s' is too large - must be no larger than '%d'", n, maxQuota))
		}
		l[r] = int(n.Int64())
	}
	return l, checkLimit, nil
}

func isQuotaResource(k string) bool { return slices.Contains(store.QuotaResources, k) }

// pyInt converts v as Python's int() would the decoded JSON value: an
// integer of any size, a finite float (truncated), a boolean, or a string
// holding a decimal integer with optional blanks around it. The result is
// exact, so that a refusal quotes the number as upstream does, up to
// maxExactDigits digits: a longer integer (whose decimal conversion costs
// quadratic time) is clamped to ±2^62, which the range check refuses.
func pyInt(v any) (*big.Int, bool) {
	switch x := v.(type) {
	case json.Number:
		if n, ok := parseBigInt(x.String()); ok {
			return n, true
		}
		f, err := strconv.ParseFloat(x.String(), 64)
		if (err != nil && !errors.Is(err, strconv.ErrRange)) || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, false
		}
		n, _ := big.NewFloat(f).Int(nil)
		return n, true
	case bool:
		if x {
			return big.NewInt(1), true
		}
		return big.NewInt(0), true
	case string:
		return parseBigInt(strings.TrimSpace(x))
	}
	return nil, false
}

// maxExactDigits is the longest integer text pyInt converts exactly.
const maxExactDigits = 64

// parseBigInt parses s as a decimal integer with an optional sign.
func parseBigInt(s string) (*big.Int, bool) {
	if len(s) <= maxExactDigits {
		return new(big.Int).SetString(s, 10)
	}
	digits := strings.TrimLeft(s, "+-")
	if len(s)-len(digits) > 1 || digits == "" || strings.Trim(digits, "0123456789") != "" {
		return nil, false
	}
	if s[0] == '-' {
		return big.NewInt(-(1 << 62)), true
	}
	return big.NewInt(1 << 62), true
}
