package perf

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// API is a minimal client of taasd's REST API, for the benchmarks: create,
// delete, list and poll, with the Neutron body wrapping.
type API struct {
	Base   string // http://127.0.0.1:port
	Client *http.Client
}

// DefaultNetworkID is the shared network taasd creates on its first start.
const DefaultNetworkID = "6a1c2c7e-4f1e-4d8a-9c55-3b1f0a7d2e10"

// Do sends method path with body (nil for none) and decodes a 2xx answer
// into out (nil to discard). Any other status is an error with the body.
func (a API) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.Base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.Client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// CreatePort creates a port bound to iface ("" for none) with mac ("" to
// let taasd choose) and returns its id.
func (a API) CreatePort(ctx context.Context, name, mac, iface string) (string, error) {
	p := map[string]any{"name": name, "network_id": DefaultNetworkID}
	if mac != "" {
		p["mac_address"] = mac
	}
	if iface != "" {
		p["binding:profile"] = map[string]string{"interface": iface}
	}
	var out struct {
		Port struct{ ID string } `json:"port"`
	}
	err := a.Do(ctx, http.MethodPost, "/v2.0/ports", map[string]any{"port": p}, &out)
	return out.Port.ID, err
}

// CreateService creates a tap service on portID and returns its id.
func (a API) CreateService(ctx context.Context, name, portID string) (string, error) {
	var out struct {
		TapService struct{ ID string } `json:"tap_service"`
	}
	err := a.Do(ctx, http.MethodPost, "/v2.0/taas/tap_services",
		map[string]any{"tap_service": map[string]any{"name": name, "port_id": portID}}, &out)
	return out.TapService.ID, err
}

// CreateFlow creates a tap flow, with filter (a pcap-filter expression,
// extension taas-flow-filter) when not empty, and returns its id.
func (a API) CreateFlow(ctx context.Context, name, portID, serviceID, direction, filter string) (string, error) {
	var out struct {
		TapFlow struct{ ID string } `json:"tap_flow"`
	}
	f := map[string]any{"name": name, "source_port": portID, "tap_service_id": serviceID, "direction": direction}
	if filter != "" {
		f["filter"] = filter
	}
	err := a.Do(ctx, http.MethodPost, "/v2.0/taas/tap_flows", map[string]any{"tap_flow": f}, &out)
	return out.TapFlow.ID, err
}

// CreateMirror creates a tap mirror of portID to remote in a mirror_type
// tunnel, OUT frames only with tunnel id id, and returns its id.
func (a API) CreateMirror(ctx context.Context, name, portID, mirrorType, remote string, id uint32) (string, error) {
	var out struct {
		TapMirror struct{ ID string } `json:"tap_mirror"`
	}
	err := a.Do(ctx, http.MethodPost, "/v2.0/taas/tap_mirrors", map[string]any{"tap_mirror": map[string]any{
		"name": name, "port_id": portID, "mirror_type": mirrorType, "remote_ip": remote,
		"directions": map[string]uint32{"OUT": id}}}, &out)
	return out.TapMirror.ID, err
}

// DeleteFlow deletes a tap flow.
func (a API) DeleteFlow(ctx context.Context, id string) error {
	return a.Do(ctx, http.MethodDelete, "/v2.0/taas/tap_flows/"+id, nil, nil)
}

// WaitUp waits until the API answers, for at most d.
func (a API) WaitUp(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := a.Do(ctx, http.MethodGet, "/v2.0/networks", nil, nil)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("taasd API not up after %v: %w", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitFlowsActive waits until every tap flow is ACTIVE, for at most d.
func (a API) WaitFlowsActive(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		var out struct {
			TapFlows []struct {
				ID, Status string
			} `json:"tap_flows"`
		}
		err := a.Do(ctx, http.MethodGet, "/v2.0/taas/tap_flows", nil, &out)
		if err == nil {
			active := 0
			for _, f := range out.TapFlows {
				if f.Status == "ACTIVE" {
					active++
				}
			}
			if len(out.TapFlows) > 0 && active == len(out.TapFlows) {
				return nil
			}
			err = fmt.Errorf("%d of %d tap flows ACTIVE", active, len(out.TapFlows))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("tap flows not ACTIVE after %v: %w", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PeerCounts is what a peer counts itself: copies it delivered, and its
// drops by "role:reason" (capture, monitor, uplink, service, mirror).
type PeerCounts struct {
	Delivered uint64
	Drops     map[string]uint64
}

// Counts reads taasd's own counters (GET /v2.0/taas/stats): delivered
// packets summed over every tap service and encapsulated packets over
// every tap mirror, the cross-check of the sinks' count, and every drop
// counter.
func (a API) Counts(ctx context.Context) (PeerCounts, error) {
	var out struct {
		Stats struct {
			Interfaces []struct {
				Role  string            `json:"role"`
				Drops map[string]uint64 `json:"drops"`
			} `json:"interfaces"`
			Services []struct {
				DeliveredPackets uint64            `json:"delivered_packets"`
				Drops            map[string]uint64 `json:"drops"`
			} `json:"tap_services"`
			Mirrors []struct {
				EncapPackets uint64            `json:"encapsulated_packets"`
				Drops        map[string]uint64 `json:"drops"`
			} `json:"tap_mirrors"`
		} `json:"taas_stats"`
	}
	if err := a.Do(ctx, http.MethodGet, "/v2.0/taas/stats", nil, &out); err != nil {
		return PeerCounts{}, err
	}
	c := PeerCounts{Drops: map[string]uint64{}}
	for _, i := range out.Stats.Interfaces {
		for k, v := range i.Drops {
			c.Drops[i.Role+":"+k] += v
		}
	}
	for _, s := range out.Stats.Services {
		c.Delivered += s.DeliveredPackets
		for k, v := range s.Drops {
			c.Drops["service:"+k] += v
		}
	}
	for _, m := range out.Stats.Mirrors {
		c.Delivered += m.EncapPackets
		for k, v := range m.Drops {
			c.Drops["mirror:"+k] += v
		}
	}
	return c, nil
}

// CapturePath reads how taasd decides the frames of capture interface
// iface (GET /v2.0/taas/stats): "fast" (in the kernel) or "afxdp", and
// why not fast.
func (a API) CapturePath(ctx context.Context, iface string) (path, reason string, err error) {
	var out struct {
		Stats struct {
			Interfaces []struct {
				Name       string `json:"name"`
				Role       string `json:"role"`
				Path       string `json:"path"`
				PathReason string `json:"path_reason"`
			} `json:"interfaces"`
		} `json:"taas_stats"`
	}
	if err := a.Do(ctx, http.MethodGet, "/v2.0/taas/stats", nil, &out); err != nil {
		return "", "", err
	}
	for _, i := range out.Stats.Interfaces {
		if i.Name == iface && i.Role == "capture" {
			return i.Path, i.PathReason, nil
		}
	}
	return "", "", fmt.Errorf("capture interface %s not in taasd's stats", iface)
}
