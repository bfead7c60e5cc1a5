//go:build no_ui

package web

import (
	"embed"
	"io/fs"
)

//go:embed noui
var noUI embed.FS

func assets() fs.FS {
	sub, err := fs.Sub(noUI, "noui")
	if err != nil {
		// fs.Sub fails only on an invalid path, and "noui" is a constant.
		panic(err)
	}
	return sub
}
