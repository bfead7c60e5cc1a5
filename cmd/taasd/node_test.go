package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNodeFlags: --node and --node-timeout, and their file keys node and
// node_timeout_seconds, are checked at start, flags over the file; the
// default node is the host name.
func TestNodeFlags(t *testing.T) {
	dir := t.TempDir()
	file := func(text string) string {
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		args    []string
		file    string
		want    string // "" = valid
		node    string
		timeout int
	}{
		{name: "default"}, // control.Config's: the host name
		{name: "flag", args: []string{"--node", "rack1-a.tap_7", "--node-timeout", "30"}, node: "rack1-a.tap_7", timeout: 30},
		{name: "bad flag", args: []string{"--node", "rack 1"}, want: `--node: node name "rack 1"`},
		{name: "empty flag", args: []string{"--node", ""}},
		{name: "long flag", args: []string{"--node", strings.Repeat("n", 65)}, want: "want 1 to 64 characters"},
		{name: "timeout 1", args: []string{"--node-timeout", "1"}, want: "--node-timeout 1: want 0 (default) or 2 seconds or more"},
		{name: "file", file: "node = \"b\"\nnode_timeout_seconds = 5\n", node: "b", timeout: 5},
		{name: "flag over file", args: []string{"--node", "c"}, file: "node = \"b\"\n", node: "c"},
		{name: "bad file", file: "node = \"a/b\"\n", want: "node: node name \"a/b\""},
		{name: "empty file", file: "node = \"\"\n", want: "node: node name \"\": want 1 to 64 characters"},
		{name: "bad file timeout", file: "node_timeout_seconds = -3\n", want: "node_timeout_seconds: must be 0 (default) or 2 or more, got -3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", file(tc.file)}, args...)
			}
			cfg, err := parseFlags(args, io.Discard)
			if err == nil {
				err = cfg.validate()
			}
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("taasd %v = %v, want %q", args, err, tc.want)
				}
				return
			}
			if err != nil || cfg.Node != tc.node || cfg.NodeTimeout != tc.timeout {
				t.Errorf("taasd %v = node %q, timeout %d, %v; want %q, %d", args, cfg.Node, cfg.NodeTimeout, err, tc.node, tc.timeout)
			}
		})
	}
}
