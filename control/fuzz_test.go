package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// The seed corpora are in testdata/fuzz/<Target>; `make fuzz` explores.

// vlanFilterOK is an independent reading of RANGE_REGEX: comma-separated
// items, each digits or digits-digits.
func vlanFilterOK(s string) bool {
	if s == "" {
		return false
	}
	for _, item := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(item, "-")
		if !allDigits(lo) || isRange && !allDigits(hi) {
			return false
		}
	}
	return true
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func FuzzVLANFilter(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		got := validVLANFilter(s) == ""
		want := vlanFilterOK(s) && utf8.RuneCountInString(s) <= 1024
		if got != want {
			t.Errorf("validVLANFilter(%q) valid = %v, want %v", s, got, want)
		}
	})
}

// FuzzSnaplen: validSnaplen accepts exactly the JSON integers from 64 to
// 65535, by an independent reading (digits with an optional minus sign),
// and snaplenValue gives their value.
func FuzzSnaplen(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		v, err := decodeJSON([]byte(s))
		if err != nil {
			return
		}
		s = strings.Trim(s, " \t\n\r") // JSON's blanks
		digits := strings.TrimPrefix(s, "-")
		n, convErr := strconv.Atoi(s)
		want := allDigits(digits) && convErr == nil && n >= 64 && n <= 65535
		if got := validSnaplen(v) == ""; got != want && v != nil {
			t.Fatalf("validSnaplen(%s) valid = %v, want %v", s, got, want)
		}
		if want && snaplenValue(v) != n {
			t.Fatalf("snaplenValue(%s) = %v, want %d", s, snaplenValue(v), n)
		}
	})
}

func FuzzUUID(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		c := canonicalUUID(s)
		if (validUUID(s) == "") != (c != "") {
			t.Fatalf("validUUID(%q) and canonicalUUID = %q disagree", s, c)
		}
		if c == "" {
			return
		}
		if len(c) != 36 || canonicalUUID(c) != c || strings.ToLower(c) != c {
			t.Errorf("canonicalUUID(%q) = %q, not a fixed point in canonical form", s, c)
		}
		if strings.ReplaceAll(c, "-", "") != strings.ToLower(strings.ReplaceAll(strings.Trim(
			strings.ReplaceAll(strings.ReplaceAll(s, "urn:", ""), "uuid:", ""), "{}"), "-", "")) {
			t.Errorf("canonicalUUID(%q) = %q lost or invented digits", s, c)
		}
	})
}

func FuzzNameString(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		if validNameString(s, 255) != "" {
			return
		}
		body := strings.TrimSuffix(s, "\n")
		if strings.HasPrefix(body, " ") || strings.HasSuffix(body, " ") || !utf8.ValidString(s) ||
			utf8.RuneCountInString(s) > 255 {
			t.Errorf("name %q accepted", s)
		}
		for _, r := range body {
			if r < 0x20 || r == 0x7f || r == '\t' || r > 0xFFFF {
				t.Errorf("name %q with %U accepted", s, r)
			}
		}
	})
}

// FuzzDecodeBody feeds any bytes to the body processing of every resource,
// for create and update, as admin and as a member: it must never panic, and
// either fail with a 400 NeutronError or produce items whose project is
// set consistently and whose values passed their validators.
func FuzzDecodeBody(f *testing.F) {
	ids := []Identity{newIdentity("default", []string{"admin"}), newIdentity("p1", []string{"member"})}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, r := range []*resource{tapServiceRes, tapFlowRes, portRes, networkRes, tapMirrorRes} {
			for _, create := range []bool{true, false} {
				for _, id := range ids {
					items, _, err := r.decodeBody(body, create, id)
					if err != nil {
						var ne *neutronError
						if !errors.As(err, &ne) || ne.Status != 400 || ne.Message == "" {
							t.Fatalf("%s decodeBody(%q) error %v, want a 400 NeutronError", r.singular, body, err)
						}
						continue
					}
					for _, m := range items {
						if create && (m["project_id"] == nil || pyStr(m["project_id"]) != pyStr(m["tenant_id"])) {
							t.Fatalf("%s decodeBody(%q): project_id %v tenant_id %v", r.singular, body, m["project_id"], m["tenant_id"])
						}
						if !id.Admin && create && m["project_id"] != id.ProjectID {
							t.Fatalf("member created in project %v", m["project_id"])
						}
						for k, v := range m {
							a := r.attr(k)
							if a == nil {
								t.Fatalf("%s: unknown attribute %q accepted", r.singular, k)
							}
							if a.ordered {
								// Kept as sent: its value is the JSON.
								if v, err = decodeJSON(v.(json.RawMessage)); err != nil {
									t.Fatalf("%s: %s kept as %s, not JSON: %v", r.singular, k, m[k], err)
								}
							}
							if a.convert != nil {
								// Converted: snaplen, an int in range or nil.
								if n, ok := v.(int); v != nil && (!ok || n < minSnaplen || n > maxSnaplen) {
									t.Fatalf("%s: %s = %#v accepted", r.singular, k, v)
								}
								continue
							}
							if a.check != nil && !a.boolean && a.check(v) != "" {
								t.Fatalf("%s: %s = %v accepted", r.singular, k, v)
							}
						}
					}
				}
			}
		}
	})
}

