package main

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// decodeConfig decodes text into fc and reports every value of the wrong
// type, each naming its field ("auth.mode: want a string, got an integer
// (3)"), where the TOML decoder stops at the first. The file is decoded
// once into plain maps, the keys whose values do not fit their field are
// set aside, and what is left is decoded into fc: Validate then reports the
// other problems alongside, and a key set aside counts as unset. A syntax
// error is returned as err.
func decodeConfig(text string, fc *fileConfig) (toml.MetaData, []error, error) {
	var raw map[string]any
	if _, err := toml.Decode(text, &raw); err != nil {
		return toml.MetaData{}, nil, err
	}
	problems := fitTypes(reflect.TypeOf(*fc), raw, "")
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(raw); err != nil {
		// Cannot happen: the maps came from the decoder.
		return toml.MetaData{}, nil, fmt.Errorf("re-encode: %w", err)
	}
	md, err := toml.Decode(buf.String(), fc)
	return md, problems, err
}

var textUnmarshaler = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()

// fitTypes deletes from table the keys of t's fields whose values the
// field cannot hold, and returns one error per key. Keys t has no field for
// are left for Validate's "unknown key".
func fitTypes(t reflect.Type, table map[string]any, prefix string) []error {
	var errs []error
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		v, ok := table[key]
		if key == "" || key == "-" || !ok {
			continue
		}
		name := prefix + key
		if err := fitType(f.Type, v, name, &errs); err != nil {
			errs = append(errs, err)
			delete(table, key)
		}
	}
	return errs
}

// fitType checks that v fits a field of type t; nested tables are fitted
// in place (their own bad keys deleted and reported in errs).
func fitType(t reflect.Type, v any, name string, errs *[]error) error {
	bad := func(want string) error {
		return fmt.Errorf("%s: want %s, got %s", name, want, tomlKind(v))
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		if _, ok := v.(string); !ok {
			return bad("a string")
		}
		return nil
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); !ok {
			return bad("a string")
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return bad("true or false")
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, ok := v.(int64)
		if !ok {
			return bad("an integer")
		}
		if reflect.Zero(t).OverflowInt(n) {
			return fmt.Errorf("%s: %d is out of range", name, n)
		}
	case reflect.Float64:
		switch v.(type) {
		case float64, int64:
		default:
			return bad("a number")
		}
	case reflect.Struct:
		sub, ok := v.(map[string]any)
		if !ok {
			return bad("a table")
		}
		*errs = append(*errs, fitTypes(t, sub, name+".")...)
	case reflect.Slice:
		list, ok := v.([]any)
		if t.Elem().Kind() == reflect.Struct {
			if tables, isTables := v.([]map[string]any); isTables {
				for i, sub := range tables {
					*errs = append(*errs, fitTypes(t.Elem(), sub, fmt.Sprintf("%s[%d].", name, i))...)
				}
				return nil
			}
		}
		if !ok {
			return bad("an array")
		}
		for i, e := range list {
			if err := fitType(t.Elem(), e, fmt.Sprintf("%s[%d]", name, i), errs); err != nil {
				// One bad element spoils the array: it is set aside whole.
				return err
			}
		}
	default:
		// A field type this file does not use yet: the decoder judges it.
	}
	return nil
}

// tomlKind names the TOML type of a decoded value, with the value when it
// is short.
func tomlKind(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 40 {
			x = x[:40] + "..."
		}
		return fmt.Sprintf("a string (%q)", x)
	case int64:
		return fmt.Sprintf("an integer (%d)", x)
	case float64:
		return fmt.Sprintf("a float (%v)", x)
	case bool:
		return fmt.Sprintf("a boolean (%v)", x)
	case time.Time:
		return "a date-time"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// joinProblems lists the type problems, then Validate's, less what Validate
// says of a field set aside for its type (that it is required, say): one
// line a field.
func joinProblems(typeErrs []error, validate error) error {
	aside := map[string]bool{}
	errs := slices.Clone(typeErrs)
	for _, e := range typeErrs {
		name, _, _ := strings.Cut(e.Error(), ": ")
		aside[name] = true
	}
	if validate != nil {
		for _, l := range strings.Split(validate.Error(), "\n") {
			if name, _, _ := strings.Cut(l, ": "); !aside[name] {
				errs = append(errs, errors.New(l))
			}
		}
	}
	return errors.Join(errs...)
}
