package broker

import "testing"

// Never-matching VLAN filters are accepted but the flow says so: DOWN when
// nothing can match, ACTIVE with a note when part of it can.
func TestVLANStatus(t *testing.T) {
	for _, tc := range []struct {
		filter string
		want   Status
	}{
		{"", Status{State: StateActive}},
		{"0,10-20", Status{State: StateActive}},
		{"4000-5000", Status{State: StateActive}},
		{"4096", Status{StateDown, "vlan_filter 4096 matches no VLAN id (0-4095)"}},
		{"10-5", Status{StateDown, "vlan_filter 10-5 matches no VLAN id (0-4095)"}},
		{"99999999999", Status{StateDown, "vlan_filter 99999999999 matches no VLAN id (0-4095)"}},
		{"4096,10-5", Status{StateDown, "vlan_filter 4096,10-5 matches no VLAN id (0-4095)"}},
		{"10-5,20,5000", Status{StateActive, "vlan_filter part 10-5,5000 matches no VLAN id (0-4095); the rest is realised"}},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			set, err := ParseVLANFilter(tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			if got := vlanStatus(tc.filter, set); got != tc.want {
				t.Errorf("vlanStatus(%q) = %+v, want %+v", tc.filter, got, tc.want)
			}
		})
	}
}
