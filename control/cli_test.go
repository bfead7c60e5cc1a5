package control

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestOpenstackCLI drives a real server with the real Debian `openstack`
// client (python3-openstackclient + python3-neutron-taas, installed by
// .ci/run) through the workflow: port create (sdk, with version
// discovery and network lookup by name), tap service and tap flow create,
// list, show, update and delete with name and id lookups, and a create the
// server rejects. Each call costs about a second of Python start-up, so
// the workflow is kept to ~20 calls.
func TestOpenstackCLI(t *testing.T) {
	bin, err := exec.LookPath("openstack")
	if err != nil {
		t.Skip("openstack CLI not installed (apt-get install python3-openstackclient python3-neutron-taas; .ci/run does)")
	}
	ts := startServer(t, Config{})
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "OS_") {
			env = append(env, e)
		}
	}
	run := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--os-auth-type", "none", "--os-endpoint", ts.base}, args...)...)
		cmd.Env = env
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("openstack %v: %v", args, err)
		}
		return o.String(), e.String(), code
	}
	jsonOut := func(v any, args ...string) {
		t.Helper()
		out, errOut, code := run(append(args, "-f", "json")...)
		if code != 0 {
			t.Fatalf("openstack %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
		}
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("openstack %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ok := func(args ...string) {
		t.Helper()
		if _, errOut, code := run(args...); code != 0 {
			t.Fatalf("openstack %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
		}
	}

	var mon, web map[string]any
	jsonOut(&mon, "port", "create", "--network", "appliance", "--disable-port-security",
		"--mac-address", "fa:16:3e:00:00:10", "--binding-profile", "interface=mon0", "monitor-port")
	if mon["mac_address"] != "fa:16:3e:00:00:10" || mon["port_security_enabled"] != false ||
		mon["network_id"] != defaultNetwork {
		t.Errorf("port create printed %v", mon)
	}
	if p := ts.must(200, "GET", "/v2.0/ports/"+mon["id"].(string), "", "port"); p["binding:profile"].(map[string]any)["interface"] != "mon0" {
		t.Errorf("stored port = %v, want binding:profile interface mon0", p)
	}
	jsonOut(&web, "port", "create", "--network", "appliance", "--binding-profile", "interface=cap0", "web-port")

	var svc map[string]any
	jsonOut(&svc, "tap", "service", "create", "--name", "ids", "--port", "monitor-port")
	if svc["Name"] != "ids" || svc["Port"] != mon["id"] || svc["Status"] != "DOWN" || svc["Tenant"] != "default" {
		t.Errorf("tap service create printed %v", svc)
	}
	var flow map[string]any
	jsonOut(&flow, "tap", "flow", "create", "--name", "web-in", "--port", "web-port", "--tap-service", "ids",
		"--direction", "IN", "--vlan-filter", "10-20,30")
	if flow["Name"] != "web-in" || flow["Direction"] != "IN" || flow["vlan_filter"] != "10-20,30" ||
		flow["source_port"] != web["id"] || flow["tap_service_id"] != svc["ID"] {
		t.Errorf("tap flow create printed %v", flow)
	}
	var flow2 map[string]any
	jsonOut(&flow2, "tap", "flow", "create", "--name", "web-out", "--port", web["id"].(string),
		"--tap-service", svc["ID"].(string), "--direction", "out")
	if flow2["Direction"] != "OUT" || flow2["vlan_filter"] != nil {
		t.Errorf("second tap flow create printed %v", flow2)
	}

	var svcs, flows []map[string]any
	jsonOut(&svcs, "tap", "service", "list")
	if len(svcs) != 1 || svcs[0]["ID"] != svc["ID"] || svcs[0]["Name"] != "ids" {
		t.Errorf("tap service list printed %v", svcs)
	}
	jsonOut(&flows, "tap", "flow", "list")
	if len(flows) != 2 {
		t.Errorf("tap flow list printed %v, want 2 flows", flows)
	}

	// Show by name and by id; update; show again.
	var shown map[string]any
	jsonOut(&shown, "tap", "service", "show", "ids")
	if shown["ID"] != svc["ID"] {
		t.Errorf("tap service show ids printed %v", shown)
	}
	ok("tap", "service", "update", "ids", "--description", "intrusion detection")
	jsonOut(&shown, "tap", "service", "show", svc["ID"].(string))
	if shown["description"] != "intrusion detection" {
		t.Errorf("after update, show printed %v", shown)
	}
	ok("tap", "flow", "update", "web-in", "--name", "web-in-2")
	jsonOut(&shown, "tap", "flow", "show", "web-in-2")
	if shown["ID"] != flow["ID"] || shown["vlan_filter"] != "10-20,30" {
		t.Errorf("tap flow show web-in-2 printed %v", shown)
	}

	// A create the server rejects: exit 1 and upstream's message.
	_, errOut, code := run("tap", "flow", "create", "--port", "web-port", "--tap-service", "ids",
		"--direction", "BOTH", "--vlan-filter", "abc")
	if code != 1 || !strings.Contains(errOut, "Invalid input for vlan_filter. Reason: 'abc' is not a valid input.") {
		t.Errorf("bad vlan_filter: exit %d, stderr %q", code, errOut)
	}
	// An unknown name: the client's own lookup fails.
	if _, errOut, code := run("tap", "service", "show", "nope"); code != 1 || !strings.Contains(errOut, "nope") {
		t.Errorf("show of an unknown service: exit %d, stderr %q", code, errOut)
	}

	ok("tap", "flow", "delete", "web-in-2")
	ok("tap", "service", "delete", "ids") // and with it web-out
	jsonOut(&flows, "tap", "flow", "list")
	jsonOut(&svcs, "tap", "service", "list")
	if len(flows) != 0 || len(svcs) != 0 {
		t.Errorf("after deletes: services %v, flows %v, want none", svcs, flows)
	}
}
