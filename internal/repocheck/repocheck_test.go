package repocheck

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// root is the repository root, two levels up from this package.
const root = "../.."

// needTool skips t only when a tool CI installs is missing here.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (apt-get install %s; .ci/run installs it)", name, pkg)
	}
	return p
}

// shellScripts lists every *.sh of the repository and every file with a
// bash or sh shebang under deploy/ and perf/, skipping what others vendor.
func shellScripts(t *testing.T) []string {
	t.Helper()
	var scripts []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "vendor", "headers":
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".sh") || path == filepath.Join(root, ".ci", "run") {
			scripts = append(scripts, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return scripts
}

func TestShellcheck(t *testing.T) {
	sc := needTool(t, "shellcheck", "shellcheck")
	scripts := shellScripts(t)
	for _, want := range []string{"perf/lab/lab.sh", "deploy/provision.sh", "deploy/provision-postgres.sh", ".ci/run"} {
		found := false
		for _, s := range scripts {
			found = found || s == filepath.Join(root, want)
		}
		if !found {
			t.Errorf("%s not among the scripts found: %q", want, scripts)
		}
	}
	// Scripts are run directly (make run runs perf/lab/lab.sh): they must be
	// executable, as git records them.
	for _, s := range scripts {
		if fi, err := os.Stat(s); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable (chmod +x, git update-index --chmod=+x): %v", s, err)
		}
	}
	out, err := exec.Command(sc, append([]string{"--external-sources", "--severity=style"}, scripts...)...).CombinedOutput()
	if err != nil {
		t.Errorf("shellcheck %s: %v\n%s", strings.Join(scripts, " "), err, out)
	}
}

// TestShellcheckCatches proves the check can fail: a script with an unquoted
// expansion is reported.
func TestShellcheckCatches(t *testing.T) {
	sc := needTool(t, "shellcheck", "shellcheck")
	bad := filepath.Join(t.TempDir(), "bad.sh")
	if err := os.WriteFile(bad, []byte("#!/bin/bash\nrm $1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sc, bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "SC2086") {
		t.Errorf("shellcheck on an unquoted $1 = %v, %s; want SC2086", err, out)
	}
}

// verifyUnit runs systemd-analyze verify on unit text, installed as
// taasd.service next to a stand-in for /usr/local/bin/taasd: verify
// checks that ExecStart's binary exists, and this machine has none
// installed. That path is the only line changed. It returns the output;
// verify prints warnings (unknown keys, bad values) with exit status 0, so
// any output is a failure.
func verifyUnit(t *testing.T, unit string) (string, error) {
	t.Helper()
	sa := needTool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	bin := filepath.Join(dir, "taasd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit = strings.ReplaceAll(unit, "/usr/local/bin/taasd", bin)
	path := filepath.Join(dir, "taasd.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sa, "verify", "--man=no", path)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// aboutTaasd keeps the lines of systemd-analyze's output about our unit:
// verify also loads the units it names (network-online.target's
// dependencies, say), and another package's unit may warn about itself
// (Debian's keystone.service: "Dependency After=keystone.service is
// dropped").
func aboutTaasd(out string) string {
	var ours []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "taasd") {
			ours = append(ours, l)
		}
	}
	return strings.Join(ours, "\n")
}

func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "deploy", "taasd.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	if !strings.Contains(unit, "ExecStart=/usr/local/bin/taasd ") {
		t.Fatalf("deploy/taasd.service: ExecStart does not run /usr/local/bin/taasd")
	}
	out, err := verifyUnit(t, unit)
	if ours := aboutTaasd(out); err != nil || ours != "" {
		t.Errorf("systemd-analyze verify deploy/taasd.service: %v\n%s", err, ours)
	} else if out != "" {
		t.Logf("systemd-analyze verify: other units' warnings, not ours:\n%s", out)
	}
	// What the data plane needs must stay in the unit.
	for _, want := range []string{
		"AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_IPC_LOCK CAP_PERFMON",
		"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_IPC_LOCK CAP_PERFMON",
		"LimitMEMLOCK=infinity",
		"StateDirectory=taasd",
		"Restart=on-failure",
		"StartLimitIntervalSec=0",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET AF_XDP",
		"SystemCallFilter=@system-service bpf perf_event_open",
	} {
		if !strings.Contains(unit, want+"\n") {
			t.Errorf("deploy/taasd.service lacks %q", want)
		}
	}
}

