package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/taas-appliance/taas/control"
)

// certStore is the certificate HTTPS serves (issue 13): loaded at start,
// replaced by SIGHUP (reload), each handshake taking the current one.
type certStore struct {
	certFile, keyFile string
	log               *slog.Logger
	cur               atomic.Pointer[tls.Certificate]
}

// loadCertStore loads the pair, or fails: taasd does not start without it.
func loadCertStore(certFile, keyFile string, log *slog.Logger) (*certStore, error) {
	cs := &certStore{certFile: certFile, keyFile: keyFile, log: log}
	if err := cs.load("TLS certificate loaded"); err != nil {
		return nil, err
	}
	return cs, nil
}

// reload is the SIGHUP hook: a pair that does not load (unreadable, not
// PEM, key and certificate that do not match) keeps the one served.
func (cs *certStore) reload() error { return cs.load("TLS certificate reloaded") }

func (cs *certStore) load(msg string) error {
	cert, err := tls.LoadX509KeyPair(cs.certFile, cs.keyFile)
	if err != nil {
		return fmt.Errorf("tls certificate %s, key %s: %w", cs.certFile, cs.keyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("tls certificate %s: %w", cs.certFile, err)
		}
		cert.Leaf = leaf
	}
	cs.cur.Store(&cert)
	cs.log.Info(msg, "file", cs.certFile, "subject", leaf.Subject.String(), "dns_names", leaf.DNSNames,
		"serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		cs.log.Error("TLS certificate is not valid now: clients will refuse it", "file", cs.certFile,
			"not_before", leaf.NotBefore.UTC().Format(time.RFC3339), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// tlsConfig is the server's TLS: 1.2 and 1.3 only, and for 1.2 only ECDHE
// key exchange with AEAD ciphers (Mozilla's "intermediate" profile, which
// Debian 12's openstack client, Python 3.11 on OpenSSL 3, and curl speak),
// HTTP/1.1 (fasthttp speaks no HTTP/2).
func (cs *certStore) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cs.cur.Load(), nil
		},
	}
}

// warnOpen logs, at every start, a warning when the API answers on a
// non-loopback address without authentication: anyone who reaches it is
// admin of every project (issue 13: noauth only when asked for by name);
// when it takes tokens there without TLS, which then cross the network in
// clear; and when Keystone is asked over plain HTTP elsewhere than on
// loopback, which sends taasd's credentials and every caller's token in
// clear (review of issue 13).
func warnOpen(cfg config, addr net.Addr, log *slog.Logger) {
	if cfg.Auth == control.AuthKeystone {
		if u, err := url.Parse(cfg.Keystone.URL); err == nil && u.Scheme == "http" && !loopbackHost(u.Hostname()) {
			log.Warn("keystone_url is plain http on a non-loopback host: taasd's credentials and every caller's token "+
				"cross the network in clear; use https://", "keystone_url", cfg.Keystone.URL)
		}
	}
	if ta, ok := addr.(*net.TCPAddr); ok && ta.IP.IsLoopback() {
		return
	}
	switch {
	case cfg.Auth == control.AuthNoauth:
		log.Warn("auth is noauth on a non-loopback address: anyone who reaches it is admin of every project; "+
			"use [auth] mode = \"token\" or \"keystone\" (README \"Authentication\")", "addr", addr.String())
	case cfg.TLSCert == "":
		log.Warn("auth is "+cfg.Auth+" without TLS on a non-loopback address: tokens cross the network in clear; "+
			"set tls_cert and tls_key (README \"HTTPS\")", "addr", addr.String())
	}
}

// loopbackHost reports whether host is localhost or a loopback IP.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// refusePlainHTTP wraps the listener under TLS so that a plain HTTP request
// to the HTTPS port gets net/http's 400 ("Client sent an HTTP request to an
// HTTPS server.") rather than a closed connection (review of issue 13):
// the first byte of a TLS connection is a handshake record's, 0x16.
func refusePlainHTTP(ln net.Listener) net.Listener { return plainHTTPListener{ln} }

type plainHTTPListener struct{ net.Listener }

func (l plainHTTPListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c}, nil
}

// sniffConn looks at the first bytes the client sends (tls.Conn's first
// read, from one goroutine).
type sniffConn struct {
	net.Conn
	sniffed bool
}

var errPlainHTTP = errors.New("plain HTTP request to the HTTPS port")

func (c *sniffConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.sniffed || n == 0 {
		return n, err
	}
	c.sniffed = true
	if b[0] == 0x16 || !(b[0] >= 'A' && b[0] <= 'Z') {
		return n, err // TLS, or not HTTP either: tls.Conn says what it is
	}
	// A method's first letter: answer as net/http does, and hang up.
	if err := c.Conn.SetWriteDeadline(time.Now().Add(time.Second)); err == nil {
		_, _ = io.WriteString(c.Conn, "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"+
			"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n") // hanging up anyway
	}
	// What is left of the request, read for at most 100 ms: closing with
	// unread bytes sends a reset, which may destroy the answer in flight.
	if err := c.Conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(c.Conn, 64<<10)) // ends at the deadline or the client's close
	}
	return 0, errPlainHTTP
}
