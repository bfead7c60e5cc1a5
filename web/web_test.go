//go:build !no_ui

package web

import (
	"io"
	"io/fs"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
)

func newApp() *fiber.App {
	app := fiber.New()
	Mount(app)
	return app
}

func TestHandler(t *testing.T) {
	app := newApp()
	for _, tc := range []struct {
		name, method, path string
		status             int
		contentType        string // prefix
		location           string
		body               string // substring
	}{
		{name: "no slash redirects", method: "GET", path: "/ui", status: 301, location: "/ui/"},
		{name: "index", method: "GET", path: "/ui/", status: 200, contentType: "text/html",
			body: `<script type="module" src="js/app.js">`},
		{name: "module", method: "GET", path: "/ui/js/app.js", status: 200, contentType: "text/javascript",
			body: "import * as api from './api.js'"},
		{name: "stylesheet", method: "GET", path: "/ui/app.css", status: 200, contentType: "text/css"},
		{name: "vendored uPlot", method: "GET", path: "/ui/vendor/uPlot.esm.js", status: 200,
			contentType: "text/javascript", body: "export { uPlot as default }"},
		{name: "head", method: "HEAD", path: "/ui/app.css", status: 200, contentType: "text/css"},
		{name: "missing file", method: "GET", path: "/ui/nope.js", status: 404},
		{name: "no traversal", method: "GET", path: "/ui/../web.go", status: 404},
		{name: "post is not served", method: "POST", path: "/ui/", status: 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := app.Test(httptest.NewRequest(tc.method, tc.path, nil))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.status {
				t.Fatalf("%s %s = %d, want %d", tc.method, tc.path, res.StatusCode, tc.status)
			}
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.contentType) {
				t.Errorf("%s %s: Content-Type %q, want %q...", tc.method, tc.path, ct, tc.contentType)
			}
			if loc := res.Header.Get("Location"); loc != tc.location {
				t.Errorf("%s %s: Location %q, want %q", tc.method, tc.path, loc, tc.location)
			}
			if !strings.Contains(string(body), tc.body) {
				t.Errorf("%s %s: body lacks %q", tc.method, tc.path, tc.body)
			}
			if tc.status == 200 {
				if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
					t.Errorf("%s %s: Content-Security-Policy %q", tc.method, tc.path, csp)
				}
			}
		})
	}
}

// TestAssetsAreSelfContained checks that every file the page and its modules
// reference is embedded, and that nothing is loaded from elsewhere: the
// appliance has no internet, and a CDN URL would fail in the field.
func TestAssetsAreSelfContained(t *testing.T) {
	root := assets()
	refs := regexp.MustCompile(`(?:src|href)="([^"#:]+)"|from '(\./[^']+|\.\./[^']+)'`)
	remote := regexp.MustCompile(`(?:src|href)="(?:https?:)?//|from '(?:https?:)?//|import\(['"]https?:`)
	checked := 0
	err := fs.WalkDir(root, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !strings.HasSuffix(path, ".html") && !(strings.HasSuffix(path, ".js") && strings.HasPrefix(path, "js/")) {
			return nil
		}
		b, err := fs.ReadFile(root, path)
		if err != nil {
			return err
		}
		if m := remote.Find(b); m != nil {
			t.Errorf("%s loads a remote resource: %s", path, m)
		}
		dir := path[:strings.LastIndex(path, "/")+1]
		for _, m := range refs.FindAllSubmatch(b, -1) {
			ref := string(m[1]) + string(m[2])
			full := cleanJoin(dir, ref)
			if _, err := fs.Stat(root, full); err != nil {
				t.Errorf("%s references %q (%s), which is not embedded", path, ref, full)
			}
			checked++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 8 {
		t.Errorf("checked only %d references; the pattern no longer matches the page", checked)
	}
}

// cleanJoin resolves ref against dir the way a browser resolves a relative
// URL inside /ui/.
func cleanJoin(dir, ref string) string {
	parts := strings.Split(dir+ref, "/")
	var out []string
	for _, p := range parts {
		switch p {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, p)
		}
	}
	return strings.Join(out, "/")
}
