package main

import (
	"context"
	"fmt"
	"time"

	"github.com/taas-appliance/taas/control/store"
)

// checkDB is `taasd check`'s look at the database the configuration file
// names (issue 14): taasd can connect to it (a PostgreSQL server: the URL,
// the password, pg_hba.conf), and its schema is one this taasd runs (not
// migrated by a newer one). It creates nothing and changes nothing, and
// never prints the URL's password.
func checkDB(fc *fileConfig) []checkResult {
	if fc == nil {
		return nil
	}
	var cfg config
	fc.apply(&cfg, nil)
	if cfg.DB == "" {
		return nil // the default file, in the working directory of the unit, not this one's
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	info, err := store.Inspect(ctx, cfg.DB)
	return []checkResult{dbResult(info, err)}
}

// dbResult is checkDB's verdict on what store.Inspect found.
func dbResult(info store.Info, err error) checkResult {
	r := checkResult{Name: "database", Verdict: pass}
	switch {
	case err != nil:
		r.Verdict, r.Detail = fail, fmt.Sprintf("%s %s: %v", info.Engine, info.Name, err)
		r.Fix = "check db in the configuration"
		if info.Engine == "postgres" {
			r.Fix = "check db (host, database, user; the password from the URL, PGPASSFILE or ~/.pgpass), " +
				"that the server runs and that its pg_hba.conf lets this host in"
		}
	case info.Missing:
		r.Detail = fmt.Sprintf("%s %s (SQLite %s) does not exist yet: the first start creates it", info.Engine, info.Name, info.Server)
	case len(info.Applied) == 0:
		r.Detail = fmt.Sprintf("%s %s (%s): empty, the first start creates the schema (up to %s)", info.Engine, info.Name, info.Server, info.Known)
	case info.Applied[len(info.Applied)-1] > info.Known:
		r.Verdict = fail
		r.Detail = fmt.Sprintf("%s %s (%s): schema at %s, newer than this taasd's newest (%s)",
			info.Engine, info.Name, info.Server, info.Applied[len(info.Applied)-1], info.Known)
		r.Fix = "run the taasd that migrated it, or restore the backup taken before the upgrade"
	case info.Applied[len(info.Applied)-1] < info.Known:
		r.Detail = fmt.Sprintf("%s %s (%s): schema at %s, the start migrates it to %s",
			info.Engine, info.Name, info.Server, info.Applied[len(info.Applied)-1], info.Known)
	default:
		r.Detail = fmt.Sprintf("%s %s (%s): schema up to date (%s)", info.Engine, info.Name, info.Server, info.Known)
	}
	return r
}
