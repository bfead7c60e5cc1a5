package repocheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// apiDoc is the API reference the README points to (issue 13).
var apiDoc = filepath.Join(root, "docs", "api.md")

// viewSections maps each JSON view type of control/ to the heading of
// docs/api.md that documents its attributes. A new view type must be added
// here, and a renamed one fails TestAPIDocViews until it is.
var viewSections = map[string]string{
	"networkView": "## Networks",
	"portView":    "## Ports",
	"serviceView": "## Tap services",
	"flowView":    "## Tap flows",
	"mirrorView":  "## Tap mirrors",
}

// parseControl parses the non-test Go files of control/.
func parseControl(t *testing.T) []*ast.File {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, "control", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// jsonTags returns the attribute names (JSON tags) of every struct type of
// files named in names, by type name.
func jsonTags(files []*ast.File, names map[string]string) map[string][]string {
	out := map[string][]string{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if _, want := names[ts.Name.Name]; !ok || !want {
				return true
			}
			tags := []string{}
			for _, fld := range st.Fields.List {
				if fld.Tag == nil {
					continue
				}
				raw, err := strconv.Unquote(fld.Tag.Value)
				if err != nil {
					continue
				}
				name, _, _ := strings.Cut(reflect.StructTag(raw).Get("json"), ",")
				if name != "" && name != "-" {
					tags = append(tags, name)
				}
			}
			out[ts.Name.Name] = tags
			return false
		})
	}
	return out
}

// section returns the text of doc from heading to the next heading of the
// same level, "" when doc lacks it.
func section(doc, heading string) string {
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		return ""
	}
	rest := doc[i+1+len(heading):]
	if j := strings.Index(rest, "\n## "); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// TestAPIDocViews checks that every attribute the API shows, the JSON tags
// of control's view types, is documented in its resource's section of
// docs/api.md, so that the reference cannot fall behind the code.
func TestAPIDocViews(t *testing.T) {
	b, err := os.ReadFile(apiDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	views := jsonTags(parseControl(t), viewSections)
	for view, heading := range viewSections {
		tags, ok := views[view]
		if !ok {
			t.Errorf("control has no struct type %s: update viewSections", view)
			continue
		}
		if len(tags) == 0 {
			t.Errorf("control's %s has no json tags", view)
		}
		sec := section(doc, heading)
		if sec == "" {
			t.Errorf("docs/api.md has no section %q for %s", heading, view)
			continue
		}
		var missing []string
		for _, tag := range tags {
			if !strings.Contains(sec, "`"+tag+"`") {
				missing = append(missing, tag)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("docs/api.md section %q does not document %s's attributes %q", heading, view, missing)
		}
	}
}

// TestAPIDocExtensions checks that every extension alias control
// advertises (meta.go's extensions) is in docs/api.md's extension table.
func TestAPIDocExtensions(t *testing.T) {
	b, err := os.ReadFile(apiDoc)
	if err != nil {
		t.Fatal(err)
	}
	sec := section(string(b), "## Extensions")
	if sec == "" {
		t.Fatal("docs/api.md has no section \"## Extensions\"")
	}
	var aliases []string
	for _, f := range parseControl(t) {
		ast.Inspect(f, func(n ast.Node) bool {
			kv, ok := n.(*ast.KeyValueExpr)
			if !ok {
				return true
			}
			if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Alias" {
				if lit, ok := kv.Value.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil {
						aliases = append(aliases, s)
					}
				}
			}
			return true
		})
	}
	if len(aliases) < 10 {
		t.Fatalf("found %d extension aliases in control (%q): the parser no longer finds them", len(aliases), aliases)
	}
	for _, a := range aliases {
		if !strings.Contains(sec, "| `"+a+"` |") {
			t.Errorf("extension %s is not in docs/api.md's extension table", a)
		}
	}
}

// TestREADMEPointsToAPIDoc checks the README's link to the reference.
func TestREADMEPointsToAPIDoc(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(section(string(b), "## API"), "(docs/api.md)") {
		t.Error("README.md's API section does not link docs/api.md")
	}
}
