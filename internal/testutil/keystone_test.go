package testutil

import (
	"fmt"
	"testing"
)

// recorder is a testing.TB that records Skipf and Fatalf instead of ending
// the test, and keeps what Errorf reports.
type recorder struct {
	testing.TB
	skipped, failed string
	errs            []string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestSkipUnlessRequired: a missing dependency skips on a developer's
// machine and fails in CI (review of issue 13: keystone tests skipped
// silently there).
func TestSkipUnlessRequired(t *testing.T) {
	for _, tc := range []struct {
		ci, require string
		fail        bool
	}{{"", "", false}, {"true", "", true}, {"", "1", true}, {"false", "0", false}} {
		t.Run(fmt.Sprintf("CI=%q TAAS_REQUIRE_KEYSTONE=%q", tc.ci, tc.require), func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			t.Setenv("TAAS_REQUIRE_KEYSTONE", tc.require)
			r := &recorder{TB: t}
			SkipUnlessRequired(r, "keystone not installed")
			if (r.failed != "") != tc.fail || (r.skipped != "") == tc.fail {
				t.Errorf("SkipUnlessRequired: failed %q, skipped %q; want a failure %v", r.failed, r.skipped, tc.fail)
			}
		})
	}
}
