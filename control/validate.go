package control

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/taas-appliance/taas/internal/netdev"
	"github.com/taas-appliance/taas/pcapfilter"
)

// The validators mirror neutron-lib's: each returns the "Reason" of
// "Invalid input for <attr>. Reason: <reason>." or "" when v is valid. v is
// a value as decodeJSON produced it (string, json.Number, bool, nil,
// []any, map[string]any). The texts are upstream's.

// pyStr formats v as Python's "%s" would, since upstream's messages embed
// the rejected value that way ('None', 'True', "['a']").
func pyStr(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case string:
		return x
	case bool:
		if x {
			return "True"
		}
		return "False"
	case json.Number:
		return x.String()
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = pyRepr(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = pyRepr(k) + ": " + pyRepr(x[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v)
}

func pyRepr(v any) string {
	if s, ok := v.(string); ok {
		return "'" + s + "'"
	}
	return pyStr(v)
}

// validString is type:string with an optional maximum length in
// characters (0: none).
func validString(v any, max int) string {
	s, ok := v.(string)
	if !ok {
		return fmt.Sprintf("'%s' is not a valid string", pyStr(v))
	}
	if max > 0 && utf8.RuneCountInString(s) > max {
		return fmt.Sprintf("'%s' exceeds maximum length of %d", s, max)
	}
	return ""
}

// validNameString is neutron-lib >= 4.0's type:name_string: a string of
// printable characters from the Basic Multilingual Plane that neither
// starts nor ends with a space. Python's `$` lets one final "\n" through;
// so does this.
func validNameString(v any, max int) string {
	if r := validString(v, max); r != "" {
		return r
	}
	s := v.(string)
	if !isNameString(s) {
		return fmt.Sprintf("'%s' is not a valid string", s)
	}
	return ""
}

func isNameString(s string) bool {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return true
	}
	if !utf8.ValidString(s) || strings.HasPrefix(s, " ") || strings.HasSuffix(s, " ") {
		return false
	}
	for _, r := range s {
		if r > 0xFFFF {
			return false
		}
		// Printable: any assigned letter, mark, number, punctuation or
		// symbol, and the plain space; not controls, formats, private
		// use, surrogates, unassigned code points or other separators.
		if r != ' ' && !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S) {
			return false
		}
	}
	return true
}

// vlanFilterRe is upstream's RANGE_REGEX. Go's `$` matches only at the end,
// so unlike Python's re.match no trailing newline slips through: the data
// plane parses the stored string and must never see one.
var vlanFilterRe = regexp.MustCompile(`^([0-9]+(-[0-9]+)?)(,([0-9]+(-[0-9]+)?))*$`)

// validVLANFilter is type:regex_or_none with RANGE_REGEX, plus the DB
// length limit (1024) as a 400 instead of upstream's DB error.
func validVLANFilter(v any) string {
	if v == nil {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		return fmt.Sprintf("'%s' is not a valid input", pyStr(v))
	}
	if utf8.RuneCountInString(s) > 1024 {
		return fmt.Sprintf("'%s' exceeds maximum length of 1024", s)
	}
	if !vlanFilterRe.MatchString(s) {
		return fmt.Sprintf("'%s' is not a valid input", s)
	}
	return ""
}

// validUUID is type:uuid, which accepts what oslo's is_uuid_like accepts:
// 32 hex digits in any case, with dashes anywhere, optional braces and
// "urn:"/"uuid:" prefixes.
func validUUID(v any) string {
	s, ok := v.(string)
	if !ok || canonicalUUID(s) == "" {
		return fmt.Sprintf("'%s' is not a valid UUID", pyStr(v))
	}
	return ""
}

// canonicalUUID returns s in the canonical lowercase 8-4-4-4-12 form, or ""
// when s is not uuid-like. References are stored canonical so lookups and
// cascades match however the client spelled them.
func canonicalUUID(s string) string {
	s = strings.ReplaceAll(s, "urn:", "")
	s = strings.ReplaceAll(s, "uuid:", "")
	s = strings.Trim(s, "{}")
	s = strings.ToLower(strings.ReplaceAll(s, "-", ""))
	if len(s) != 32 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ""
		}
	}
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

// validValues is type:values.
func validValues(v any, values ...string) string {
	if s, ok := v.(string); ok {
		for _, x := range values {
			if s == x {
				return ""
			}
		}
	}
	return fmt.Sprintf("%s is not in valid_values", pyStr(v))
}

// validMAC is type:mac_address: any form net.ParseMAC reads as 6 bytes,
// except all-zero and broadcast (neutron-lib's INVALID_MAC_ADDRESSES).
func validMAC(v any) string {
	if normalMAC(v) == "" {
		return fmt.Sprintf("'%s' is not a valid MAC address", pyStr(v))
	}
	return ""
}

