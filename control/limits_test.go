package control

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// rawResponse is what a raw TCP exchange got back.
type rawResponse struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
	// next answers a second request on the same connection, or says
	// (err) that the server closed it.
	next func(req string) (*http.Response, error)
}

// rawDo writes req as it is on a new loopback connection to the server
// and reads one response. It writes from a goroutine: the server may answer
// (and close) before it has read all of req.
func (ts *testServer) rawDo(req string) rawResponse {
	t := ts.t
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	go func() {
		// A write error means the server closed first; the response says why.
		_, _ = io.WriteString(conn, req)
	}()
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	for err == nil && res.StatusCode == http.StatusContinue {
		// fasthttp answers Expect: 100-continue before it checks the length.
		res, err = http.ReadResponse(br, nil)
	}
	if err != nil {
		t.Fatalf("read response to %.60q: %v", req, err)
	}
	raw, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	r := rawResponse{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		t.Fatalf("response to %.60q: body is not JSON: %v\n%s", req, err, raw)
	}
	r.next = func(req string) (*http.Response, error) {
		if _, err := io.WriteString(conn, req); err != nil {
			return nil, err
		}
		res, err := http.ReadResponse(br, nil)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		return res, err
	}
	return r
}

func rawPost(path, body string, headers ...string) string {
	h := ""
	for _, x := range headers {
		h += x + "\r\n"
	}
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: taasd\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s",
		path, len(body), h, body)
}

func gzipped(s string) string {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = io.WriteString(w, s)
	_ = w.Close()
	return b.String()
}

// nested is n arrays, one inside the other.
func nested(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }

// repeated is n copies of item, comma-separated.
func repeated(item string, n int) string {
	return strings.TrimSuffix(strings.Repeat(item+",", n), ",")
}

