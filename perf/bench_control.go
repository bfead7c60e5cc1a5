package perf

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ControlRow is one control-plane measurement: an operation driven by
// Clients concurrent HTTP clients.
type ControlRow struct {
	Op        string  `json:"op"`
	Clients   int     `json:"clients"`
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
}

// startTaasd starts bin with args plus --listen on a free loopback port and
// --db in dir, logs into dir/taasd.log, and waits for its API.
func startTaasd(ctx context.Context, bin, dir string, args ...string) (*exec.Cmd, *os.File, API, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, API{}, err
	}
	addr := ln.Addr().String()
	ln.Close() // taasd binds it next; nothing else on this machine races for it
	log, err := os.Create(filepath.Join(dir, "taasd.log"))
	if err != nil {
		return nil, nil, API{}, err
	}
	cmd := exec.Command(bin, append([]string{"--listen", addr, "--db", filepath.Join(dir, "taas.db")}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, nil, API{}, fmt.Errorf("start taasd: %w", err)
	}
	api := API{Base: "http://" + addr, Client: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64},
	}}
	if err := api.WaitUp(ctx, 15*time.Second); err != nil {
		stopProcess(cmd)
		log.Close()
		return nil, nil, API{}, err
	}
	return cmd, log, api, nil
}

// RunControlBench starts an API-only taasd (bin) in dir and measures, with
// clients concurrent clients: creating 1,000 tap flows (100 source ports ×
// 10 tap services), then listing all of them for d.
func RunControlBench(ctx context.Context, bin, dir string, clients int, d time.Duration) ([]ControlRow, error) {
	cmd, log, api, err := startTaasd(ctx, bin, dir, "--dataplane", "none", "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	defer log.Close()
	defer stopProcess(cmd)

	var svcs, srcs []string
	for i := range 10 {
		port, err := api.CreatePort(ctx, fmt.Sprintf("mon%d", i), "", "")
		if err != nil {
			return nil, err
		}
		svc, err := api.CreateService(ctx, fmt.Sprintf("svc%d", i), port)
		if err != nil {
			return nil, err
		}
		svcs = append(svcs, svc)
	}
	for i := range 100 {
		port, err := api.CreatePort(ctx, fmt.Sprintf("src%d", i), "", "")
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, port)
	}
	var next atomic.Int64
	create := drive(clients, 0, func() error {
		i := int(next.Add(1) - 1)
		if i >= len(srcs)*len(svcs) {
			return errDone
		}
		_, err := api.CreateFlow(ctx, fmt.Sprintf("f%d", i), srcs[i%len(srcs)], svcs[i/len(srcs)], "BOTH", "")
		return err
	})
	create.Op = "create tap flow"
	list := drive(clients, d, func() error {
		var out struct {
			TapFlows []struct{ ID string } `json:"tap_flows"`
		}
		if err := api.Do(ctx, http.MethodGet, "/v2.0/taas/tap_flows", nil, &out); err != nil {
			return err
		}
		if len(out.TapFlows) != len(srcs)*len(svcs) {
			return fmt.Errorf("listed %d tap flows, want %d", len(out.TapFlows), len(srcs)*len(svcs))
		}
		return nil
	})
	list.Op = "list 1,000 tap flows"
	return []ControlRow{create, list}, nil
}

var errDone = fmt.Errorf("done")

// drive runs op from clients goroutines until it returns errDone or d has
// passed (d 0: no time limit), and times every call.
func drive(clients int, d time.Duration, op func() error) ControlRow {
	var (
		mu    sync.Mutex
		lat   []time.Duration
		errs  int
		wg    sync.WaitGroup
		start = time.Now()
	)
	deadline := start.Add(d)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d == 0 || time.Now().Before(deadline) {
				t := time.Now()
				err := op()
				if err == errDone {
					return
				}
				el := time.Since(t)
				mu.Lock()
				lat = append(lat, el)
				if err != nil {
					errs++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	slices.Sort(lat)
	r := ControlRow{Clients: clients, Requests: len(lat), Errors: errs, Seconds: secs}
	if len(lat) > 0 {
		r.PerSecond = float64(len(lat)) / secs
		r.P50ms = float64(lat[len(lat)/2].Microseconds()) / 1e3
		r.P99ms = float64(lat[len(lat)*99/100].Microseconds()) / 1e3
	}
	return r
}
