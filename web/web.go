package web

import (
	"io/fs"
	"net/http"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/filesystem"
)

// Prefix is where the dashboard is mounted.
const Prefix = "/ui"

// contentSecurityPolicy allows only the dashboard's own files and the API of
// the same origin: no inline script, no CDN, no third-party connection.
// uPlot styles its elements through the CSSOM, which style-src does not
// restrict.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Mount serves the embedded dashboard under /ui/ on app (control.Config.Mount
// takes it; control redirects browsers asking for / here). It answers GET
// and HEAD for the files, redirects /ui to /ui/, and passes anything else
// on with c.Next (a missing file as a 404 for the app's error handler).
func Mount(app *fiber.App) {
	app.Use(Prefix, handler())
}

func handler() fiber.Handler {
	files := filesystem.New(filesystem.Config{
		Root:  http.FS(assets()),
		Index: "index.html",
	})
	return func(c *fiber.Ctx) error {
		if c.Path() == Prefix {
			// The page's relative module URLs resolve against /ui/, not /.
			return c.Redirect(Prefix+"/", fiber.StatusMovedPermanently)
		}
		c.Set(fiber.HeaderContentSecurityPolicy, contentSecurityPolicy)
		c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
		c.Set(fiber.HeaderReferrerPolicy, "no-referrer")
		// The assets change with the binary; revalidating is cheap and an
		// operator never sees a stale dashboard after an upgrade.
		c.Set(fiber.HeaderCacheControl, "no-cache")
		return files(c)
	}
}

// assets are the embedded files, rooted at filesRoot.
func assets() fs.FS {
	sub, err := fs.Sub(files, filesRoot)
	if err != nil {
		// fs.Sub fails only on an invalid path, and filesRoot is a constant.
		panic(err)
	}
	return sub
}
