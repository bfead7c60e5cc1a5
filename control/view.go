package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
)

// Views are rendered with encoding/json: a view type's fields carry the
// attribute names as JSON tags, in sorted order, so an answer reads as
// Python's json.dumps(sort_keys=True) would write it. Filters, sorting,
// paging and fields= reach the attributes by those names (viewFields).

// listRows are a collection's rows as one caller scope sees them: typed
// for filters and sorting, and rendered, as the whole plain answer
// {"<plural>": [row, row, ...]} whose row i is whole[start[i]:end[i]].
// They are immutable once built: requests share them.
type listRows[V any] struct {
	views      []V
	whole      []byte
	start, end []int
}

// newListRows renders views with encoding/json.
func newListRows[V any](r *resource, views []V) (*listRows[V], error) {
	var buf bytes.Buffer
	buf.Grow(len(r.plural) + 8 + 320*len(views))
	buf.WriteString(`{"` + r.plural + `":[`)
	enc := newEncoder(&buf)
	lr := &listRows[V]{views: views, start: make([]int, len(views)), end: make([]int, len(views))}
	for i := range views {
		lr.start[i] = buf.Len()
		if err := enc.Encode(&views[i]); err != nil {
			return nil, fmt.Errorf("encode %s: %w", r.singular, err)
		}
		// Encode ends each value with a newline: the separator's place.
		lr.end[i] = buf.Len() - 1
		buf.Bytes()[lr.end[i]] = ','
	}
	if len(views) > 0 {
		buf.Truncate(buf.Len() - 1)
	}
	buf.WriteString("]}")
	lr.whole = buf.Bytes()
	return lr, nil
}

func (lr *listRows[V]) row(i int) []byte { return lr.whole[lr.start[i]:lr.end[i]] }

// newEncoder is the API's JSON encoder: like Python's json.dumps, it
// leaves '&', '<' and '>' (in hrefs, names) unescaped.
func newEncoder(buf *bytes.Buffer) *json.Encoder {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	return enc
}

var viewFieldsCache sync.Map // reflect.Type -> map[string]int

// viewFields maps the attribute names of view type t to field indexes.
func viewFields(t reflect.Type) map[string]int {
	if f, ok := viewFieldsCache.Load(t); ok {
		return f.(map[string]int)
	}
	m := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("json")
		if name, _, _ := strings.Cut(tag, ","); name != "" && name != "-" {
			m[name] = i
		}
	}
	viewFieldsCache.Store(t, m)
	return m
}

// compound stands for a list or dict attribute, which filters ignore.
type compound struct{}

// attrOf returns attribute name of view v as filters and sorting see it:
// a string, bool or int, nil for null or an attribute the view lacks,
// compound for a list or dict.
func attrOf(v any, name string) any {
	rv := reflect.ValueOf(v)
	i, ok := viewFields(rv.Type())[name]
	if !ok {
		return nil
	}
	return plainValue(rv.Field(i))
}

func plainValue(f reflect.Value) any {
	switch f.Kind() {
	case reflect.Pointer, reflect.Interface:
		if f.IsNil() {
			return nil
		}
		return plainValue(f.Elem())
	case reflect.String:
		return f.String()
	case reflect.Bool:
		return f.Bool()
	case reflect.Int, reflect.Int64, reflect.Int32:
		return int(f.Int())
	case reflect.Map, reflect.Slice, reflect.Struct:
		return compound{}
	}
	return f.Interface()
}

// selectFields returns the view's requested attributes as a map (encoded
// with sorted keys, as the view's own fields are); unknown names are
// dropped silently. ok is false when fields names none: the whole view.
func selectFields(v any, fields []string) (map[string]any, bool) {
	rv := reflect.ValueOf(v)
	idx := viewFields(rv.Type())
	var out map[string]any
	for _, f := range fields {
		if f == "" {
			continue
		}
		if out == nil {
			out = map[string]any{}
		}
		if i, ok := idx[f]; ok {
			out[f] = rv.Field(i).Interface()
		}
	}
	return out, out != nil
}
