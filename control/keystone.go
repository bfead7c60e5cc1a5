package control

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// AuthKeystone validates every request's token against Keystone v3 (issue
// 13), as keystonemiddleware's auth_token does: GET /v3/auth/tokens with the
// caller's token as X-Subject-Token and taasd's own service token as
// X-Auth-Token. The project and roles come from the validated token.
const AuthKeystone = "keystone"

// KeystoneConfig configures AuthKeystone: where Keystone is and the
// credentials taasd validates tokens with, either a service user's password
// or an application credential.
type KeystoneConfig struct {
	// URL is Keystone's public endpoint, e.g. "https://keystone:5000" (a
	// trailing "/v3" is accepted). Required.
	URL string
	// Username and Password are the service user's (role service, or
	// admin, in Project); UserDomain and ProjectDomain default "Default".
	Username, Password, UserDomain string
	Project, ProjectDomain         string
	// AppCredentialID and AppCredentialSecret are an application
	// credential, instead of the password fields.
	AppCredentialID, AppCredentialSecret string
	// CacheTTL is how long a validated token is trusted without asking
	// Keystone again (and so how long a revoked token may still be
	// accepted); never past the token's expiry. 0 means 5 minutes; a
	// negative value disables the cache.
	CacheTTL time.Duration
	// CacheSize bounds the cache, in tokens (least recently used evicted
	// first); 0 means 10000.
	CacheSize int
	// Timeout bounds each request to Keystone; 0 means 5 s.
	Timeout time.Duration
	// Client is the HTTP client to Keystone (its TLS roots, a proxy); nil
	// means one with Timeout and a transport of its own. The server
	// closes its idle connections when Run ends.
	Client *http.Client
}

