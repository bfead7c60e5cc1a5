package repocheck

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// vagrantDump loads a Vagrantfile with Vagrant's own library, as `vagrant
// up` would, and prints each machine's finalized configuration for the
// libvirt provider as JSON: what the tests below read. Nothing is created.
const vagrantDump = `
require "json"
require "vagrant"
env = Vagrant::Environment.new(cwd: Dir.pwd)
out = env.machine_names.map do |name|
  c = env.machine(name, :libvirt).config.vm
  vb = c.get_provider_config(:virtualbox)
  {
    name: name.to_s,
    hostname: c.hostname,
    box: c.box,
    networks: c.networks.reject { |_, o| o[:id] == "ssh" }.map { |type, o|
      { type: type.to_s, ip: o[:ip], guest: o[:guest], host: o[:host], host_ip: o[:host_ip],
        net: o[:libvirt__network_name], intnet: o[:virtualbox__intnet], auto_config: o[:auto_config] }
    },
    synced: c.synced_folders.map { |_, o| { guest: o[:guestpath], disabled: !!o[:disabled], type: o[:type].to_s } },
    provisioners: c.provisioners.map { |p|
      { name: p.name.to_s, path: p.config.path, inline: !p.config.inline.nil?, args: p.config.args || [], env: p.config.env || {} }
    },
    vb: { name: vb.name, customize: vb.customizations.map { |cu| cu[1] } },
  }
end
puts JSON.generate(out)
`

type dumpedNet struct {
	Type       string `json:"type"`
	IP         string `json:"ip"`
	Guest      int    `json:"guest"`
	Host       int    `json:"host"`
	HostIP     string `json:"host_ip"`
	Net        string `json:"net"`
	Intnet     string `json:"intnet"`
	AutoConfig *bool  `json:"auto_config"`
}

type dumpedMachine struct {
	Name     string      `json:"name"`
	Hostname string      `json:"hostname"`
	Box      string      `json:"box"`
	Networks []dumpedNet `json:"networks"`
	Synced   []struct {
		Guest    string `json:"guest"`
		Disabled bool   `json:"disabled"`
		Type     string `json:"type"`
	} `json:"synced"`
	Provisioners []struct {
		Name   string            `json:"name"`
		Path   string            `json:"path"`
		Inline bool              `json:"inline"`
		Args   []string          `json:"args"`
		Env    map[string]string `json:"env"`
	} `json:"provisioners"`
	VB struct {
		Name      string `json:"name"`
		Customize []any  `json:"customize"` // modifyvm's arguments, cpus and memory among them
	} `json:"vb"`
}

// vagrantMachines loads the repository's Vagrantfile with env and returns
// its machines by name, and the directory Vagrant keeps its state in (its
// .vagrant).
func vagrantMachines(t *testing.T, env ...string) (map[string]dumpedMachine, string) {
	t.Helper()
	needTool(t, "vagrant", "vagrant vagrant-libvirt")
	ruby := needTool(t, "ruby", "ruby")
	tmp := t.TempDir()
	script := filepath.Join(tmp, "dump.rb")
	if err := os.WriteFile(script, []byte(vagrantDump), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ruby, script)
	cmd.Dir = root
	cmd.Env = vagrantEnv(tmp, env...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("Vagrant's configuration with %v: %v\n%s", env, err, stderr)
	}
	var ms []dumpedMachine
	if err := json.Unmarshal(out, &ms); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	byName := map[string]dumpedMachine{}
	for _, m := range ms {
		byName[m.Name] = m
	}
	return byName, filepath.Join(tmp, "dot")
}

