package netdev

import (
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want string // substring of the error; "" means valid
	}{
		{"plain", "eth1", ""},
		{"fifteen bytes", "abcdefghijklmno", ""},
		{"dots inside", "br.10", ""},
		{"empty", "", "empty"},
		{"sixteen bytes", "abcdefghijklmnop", "longer than 15"},
		{"dot", ".", "not an interface name"},
		{"dotdot", "..", "not an interface name"},
		{"slash", "a/b", "must not contain"},
		{"colon", "eth0:1", "must not contain"},
		{"space", "eth 0", "must not contain"},
		{"tab", "eth\t0", "must not contain"},
		{"nul", "eth\x000", "must not contain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckName(tc.in)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("CheckName(%q) = %v, want nil", tc.in, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("CheckName(%q) = %v, want error containing %q", tc.in, err, tc.want)
			}
		})
	}
}

func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"eth0", "", ".", "a/b", "abcdefghijklmnop"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := CheckName(s)
		// What the kernel accepts, spelled differently: a second opinion.
		ok := s != "" && len(s) <= 15 && s != "." && s != ".." &&
			!strings.ContainsFunc(s, func(r rune) bool {
				return r == '/' || r == ':' || r == 0 || r == ' ' || (r >= '\t' && r <= '\r')
			})
		if ok != (err == nil) {
			t.Fatalf("CheckName(%q) = %v, want ok=%v", s, err, ok)
		}
	})
}
