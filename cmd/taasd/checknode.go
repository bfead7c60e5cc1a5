package main

import (
	"context"
	"fmt"
	"time"

	"github.com/taas-appliance/taas/control"
	"github.com/taas-appliance/taas/control/store"
)

// checkNode checks this node's registration in the database the
// configuration file names, as checkDB reads it (nothing when there is
// none, or checkDB failed: it says why).
func checkNode(fc *fileConfig) []checkResult {
	if fc == nil {
		return nil
	}
	var cfg config
	fc.apply(&cfg, nil)
	if cfg.DB == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	info, err := store.Inspect(ctx, cfg.DB)
	if err != nil {
		return nil
	}
	return []checkResult{nodeResult(cfg, info, time.Now())}
}

// nodeResult is `taasd check`'s look at this node's registration (issue
// 14), from what store.Inspect read at now: the node name the
// configuration gives (or the host name), and, in a fleet, whether a live
// taasd heartbeats under it. check cannot tell this machine's running
// taasd from another's: a live row is a warning naming it.
func nodeResult(cfg config, info store.Info, now time.Time) checkResult {
	name := cfg.Node
	if name == "" {
		name = control.DefaultNodeName()
	}
	r := checkResult{Name: "node", Verdict: pass}
	if err := control.CheckNodeName(name); err != nil {
		r.Verdict, r.Detail, r.Fix = fail, err.Error(), "set node in the configuration"
		return r
	}
	fleet := isFleetDB(cfg.DB)
	timeout := 10 * time.Second
	if cfg.NodeTimeout > 0 {
		timeout = time.Duration(cfg.NodeTimeout) * time.Second
	}
	var row *store.Node
	for i := range info.Nodes {
		if info.Nodes[i].Name == name {
			row = &info.Nodes[i]
		}
	}
	seen := func(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339) }
	switch {
	case row == nil:
		r.Detail = fmt.Sprintf("%s: not registered yet, the start registers it", name)
	case !fleet:
		r.Detail = fmt.Sprintf("%s: registered, last started %s (a single appliance)", name, seen(row.StartedAt))
	case row.StoppedAt != 0:
		r.Detail = fmt.Sprintf("%s: registered, stopped at %s: the start takes it", name, seen(row.StoppedAt))
	case now.Sub(time.UnixMilli(row.LastSeen)) >= timeout:
		r.Detail = fmt.Sprintf("%s: registered, not seen since %s: the start takes it", name, seen(row.LastSeen))
	default:
		r.Verdict = warn
		r.Detail = fmt.Sprintf("%s: a live taasd uses it (version %q, API %s, started %s, seen %s)", name, row.Version,
			row.APIAddress, seen(row.StartedAt), seen(row.LastSeen))
		r.Fix = "if that is not this machine's taasd, give this one another node name: a second taasd under a live node's name does not start"
	}
	return r
}