// FuzzDecodeTyped: whatever body processing accepts decodes into the
// resource's body struct, for create and update (a failure would be a
// 500), and its project is the one processing settled on.
func FuzzDecodeTyped(f *testing.F) {
	ids := []Identity{newIdentity("default", []string{"admin"}), newIdentity("p1", []string{"member"})}
	check := func(t *testing.T, r *resource, body []byte, into func(map[string]any) (string, error)) {
		for _, create := range []bool{true, false} {
			for _, id := range ids {
				items, _, err := r.decodeBody(body, create, id)
				if err != nil {
					continue
				}
				for _, m := range items {
					project, err := into(m)
					if err != nil {
						t.Fatalf("%s body %q: decodeInto: %v", r.singular, body, err)
					}
					if create && project != m["project_id"] {
						t.Fatalf("%s body %q: project %q, processed %v", r.singular, body, project, m["project_id"])
					}
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		check(t, tapServiceRes, body, typedProject[serviceBody](tapServiceRes))
		check(t, tapFlowRes, body, typedProject[flowBody](tapFlowRes))
		check(t, portRes, body, typedProject[portBody](portRes))
		check(t, networkRes, body, typedProject[networkBody](networkRes))
		check(t, tapMirrorRes, body, typedProject[mirrorBody](tapMirrorRes))
	})
}

func typedProject[B any](r *resource) func(map[string]any) (string, error) {
	return func(m map[string]any) (string, error) {
		b, err := decodeInto[B](r, m)
		return bodyProject(b), err
	}
}

// FuzzQuotaBody: decodeQuotaBody never panics, fails only with a 400
// NeutronError, and what it accepts are known resources within
// [-1, 2^31-1].
func FuzzQuotaBody(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		l, _, err := decodeQuotaBody(raw)
		if err != nil {
			var ne *neutronError
			if !errors.As(err, &ne) || ne.Status != 400 {
				t.Fatalf("decodeQuotaBody(%q) = %v, want a 400 NeutronError", raw, err)
			}
			return
		}
		for r, n := range l {
			if !isQuotaResource(r) || n < -1 || n > maxQuota {
				t.Errorf("decodeQuotaBody(%q) accepted %s = %d", raw, r, n)
			}
		}
	})
}

// FuzzUnquote checks unquote against net/url where that accepts the
// escapes, and otherwise that only well-formed escapes change.
func FuzzUnquote(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		got := unquote(s)
		if want, err := url.PathUnescape(s); err == nil && got != want {
			t.Fatalf("unquote(%q) = %q, want %q as url.PathUnescape", s, got, want)
		}
		if len(got) > len(s) {
			t.Fatalf("unquote(%q) = %q, longer", s, got)
		}
		// Split at the well-formed escapes, the rest must come out as is.
		var want strings.Builder
		for i := 0; i < len(s); i++ {
			if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
				b, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
				want.WriteByte(byte(b))
				i += 2
				continue
			}
			want.WriteByte(s[i])
		}
		if got != want.String() {
			t.Errorf("unquote(%q) = %q, want %q", s, got, want.String())
		}
	})
}

func isHex(c byte) bool { return strings.IndexByte("0123456789abcdefABCDEF", c) >= 0 }

