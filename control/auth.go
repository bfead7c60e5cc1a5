package control

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// Auth modes of Config.Auth.
const (
	// AuthNoauth trusts X-Project-Id/X-Roles when present, and otherwise
	// makes the caller admin in Config.DefaultProject (upstream's noauth).
	AuthNoauth = "noauth"
	// AuthToken maps X-Auth-Token (or "Authorization: Bearer") to an
	// identity through Config.Tokens (or those of Server.SetTokens) and
	// answers 401 without a known token.
	AuthToken = "token"
)

// Identity is who a request acts as.
type Identity struct {
	ProjectID string
	Roles     []string
	// Admin is role "admin" (upstream's context_is_admin): sees and acts on
	// every project.
	Admin bool
}

func newIdentity(project string, roles []string) Identity {
	return Identity{ProjectID: project, Roles: roles, Admin: slices.Contains(roles, "admin")}
}

// scope is the project store queries are limited to: "" (all) for admins.
func (id Identity) scope() string {
	if id.Admin {
		return ""
	}
	return id.ProjectID
}

// member is upstream's ADMIN_OR_PROJECT_MEMBER (2025.2 defaults), the rule
// of every tap service and tap flow operation and of port writes; the
// project half is enforced by scoping.
func (id Identity) member() bool { return id.Admin || slices.Contains(id.Roles, "member") }

// reader is ADMIN_OR_PROJECT_READER, the rule of port and network reads.
func (id Identity) reader() bool { return id.member() || slices.Contains(id.Roles, "reader") }

// same reports whether id and o are one project and one set of roles.
func (id Identity) same(o Identity) bool {
	return id.ProjectID == o.ProjectID && slices.Equal(id.Roles, o.Roles)
}

// stillValid returns a check of whether the request's token, as c
// authenticated it, still names the identity id: SetTokens may have
// removed or changed it since. The check is always true without token
// auth.
func (s *Server) stillValid(c *fiber.Ctx, id Identity) func() bool {
	if s.cfg.Auth != AuthToken && s.cfg.Auth != AuthKeystone {
		return func() bool { return true }
	}
	// Cloned: the stream outlives the request, and fasthttp reuses the
	// header buffer the token may point into.
	tok := strings.Clone(requestToken(c))
	if s.cfg.Auth == AuthKeystone {
		// Keystone's word, through the cache: a revoked token's stream ends
		// once the cache forgets it. Keystone unreachable ends no stream.
		return func() bool {
			cur, err := s.ks.validate(tok)
			return errors.Is(err, errIdentityUnavailable) || (err == nil && cur.same(id))
		}
	}
	return func() bool {
		cur, ok := s.currentTokens()[tok]
		return ok && cur.same(id)
	}
}

// Tokens maps a bearer token to the identity it authenticates.
type Tokens map[string]Identity

// knownRoles are the roles the API's rules test; any other grants nothing.
var knownRoles = []string{"admin", "member", "reader"}