// Validate checks c and fills in defaults.
func (c *KeystoneConfig) Validate() error {
	var errs []error
	c.URL = strings.TrimSuffix(strings.TrimSuffix(c.URL, "/"), "/v3")
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		errs = append(errs, fmt.Errorf("keystone url %q: want http:// or https://", c.URL))
	}
	appCred := c.AppCredentialID != "" || c.AppCredentialSecret != ""
	password := c.Username != "" || c.Password != "" || c.Project != ""
	switch {
	case appCred && password:
		errs = append(errs, errors.New("keystone: either a username, password and project or an application credential, not both"))
	case appCred && (c.AppCredentialID == "" || c.AppCredentialSecret == ""):
		errs = append(errs, errors.New("keystone: an application credential needs its id and its secret"))
	case !appCred && (c.Username == "" || c.Password == "" || c.Project == ""):
		errs = append(errs, errors.New("keystone: service credentials needed: username, password and project, or an application credential"))
	}
	if c.UserDomain == "" {
		c.UserDomain = "Default"
	}
	if c.ProjectDomain == "" {
		c.ProjectDomain = "Default"
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = 5 * time.Minute
	}
	if c.CacheSize <= 0 {
		c.CacheSize = 10000
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Client == nil {
		// A transport of its own: the server closes its idle
		// connections when it stops (keystone.close).
		c.Client = &http.Client{Timeout: c.Timeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	// Never follow a redirect: it would carry taasd's credentials, or a
	// caller's token, wherever Keystone's URL (or a man in the middle)
	// points; a 3xx is a failure like any other non-answer.
	c.Client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return errors.Join(errs...)
}

// Errors of keystone validation, as the API answers them.
var (
	errUnauthorized = &neutronError{Status: http.StatusUnauthorized, Type: "HTTPUnauthorized",
		Message: "Authentication required"}
	// A token without a project (unscoped, domain- or system-scoped) is
	// genuine but names no project to act in: 403, not 401, since asking
	// the client to authenticate again would get it the same token.
	errNotProjectScoped = forbidden("HTTPForbidden",
		"The token is not scoped to a project: authenticate with a project (--os-project-name) to use this API.")
	// Keystone unreachable, failing or refusing taasd's own credentials:
	// nobody gets in (never an open door).
	errIdentityUnavailable = &neutronError{Status: http.StatusServiceUnavailable, Type: "ServiceUnavailable",
		Message: "The identity service is unavailable: the token cannot be validated. Try again later."}
)

// keystone validates tokens against Keystone, with a cache. Its goroutines:
// the requests' own; one validation per token runs at a time (flights).
type keystone struct {
	cfg KeystoneConfig
	log *slog.Logger

	// svcMu guards the service token and the fetch of a new one; it is
	// never held while Keystone is asked.
	svcMu          sync.Mutex
	svcToken       string
	svcRefresh     time.Time // fetch a new one from then on
	svcExpiry      time.Time // svcToken is no good from then on
	svcFetch       *svcFetch // the fetch under way, or nil
	svcErr         error     // the last fetch's error, until svcFailedUntil
	svcFailedUntil time.Time

	// mu guards flights, the validations under way by token hash.
	mu      sync.Mutex
	flights map[[32]byte]*flight

	// cache holds the tokens Keystone accepted, rejected those it refused
	// (401, 403), apart: a flood of random tokens evicts only other
	// rejections, never a valid token's entry (review of issue 13). Both
	// nil without a cache.
	cache, rejected *tokenCache
	stats           keystoneStats
}

// keystoneStats counts validations by outcome, for /metrics and tests.
type keystoneStats struct {
	hits, valid, invalid, unscoped, unavailable, serviceAuths atomic.Int64
}

type flight struct {
	done chan struct{}
	res  tokenResult
}

// tokenResult is what a token validated to: an identity, or the error to
// answer (errUnauthorized, errNotProjectScoped, errIdentityUnavailable).
type tokenResult struct {
	id  Identity
	err error
}

func newKeystone(cfg KeystoneConfig, log *slog.Logger) *keystone {
	k := &keystone{cfg: cfg, log: log.With("component", "keystone"), flights: map[[32]byte]*flight{}}
	if cfg.CacheTTL > 0 {
		k.cache = newTokenCache(cfg.CacheSize)
		k.rejected = newTokenCache(rejectedCacheSize)
	}
	return k
}

// close closes the idle connections to Keystone, which would otherwise
// outlive the server (up to the transport's idle timeout, 90 s by
// default, behind a front that keeps them alive) with two goroutines each.
func (k *keystone) close() { k.cfg.Client.CloseIdleConnections() }

// logStart says, once, how tokens are validated: never a secret.
func (k *keystone) logStart() {
	cache := "off"
	if k.cache != nil {
		cache = k.cfg.CacheTTL.String()
	}
	if k.cfg.AppCredentialID != "" {
		k.log.Info("auth keystone: tokens validated by keystone", "url", k.cfg.URL,
			"credentials", "application credential", "app_credential_id", k.cfg.AppCredentialID,
			"cache_ttl", cache, "cache_size", k.cfg.CacheSize)
		return
	}
	k.log.Info("auth keystone: tokens validated by keystone", "url", k.cfg.URL, "credentials", "password",
		"user", k.cfg.Username, "user_domain", k.cfg.UserDomain, "project", k.cfg.Project,
		"project_domain", k.cfg.ProjectDomain, "cache_ttl", cache, "cache_size", k.cfg.CacheSize)
}

var descKeystoneValidations = prometheus.NewDesc("taas_keystone_validations_total",
	"Token validations by result: cached (answered from the cache), valid, invalid (401), unscoped (403), "+
		"unavailable (503: Keystone unreachable or refusing taasd's credentials).", []string{"result"}, nil)

var descKeystoneServiceAuths = prometheus.NewDesc("taas_keystone_service_tokens_total",
	"Service tokens taasd got from Keystone (at start, before expiry, and after Keystone refused one).", nil, nil)

func (k *keystone) Describe(ch chan<- *prometheus.Desc) {
	ch <- descKeystoneValidations
	ch <- descKeystoneServiceAuths
}

func (k *keystone) Collect(ch chan<- prometheus.Metric) {
	for _, m := range []struct {
		result string
		v      *atomic.Int64
	}{{"cached", &k.stats.hits}, {"valid", &k.stats.valid}, {"invalid", &k.stats.invalid},
		{"unscoped", &k.stats.unscoped}, {"unavailable", &k.stats.unavailable}} {
		ch <- prometheus.MustNewConstMetric(descKeystoneValidations, prometheus.CounterValue, float64(m.v.Load()), m.result)
	}
	ch <- prometheus.MustNewConstMetric(descKeystoneServiceAuths, prometheus.CounterValue, float64(k.stats.serviceAuths.Load()))
}

// rejectedCacheSize bounds the cache of refused tokens: enough for a client
// retrying a stale token, small since anybody can fill it.
const rejectedCacheSize = 1024

// maxTokenLen bounds a token taasd sends to Keystone: a fernet token is
// under 300 bytes, a PKI one was a few KiB; Go's client refuses longer
// headers anyway.
const maxTokenLen = 8 << 10

// validHeaderValue reports whether v may be sent as a header value, as
// golang.org/x/net/http/httpguts.ValidHeaderFieldValue says (no control byte
// but HTAB, no DEL): net/http refuses to send anything else. Not imported:
// httpguts pulls in idna and x/text for this loop.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; (b < ' ' && b != '\t') || b == 0x7f {
			return false
		}
	}
	return true
}

