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
	set, _, err := parseVLANFilter(s)
	return set, err
}

// parseVLANFilter is ParseVLANFilter that also returns the parts that match
// no VID (a number above 4095, a reversed range), in order: the status of a
// flow says so rather than staying silently ACTIVE (issue 9).
func parseVLANFilter(s string) (set *xdpprog.VLANSet, dead []string, err error) {
	if s == "" {
		return nil, nil, nil
	}
	set = new(xdpprog.VLANSet)
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseVID(lo)
		if err != nil {
			return nil, nil, fmt.Errorf("vlan_filter %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = parseVID(hi); err != nil {
				return nil, nil, fmt.Errorf("vlan_filter %q: %w", s, err)
			}
		}
		if a > 4095 || b < a {
			dead = append(dead, part) // matches nothing
			continue
		}
		if b > 4095 {
			b = 4095
		}
		set.AddRange(uint16(a), uint16(b))
	}
	return set, dead, nil
}

// vlanStatus is the status a flow's valid vlan_filter s gives it, set and
// dead what parseVLANFilter made of it: DOWN when no VID can ever match, like a port that is
// administratively down, since the flow copies nothing until the user
// replaces it (vlan_filter is read-only); ACTIVE with a note naming the
// parts that match nothing when others do; ACTIVE without a reason
// otherwise. ERROR stays for what the appliance failed to realise.
func vlanStatus(s string, set *xdpprog.VLANSet, dead []string) Status {
	if len(dead) == 0 {
		return Status{State: StateActive}
	}
	if set != nil && set.Len() == 0 {
		return Status{State: StateDown, Reason: fmt.Sprintf("vlan_filter %s matches no VLAN id (0-4095)", s)}
	}
	return Status{State: StateActive, Reason: fmt.Sprintf("vlan_filter part %s matches no VLAN id (0-4095); the rest is realised",
		strings.Join(dead, ","))}
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
