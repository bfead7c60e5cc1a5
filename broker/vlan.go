package broker

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/taas-appliance/taas/xdpprog"
)

// ParseVLANFilter parses a tap flow's vlan_filter as the API stored it: a
// comma-separated list of VIDs N or ranges N-M. An empty string is null and
// gives a nil set, which matches every VID (untagged frames have VID 0). A
// number above 4095 matches nothing, and so does a reversed range M<N: the
// API accepts them (upstream's RANGE_REGEX does), so they are not errors.
// Anything else that is not the API's syntax is an error.
func ParseVLANFilter(s string) (*xdpprog.VLANSet, error) {
	if s == "" {
		return nil, nil
	}
	set := new(xdpprog.VLANSet)
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseVID(lo)
		if err != nil {
			return nil, fmt.Errorf("vlan_filter %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = parseVID(hi); err != nil {
				return nil, fmt.Errorf("vlan_filter %q: %w", s, err)
			}
		}
		if a > 4095 || b < a {
			continue // matches nothing
		}
		if b > 4095 {
			b = 4095
		}
		set.AddRange(uint16(a), uint16(b))
	}
	return set, nil
}

// parseVID parses one decimal number; values too large for any VID come back
// as 4096 so that they match nothing, however many digits they have.
func parseVID(s string) (uint32, error) {
	if s == "" {
		return 0, fmt.Errorf("empty number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a number", s)
		}
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v > 4096 {
		return 4096, nil // out of range: only digits, so the only error is size
	}
	return uint32(v), nil
}