// validate returns who token is. Results are cached by the token's SHA-256
// (the token itself is never kept) until the cache TTL or the token's
// expiry, whichever is first; concurrent requests with one token not yet
// cached share one validation.
func (k *keystone) validate(token string) (Identity, error) {
	// A token no header can carry (a control byte, too long) is nobody's:
	// 401 without asking Keystone, whose client would refuse to send it
	// and so answer 503 (review of issue 13).
	if token == "" || len(token) > maxTokenLen || !validHeaderValue(token) {
		k.stats.invalid.Add(1)
		return Identity{}, errUnauthorized
	}
	key := sha256.Sum256([]byte(token))
	for _, c := range []*tokenCache{k.cache, k.rejected} {
		if c == nil {
			continue
		}
		if r, ok := c.get(key, time.Now()); ok {
			k.stats.hits.Add(1)
			return r.id, r.err
		}
	}
	k.mu.Lock()
	if f, ok := k.flights[key]; ok {
		k.mu.Unlock()
		<-f.done
		return f.res.id, f.res.err
	}
	f := &flight{done: make(chan struct{})}
	k.flights[key] = f
	k.mu.Unlock()

	res, until := k.check(token)
	if k.cache != nil && !errors.Is(res.err, errIdentityUnavailable) {
		if ttl := time.Now().Add(k.cfg.CacheTTL); until.IsZero() || until.After(ttl) {
			until = ttl
		}
		if res.err != nil {
			k.rejected.put(key, res, until)
		} else {
			k.cache.put(key, res, until)
		}
	}
	f.res = res
	k.mu.Lock()
	delete(k.flights, key)
	k.mu.Unlock()
	close(f.done)
	return res.id, res.err
}

// check asks Keystone about token. until is the token's expiry (zero when
// unknown).
func (k *keystone) check(token string) (res tokenResult, until time.Time) {
	refused := ""
	for attempt := 0; ; attempt++ {
		svc, err := k.serviceToken(refused)
		if err != nil {
			k.stats.unavailable.Add(1)
			k.log.Error("get a service token from keystone: tokens cannot be validated", "url", k.cfg.URL, "err", err)
			return tokenResult{err: errIdentityUnavailable}, time.Time{}
		}
		status, body, err := k.do("GET", "/v3/auth/tokens?nocatalog", nil, "X-Auth-Token", svc, "X-Subject-Token", token)
		switch {
		case err != nil:
			k.stats.unavailable.Add(1)
			k.log.Error("validate a token with keystone", "url", k.cfg.URL, "err", err)
			return tokenResult{err: errIdentityUnavailable}, time.Time{}
		case status == http.StatusOK:
			return k.parse(body)
		case status == http.StatusNotFound || status == http.StatusBadRequest:
			// Keystone's answer for a token that is invalid, expired or
			// revoked (404), or that it cannot read at all (400).
			k.stats.invalid.Add(1)
			return tokenResult{err: errUnauthorized}, time.Time{}
		case status == http.StatusUnauthorized && attempt == 0:
			// Our own token expired or was revoked: get a new one, once.
			refused = svc
			continue
		default:
			k.stats.unavailable.Add(1)
			k.log.Error("keystone refused to validate a token: check the service credentials and their role (service or admin)",
				"url", k.cfg.URL, "status", status, "body", truncate(body, 200))
			return tokenResult{err: errIdentityUnavailable}, time.Time{}
		}
	}
}