// TestHTTPHygiene sends malformed and hostile requests over raw TCP: each
// gets the right status, a NeutronError body and X-Openstack-Request-Id,
// including those fasthttp answers before any handler runs, and the server
// keeps serving. Requests whose framing is in doubt close the connection;
// the others leave it open for the next request (issue 9).
func TestHTTPHygiene(t *testing.T) {
	ts := startServer(t, Config{})
	for _, tc := range []struct {
		name    string
		req     string
		status  int
		typ     string
		msg     string // substring of the message
		closes  bool   // the server closes the connection after answering
		headers []string
	}{
		{name: "unknown method", req: "FOO /v2.0/ports HTTP/1.1\r\nHost: taasd\r\n\r\n",
			status: 405, typ: "HTTPMethodNotAllowed", msg: "could not comply"},
		{name: "malformed request line", req: "GARBAGE\r\n\r\n",
			status: 400, typ: "HTTPBadRequest", msg: "malformed", closes: true},
		{name: "huge header", req: "GET /v2.0/ports HTTP/1.1\r\nHost: taasd\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n",
			status: 431, typ: "HTTPRequestHeaderFieldsTooLarge", closes: true},
		{name: "two Content-Lengths", req: "POST /v2.0/networks HTTP/1.1\r\nHost: taasd\r\nContent-Length: 2\r\nContent-Length: 43\r\n\r\n" +
			`{}POST /v2.0/networks HTTP/1.1\r\nHost: x\r\n\r\n`,
			status: 400, typ: "HTTPBadRequest", msg: "conflicting Content-Length", closes: true},
		{name: "Transfer-Encoding and Content-Length", req: "POST /v2.0/networks HTTP/1.1\r\nHost: taasd\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"2\r\n{}\r\n0\r\n\r\n",
			status: 400, typ: "HTTPBadRequest", msg: "Transfer-Encoding and Content-Length", closes: true},
		{name: "Content-Length and Transfer-Encoding", req: "POST /v2.0/networks HTTP/1.1\r\nHost: taasd\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" +
			"2\r\n{}\r\n0\r\n\r\n",
			status: 400, typ: "HTTPBadRequest", msg: "Transfer-Encoding and Content-Length", closes: true},
		// fasthttp reads any Transfer-Encoding as chunked; a proxy in
		// front may apply the codings it names (RFC 9112 6.1: 501).
		{name: "Transfer-Encoding gzip, chunked", req: "POST /v2.0/networks HTTP/1.1\r\nHost: taasd\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" +
			"1a\r\n{\"network\": {\"name\": \"z\"}}\r\n0\r\n\r\n",
			status: 501, typ: "HTTPNotImplemented", msg: "Transfer-Encoding", closes: true},
		{name: "two Transfer-Encodings", req: "POST /v2.0/networks HTTP/1.1\r\nHost: taasd\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"1a\r\n{\"network\": {\"name\": \"z\"}}\r\n0\r\n\r\n",
			status: 501, typ: "HTTPNotImplemented", msg: "Transfer-Encoding", closes: true},
		{name: "invalid UTF-8 in body", req: rawPost("/v2.0/networks", "{\"network\": {\"name\": \"bad \xff\xfe\"}}"),
			status: 400, typ: "HTTPBadRequest", msg: "Body contains invalid data"},
		{name: "oversize body", req: "POST /v2.0/networks HTTP/1.1\r\nHost: taasd\r\nContent-Length: 1048577\r\n\r\n{",
			status: 413, typ: "HTTPRequestEntityTooLarge", msg: "too large", closes: true},
		{name: "oversize body, expect 100-continue", req: "POST /v2.0/networks HTTP/1.1\r\nHost: taasd\r\nExpect: 100-continue\r\nContent-Length: 104857600\r\n\r\n",
			status: 413, typ: "HTTPRequestEntityTooLarge", closes: true},
		{name: "gzip body", req: rawPost("/v2.0/networks", gzipped(`{"network": {"name": "z"}}`), "Content-Encoding: gzip"),
			status: 415, typ: "HTTPUnsupportedMediaType", msg: "Content-Encoding"},
		// fiber's Ctx.Body inflates by the last Content-Encoding header,
		// fasthttp's ContentEncoding answers the first.
		{name: "gzip body behind identity", req: rawPost("/v2.0/networks", gzipped(`{"network": {"name": "z"}}`),
			"Content-Encoding: identity", "Content-Encoding: gzip"),
			status: 415, typ: "HTTPUnsupportedMediaType", msg: "Content-Encoding"},
		{name: "gzip body behind empty encoding", req: rawPost("/v2.0/networks", gzipped(`{"network": {"name": "z"}}`),
			"Content-Encoding: ", "Content-Encoding: gzip"),
			status: 415, typ: "HTTPUnsupportedMediaType", msg: "Content-Encoding"},
		{name: "too many bulk items", req: rawPost("/v2.0/ports", `{"ports": [`+repeated(`{"network_id": "`+defaultNetwork+`"}`, 1001)+`]}`),
			status: 400, typ: "HTTPBadRequest", msg: "more than 1000 resources"},
		{name: "deep nesting", req: rawPost("/v2.0/networks", `{"network": {"name": `+nested(33)+`}}`),
			status: 400, typ: "HTTPBadRequest", msg: "deeper than 32 levels"},
		{name: "too many values", req: rawPost("/v2.0/ports", `{"port": {"binding:profile": {"a": [`+repeated("0", 20000)+`]}}}`),
			status: 400, typ: "HTTPBadRequest", msg: "more than 20000 JSON values"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := *ts
			ts.t = t
			r := ts.rawDo(tc.req)
			if r.status != tc.status {
				t.Errorf("status = %d, want %d (%s)", r.status, tc.status, r.raw)
			}
			typ, msg := neutronErr(t, response{status: r.status, body: r.body, raw: r.raw})
			if typ != tc.typ || !strings.Contains(msg, tc.msg) {
				t.Errorf("NeutronError = %s %q, want %s containing %q", typ, msg, tc.typ, tc.msg)
			}
			if id := r.header.Get("X-Openstack-Request-Id"); !strings.HasPrefix(id, "req-") {
				t.Errorf("X-Openstack-Request-Id = %q, want req-...", id)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			res, err := r.next(rawGet)
			switch {
			case tc.closes && err == nil:
				t.Errorf("connection still served %s after the error: %d", strings.TrimSpace(rawGet), res.StatusCode)
			case !tc.closes && err != nil:
				t.Errorf("connection closed after the error: %v", err)
			case !tc.closes && res.StatusCode != 200:
				t.Errorf("follow-up on the same connection = %d", res.StatusCode)
			}
			// The server keeps serving, and nothing was created.
			if n := len(ts.list("/v2.0/networks", "networks")); n != 1 {
				t.Errorf("%d networks after the request, want the default one", n)
			}
			if n := len(ts.list("/v2.0/ports", "ports")); n != 0 {
				t.Errorf("%d ports after the request, want none", n)
			}
		})
	}
}

// TestBodyLimitsWithinBounds checks that bodies at the limits pass: a bulk
// create of exactly MaxBulkItems resources, nesting of exactly MaxJSONDepth.
func TestBodyLimitsWithinBounds(t *testing.T) {
	ts := startServer(t, Config{Limits: Limits{MaxBulkItems: 5, MaxJSONDepth: 4}})
	item := `{"network_id": "` + defaultNetwork + `"}`
	ts.must(201, "POST", "/v2.0/ports", `{"ports": [`+repeated(item, 5)+`]}`, "")
	r := ts.do("POST", "/v2.0/ports", `{"ports": [`+repeated(item, 6)+`]}`)
	if _, msg := neutronErr(t, r); r.status != 400 || !strings.Contains(msg, "more than 5 resources") {
		t.Errorf("6 items = %d %q, want 400 more than 5 resources", r.status, msg)
	}
	// {"port": {"binding:profile": {"interface": {...}}}} is 4 deep (and
	// then fails validation: an interface is a name).
	port := `{"port": {"network_id": "` + defaultNetwork + `", "binding:profile": {"interface": %s}}}`
	r = ts.do("POST", "/v2.0/ports", fmt.Sprintf(port, `{}`))
	if _, msg := neutronErr(t, r); strings.Contains(msg, "deeper") {
		t.Errorf("4 levels = %d %q, want it past the depth check", r.status, msg)
	}
	r = ts.do("POST", "/v2.0/ports", fmt.Sprintf(port, `{"a": []}`))
	if _, msg := neutronErr(t, r); r.status != 400 || !strings.Contains(msg, "deeper than 4 levels") {
		t.Errorf("5 levels = %d %q, want 400 deeper than 4 levels", r.status, msg)
	}
	if n := len(ts.list("/v2.0/ports", "ports")); n != 5 {
		t.Errorf("%d ports, want the bulk's 5", n)
	}
	// A chunked body, framed as the guard lets through.
	body := `{"network": {"name": "chunked"}}`
	for _, te := range []string{"chunked", "Chunked "} {
		r := ts.rawDo(fmt.Sprintf("POST /v2.0/networks HTTP/1.1\r\nHost: taasd\r\nTransfer-Encoding: %s\r\n\r\n%x\r\n%s\r\n0\r\n\r\n",
			te, len(body), body))
		if r.status != 201 {
			t.Errorf("Transfer-Encoding %q = %d %s, want 201", te, r.status, r.raw)
		}
	}
}

// TestBodyLimitsBusy holds the only decoding slot: a request with a body
// waits DecodeWait, then gets 503 with Retry-After; requests without one
// are served meanwhile; once the slot is free, bodies are handled again.
func TestBodyLimitsBusy(t *testing.T) {
	ts := startServer(t, Config{Limits: Limits{MaxDecodes: 1, DecodeWait: 50 * time.Millisecond}})
	ts.srv.decodes <- struct{}{}
	body := `{"network": {"name": "n"}}`
	r := ts.do("POST", "/v2.0/networks", body)
	typ, _ := neutronErr(t, r)
	if r.status != 503 || typ != "HTTPServiceUnavailable" || r.header.Get("Retry-After") != "1" {
		t.Errorf("POST while busy = %d %s, Retry-After %q; want 503 HTTPServiceUnavailable, 1", r.status, typ, r.header.Get("Retry-After"))
	}
	ts.must(200, "GET", "/v2.0/networks", "", "")
	<-ts.srv.decodes
	ts.must(201, "POST", "/v2.0/networks", body, "network")
}

// TestMaxConnections holds MaxConnections busy connections (half-sent
// requests: idle ones would be reclaimed, TestConnLimitReclaimIdle): the
// next one is not served until one of them closes.
func TestMaxConnections(t *testing.T) {
	ts := startServer(t, Config{Limits: Limits{MaxConnections: 2, MaxConnectionsPerIP: 2, HeaderTimeout: time.Minute}})
	first := dialFrom(t, ts, "127.0.0.1")
	first.half()
	dialFrom(t, ts, "127.0.0.1").half()
	waitBusy(t, ts, 2)

	third := dialFrom(t, ts, "127.0.0.2")
	if res, err := third.get(300 * time.Millisecond); err == nil {
		t.Fatalf("third connection served (%d) while two are busy", res.StatusCode)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("third connection: %v, want no answer yet", err)
	}
	// Closing one lets the third in.
	if err := first.conn.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := third.readWithin(20 * time.Second)
	if err != nil {
		t.Fatalf("third connection after one closed: %v", err)
	}
	if res.StatusCode != 200 {
		t.Errorf("third connection = %d, want 200", res.StatusCode)
	}
}

func TestLimitsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Limits
		want Limits
		err  string
	}{
		{"defaults", Limits{}, Limits{MaxBodySize: 1 << 20, MaxBulkItems: 1000, MaxJSONDepth: 32, MaxJSONValues: 20000,
			MaxDecodes: 4, DecodeWait: 2 * time.Second, MaxConnections: 128, MaxConnectionsPerIP: 32,
			HeaderTimeout: 10 * time.Second, WriteTimeout: time.Minute}, ""},
		{"kept", Limits{MaxBodySize: 4096, MaxBulkItems: 1, MaxJSONDepth: 512, MaxJSONValues: 10, MaxDecodes: 1,
			DecodeWait: time.Millisecond, MaxConnections: 1, MaxConnectionsPerIP: 1, HeaderTimeout: time.Millisecond,
			WriteTimeout: time.Millisecond}, Limits{MaxBodySize: 4096, MaxBulkItems: 1, MaxJSONDepth: 512, MaxJSONValues: 10, MaxDecodes: 1,
			DecodeWait: time.Millisecond, MaxConnections: 1, MaxConnectionsPerIP: 1, HeaderTimeout: time.Millisecond,
			WriteTimeout: time.Millisecond}, ""},
		{"per ip a quarter", Limits{MaxConnections: 1000}, Limits{MaxBodySize: 1 << 20, MaxBulkItems: 1000, MaxJSONDepth: 32,
			MaxJSONValues: 20000, MaxDecodes: 4, DecodeWait: 2 * time.Second, MaxConnections: 1000, MaxConnectionsPerIP: 250,
			HeaderTimeout: 10 * time.Second, WriteTimeout: time.Minute}, ""},
		{"per ip at least 1", Limits{MaxConnections: 3}, Limits{MaxBodySize: 1 << 20, MaxBulkItems: 1000, MaxJSONDepth: 32,
			MaxJSONValues: 20000, MaxDecodes: 4, DecodeWait: 2 * time.Second, MaxConnections: 3, MaxConnectionsPerIP: 1,
			HeaderTimeout: 10 * time.Second, WriteTimeout: time.Minute}, ""},
		{"negative per ip", Limits{MaxConnectionsPerIP: -1}, Limits{}, "max connections per ip -1"},
		{"per ip above max", Limits{MaxConnectionsPerIP: 129}, Limits{}, "max connections per ip 129: want at most max connections (128)"},
		{"negative header timeout", Limits{HeaderTimeout: -time.Second}, Limits{}, "header timeout -1s"},
		{"negative write timeout", Limits{WriteTimeout: -time.Second}, Limits{}, "write timeout -1s"},
		{"negative body", Limits{MaxBodySize: -1}, Limits{}, "max body size -1"},
		{"negative decodes", Limits{MaxDecodes: -1}, Limits{}, "max decodes -1"},
		{"negative wait", Limits{DecodeWait: -time.Second}, Limits{}, "decode wait -1s"},
		{"too deep", Limits{MaxJSONDepth: 513}, Limits{}, "at most 512"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in
			err := got.validate()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("validate(%+v) = %v, want %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("validate(%+v) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestCheckJSONShape(t *testing.T) {
	l := Limits{MaxBulkItems: 3, MaxJSONDepth: 3, MaxJSONValues: 10}
	for _, tc := range []struct {
		body string
		err  string // substring; "" accepts
	}{
		{`{"tap_services": [{}, {}, {}]}`, ""},
		{`{"tap_services": [{}, {}, {}, {}]}`, "more than 3 resources"},
		{`{"tap_services": [{}, {}], "x": [1, 2, 3]}`, ""},
		{`{"x": [1, 2, 3], "tap_services": [{}, {}, {}, {}]}`, "more than 3 resources"},
		{`[[1, 2, 3, 4]]`, ""}, // not a bulk body
		{`{"a": {"b": [1, 2, 3, 4]}}`, ""},
		{`{"a": {"b": []}}`, ""},
		{`{"a": {"b": [[]]}}`, "deeper than 3 levels"},
		{`[[["[[[[\"]]]"]]]`, ""}, // brackets in strings do not count
		{`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9}`, ""},
		{`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10}`, "more than 10 JSON values"},
		{`[true,false,null,-1.5e3,"x\\",1,2,3,4]`, ""},
		{`[true,false,null,-1.5e3,"x\\",1,2,3,4,5]`, "more than 10 JSON values"},
		{`]]]]}}}}`, ""}, // syntax is decodeJSON's business
		{``, ""},
	} {
		err := checkJSONShape([]byte(tc.body), l)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("checkJSONShape(%s) = %v, want %q", tc.body, err, tc.err)
		}
	}
}

// shapeOf measures valid JSON with encoding/json's tokenizer, independently
// of checkJSONShape: its depth, its values, and the longest array member of
// its top-level object.
func shapeOf(b []byte) (depth, values, bulk int, err error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type level struct {
		obj     bool
		wantKey bool
		n       int
	}
	var stack []level
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return depth, values, bulk, nil
		}
		if err != nil {
			return 0, 0, 0, err
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			if top := stack[len(stack)-1]; len(stack) == 2 && !top.obj && stack[0].obj && top.n > bulk {
				bulk = top.n
			}
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].obj {
				stack[len(stack)-1].wantKey = true
			}
			continue
		}
		if len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.obj && top.wantKey {
				top.wantKey = false
				continue
			}
			top.n++
			if top.obj {
				top.wantKey = true
			}
		}
		values++
		if d, ok := tok.(json.Delim); ok {
			stack = append(stack, level{obj: d == '{', wantKey: d == '{'})
			depth = max(depth, len(stack))
		}
	}
}

