//go:build !no_ui

package web

import (
	"embed"
	"io/fs"
)

//go:embed all:dist
var dist embed.FS

func assets() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		// fs.Sub fails only on an invalid path, and "dist" is a constant.
		panic(err)
	}
	return sub
}