// TestSystemdUnitCatches proves verify's warnings reach the test: a
// misspelt key and a bad boolean in an otherwise good unit.
func TestSystemdUnitCatches(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "deploy", "taasd.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.Replace(string(b), "ProtectHome=yes", "ProtectHomme=yes\nPrivateTmp=perhaps", 1)
	out, err := verifyUnit(t, unit)
	if err == nil && !strings.Contains(aboutTaasd(out), "ProtectHomme") {
		t.Errorf("systemd-analyze verify on a misspelt key printed %q, want a warning naming it", out)
	}
}

// vagrant runs `vagrant validate` on the Vagrantfile in dir with nothing
// that reaches the network: no update check, a private VAGRANT_HOME, the
// .vagrant directory in a temporary place, no box download (validate never
// fetches one).
func vagrant(t *testing.T, dir string, env ...string) (string, error) {
	t.Helper()
	v := needTool(t, "vagrant", "vagrant vagrant-libvirt")
	cmd := exec.Command(v, "validate")
	cmd.Dir = dir
	cmd.Env = vagrantEnv(t.TempDir(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// vagrantEnv is the environment of a Vagrant that reaches no network and
// keeps its state (VAGRANT_HOME, the .vagrant directory) under tmp, plus
// env. Nothing of this process's TAAS_ variables: the tests say what they
// want.
func vagrantEnv(tmp string, env ...string) []string {
	var e []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TAAS_") {
			e = append(e, kv)
		}
	}
	e = append(e,
		"VAGRANT_CHECKPOINT_DISABLE=1",
		"VAGRANT_HOME="+filepath.Join(tmp, "home"),
		"VAGRANT_DOTFILE_PATH="+filepath.Join(tmp, "dot"),
		"VAGRANT_DEFAULT_PROVIDER=libvirt",
	)
	return append(e, env...)
}

// TestVagrantValidate validates the Vagrantfile with the libvirt provider
// (Debian's vagrant-libvirt validates its own settings too). VirtualBox is
// not in Debian, so its block is checked as Ruby only.
func TestVagrantValidate(t *testing.T) {
	t.Parallel() // each validate has a Vagrant state of its own
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"defaults", nil},
		{"two capture and three monitor NICs", []string{"TAAS_CAPTURE_NICS=2", "TAAS_MONITOR_NICS=3"}},
		{"a fleet of three", []string{"TAAS_NODES=3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := vagrant(t, root, tc.env...)
			if err != nil || !strings.Contains(out, "validated successfully") {
				t.Errorf("vagrant validate: %v\n%s", err, out)
			}
		})
	}
}

// TestVagrantValidateCatches proves validate fails on a bad Vagrantfile: an
// unknown libvirt setting, and a NIC count out of range.
func TestVagrantValidateCatches(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(root, "Vagrantfile"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "deploy"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "deploy", "provision.sh"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), "lv.cpus = 2", "lv.cpus = 2\n    lv.no_such_setting = 1", 1)
	if bad == string(b) {
		t.Fatal("Vagrantfile has no `lv.cpus = 2` line to break")
	}
	if err := os.WriteFile(filepath.Join(dir, "Vagrantfile"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := vagrant(t, dir); err == nil || !strings.Contains(out, "no_such_setting") {
		t.Errorf("vagrant validate with an unknown libvirt setting: %v\n%s", err, out)
	}
	for _, tc := range []struct{ env, want string }{
		{"TAAS_CAPTURE_NICS=0", "TAAS_CAPTURE_NICS must be between 1 and 8"},
		{"TAAS_NODES=9", "TAAS_NODES must be between 1 and 8"},
	} {
		if out, err := vagrant(t, root, tc.env); err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("vagrant validate with %s: %v\n%s", tc.env, err, out)
		}
	}
}

// TestNoTrackedSymlinks fails when the repository tracks a symbolic link: a
// link committed from one checkout (web/e2e/node_modules pointing at
// another worktree's once) replaces the real directory in every other
// clone.
func TestNoTrackedSymlinks(t *testing.T) {
	git := needTool(t, "git", "git")
	cmd := exec.Command(git, "ls-files", "-s")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "120000 ") {
			t.Errorf("tracked symbolic link: %s", line)
		}
	}
}