// FuzzCheckJSONShape checks the allocation-free scan against encoding/json:
// for any valid JSON, it rejects exactly the bodies whose depth, values or
// bulk items exceed the limits; for any bytes it never panics, and its
// errors are 400 NeutronErrors. decodeJSON refuses invalid UTF-8.
func FuzzCheckJSONShape(f *testing.F) {
	l := Limits{MaxBulkItems: 3, MaxJSONDepth: 4, MaxJSONValues: 12}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkJSONShape(b, l)
		if err != nil {
			var ne *neutronError
			if !errors.As(err, &ne) || ne.Status != 400 || ne.Message == "" {
				t.Fatalf("checkJSONShape(%q) = %v, want a 400 NeutronError", b, err)
			}
		}
		_, derr := decodeJSON(b)
		if !utf8.Valid(b) && derr == nil {
			t.Fatalf("decodeJSON(%q) accepted invalid UTF-8", b)
		}
		if derr != nil {
			return
		}
		depth, values, bulk, serr := shapeOf(b)
		if serr != nil {
			t.Fatalf("decodeJSON accepts %q, the tokenizer does not: %v", b, serr)
		}
		within := depth <= l.MaxJSONDepth && values <= l.MaxJSONValues && bulk <= l.MaxBulkItems
		if within != (err == nil) {
			t.Errorf("checkJSONShape(%q) = %v; depth %d, values %d, bulk items %d", b, err, depth, values, bulk)
		}
	})
}