// FuzzIPAddress checks validIPAddress against net/netip: it accepts an
// address exactly when netip reads it without a zone and, for IPv4, the
// text is already in its canonical dotted form. validRemoteIP (a tap
// mirror's remote_ip) accepts, of those, exactly netip's global unicast
// addresses outside 0/8, 240/4 and IPv6's ::/96 and ::ffff:0:0/96.
func FuzzIPAddress(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		got := validIPAddress(s) == ""
		a, err := netip.ParseAddr(s)
		want := err == nil && a.Zone() == "" && (strings.Contains(s, ":") || a.Is4() && a.String() == s)
		if got != want {
			t.Errorf("validIPAddress(%q) accepted = %v, want %v (%q)", s, got, want, validIPAddress(s))
		}
		b := a.As16()
		unicast := want && a.IsGlobalUnicast() && !a.Is4In6() && !(a.Is4() && (b[12] == 0 || b[12] >= 240)) &&
			!(a.Is6() && [12]byte(b[:12]) == [12]byte{})
		if got := validRemoteIP(s) == ""; got != unicast {
			t.Errorf("validRemoteIP(%q) accepted = %v, want %v (%q)", s, got, unicast, validRemoteIP(s))
		}
	})
}

// FuzzMirrorTunnel: validDirections accepts a direction's id given as a
// string exactly when it is a decimal integer with blanks and one sign
// around it, as Python's int() reads it.
func FuzzMirrorTunnel(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		got := validDirections(map[string]any{"IN": s}) == ""
		// Base 10 takes no underscores, which Python's int() would: those
		// are refused here.
		_, want := new(big.Int).SetString(strings.TrimSpace(s), 10)
		if got != want {
			t.Errorf("directions {\"IN\": %q} accepted = %v, want %v", s, got, want)
		}
	})
}

// FuzzDirectionsOrder: a tap_mirror body the API accepts keeps its
// directions as sent: the body struct's keys in the order they first
// appear in the request, each with its (last) value as written, and they
// marshal back to that object.
func FuzzDirectionsOrder(f *testing.F) {
	admin := newIdentity("default", []string{"admin"})
	f.Fuzz(func(t *testing.T, dirs []byte) {
		body := []byte(`{"tap_mirror": {"port_id": "6a1c2c7e-4f1e-4d8a-9c55-3b1f0a7d2e10", "remote_ip": "192.0.2.1", ` +
			`"mirror_type": "gre", "directions": ` + string(dirs) + `}}`)
		items, _, err := tapMirrorRes.decodeBody(body, true, admin)
		if err != nil {
			return
		}
		b, err := decodeInto[mirrorBody](tapMirrorRes, items[0])
		if err != nil {
			t.Fatalf("directions %s: decodeInto: %v", dirs, err)
		}
		// The keys in order of first appearance, by a token walk.
		dec := json.NewDecoder(bytes.NewReader(dirs))
		dec.UseNumber()
		var keys []string
		if _, err := dec.Token(); err != nil {
			t.Fatalf("directions %s accepted, not an object: %v", dirs, err)
		}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			if k := tok.(string); !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		for _, d := range b.Directions {
			got = append(got, d.Direction)
		}
		if !slices.Equal(got, keys) {
			t.Errorf("directions %s: keys %v, want %v", dirs, got, keys)
		}
		out, err := b.Directions.MarshalJSON()
		if err != nil {
			t.Fatalf("directions %s: marshal: %v", dirs, err)
		}
		want, err := decodeJSON(dirs)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := decodeJSON(out); err != nil || !reflect.DeepEqual(back, want) {
			t.Errorf("directions %s marshal to %s: %v, want %v", dirs, out, back, want)
		}
	})
}

// FuzzHideNames: hideNames never leaves a hidden name as a word of its
// output, and changes nothing else: putting the names back where the mask
// is gives the input.
func FuzzHideNames(f *testing.F) {
	f.Fuzz(func(t *testing.T, text, name string) {
		if name == "" || strings.Contains(name, "\x00") || strings.Contains(text, "\x00") {
			return
		}
		got := hideNames(text, []string{name}, "\x00")
		if back := strings.ReplaceAll(got, "\x00", name); back != text {
			t.Fatalf("hideNames(%q, %q) = %q: not the input with names masked", text, name, got)
		}
		if hideNames(got, []string{name}, "\x00") != got {
			t.Errorf("hideNames(%q, %q) = %q still holds the name as a word", text, name, got)
		}
	})
}
