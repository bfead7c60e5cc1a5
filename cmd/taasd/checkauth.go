package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
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
	return rs
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
