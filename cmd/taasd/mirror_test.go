package main

// End-to-end test of tap mirrors (issue 10) as users drive them: the real
// taasd binary with a config file and token auth, an admin who binds the
// ports, members who create mirrors over HTTP (and once with curl), and
// the copies read by tcpdump and tshark at a collector behind a router.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// mirrorOverhead is the outer headers' length of each mirror_type over
// IPv4: Ethernet, IP, then GRE with key, GRE with sequence number +
// ERSPAN II (8) or III (12), or UDP + VXLAN.
var mirrorOverhead = map[string]int{"gre": 42, "erspanv1": 50, "erspanv3": 54, "vxlan": 50}

// encapOf is a Capture keep function for copies of crafted frames behind
// oh bytes of outer headers.
func encapOf(oh int) func([]byte) bool {
	return func(f []byte) bool { return len(f) > oh && packettest.IsTest(f[oh:]) }
}

// mirrorStats is tap mirror id's entry in the caller's taas/stats (ok
// false when it has none).
func (d *xdpDaemon) mirrorStats(t *testing.T, id string) (status string, encapsulated uint64, ok bool) {
	t.Helper()
	var st struct {
		TaasStats struct {
			TapMirrors []struct {
				ID           string `json:"id"`
				Status       string `json:"status"`
				Encapsulated uint64 `json:"encapsulated_packets"`
			} `json:"tap_mirrors"`
		} `json:"taas_stats"`
	}
	d.call(t, "GET", "/v2.0/taas/stats", nil, 200, &st)
	for _, m := range st.TaasStats.TapMirrors {
		if m.ID == id {
			return m.Status, m.Encapsulated, true
		}
	}
	return "", 0, false
}

// createMirror creates a tap mirror of port to remote and returns its id.
func (d *xdpDaemon) createMirror(t *testing.T, name, port, typ, remote string, dirs map[string]any) string {
	t.Helper()
	var out struct {
		TapMirror struct{ ID string } `json:"tap_mirror"`
	}
	d.call(t, "POST", "/v2.0/taas/tap_mirrors", map[string]any{"tap_mirror": map[string]any{"name": name, "port_id": port,
		"mirror_type": typ, "remote_ip": remote, "directions": dirs}}, 201, &out)
	return out.TapMirror.ID
}

