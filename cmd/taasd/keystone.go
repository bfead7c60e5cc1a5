package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/taas-appliance/taas/control"
)

// validateKeystone checks the [auth] keys of keystone mode (issue 13):
// keystone_url and one kind of credentials when auth.mode is "keystone",
// none of them when the file names another mode.
func (fc *fileConfig) validateKeystone(bad func(field, format string, args ...any)) {
	a := fc.Auth
	if fc.isSet("auth.mode") && a.Mode != control.AuthKeystone {
		for _, k := range keystoneKeys {
			if fc.isSet("auth." + k) {
				bad("auth."+k, `only used when auth.mode is "keystone"`)
			}
		}
		return
	}
	if a.Mode == control.AuthKeystone && !fc.isSet("auth.keystone_url") {
		bad("auth.keystone_url", `required when auth.mode is "keystone"`)
	}
	if fc.isSet("auth.keystone_url") && !strings.HasPrefix(a.KeystoneURL, "http://") && !strings.HasPrefix(a.KeystoneURL, "https://") {
		bad("auth.keystone_url", "must be an http:// or https:// URL, got %q", a.KeystoneURL)
	}
	if fc.isSet("auth.keystone_cafile") && strings.TrimSpace(a.KeystoneCAFile) == "" {
		bad("auth.keystone_cafile", "must not be empty")
	}
	password := a.Username != "" || a.Password != "" || a.ProjectName != ""
	appCred := a.AppCredentialID != "" || a.AppCredentialKey != ""
	switch {
	case password && appCred:
		bad("auth.application_credential_id", "either username, password and project_name or an application credential, not both")
	case appCred:
		if a.AppCredentialID == "" {
			bad("auth.application_credential_id", "required with application_credential_secret")
		}
		if a.AppCredentialKey == "" {
			bad("auth.application_credential_secret", "required with application_credential_id")
		}
	case password || a.Mode == control.AuthKeystone:
		for _, f := range []struct{ key, v string }{{"username", a.Username}, {"password", a.Password},
			{"project_name", a.ProjectName}} {
			if f.v == "" {
				bad("auth."+f.key, "required in keystone mode (taasd's service user), or give an application credential")
			}
		}
	}
	if a.CacheSeconds < 0 {
		bad("auth.cache_seconds", "must be 0 (no cache) or more, got %d", a.CacheSeconds)
	}
	if a.TimeoutSeconds < 0 {
		bad("auth.timeout_seconds", "must be 0 (default, 5) or more, got %d", a.TimeoutSeconds)
	}
	if a.CacheSize < 0 {
		bad("auth.cache_size", "must be 0 (default, 10000) or more, got %d", a.CacheSize)
	}
}

// cacheTTL is control.KeystoneConfig.CacheTTL for auth.cache_seconds: 0
// (control's default, 5 minutes) when unset, no cache (negative) for 0.
func cacheTTL(set bool, seconds int) time.Duration {
	switch {
	case !set:
		return 0
	case seconds == 0:
		return -1
	}
	return time.Duration(seconds) * time.Second
}

// keystoneConfig is control's KeystoneConfig for c: with an HTTP client
// that trusts auth.keystone_cafile when given (else the system's roots).
func (c config) keystoneConfig() (control.KeystoneConfig, error) {
	kc := c.Keystone
	if c.KeystoneCAFile != "" {
		pem, err := os.ReadFile(c.KeystoneCAFile)
		if err != nil {
			return kc, fmt.Errorf("auth.keystone_cafile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return kc, fmt.Errorf("auth.keystone_cafile %s: no PEM certificate", c.KeystoneCAFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		timeout := kc.Timeout
		if timeout <= 0 {
			timeout = 5 * time.Second
		}
		kc.Client = &http.Client{Transport: tr, Timeout: timeout}
	}
	return kc, kc.Validate()
}
