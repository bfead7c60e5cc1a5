//go:build no_ui

package web

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
)

// TestNoUI: built with -tags no_ui, /ui/ says the dashboard is not built in,
// and none of the dashboard's files is there.
func TestNoUI(t *testing.T) {
	app := fiber.New()
	Mount(app)
	res, err := app.Test(httptest.NewRequest("GET", "/ui/", nil))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.Contains(string(body), "not built in") {
		t.Fatalf("GET /ui/ = %d %q, want 200 and the no_ui notice", res.StatusCode, body)
	}
	res, err = app.Test(httptest.NewRequest("GET", "/ui/js/app.js", nil))
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 404 {
		t.Fatalf("GET /ui/js/app.js = %d, want 404 in a no_ui build", res.StatusCode)
	}
}