// LoadTokens reads a tokens file: one "TOKEN PROJECT_ID ROLE[,ROLE...]"
// per line, separated by blanks; '#' starts a comment line. Errors name
// the file and line. A role other than knownRoles is accepted, since
// Keystone deployments define their own, but it grants nothing here, so
// each line with one logs a warning on log (default slog.Default())
// naming the file, the line and the roles (issue 9: "Admin" or "_member_"
// used to pass silently). The token itself is never logged.
func LoadTokens(path string, log *slog.Logger) (Tokens, error) {
	if log == nil {
		log = slog.Default()
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	t := Tokens{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			return nil, fmt.Errorf("%s:%d: want \"TOKEN PROJECT_ID ROLE[,ROLE...]\", got %d fields", path, n, len(fields))
		}
		if _, dup := t[fields[0]]; dup {
			return nil, fmt.Errorf("%s:%d: token defined twice", path, n)
		}
		var roles, unknown []string
		for _, r := range strings.Split(fields[2], ",") {
			if r == "" {
				return nil, fmt.Errorf("%s:%d: empty role in %q", path, n, fields[2])
			}
			roles = append(roles, r)
			if !slices.Contains(knownRoles, r) {
				unknown = append(unknown, r)
			}
		}
		if len(unknown) > 0 {
			log.Warn("tokens file: role unknown to taasd, it grants nothing (known: admin, member, reader)",
				"file", path, "line", n, "role", strings.Join(unknown, ","))
		}
		t[fields[0]] = newIdentity(fields[1], roles)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	if len(t) == 0 {
		return nil, fmt.Errorf("%s: no tokens", path)
	}
	return t, nil
}

// TokenChange says what SetTokens changed, in counts: logs never carry
// the tokens themselves.
type TokenChange struct {
	// Added and Removed count tokens new to or gone from the set; Changed
	// those whose project or roles differ; Total is the size of the new set.
	Added, Removed, Changed, Total int
}

// SetTokens replaces the bearer tokens of AuthToken: every request
// authenticated after it returns is checked against t, so a token missing
// from t gets 401 at once (issue 9: SIGHUP reloads the tokens file).
// Requests already past authentication finish as who they were, except an
// events stream, which ends at its next event or heartbeat. It fails,
// keeping the tokens it had, without token auth or when t is empty.
func (s *Server) SetTokens(t Tokens) (TokenChange, error) {
	if s.cfg.Auth != AuthToken {
		return TokenChange{}, fmt.Errorf("set tokens: auth is %s, not %s", s.cfg.Auth, AuthToken)
	}
	if len(t) == 0 {
		return TokenChange{}, errors.New("set tokens: no tokens")
	}
	t = maps.Clone(t) // the caller's map may change after we return
	old := s.currentTokens()
	ch := TokenChange{Total: len(t)}
	for tok, id := range t {
		was, ok := old[tok]
		switch {
		case !ok:
			ch.Added++
		case !was.same(id):
			ch.Changed++
		}
	}
	for tok := range old {
		if _, ok := t[tok]; !ok {
			ch.Removed++
		}
	}
	s.tokens.Store(&t)
	return ch, nil
}

// currentTokens is the token set requests are checked against: the last
// SetTokens's, or Config.Tokens before any.
func (s *Server) currentTokens() Tokens {
	if t := s.tokens.Load(); t != nil {
		return *t
	}
	return s.cfg.Tokens
}

const identityKey = "taas.identity"

// requestToken is the bearer token c carries: X-Auth-Token, else
// "Authorization: Bearer", else, for the events stream only, ?token= (a
// browser's EventSource cannot set headers).
func requestToken(c *fiber.Ctx) string {
	tok := c.Get("X-Auth-Token")
	if tok == "" {
		tok, _ = strings.CutPrefix(c.Get(fiber.HeaderAuthorization), "Bearer ")
	}
	if tok == "" && c.Path() == "/v2.0/taas/events" {
		tok = c.Query("token")
	}
	return tok
}

// authenticate resolves the caller's identity and stores it for the
// handlers (see identity).
func (s *Server) authenticate(c *fiber.Ctx) error {
	var id Identity
	switch s.cfg.Auth {
	case AuthKeystone:
		var err error
		if id, err = s.ks.validate(requestToken(c)); err != nil {
			if errors.Is(err, errUnauthorized) {
				// keystonemiddleware's challenge: where to get a token.
				c.Set(fiber.HeaderWWWAuthenticate, `Keystone uri="`+s.cfg.Keystone.URL+`"`)
			}
			return err
		}
	case AuthToken:
		tok := requestToken(c)
		var ok bool
		if id, ok = s.currentTokens()[tok]; !ok || tok == "" {
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="taasd"`)
			return &neutronError{Status: http.StatusUnauthorized, Type: "HTTPUnauthorized",
				Message: "Authentication required"}
		}
	default:
		project := c.Get("X-Project-Id")
		if project == "" {
			id = newIdentity(s.cfg.DefaultProject, []string{"admin", "member", "reader"})
			break
		}
		// A caller naming its project without roles is a member of it:
		// curl users should not need to know about roles.
		roles := []string{"member", "reader"}
		if h := c.Get("X-Roles"); h != "" {
			roles = roles[:0]
			for _, r := range strings.Split(h, ",") {
				if r = strings.TrimSpace(r); r != "" {
					roles = append(roles, r)
				}
			}
		}
		id = newIdentity(project, roles)
	}
	c.Locals(identityKey, id)
	return c.Next()
}

func identity(c *fiber.Ctx) Identity {
	id, _ := c.Locals(identityKey).(Identity)
	return id
}

// adminOnlyPortAttrs are the port attributes only admins set, as in
// neutron's default policies: the binding says where the port's traffic is
// seen (binding:profile's interface), so a member who could set it could
// read another project's traffic or inject into its monitor (issue 9).
// mac_address is the network owner's on create and the admin's on update.
var adminOnlyPortAttrs = []string{"mac_address", "binding:host_id", "binding:profile"}

// portPolicy returns the PolicyNotAuthorized error for a port create or
// update by id, or nil. set reports whether the request set an attribute:
// on create, to a value other than its default (neutron's "explicitly
// set"); on update, at all. ownsNetwork is whether the port's network
// belongs to the caller's project.
func portPolicy(id Identity, action string, ownsNetwork bool, set func(attr string) bool) error {
	if id.Admin {
		return nil
	}
	var denied []string
	for _, a := range adminOnlyPortAttrs {
		if a == "mac_address" && action == "create_port" && ownsNetwork {
			continue
		}
		if set(a) {
			denied = append(denied, a)
		}
	}
	if len(denied) > 0 {
		return errPolicy(action, denied...)
	}
	return nil
}

// MountMetrics adds GET /metrics serving h (MetricsHandler) with its
// policy: in AuthToken and AuthKeystone modes it needs an admin token,
// since it names every interface and resource of every project, unless
// Config.PublicMetrics says Prometheus scrapes without one; in AuthNoauth
// mode it is open.
func (s *Server) MountMetrics(h fiber.Handler) {
	if s.cfg.Auth != AuthNoauth && !s.cfg.PublicMetrics {
		s.app.Get("/metrics", s.authenticate, requireAdmin, h)
		return
	}
	s.app.Get("/metrics", h)
}

// requireAdmin follows authenticate on admin-only routes.
func requireAdmin(c *fiber.Ctx) error {
	if !identity(c).Admin {
		return errPolicy("get_metrics")
	}
	return c.Next()
}
