//go:build no_ui

package web

import "embed"

// files is the one page a no_ui build serves, under filesRoot.
//
//go:embed noui
var files embed.FS

const filesRoot = "noui"
