package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/taas-appliance/taas/control"
)

// checkAuth is `taasd check`'s look at what the configuration file asks of
// authentication and TLS (issue 13): Keystone answers and takes taasd's
// credentials; the certificate and key load, match and are valid now.
func checkAuth(fc *fileConfig) []checkResult {
	if fc == nil {
		return nil
	}
	var cfg config
	fc.apply(&cfg, nil)
	var rs []checkResult
	if fc.Auth.Mode == control.AuthKeystone {
		r := checkResult{Name: "keystone", Verdict: pass}
		kc, err := cfg.keystoneConfig()
		if err == nil {
			err = control.CheckKeystone(kc)
		}
		if err != nil {
			r.Verdict, r.Detail = fail, fmt.Sprintf("%s: %v", kc.URL, err)
			r.Fix = "check auth.keystone_url and the service credentials (openstack token issue with them must work)"
		} else {
			r.Detail = fmt.Sprintf("%s: got a service token", kc.URL)
		}
		rs = append(rs, r)
	}
	if cfg.TLSCert != "" {
		rs = append(rs, checkCert(cfg.TLSCert, cfg.TLSKey, time.Now()))
	}
	secrets := map[string]string{}
	if cfg.TLSKey != "" {
		secrets[cfg.TLSKey] = "the TLS key"
	}
	if cfg.Auth == control.AuthToken && cfg.Tokens != "" {
		secrets[cfg.Tokens] = "the tokens file"
	}
	if fc.path != "" && (fc.Auth.Password != "" || fc.Auth.AppCredentialKey != "") {
		secrets[fc.path] = "the configuration, which holds a keystone secret"
	}
	for _, file := range slices.Sorted(maps.Keys(secrets)) {
		if r, ok := checkSecretMode(file, secrets[file]); ok {
			rs = append(rs, r)
		}
	}
	return rs
}

// checkSecretMode warns when file, which holds what, is readable (or
// writable) by others than its owner and group (review of issue 13): a
// token or key any local user reads is no secret. ok is false when file
// cannot be looked at: the checks that load it say why.
func checkSecretMode(file, what string) (r checkResult, ok bool) {
	st, err := os.Stat(file)
	if err != nil {
		return r, false
	}
	r = checkResult{Name: "secret file mode", Verdict: pass,
		Detail: fmt.Sprintf("%s %s: mode %04o", what, file, st.Mode().Perm())}
	if st.Mode().Perm()&0o007 != 0 {
		r.Verdict = warn
		r.Detail += ", readable by every local user"
		r.Fix = fmt.Sprintf("chmod o-rwx %s; chgrp taasd %s (mode 0640, root:taasd, as provisioning makes it)", file, file)
	}
	return r, true
}

// checkCert loads the TLS pair: it fails when it does not load or is not
// valid at now, and warns within 30 days of its expiry.
func checkCert(certFile, keyFile string, now time.Time) checkResult {
	r := checkResult{Name: "tls certificate", Verdict: pass}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	var leaf *x509.Certificate
	if err == nil {
		leaf, err = x509.ParseCertificate(cert.Certificate[0])
	}
	if err != nil {
		r.Verdict, r.Detail, r.Fix = fail, err.Error(), "tls_cert and tls_key must be the PEM certificate and its private key"
		return r
	}
	r.Detail = fmt.Sprintf("%s, serial %s, valid until %s", leaf.Subject, leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339))
	switch {
	case now.Before(leaf.NotBefore) || now.After(leaf.NotAfter):
		r.Verdict, r.Fix = fail, "renew the certificate, then systemctl reload taasd"
	case now.Add(30 * 24 * time.Hour).After(leaf.NotAfter):
		r.Verdict, r.Fix = warn, "renew it soon, then systemctl reload taasd"
	}
	return r
}
