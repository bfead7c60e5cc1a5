package broker

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestCounterUnits: the units come from the tables the counters are
// declared with; drops count frames only, so taas_interface_drops_total
// keeps one unit.
func TestCounterUnits(t *testing.T) {
	for _, tc := range []struct {
		name string
		want Unit
	}{
		{"xdp_redirected", UnitFrames}, {"frames", UnitFrames}, {"bytes", UnitBytes}, {"copy_bytes", UnitBytes},
		{"batches", UnitOperations}, {"tx_batches", UnitOperations}, {"poll_errors", UnitOperations},
		{"kick_errors", UnitOperations}, {"xsk_kicks", UnitOperations}, {"xsk_kick_err_other", UnitOperations},
		{"xsk_tx_ring_empty_descs", UnitOperations}, {"xsk_received", UnitFrames}, {"kernel_rx_dropped", UnitFrames},
	} {
		if got, ok := CounterUnit(tc.name); !ok || got != tc.want {
			t.Errorf("CounterUnit(%q) = %v, %v, want %v, true", tc.name, got, ok, tc.want)
		}
	}
	if _, ok := CounterUnit("no_such_counter"); ok {
		t.Errorf("CounterUnit(no_such_counter) ok, want not")
	}
	seen := map[string]bool{}
	for _, c := range CounterNames() {
		if c.Drop && c.Unit != UnitFrames {
			t.Errorf("drop %s %s counts %v, want frames", c.Scope, c.Name, c.Unit)
		}
		if k := c.Scope + " " + c.Name; seen[k] {
			t.Errorf("%s declared twice", k)
		} else {
			seen[k] = true
		}
	}
}

// TestCounterNamesDocumented: docs/counters.md has a row for every drop
// reason and counter the data plane can produce, in the section of its
// scope, with its unit and kind, and no row for a name it cannot produce,
// so the docs cannot fall behind the code (issue 13).
func TestCounterNamesDocumented(t *testing.T) {
	const path = "../docs/counters.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A section heading names its scopes in backquotes; a row starts with
	// | `name` | unit | drop or counter |.
	row := regexp.MustCompile("^\\| `([a-z0-9_]+)` \\| ([a-z]+) \\| ([a-z]+) \\|")
	scopeRE := regexp.MustCompile("`([a-z_]+)`")
	type key struct{ scope, name string }
	documented := map[key]string{}
	var scopes []string
	for i, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "## ") {
			scopes = nil
			for _, m := range scopeRE.FindAllStringSubmatch(line, -1) {
				scopes = append(scopes, m[1])
			}
			continue
		}
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if len(scopes) == 0 {
			t.Errorf("%s:%d: row %s outside a scope's section", path, i+1, m[1])
		}
		for _, s := range scopes {
			documented[key{s, m[1]}] = m[2] + " " + m[3]
		}
	}
	for _, c := range CounterNames() {
		kind := "counter"
		if c.Drop {
			kind = "drop"
		}
		want := c.Unit.String() + " " + kind
		got, ok := documented[key{c.Scope, c.Name}]
		switch {
		case !ok:
			t.Errorf("%s: no row for %s %s (%s)", path, c.Scope, c.Name, want)
		case got != want:
			t.Errorf("%s: %s %s is documented %q, want %q", path, c.Scope, c.Name, got, want)
		}
		delete(documented, key{c.Scope, c.Name})
	}
	for k := range documented {
		t.Errorf("%s: row for %s %s, which the data plane never produces", path, k.scope, k.name)
	}
}