// normalMAC returns v as lowercase xx:xx:xx:xx:xx:xx, or "" if invalid.
func normalMAC(v any) string {
	s, ok := v.(string)
	if !ok || strings.TrimSpace(s) != s {
		return ""
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return ""
	}
	m := hw.String()
	if m == "00:00:00:00:00:00" || m == "ff:ff:ff:ff:ff:ff" {
		return ""
	}
	return m
}

// generateMAC returns a random MAC with Neutron's default base_mac prefix
// fa:16:3e.
func generateMAC() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", b[0], b[1], b[2])
}

// validBindingProfile is binding:profile: a dict (null is {}) whose only
// key is "interface", a netdev name.
func validBindingProfile(v any) string {
	if v == nil {
		return ""
	}
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Sprintf("'%s' is not a dictionary", pyStr(v))
	}
	var extra []string
	for k := range m {
		if k != "interface" {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return "Unexpected keys supplied: " + strings.Join(extra, ", ")
	}
	if iface, ok := m["interface"]; ok {
		s, isStr := iface.(string)
		if !isStr || netdev.CheckName(s) != nil {
			return fmt.Sprintf("'%s' is not a valid network interface name", pyStr(iface))
		}
	}
	return ""
}

// toBool is converters.convert_to_boolean: booleans, 0/1 and the strings
// true/false/1/0 in any case.
func toBool(v any) (bool, bool) {
	switch x := v.(type) {
	case bool:
		return x, true
	case json.Number:
		switch x.String() {
		case "0":
			return false, true
		case "1":
			return true, true
		}
	case string:
		switch strings.ToLower(x) {
		case "true", "1":
			return true, true
		case "false", "0":
			return false, true
		}
	}
	return false, false
}

// validInteger is type:integer, which takes what Python's int() takes
// without losing anything: a JSON integer, an integral float, or a string
// holding a decimal integer (blanks and a sign around the digits); the
// value stays as it was given. A boolean has its own text.
func validInteger(v any) string {
	if b, ok := v.(bool); ok {
		return fmt.Sprintf("'%s' is not an integer:boolean", pyStr(b))
	}
	if !isPyInt(v) {
		return fmt.Sprintf("'%s' is not an integer", pyStr(v))
	}
	return ""
}

func isPyInt(v any) bool {
	switch x := v.(type) {
	case json.Number:
		if _, ok := parseBigInt(x.String()); ok {
			return true
		}
		f, err := strconv.ParseFloat(x.String(), 64)
		return err == nil && f == math.Trunc(f)
	case string:
		t := strings.TrimSpace(x)
		if t != "" && (t[0] == '+' || t[0] == '-') {
			t = t[1:]
		}
		return t != "" && strings.Trim(t, "0123456789") == ""
	}
	return false
}

// mirrorDirections are the keys of a tap mirror's directions: upstream's
// IN and OUT, and BOTH of tap-mirror-both-direction.
var mirrorDirections = []string{"BOTH", "IN", "OUT"}

// validDirections is tap_mirror's directions: type:dict whose optional
// keys are the directions, each a type:integer.
func validDirections(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Sprintf("'%s' is not a dictionary", pyStr(v))
	}
	var extra []string
	for k := range m {
		if !slices.Contains(mirrorDirections, k) {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return "Unexpected keys supplied: " + strings.Join(extra, ", ")
	}
	for _, k := range mirrorDirections {
		if x, ok := m[k]; ok {
			if r := validInteger(x); r != "" {
				return r
			}
		}
	}
	return ""
}

// validIPAddress is type:ip_address: an IPv6 address (no zone), or an
// IPv4 address of four dotted decimals; leading zeros in an IPv4 address
// are refused with the address to use instead, as upstream refuses them
// (octal or decimal would be ambiguous).
func validIPAddress(v any) string {
	s, ok := v.(string)
	if !ok || strings.ContainsAny(s, " \t\n\r\v\f") {
		return fmt.Sprintf("'%s' is not a valid IP address", pyStr(v))
	}
	if strings.Contains(s, ":") {
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
			return fmt.Sprintf("'%s' is not a valid IP address", s)
		}
		return ""
	}
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return fmt.Sprintf("'%s' is not a valid IP address", s)
	}
	norm := make([]string, 4)
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil || p == "" || strings.Trim(p, "0123456789") != "" || n > 255 {
			return fmt.Sprintf("'%s' is not a valid IP address", s)
		}
		norm[i] = strconv.FormatUint(n, 10)
	}
	if n := strings.Join(norm, "."); n != s {
		return fmt.Sprintf("'%s' is not an accepted IP address, '%s' is recommended", s, n)
	}
	return ""
}

