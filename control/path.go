package control

import (
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
)

// Paths are matched decoded, as upstream matches them: the WSGI server in
// front of Neutron percent-decodes PATH_INFO before webob and the router
// see it. So PUT /v2.0/quotas/a%20b sets project "a b" (it set "a%20b",
// issue 9), GET /v2.0/ports/ with a UUID spelled %2D for '-' finds the
// port, and %2F is a '/' that separates segments, so that the route may
// not match (404), as upstream.

// errMalformed is webob's HTTPBadRequest with its default text.
var errMalformed = badRequest("The server could not comply with the request since it is either malformed or otherwise incorrect.")

// unescapePath decodes the request's path before anything reads it: the
// .json suffix, authentication (the events stream's path) and routing. A
// path that decodes to bytes that are not UTF-8 is refused with 400, as
// Neutron's pecan router refuses it.
//
// It must come right after the middleware that precedes every route:
// fiber keeps routes in trees by the path's first three bytes, which
// decoding may change ("/%76" is "/v"), and goes on matching in the new
// tree from the same index, which is the same route only while every
// route before it is in every tree.
func unescapePath(c *fiber.Ctx) error {
	raw := c.Path()
	p := unquote(raw)
	if p == raw {
		return c.Next()
	}
	if !utf8.ValidString(p) {
		return errMalformed
	}
	c.Path(p)
	return c.Next()
}

// unquote decodes every "%XX" of s (X a hex digit, either case) to its
// byte and leaves any other '%', and '+', as they are: Python's
// urllib.parse.unquote, which the WSGI server applies to the path.
func unquote(s string) string {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				b = append(b, hi<<4|lo)
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
