package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
)

// item is one resource as the API shows it: attribute name -> value.
type item = map[string]any

// reserved query keys are not filters.
var reserved = map[string]bool{"fields": true, "sort_key": true, "sort_dir": true, "limit": true, "marker": true,
	"page_reverse": true}

func queryValues(c *fiber.Ctx) url.Values {
	// A malformed escape only loses that pair, as in webob.
	q, _ := url.ParseQuery(string(c.Request().URI().QueryString()))
	return q
}

// renderList answers a list request with Neutron's conventions, applied in
// its order: sort keys are checked, then filters, sorting and pagination
// run on the rows the caller may see, and fields= trims what is left.
func renderList(c *fiber.Ctx, r *resource, items []item) error {
	q := queryValues(c)
	keys, dirs := q["sort_key"], q["sort_dir"]
	if len(keys) != len(dirs) {
		return badRequest("The number of sort_keys and sort_dirs must be same")
	}
	var bad []string
	for _, k := range keys {
		if !r.sortable[k] {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		return badRequest("%s is invalid attribute for sort_keys", pyStr(toAny(bad)))
	}
	bad = bad[:0]
	for _, d := range dirs {
		if d != "asc" && d != "desc" {
			bad = append(bad, d)
		}
	}
	if len(bad) > 0 {
		return badRequest("%s is invalid value for sort_dirs, valid value is 'asc' and 'desc'", pyStr(toAny(bad)))
	}
	limit := 0
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return &neutronError{Status: 400, Type: "BadRequest",
				Message: fmt.Sprintf("Bad limit request: Limit must be an integer 0 or greater and not '%s'.", l)}
		}
		limit = n
	}

	if err := checkBoolFilters(r, q); err != nil {
		return err
	}
	items = filter(items, r, q)
	if len(keys) > 0 {
		sort.SliceStable(items, func(i, j int) bool {
			for n, k := range keys {
				a, b := pyStr(items[i][k]), pyStr(items[j][k])
				if a != b {
					return (a < b) == (dirs[n] == "asc")
				}
			}
			return false
		})
	}
	var links []map[string]string
	if limit > 0 {
		items, links = paginate(c, q, items, limit)
	}
	if items == nil {
		items = []item{} // an empty list, never null
	}
	fields := q["fields"]
	for i := range items {
		items[i] = selectFields(items[i], fields)
	}
	// Encoded by hand: encoding/json's reflection over a thousand maps was
	// 40% of listing 1,000 flows (see BenchmarkListTapFlows1000).
	buf := make([]byte, 0, 64+len(items)*320)
	buf = append(buf, `{"`...)
	buf = append(buf, r.plural...)
	buf = append(buf, `":[`...)
	var scratch []string
	for i, it := range items {
		if i > 0 {
			buf = append(buf, ',')
		}
		var err error
		if buf, scratch, err = appendItem(buf, it, scratch); err != nil {
			return err
		}
	}
	buf = append(buf, ']')
	if len(links) > 0 {
		lb, err := json.Marshal(links)
		if err != nil {
			return err
		}
		buf = append(buf, `,"`...)
		buf = append(buf, r.plural...)
		buf = append(buf, `_links":`...)
		buf = append(buf, lb...)
	}
	buf = append(buf, '}')
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Status(fiber.StatusOK).Send(buf)
}

// appendItem appends it as a JSON object with sorted keys, as
// encoding/json would; keys is scratch space, returned for reuse.
func appendItem(buf []byte, it item, keys []string) ([]byte, []string, error) {
	keys = keys[:0]
	for k := range it {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	buf = append(buf, '{')
	for i, k := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, k)
		buf = append(buf, ':')
		switch v := it[k].(type) {
		case string:
			buf = appendJSONString(buf, v)
		case bool:
			buf = strconv.AppendBool(buf, v)
		case nil:
			buf = append(buf, "null"...)
		case int:
			buf = strconv.AppendInt(buf, int64(v), 10)
		default:
			b, err := json.Marshal(v)
			if err != nil {
				return buf, keys, fmt.Errorf("encode %s: %w", k, err)
			}
			buf = append(buf, b...)
		}
	}
	return append(buf, '}'), keys, nil
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD, as
// encoding/json does.
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			switch {
			case b == '"' || b == '\\':
				buf = append(buf, '\\', b)
			case b == '\n':
				buf = append(buf, '\\', 'n')
			case b == '\r':
				buf = append(buf, '\\', 'r')
			case b == '\t':
				buf = append(buf, '\\', 't')
			case b < 0x20:
				buf = append(buf, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			default:
				buf = append(buf, b)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, `\ufffd`...)
		} else {
			buf = append(buf, s[i:i+size]...)
		}
		i += size
	}
	return append(buf, '"')
}