// arg returns the value after flag in args, or "" when flag is not there.
func arg(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// TestVagrantSingle: TAAS_NODES unset (1) is the one appliance VM it
// always was: no db VM, no fleet network, SQLite (no --db, no --node).
func TestVagrantSingle(t *testing.T) {
	t.Parallel() // a fake root, or a Vagrant state, of its own
	ms, dot := vagrantMachines(t)
	m, ok := ms["default"]
	if len(ms) != 1 || !ok {
		t.Fatalf("machines %v, want the one default machine", ms)
	}
	if m.Hostname != "taas-appliance" || m.Box != "debian/bookworm64" || m.VB.Name != "taas-appliance" {
		t.Errorf("hostname %q box %q vb %+v", m.Hostname, m.Box, m.VB)
	}
	want := []dumpedNet{
		{Type: "forwarded_port", Guest: 9696, Host: 9696, HostIP: "127.0.0.1"},
		{Type: "private_network", IP: "192.168.200.2", Net: "taas-capture1", Intnet: "taas-capture1"},
		{Type: "private_network", IP: "192.168.201.2", Net: "taas-monitor1", Intnet: "taas-monitor1"},
	}
	for i := range m.Networks {
		m.Networks[i].AutoConfig = nil
	}
	if !slices.Equal(m.Networks, want) {
		t.Errorf("networks\n%+v\nwant\n%+v", m.Networks, want)
	}
	if len(m.Provisioners) != 1 || m.Provisioners[0].Path != "deploy/provision.sh" || len(m.Provisioners[0].Env) != 0 ||
		strings.Join(m.Provisioners[0].Args, " ") != "--bin /vagrant/bin/taasd --source /vagrant --listen 0.0.0.0:9696 --capture eth1 --monitor eth2" {
		t.Errorf("provisioners %+v", m.Provisioners)
	}
	if _, err := os.Stat(filepath.Join(dot, "taas-fleet")); err == nil {
		t.Error("a single VM made the fleet's secrets")
	}
}

// TestVagrantFleet: TAAS_NODES=3 is a db VM and taas1..3, each with
// networks of its own (none shared but the fleet's), its API on 9696+n-1,
// and provisioning as a fleet node: the db VM's URL, its own node name,
// the database's password and one admin token for all, from files the
// host generated once (mode 0600) and did not print into the arguments.
func TestVagrantFleet(t *testing.T) {
	t.Parallel() // a fake root, or a Vagrant state, of its own
	ms, dot := vagrantMachines(t, "TAAS_NODES=3", "TAAS_CAPTURE_NICS=2")
	names := make([]string, 0, len(ms))
	for n := range ms {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"db", "taas1", "taas2", "taas3"}) {
		t.Fatalf("machines %v, want db taas1 taas2 taas3", names)
	}
	secret := func(name string) string {
		p := filepath.Join(dot, "taas-fleet", name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", p, fi.Mode().Perm())
		}
		b, _ := os.ReadFile(p)
		s := strings.TrimSpace(string(b))
		if len(s) != 64 {
			t.Errorf("%s: %d characters, want 64 hex digits", p, len(s))
		}
		return s
	}
	password, token := secret("db-password"), secret("admin-token")

	db := ms["db"]
	if len(db.Provisioners) != 1 || db.Provisioners[0].Path != "deploy/provision-postgres.sh" ||
		db.Provisioners[0].Env["TAASD_DB_PASSWORD"] != password ||
		arg(db.Provisioners[0].Args, "--listen") != "10.14.0.2" || arg(db.Provisioners[0].Args, "--allow") != "10.14.0.0/24" {
		t.Errorf("db: provisioners %+v", db.Provisioners)
	}
	if len(db.Networks) != 1 || db.Networks[0].IP != "10.14.0.2" || db.Networks[0].Net != "taas-fleet" {
		t.Errorf("db: networks %+v, want the fleet's alone", db.Networks)
	}
	for _, s := range db.Synced {
		if s.Guest == "/vagrant" && !s.Disabled {
			t.Error("db: /vagrant is synced (the db VM needs only its provisioning script)")
		}
	}

	subnets := map[string]string{} // libvirt network -> subnet: each network one subnet, no two alike
	for n := 1; n <= 3; n++ {
		name := fmt.Sprintf("taas%d", n)
		m := ms[name]
		if m.Hostname != name || m.VB.Name != name {
			t.Errorf("%s: hostname %q, VirtualBox name %q", name, m.Hostname, m.VB.Name)
		}
		var nets []string
		for _, nw := range m.Networks {
			switch {
			case nw.Type == "forwarded_port":
				if nw.Guest != 9696 || nw.Host != 9696+n-1 || nw.HostIP != "127.0.0.1" {
					t.Errorf("%s: forwarded %+v, want 127.0.0.1:%d to 9696", name, nw, 9696+n-1)
				}
			case nw.Net == "taas-fleet":
				if nw.IP != fmt.Sprintf("10.14.0.%d", 10+n) || nw.Intnet != "taas-fleet" {
					t.Errorf("%s: fleet NIC %+v", name, nw)
				}
				nets = append(nets, nw.Net)
			default:
				if nw.AutoConfig == nil || *nw.AutoConfig || nw.Net != nw.Intnet || !strings.HasPrefix(nw.Net, name+"-") {
					t.Errorf("%s: capture/monitor NIC %+v: want auto_config false on a network of its own", name, nw)
				}
				subnet := nw.IP[:strings.LastIndex(nw.IP, ".")]
				for other, s := range subnets {
					if s == subnet {
						t.Errorf("%s: network %s has %s's subnet %s", name, nw.Net, other, s)
					}
				}
				subnets[nw.Net] = subnet
				nets = append(nets, nw.Net)
			}
		}
		// The NICs in the guest's order: eth1, eth2 capture, eth3 monitor, eth4 the fleet's.
		if want := []string{name + "-capture1", name + "-capture2", name + "-monitor1", "taas-fleet"}; !slices.Equal(nets, want) {
			t.Errorf("%s: networks %v, want %v", name, nets, want)
		}
		if p := m.Provisioners; len(p) != 2 || p[0].Name != "wait-for-db" || !p[0].Inline || p[1].Name != "taasd" {
			t.Fatalf("%s: provisioners %+v, want wait-for-db then taasd", name, p)
		}
		p := m.Provisioners[1]
		if arg(p.Args, "--db") != "postgres://taasd@10.14.0.2:5432/taas?sslmode=require" || arg(p.Args, "--node") != name ||
			arg(p.Args, "--capture") != "eth1,eth2" || arg(p.Args, "--monitor") != "eth3" {
			t.Errorf("%s: provision.sh %v", name, p.Args)
		}
		if p.Env["TAASD_DB_PASSWORD"] != password || p.Env["TAASD_ADMIN_TOKEN"] != token {
			t.Errorf("%s: provisioning's environment has not the fleet's secrets: %v", name, slices.Sorted(maps.Keys(p.Env)))
		}
		if strings.Contains(strings.Join(p.Args, " "), password) || strings.Contains(strings.Join(p.Args, " "), token) {
			t.Errorf("%s: a secret on provision.sh's command line", name)
		}
	}

	// Loaded again (vagrant provision, another vagrant command): the same
	// secrets, not new ones.
	again, _ := vagrantMachines(t, "TAAS_NODES=2", "VAGRANT_DOTFILE_PATH="+dot)
	if again["taas2"].Provisioners[1].Env["TAASD_ADMIN_TOKEN"] != token {
		t.Error("a second load generated another admin token")
	}
}
