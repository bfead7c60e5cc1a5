package repocheck

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/taas-appliance/taas/internal/testutil"
)

const module = "github.com/taas-appliance/taas/"

// arrows are the imports of our own packages each package may have (the
// layout's arrows, DESIGN.md and the README's Layout): a package not
// listed may import none of ours. Tests (_test.go files) are not checked:
// they may use the helpers of internal/.
var arrows = map[string][]string{
	"cmd/taasd":            {"*"},
	"control":              {"broker", "xdpprog", "pcapfilter", "control/store", "internal/netdev"},
	"control/store":        {},
	"broker":               {"xdpprog", "broker/xsk", "pcapfilter", "internal/netdev"},
	"broker/xsk":           {},
	"xdpprog":              {"pcapfilter"},
	"pcapfilter":           {},
	"web":                  {"control"},
	"perf":                 {"broker", "broker/xsk", "xdpprog", "internal/netdev"},
	"perf/lab":             {},
	"perf/cmd/taas-bench":  {"perf", "perf/lab"},
	"perf/cmd/taas-pktgen": {"perf"},
	"internal/netdev":      {},
	"internal/packettest":  {"internal/testutil"},
	"internal/testutil":    {},
	"internal/repocheck":   {},
}

// banned are imports a package must not have: the data plane knows
// nothing of HTTP or SQL, the control plane nothing of sockets and rings.
var banned = map[string][]string{
	"broker":     {"net/http", "database/sql", "github.com/gofiber/fiber/v2", "github.com/mattn/go-sqlite3"},
	"broker/xsk": {"net/http", "database/sql"},
	"xdpprog":    {"net/http", "database/sql"},
	"control":    {module + "broker/xsk"},
}

// TestImportArrows: every package imports only along the layout's arrows,
// and a new package must be given its arrows here.
func TestImportArrows(t *testing.T) {
	cmd := exec.Command(testutil.GoBin(), "list", "-json", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	n := 0
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		n++
		pkg := strings.TrimPrefix(p.ImportPath, module)
		allowed, ok := arrows[pkg]
		if !ok {
			t.Errorf("package %s has no arrows in arrows_test.go: add it (and to the README's Layout)", pkg)
			continue
		}
		for _, imp := range p.Imports {
			if slices.Contains(banned[pkg], imp) {
				t.Errorf("%s imports %s, which its layer must not", pkg, imp)
			}
			ours, isOurs := strings.CutPrefix(imp, module)
			if !isOurs || slices.Contains(allowed, "*") {
				continue
			}
			if !slices.Contains(allowed, ours) {
				t.Errorf("%s imports %s: against the layout's arrows (%s may import %v)", pkg, ours, pkg, allowed)
			}
		}
	}
	if n < len(arrows)-2 {
		t.Errorf("go list gave %d packages, want about %d", n, len(arrows))
	}
}