// TestTapMirrorEndToEnd is issue 10 as users try it, on the real binary
// (testutil.StartTaasd) with a config file that declares a capture, a
// monitor and an uplink, in token mode: the admin registers and binds the
// VM ports of two projects; a member creates a tap mirror (the first one
// with curl) of each type in turn, and the VM's frames reach the
// collector behind a router, encapsulated: tshark reads each copy's tunnel
// id, the inner frame is byte-identical to the one sent, and for vxlan a
// kernel VXLAN device in the collector's namespace decapsulates them. The
// member of the other project can neither see nor delete the mirror, and
// reuses its tunnel id without a 409. After kill -9 and a restart the
// mirror is still there and its copies resume; deleting the port deletes
// the mirror and the copies stop.
func TestTapMirrorEndToEnd(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	tp := newE2ETopo(t)
	col := testutil.NewCollectorPath(t, testutil.Prefix(t))
	span := tp.inject

	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("tadmin ops admin\ntalice proj-a member,reader\ntbob proj-b member,reader\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "taasd.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`dataplane = "xdp"
[auth]
mode = "token"
tokens = %q
[broker]
pin_dir = %q
[[interfaces]]
name = %q
role = "capture"
[[interfaces]]
name = %q
role = "monitor"
[[interfaces]]
name = %q
role = "uplink"
`, tokens, testutil.BPFFS(t), tp.capIf, tp.monIf, col.Uplink)), 0o600); err != nil {
		t.Fatal(err)
	}
	td := testutil.StartTaasd(t, testutil.BuildTaasd(t), "--config", conf, "--log-level", "debug")
	d := &xdpDaemon{url: td.URL}
	admin, alice, bob := d.as("tadmin"), d.as("talice"), d.as("tbob")

	vmA, vmB := "fa:16:3e:00:10:0a", "fa:16:3e:00:10:0b"
	hwA, hwB := packettest.MustMAC(vmA), packettest.MustMAC(vmB)
	portA := admin.createPortIn(t, "proj-a", "vm-a", vmA, tp.capIf)
	portB := admin.createPortIn(t, "proj-b", "vm-b", vmB, tp.capIf)
	remote := col.Col4.String()

	seq := uint32(0)
	// send injects n OUT frames of vm-a (to vm-b) and n IN frames (from
	// vm-b), and returns them by sequence number.
	send := func(t *testing.T, n int) (out, in []uint32, sent map[uint32][]byte) {
		t.Helper()
		sent = map[uint32][]byte{}
		for i := 0; i < n; i++ {
			for _, dir := range []string{"OUT", "IN"} {
				seq++
				f := packettest.Frame(hwB, hwA, nil, seq, 60+i*200)
				if dir == "IN" {
					f = packettest.Frame(hwA, hwB, nil, seq, 60+i*200)
					in = append(in, seq)
				} else {
					out = append(out, seq)
				}
				sent[seq] = f
				if err := span.Send(f); err != nil {
					t.Fatal(err)
				}
			}
		}
		return out, in, sent
	}

	// waitCopies sends a frame of vm-a in direction dir every 100 ms until
	// a copy of one arrives at the collector behind oh bytes of outer
	// headers (the mirror is realised, as a user sees it), for at most
	// 20 s, then waits for the last copies to arrive.
	waitCopies := func(t *testing.T, dir string, oh int) {
		t.Helper()
		c := packettest.NewCapture(t, col.CollectorNS, col.CollectorIf, encapOf(oh))
		deadline := time.Now().Add(20 * time.Second)
		for c.Len() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("no %s copy reached the collector in 20 s\n%s", dir, td.Logs())
			}
			seq++
			f := packettest.Frame(hwB, hwA, nil, seq, 60)
			if dir == "IN" {
				f = packettest.Frame(hwA, hwB, nil, seq, 60)
			}
			if err := span.Send(f); err != nil {
				t.Fatal(err)
			}
			c.WaitN(1, 100*time.Millisecond)
		}
		c.Quiet(300*time.Millisecond, 2*time.Second)
	}

	// check sends frames of vm-a and checks what the collector receives
	// from mirror typ with tunnel ids ids (by direction).
	check := func(t *testing.T, typ string, ids map[string]uint32) {
		t.Helper()
		oh := mirrorOverhead[typ]
		var decap func(int, func([]byte) bool) string
		if typ == "vxlan" {
			// The collector's kernel decapsulates the OUT tunnel.
			vx := col.CollectorIf[:len(col.CollectorIf)-3] + "vx"
			testutil.Run(t, "ip", "-n", col.CollectorNS, "link", "add", vx, "type", "vxlan", "id",
				strconv.Itoa(int(ids["OUT"])), "dstport", "4789", "local", remote)
			testutil.Run(t, "ip", "-n", col.CollectorNS, "link", "set", vx, "up")
			t.Cleanup(func() { _ = exec.Command("ip", "-n", col.CollectorNS, "link", "del", vx).Run() })
			decap = packettest.Tcpdump(t, col.CollectorNS, vx, "ether proto 0x88b5")
		}
		for dir := range ids {
			waitCopies(t, dir, oh)
		}
		stop := packettest.Tcpdump(t, col.CollectorNS, col.CollectorIf, "ip proto 47 or udp dst port 4789")
		first := seq + 1
		out, in, sent := send(t, 3)
		want := map[uint32]string{}
		for _, s := range out {
			if _, ok := ids["OUT"]; ok {
				want[s] = "OUT"
			}
		}
		for _, s := range in {
			if _, ok := ids["IN"]; ok {
				want[s] = "IN"
			}
		}
		file := stop(len(want), encapOf(oh))
		raw := packettest.ReadPcap(t, file)
		rows := packettest.TsharkFields(t, file, "ip.dst", "gre.key", "erspan.spanid", "vxlan.vni")
		if len(rows) != len(raw) {
			t.Fatalf("tshark decoded %d frames of %d", len(rows), len(raw))
		}
		got := map[uint32]bool{}
		for i, f := range raw {
			if !encapOf(oh)(f) {
				continue // the span namespace's own IPv6 chatter is IN for vm-a too
			}
			s, _ := packettest.Seq(f[oh:])
			if s < first {
				continue // a late copy of waitCopies' frames
			}
			dir, ok := want[s]
			if !ok {
				t.Fatalf("collector got frame %d, not to be mirrored", s)
			}
			got[s] = true
			if !bytes.Equal(f[oh:], sent[s]) {
				t.Errorf("frame %d: inner frame differs:\n got %x\nwant %x", s, f[oh:], sent[s])
			}
			id := map[string]string{"gre": rows[i]["gre.key"], "erspanv1": rows[i]["erspan.spanid"],
				"erspanv3": rows[i]["erspan.spanid"], "vxlan": rows[i]["vxlan.vni"]}[typ]
			if n, err := strconv.ParseUint(id, 0, 32); err != nil || uint32(n) != ids[dir] || rows[i]["ip.dst"] != remote {
				t.Errorf("frame %d (%s): tunnel id %q to %s, want %d to %s (tshark: %v)", s, dir, id, rows[i]["ip.dst"],
					ids[dir], remote, rows[i])
			}
		}
		if len(got) != len(want) {
			t.Fatalf("collector got %d of the %d frames to mirror", len(got), len(want))
		}
		if decap != nil {
			var vx []uint32
			for _, f := range packettest.ReadPcap(t, decap(len(out), packettest.IsTest)) {
				s, _ := packettest.Seq(f)
				if s < first {
					continue
				}
				if !bytes.Equal(f, sent[s]) {
					t.Errorf("vxlan device: frame %d differs:\n got %x\nwant %x", s, f, sent[s])
				}
				vx = append(vx, s)
			}
			if !slices.Equal(vx, out) {
				t.Errorf("kernel vxlan device decapsulated %v, want %v", vx, out)
			}
		}
	}

	// The first mirror, with curl as the README shows it: GRE, both
	// directions.
	body := fmt.Sprintf(`{"tap_mirror": {"name": "to-collector", "port_id": %q, "directions": {"IN": 101, "OUT": 102},
		"remote_ip": %q, "mirror_type": "gre"}}`, portA, remote)
	outb, err := exec.Command(curl, "-s", "-w", "\n%{http_code}", "-X", "POST", "-H", "X-Auth-Token: talice",
		td.URL+"/v2.0/taas/tap_mirrors", "-d", body).Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	var created struct {
		TapMirror struct{ ID string } `json:"tap_mirror"`
	}
	resp, code, _ := bytes.Cut(bytes.TrimSpace(outb), []byte("\n"))
	if string(code) != "201" || json.Unmarshal(resp, &created) != nil || created.TapMirror.ID == "" {
		t.Fatalf("curl POST tap_mirrors: %s %s", code, resp)
	}
	for i, tc := range []struct {
		typ  string
		dirs map[string]any
		ids  map[string]uint32
	}{
		{"gre", nil, map[string]uint32{"IN": 101, "OUT": 102}},
		{"erspanv1", map[string]any{"OUT": 7}, map[string]uint32{"OUT": 7}},
		{"erspanv3", map[string]any{"IN": "8"}, map[string]uint32{"IN": 8}},
		{"vxlan", map[string]any{"OUT": 5001}, map[string]uint32{"OUT": 5001}},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			id := created.TapMirror.ID
			if i > 0 {
				id = alice.createMirror(t, tc.typ, portA, tc.typ, remote, tc.dirs)
			}
			check(t, tc.typ, tc.ids)
			alice.call(t, "DELETE", "/v2.0/taas/tap_mirrors/"+id, nil, 204, nil)
		})
	}

	// The mirror that stays: ERSPAN II of vm-a's OUT frames.
	m := alice.createMirror(t, "kept", portA, "erspanv1", remote, map[string]any{"OUT": 9})
	check(t, "erspanv1", map[string]uint32{"OUT": 9})

	// The owner's taas/stats shows the mirror ACTIVE, its copies counted.
	if st, n, ok := alice.mirrorStats(t, m); st != "ACTIVE" || n == 0 {
		t.Errorf("proj-a's taas/stats: mirror %s %q with %d copies (listed %v), want ACTIVE and copies", m, st, n, ok)
	}

	// The other project's member: not found (taas/stats included), not
	// deletable, and its own mirror may use the same tunnel id (ids are per
	// visible mirrors), where alice's second one may not.
	bob.call(t, "GET", "/v2.0/taas/tap_mirrors/"+m, nil, 404, nil)
	bob.call(t, "DELETE", "/v2.0/taas/tap_mirrors/"+m, nil, 404, nil)
	bob.call(t, "PUT", "/v2.0/taas/tap_mirrors/"+m, map[string]any{"tap_mirror": map[string]any{"name": "x"}}, 404, nil)
	var list struct {
		TapMirrors []struct{ ID string } `json:"tap_mirrors"`
	}
	bob.call(t, "GET", "/v2.0/taas/tap_mirrors", nil, 200, &list)
	if len(list.TapMirrors) != 0 {
		t.Fatalf("proj-b lists %v, want no mirror", list.TapMirrors)
	}
	if _, _, ok := bob.mirrorStats(t, m); ok {
		t.Errorf("proj-b's taas/stats lists proj-a's mirror %s", m)
	}
	var conflict map[string]map[string]string
	alice.call(t, "POST", "/v2.0/taas/tap_mirrors", map[string]any{"tap_mirror": map[string]any{"port_id": portA,
		"mirror_type": "erspanv1", "remote_ip": remote, "directions": map[string]any{"IN": 9}}}, 409, &conflict)
	if conflict["NeutronError"]["type"] != "TapMirrorTunnelConflict" {
		t.Fatalf("alice's second mirror with tunnel id 9: %v, want TapMirrorTunnelConflict", conflict)
	}
	bm := bob.createMirror(t, "same-id", portB, "erspanv1", remote, map[string]any{"OUT": 9})
	bob.call(t, "DELETE", "/v2.0/taas/tap_mirrors/"+bm, nil, 204, nil)
	alice.call(t, "GET", "/v2.0/taas/tap_mirrors/"+m, nil, 200, nil)

	// kill -9 and restart on the same database: the mirror is there and
	// its copies resume.
	td.Kill(t)
	td = td.Restart(t)
	alice.call(t, "GET", "/v2.0/taas/tap_mirrors/"+m, nil, 200, nil)
	check(t, "erspanv1", map[string]uint32{"OUT": 9})
	if st, n, _ := alice.mirrorStats(t, m); st != "ACTIVE" || n == 0 {
		t.Errorf("after the restart: mirror %s %q with %d copies, want ACTIVE and copies", m, st, n)
	}

	// Deleting the port deletes the mirror; the copies stop.
	copies := packettest.NewCapture(t, col.CollectorNS, col.CollectorIf, encapOf(mirrorOverhead["erspanv1"]))
	before := admin.stats(t).TaasStats.PlanVersion
	admin.call(t, "DELETE", "/v2.0/ports/"+portA, nil, 204, nil)
	alice.call(t, "GET", "/v2.0/taas/tap_mirrors/"+m, nil, 404, nil)
	// The reconciler applies the deletion after the API answers.
	deadline := time.Now().Add(20 * time.Second)
	for admin.stats(t).TaasStats.PlanVersion == before {
		if time.Now().After(deadline) {
			t.Fatalf("no plan applied 20s after the port was deleted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	send(t, 3)
	if got := copies.Quiet(500*time.Millisecond, 3*time.Second); len(got) != 0 {
		t.Fatalf("collector got %d copies after the port was deleted", len(got))
	}
}