// filter keeps the items matching every filter key (AND) with any of its
// values (OR). Keys that are not attributes, or whose values are lists or
// dicts, are ignored, as upstream ignores non-column filters; empty values
// are dropped.
func filter(items []item, r *resource, q url.Values) []item {
	type cond struct {
		key  string
		vals []string
	}
	var conds []cond
	for k, vs := range q {
		if reserved[k] || r.attr(k) == nil {
			continue
		}
		vs = slices.DeleteFunc(slices.Clone(vs), func(v string) bool { return v == "" })
		if len(vs) > 0 {
			conds = append(conds, cond{k, vs})
		}
	}
	if len(conds) == 0 {
		return items
	}
	out := items[:0:0]
next:
	for _, it := range items {
		for _, cd := range conds {
			if !matches(it[cd.key], cd.vals) {
				continue next
			}
		}
		out = append(out, it)
	}
	return out
}

// checkBoolFilters refuses a boolean attribute's filter value that
// convert_to_boolean would refuse, as upstream converts filters first.
func checkBoolFilters(r *resource, q url.Values) error {
	for k, vs := range q {
		if a := r.attr(k); reserved[k] || a == nil || !a.boolean {
			continue
		}
		for _, v := range vs {
			if _, ok := toBool(v); v != "" && !ok {
				return &neutronError{Status: 400, Type: "InvalidInput",
					Message: fmt.Sprintf("Invalid input for operation: '%s' cannot be converted to boolean.", v)}
			}
		}
	}
	return nil
}

func matches(v any, want []string) bool {
	switch x := v.(type) {
	case string:
		return slices.Contains(want, x)
	case bool:
		for _, w := range want {
			if b, ok := toBool(w); ok && b == x {
				return true
			}
		}
		return false
	case int:
		return slices.Contains(want, strconv.Itoa(x))
	case []any, map[string]any:
		// Lists and dicts are not columns: the filter is ignored.
		return true
	}
	// null never equals a value.
	return false
}

// paginate is Neutron's emulated pagination: the page after (or, with
// page_reverse, before) marker, and next/previous links whose href is the
// request's with marker replaced. A marker that is not in the list gives
// an empty page.
func paginate(c *fiber.Ctx, q url.Values, items []item, limit int) ([]item, []map[string]string) {
	reverse := strings.ToLower(q.Get("page_reverse")) == "true"
	start, end := 0, len(items)
	if m := q.Get("marker"); m != "" {
		i := slices.IndexFunc(items, func(it item) bool { return it["id"] == m })
		if i < 0 {
			return nil, nil
		}
		if reverse {
			end = i
		} else {
			start = i + 1
		}
	}
	if reverse {
		start = max(end-limit, start)
	} else {
		end = min(start+limit, end)
	}
	page := items[start:end]
	if len(page) == 0 {
		return page, nil
	}
	href := func(marker any, rev bool) string {
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Set("marker", pyStr(marker))
		if rev {
			v.Set("page_reverse", "True")
		} else {
			v.Del("page_reverse")
		}
		return c.BaseURL() + c.Path() + "?" + v.Encode()
	}
	var links []map[string]string
	if !(len(page) < limit && !reverse) {
		links = append(links, map[string]string{"rel": "next", "href": href(page[len(page)-1]["id"], false)})
	}
	if !(len(page) < limit && reverse) {
		links = append(links, map[string]string{"rel": "previous", "href": href(page[0]["id"], true)})
	}
	return page, links
}

// selectFields keeps only the requested attributes; unknown names are
// dropped silently.
func selectFields(it item, fields []string) item {
	var keep []string
	for _, f := range fields {
		if f != "" {
			keep = append(keep, f)
		}
	}
	if len(keep) == 0 {
		return it
	}
	out := make(item, len(keep))
	for _, f := range keep {
		if v, ok := it[f]; ok {
			out[f] = v
		}
	}
	return out
}

// renderOne answers with {"<singular>": item}, honouring fields=.
func renderOne(c *fiber.Ctx, status int, r *resource, it item) error {
	return renderJSON(c, status, map[string]any{r.singular: selectFields(it, queryValues(c)["fields"])})
}

func renderJSON(c *fiber.Ctx, status int, body any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Python's json.dumps does not escape '&' in hrefs either.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(body); err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Status(status).Send(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