// tokenBody is the part of Keystone's token we read.
type tokenBody struct {
	Token struct {
		ExpiresAt time.Time `json:"expires_at"`
		Project   *struct {
			ID string `json:"id"`
		} `json:"project"`
		Roles []struct {
			Name string `json:"name"`
		} `json:"roles"`
	} `json:"token"`
}

func (k *keystone) parse(body []byte) (tokenResult, time.Time) {
	var tb tokenBody
	if err := json.Unmarshal(body, &tb); err != nil {
		k.stats.unavailable.Add(1)
		k.log.Error("keystone's token is not what taasd reads", "url", k.cfg.URL, "err", err)
		return tokenResult{err: errIdentityUnavailable}, time.Time{}
	}
	t := tb.Token
	if !t.ExpiresAt.IsZero() && !t.ExpiresAt.After(time.Now()) {
		k.stats.invalid.Add(1)
		return tokenResult{err: errUnauthorized}, time.Time{}
	}
	if t.Project == nil || t.Project.ID == "" {
		k.stats.unscoped.Add(1)
		return tokenResult{err: errNotProjectScoped}, t.ExpiresAt
	}
	roles := make([]string, 0, len(t.Roles))
	for _, r := range t.Roles {
		// Keystone's role names are case-insensitive ("Admin" is admin),
		// and oslo.policy lowercases them before matching.
		roles = append(roles, strings.ToLower(r.Name))
	}
	k.stats.valid.Add(1)
	return tokenResult{id: newIdentity(t.Project.ID, roles)}, t.ExpiresAt
}

// svcRetry is how long a failed service token fetch is remembered: requests
// arriving meanwhile get 503 at once instead of each waiting for Keystone's
// timeout (review of issue 13: 8 requests to a hanging Keystone were
// answered one timeout apart).
const svcRetry = 2 * time.Second

// serviceToken returns taasd's own token, fetching a new one when it has
// none, when it is near its expiry, or when Keystone refused refused (the
// token a validation was sent with; "" when none was refused). One fetch
// runs at a time and its result is shared by every caller waiting; a failed
// fetch is remembered for svcRetry. A token Keystone refused is renewed only
// if it is still the current one (another caller may have renewed it), and a
// renewal that fails before expiry keeps the token taasd has until then.
func (k *keystone) serviceToken(refused string) (string, error) {
	k.svcMu.Lock()
	now := time.Now()
	if refused != "" && refused == k.svcToken {
		k.svcToken = "" // Keystone says it is no good, whatever its expiry
	}
	usable := k.svcToken != "" && now.Before(k.svcExpiry)
	switch {
	case usable && now.Before(k.svcRefresh):
		tok := k.svcToken
		k.svcMu.Unlock()
		return tok, nil
	case k.svcFetch != nil:
		f := k.svcFetch
		k.svcMu.Unlock()
		<-f.done
		return f.token, f.err
	case now.Before(k.svcFailedUntil):
		tok, err := k.svcToken, k.svcErr
		k.svcMu.Unlock()
		if usable {
			return tok, nil
		}
		return "", err
	}
	f := &svcFetch{done: make(chan struct{})}
	k.svcFetch = f
	k.svcMu.Unlock()

	tok, expiry, err := k.fetchServiceToken()

	k.svcMu.Lock()
	now = time.Now()
	if err == nil {
		// Renewed at three quarters of its life, so that it never expires
		// between our check and Keystone's (clocks differ).
		k.svcToken, k.svcExpiry, k.svcRefresh = tok, expiry, now.Add(expiry.Sub(now)*3/4)
		k.svcFailedUntil, k.svcErr = time.Time{}, nil
		f.token = tok
	} else {
		k.svcFailedUntil, k.svcErr = now.Add(svcRetry), err
		if k.svcToken != "" && now.Before(k.svcExpiry) {
			f.token = k.svcToken
		} else {
			f.err = err
		}
	}
	k.svcFetch = nil
	k.svcMu.Unlock()
	close(f.done)
	return f.token, f.err
}