// validRemoteIP is a tap mirror's remote_ip: upstream's type:ip_address
// and, ours on top, a unicast address (issue 10's review). The appliance
// sends a tenant's copies to it out of an uplink: to a broadcast or
// multicast address they would flood the uplink's segment, to a loopback,
// unspecified or reserved one they go nowhere sane, and a link-local one
// needs a zone (the egress interface), which remote_ip cannot carry. An
// IPv4-mapped or IPv4-compatible IPv6 address is refused with its IPv4
// form, which is how the mirror's tunnel would be sent.
func validRemoteIP(v any) string {
	if r := validIPAddress(v); r != "" {
		return r
	}
	s := v.(string) // validIPAddress accepts only strings
	a, err := netip.ParseAddr(s)
	if err != nil {
		return fmt.Sprintf("'%s' is not a valid IP address", s)
	}
	if v4, kind := embeddedIPv4(a); kind != "" {
		if what := notUnicast(v4); what != "" {
			return remoteIPRefusal(s, what)
		}
		return fmt.Sprintf("'%s' is an %s IPv6 address, '%s' is recommended", s, kind, v4)
	}
	if what := notUnicast(a); what != "" {
		return remoteIPRefusal(s, what)
	}
	return ""
}

func remoteIPRefusal(s, what string) string {
	return fmt.Sprintf("'%s' is %s, and a tap mirror's remote_ip must be a unicast address", s, what)
}

// embeddedIPv4 returns the IPv4 address inside an IPv4-mapped
// (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d, deprecated by RFC 4291)
// IPv6 address, and which of the two it is; kind is "" for any other
// address, :: and ::1 included.
func embeddedIPv4(a netip.Addr) (v4 netip.Addr, kind string) {
	if a.Is4In6() {
		return a.Unmap(), "IPv4-mapped"
	}
	b := a.As16()
	if !a.Is6() || a.IsUnspecified() || a.IsLoopback() || [12]byte(b[:12]) != [12]byte{} {
		return netip.Addr{}, ""
	}
	return netip.AddrFrom4([4]byte(b[12:])), "IPv4-compatible"
}

// notUnicast says what kind of address a is when no tap mirror may send
// to it, and "" when a is a unicast address one may.
func notUnicast(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "the unspecified address"
	case a.Is4() && a.As4()[0] == 0:
		return "a 'this network' address (0.0.0.0/8)"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsMulticast():
		return "a multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the limited broadcast address"
	case a.Is4() && a.As4()[0] >= 240:
		return "a reserved address (240.0.0.0/4)"
	case a.IsLinkLocalUnicast():
		return "a link-local address, whose egress interface would be ambiguous without a zone"
	}
	return ""
}

// Snaplen's range: the shortest copy still holds an Ethernet header and
// the IP and TCP headers behind it; the longest is the largest frame the
// data plane handles.
const (
	minSnaplen = 64
	maxSnaplen = 65535
)

// validSnaplen is a tap service's or mirror's snaplen: null, or a JSON
// integer from 64 to 65535 (neutron-lib's type:range texts). Only a plain
// integer is one: a string, 1.5, 128.0 or 1e3 is refused rather than
// rounded or converted, so what is stored is what was sent.
func validSnaplen(v any) string {
	if v == nil {
		return ""
	}
	if b, ok := v.(bool); ok {
		return fmt.Sprintf("'%s' is not an integer:boolean", pyStr(b))
	}
	n, ok := v.(json.Number)
	if !ok || strings.ContainsAny(n.String(), ".eE") {
		return fmt.Sprintf("'%s' is not an integer", pyStr(v))
	}
	i, err := strconv.ParseInt(n.String(), 10, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return fmt.Sprintf("'%s' is not an integer", n)
	case i < minSnaplen:
		return fmt.Sprintf("'%s' is too small - must be at least '%d'", n, minSnaplen)
	case i > maxSnaplen:
		return fmt.Sprintf("'%s' is too large - must be no larger than '%d'", n, maxSnaplen)
	}
	return ""
}

// snaplenValue is a snaplen validSnaplen accepted, as an int (nil stays
// nil).
func snaplenValue(v any) any {
	n, ok := v.(json.Number)
	if !ok {
		return v
	}
	i, _ := strconv.Atoi(n.String())
	return i
}

// validFilter is a tap flow's filter: null, or a pcap-filter expression
// pcapfilter compiles; the reason is pcapfilter's own text (an empty or
// overlong expression, `vlan`, a host name, libpcap's syntax error).
func validFilter(v any) string {
	if v == nil {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		return fmt.Sprintf("'%s' is not a valid string", pyStr(v))
	}
	// libpcap reads a C string: it would compile what precedes a NUL and
	// the API would show the rest, which nothing applies.
	if strings.ContainsRune(s, 0) {
		return "the expression holds a NUL character"
	}
	if _, err := pcapfilter.Compile(s); err != nil {
		return err.Error()
	}
	return ""
}