// wideBody is a 1 MiB bulk body of tiny objects, the shape that costs the
// most to decode per byte.
func wideBody() []byte {
	var b bytes.Buffer
	b.WriteString(`{"tap_services": [`)
	for b.Len() < 1<<20-16 {
		b.WriteString(`{"a":"\"x"},`)
	}
	b.WriteString(`{}]}`)
	return b.Bytes()
}

// TestCheckJSONShapeAllocs: the scan runs before anything is bounded, so
// it must not allocate (a rejected body allocates its error only).
func TestCheckJSONShapeAllocs(t *testing.T) {
	l := Limits{MaxBulkItems: 1 << 30, MaxJSONDepth: 512, MaxJSONValues: 1 << 30}
	for _, b := range [][]byte{wideBody(), []byte(nested(512)), []byte(`{"a": [1, "b", true, null, {"c": -1e5}]}`)} {
		if n := testing.AllocsPerRun(10, func() { _ = checkJSONShape(b, l) }); n != 0 {
			t.Errorf("checkJSONShape(%.30s...) allocates %v times, want 0", b, n)
		}
	}
}

func BenchmarkCheckJSONShape(b *testing.B) {
	body := wideBody()
	l := Limits{MaxBulkItems: 1 << 30, MaxJSONDepth: 32, MaxJSONValues: 1 << 30}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := checkJSONShape(body, l); err != nil {
			b.Fatal(err)
		}
	}
}
