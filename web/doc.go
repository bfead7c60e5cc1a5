// Package web serves the dashboard: plain HTML, ES modules and CSS under
// dist/, embedded into the binary with go:embed (the binary never reads UI
// files from disk) and mounted beside the API at /ui/. Browsers that ask
// for / with Accept: text/html are sent there; API clients keep getting the
// version document (control does that redirect; control.Config.Mount
// takes Mount).
//
// The dashboard talks only to the public REST API (/v2.0/...), so this
// package imports nothing of ours: it owns the assets and the few routes
// that serve them. There is no front-end build step; the one library, uPlot,
// is copied from npm into dist/vendor/ by vendor.sh at a pinned version and
// committed. The browser tests (e2e_test.go, e2e/*.mjs) drive the real
// taasd in Debian's headless Chromium through playwright-core.
//
// Built with the no_ui tag, the binary leaves dist/ out and /ui/ serves a
// one-line page saying so.
//
// No goroutines: the handlers run on fiber's.
package web