// svcFetch is a service token fetch under way, shared by its waiters.
type svcFetch struct {
	done  chan struct{}
	token string
	err   error
}

// fetchServiceToken gets a new service token and its expiry from Keystone.
func (k *keystone) fetchServiceToken() (string, time.Time, error) {
	var identity map[string]any
	var scope any
	if k.cfg.AppCredentialID != "" {
		identity = map[string]any{"methods": []string{"application_credential"},
			"application_credential": map[string]any{"id": k.cfg.AppCredentialID, "secret": k.cfg.AppCredentialSecret}}
	} else {
		identity = map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": map[string]any{
			"name": k.cfg.Username, "domain": map[string]any{"name": k.cfg.UserDomain}, "password": k.cfg.Password}}}
		scope = map[string]any{"project": map[string]any{"name": k.cfg.Project, "domain": map[string]any{"name": k.cfg.ProjectDomain}}}
	}
	auth := map[string]any{"identity": identity}
	if scope != nil {
		auth["scope"] = scope
	}
	req, err := json.Marshal(map[string]any{"auth": auth})
	if err != nil {
		return "", time.Time{}, err
	}
	status, body, hdr, err := k.doHeader("POST", "/v3/auth/tokens?nocatalog", req)
	if err != nil {
		return "", time.Time{}, err
	}
	if status != http.StatusCreated {
		return "", time.Time{}, fmt.Errorf("POST /v3/auth/tokens: %d: %s", status, truncate(body, 200))
	}
	var tb tokenBody
	if err := json.Unmarshal(body, &tb); err != nil {
		return "", time.Time{}, fmt.Errorf("POST /v3/auth/tokens: %w", err)
	}
	tok := hdr.Get("X-Subject-Token")
	if tok == "" {
		return "", time.Time{}, errors.New("POST /v3/auth/tokens: no X-Subject-Token")
	}
	expiry := tb.Token.ExpiresAt
	if !expiry.After(time.Now()) {
		expiry = time.Now().Add(time.Minute)
	}
	k.stats.serviceAuths.Add(1)
	return tok, expiry, nil
}

func (k *keystone) do(method, path string, body []byte, headers ...string) (int, []byte, error) {
	status, b, _, err := k.doHeader(method, path, body, headers...)
	return status, b, err
}

// doHeader sends one request to Keystone, reading at most 1 MiB of answer.
func (k *keystone) doHeader(method, path string, body []byte, headers ...string) (int, []byte, http.Header, error) {
	ctx, cancel := context.WithTimeout(context.Background(), k.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, k.cfg.URL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := k.cfg.Client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if res.StatusCode >= 500 {
		return 0, nil, nil, fmt.Errorf("%s %s: %s", method, path, res.Status)
	}
	return res.StatusCode, b, res.Header, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// tokenCache is an LRU of validation results by token hash, each until its
// own deadline.
type tokenCache struct {
	mu      sync.Mutex
	size    int
	lru     *list.List // of *cacheEntry, most recently used first
	entries map[[32]byte]*list.Element
}

type cacheEntry struct {
	key   [32]byte
	res   tokenResult
	until time.Time
}

func newTokenCache(size int) *tokenCache {
	return &tokenCache{size: size, lru: list.New(), entries: map[[32]byte]*list.Element{}}
}

func (c *tokenCache) get(key [32]byte, now time.Time) (tokenResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return tokenResult{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.until) {
		c.lru.Remove(el)
		delete(c.entries, key)
		return tokenResult{}, false
	}
	c.lru.MoveToFront(el)
	return e.res, true
}

func (c *tokenCache) put(key [32]byte, res tokenResult, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.lru.Remove(el)
	}
	c.entries[key] = c.lru.PushFront(&cacheEntry{key: key, res: res, until: until})
	for c.lru.Len() > c.size {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*cacheEntry).key)
	}
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// CheckKeystone gets a service token with cfg, as taasd does before its
// first validation: `taasd check`'s test of Keystone's URL and taasd's
// credentials.
func CheckKeystone(cfg KeystoneConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	k := newKeystone(cfg, slog.New(slog.DiscardHandler))
	_, err := k.serviceToken("")
	return err
}
