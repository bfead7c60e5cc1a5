package control

import (
	"bytes"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// item is a resource the API shows without a view type (quotas):
// attribute name -> value.
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
// run on the rows the caller may see, and fields= trims what is left. A
// request without a query string gets the rendered answer as it is.
func renderList[V any](c *fiber.Ctx, r *resource, rows *listRows[V]) error {
	if len(c.Request().URI().QueryString()) == 0 && rows.whole != nil {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Status(fiber.StatusOK).Send(rows.whole)
	}
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
	// The rows are shared: work on their indexes.
	idx := filter(rows.views, r, q)
	if len(keys) > 0 {
		sort.SliceStable(idx, func(i, j int) bool {
			a, b := rows.views[idx[i]], rows.views[idx[j]]
			for n, k := range keys {
				x, y := pyStr(attrOf(a, k)), pyStr(attrOf(b, k))
				if x != y {
					return (x < y) == (dirs[n] == "asc")
				}
			}
			return false
		})
	}
	var links []map[string]string
	if limit > 0 {
		idx, links = paginate(c, q, rows.views, idx, limit)
	}
	fields := q["fields"]
	var buf bytes.Buffer
	buf.WriteString(`{"` + r.plural + `":[`)
	enc := newEncoder(&buf)
	for n, i := range idx {
		if n > 0 {
			buf.WriteByte(',')
		}
		sel, ok := selectFields(rows.views[i], fields)
		if !ok {
			buf.Write(rows.row(i))
			continue
		}
		if err := enc.Encode(sel); err != nil {
			return fmt.Errorf("encode %s: %w", r.singular, err)
		}
		buf.Truncate(buf.Len() - 1) // Encode's newline
	}
	buf.WriteByte(']')
	if len(links) > 0 {
		buf.WriteString(`,"` + r.plural + `_links":`)
		if err := enc.Encode(links); err != nil {
			return fmt.Errorf("encode links: %w", err)
		}
		buf.Truncate(buf.Len() - 1)
	}
	buf.WriteByte('}')
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Status(fiber.StatusOK).Send(buf.Bytes())
}

// filter returns the indexes of the views matching every filter key (AND)
// with any of its values (OR). Keys that are not attributes, or whose
// values are lists or dicts, are ignored, as upstream ignores non-column
// filters; empty values are dropped.
func filter[V any](views []V, r *resource, q url.Values) []int {
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
	out := make([]int, 0, len(views))
next:
	for i := range views {
		for _, cd := range conds {
			if !matches(attrOf(views[i], cd.key), cd.vals) {
				continue next
			}
		}
		out = append(out, i)
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
	case compound:
		// Lists and dicts are not columns: the filter is ignored.
		return true
	}
	// null never equals a value.
	return false
}

// paginate is Neutron's emulated pagination over the indexes idx of
// views: the page after (or, with page_reverse, before) marker, and
// next/previous links whose href is the request's with marker replaced. A
// marker that is not in the list gives an empty page.
func paginate[V any](c *fiber.Ctx, q url.Values, views []V, idx []int, limit int) ([]int, []map[string]string) {
	reverse := strings.ToLower(q.Get("page_reverse")) == "true"
	id := func(i int) any { return attrOf(views[i], "id") }
	start, end := 0, len(idx)
	if m := q.Get("marker"); m != "" {
		i := slices.IndexFunc(idx, func(i int) bool { return id(i) == m })
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
	page := idx[start:end]
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
		links = append(links, map[string]string{"rel": "next", "href": href(id(page[len(page)-1]), false)})
	}
	if !(len(page) < limit && reverse) {
		links = append(links, map[string]string{"rel": "previous", "href": href(id(page[0]), true)})
	}
	return page, links
}

// renderOne answers with {"<singular>": view}, honouring fields=.
func renderOne(c *fiber.Ctx, status int, r *resource, v any) error {
	if sel, ok := selectFields(v, queryValues(c)["fields"]); ok {
		v = sel
	}
	return renderJSON(c, status, map[string]any{r.singular: v})
}

func renderJSON(c *fiber.Ctx, status int, body any) error {
	var buf bytes.Buffer
	if err := newEncoder(&buf).Encode(body); err != nil {
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
