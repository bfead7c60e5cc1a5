//go:build !no_ui

package web

import "embed"

// files are the dashboard's assets, under filesRoot.
//
//go:embed all:dist
var files embed.FS

const filesRoot = "dist"
