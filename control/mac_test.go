package control

import (
	"fmt"
	"sync"
	"testing"
)

// macSeq is a MAC generator that hands out a fixed sequence and then
// repeats its last MAC, counting calls: collisions on demand.
type macSeq struct {
	mu    sync.Mutex
	macs  []string
	calls int
}

func (g *macSeq) next() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls++
	m := g.macs[0]
	if len(g.macs) > 1 {
		g.macs = g.macs[1:]
	}
	return m
}

func (g *macSeq) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls
}

func (g *macSeq) set(macs ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.macs, g.calls = macs, 0
}

// TestGeneratedMACRetry: a generated MAC that is taken is generated again,
// within a bulk too; a MAC the caller gave is not; after 16 collisions
// the create gives up with Neutron's 503. Before issue 9's fix a collision
// answered 409 MacAddressInUse to a caller who had named no MAC.
func TestGeneratedMACRetry(t *testing.T) {
	const a, b, c, d = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b", "fa:16:3e:00:00:0c", "fa:16:3e:00:00:0d"
	g := &macSeq{macs: []string{a}}
	ts := startServer(t, Config{newMAC: g.next})
	ts.createPort("given", "", a)
	noMAC := jsonBody(map[string]any{"port": map[string]any{"network_id": defaultNetwork}})
	bulk := jsonBody(map[string]any{"ports": []any{map[string]any{"network_id": defaultNetwork},
		map[string]any{"network_id": defaultNetwork}}})
	tests := []struct {
		name   string
		macs   []string
		body   string
		status int
		want   []string // the MACs created
		calls  int
	}{
		{"two collisions", []string{a, a, b}, noMAC, 201, []string{b}, 3},
		{"bulk, colliding with itself", []string{b, c, c, d}, bulk, 201, []string{c, d}, 4},
		{"always taken", []string{a}, noMAC, 503, nil, macRetries},
		{"given MAC taken", []string{d}, `{"port": {"network_id": "` + defaultNetwork + `", "mac_address": "` + a + `"}}`, 409, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g.set(tc.macs...)
			r := ts.do("POST", "/v2.0/ports", tc.body)
			if r.status != tc.status {
				t.Fatalf("POST ports = %d %s, want %d", r.status, r.raw, tc.status)
			}
			if n := g.count(); n != tc.calls {
				t.Errorf("generator called %d times, want %d", n, tc.calls)
			}
			switch r.status {
			case 201:
				var got []string
				if p, ok := r.body["port"].(map[string]any); ok {
					got = append(got, p["mac_address"].(string))
				}
				ps, _ := r.body["ports"].([]any)
				for _, p := range ps {
					got = append(got, p.(map[string]any)["mac_address"].(string))
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Errorf("MACs %v, want %v", got, tc.want)
				}
			case 503:
				typ, msg := neutronErr(t, r)
				if want := "Unable to generate unique mac on network " + defaultNetwork + "."; typ != "MacAddressGenerationFailure" || msg != want {
					t.Errorf("error %s %q, want MacAddressGenerationFailure %q", typ, msg, want)
				}
			case 409:
				if typ, _ := neutronErr(t, r); typ != "MacAddressInUse" {
					t.Errorf("error %s, want MacAddressInUse", typ)
				}
			}
		})
	}
	if n := len(ts.list("/v2.0/ports", "ports")); n != 4 {
		t.Errorf("%d ports, want 4 (given, b, c, d)", n)
	}
}
