package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

// BenchmarkCreateTapFlow8 creates tap flows from 8 goroutines, each Write
// doing what the API's create does in its transaction (quota, service,
// port and bound-interface look-ups, then the insert), with one commit
// per Write (as before group commit) and with group commit. It reports
// the p50 and p99 latency of a Write and the Writes per second.
//
//	go test -run '^$' -bench CreateTapFlow8 -benchtime 2000x ./control/store/
func BenchmarkCreateTapFlow8(b *testing.B) {
	const clients = 8
	for _, mode := range []struct {
		name     string
		maxBatch int
	}{{"commit-per-write", 1}, {"group-commit", defaultMaxBatch}} {
		b.Run(mode.name, func(b *testing.B) {
			ctx := context.Background()
			s, err := openStore(ctx, filepath.Join(b.TempDir(), "taas.db"), mode.maxBatch)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			err = s.Write(ctx, func(tx *Tx) error {
				for _, p := range []Port{{ID: "mon", Interface: "mon0", MACAddress: "fa:16:3e:00:00:01"},
					{ID: "src", Interface: "cap0", MACAddress: "fa:16:3e:00:00:02"}} {
					p.ProjectID, p.NetworkID = "a", defaultNetwork
					if err := tx.CreatePort(p); err != nil {
						return err
					}
				}
				return tx.CreateTapService(TapService{ID: "svc", ProjectID: "a", PortID: "mon", Status: "DOWN"}, 0)
			})
			if err != nil {
				b.Fatal(err)
			}
			lats := make([][]time.Duration, clients)
			var (
				next atomic.Int64
				wg   sync.WaitGroup
			)
			batches := s.batches.Load()
			b.ResetTimer()
			start := time.Now()
			for w := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						t0 := time.Now()
						err := s.Write(ctx, func(tx *Tx) error {
							if _, err := tx.QuotaOverrides("a"); err != nil {
								return err
							}
							if _, err := tx.Count(QuotaTapFlow, "a"); err != nil {
								return err
							}
							if _, err := tx.GetTapService("a", "svc"); err != nil {
								return err
							}
							if _, err := tx.GetPort("a", "src"); err != nil {
								return err
							}
							if _, err := tx.BoundInterfaces(nil, true); err != nil {
								return err
							}
							return tx.CreateTapFlow(TapFlow{ID: fmt.Sprint("f", i), ProjectID: "a", TapServiceID: "svc",
								SourcePort: "src", Direction: "IN", Status: "DOWN"})
						})
						if err != nil {
							b.Error(err)
							return
						}
						lats[w] = append(lats[w], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			testutil.ReportLatencies(b, lats, elapsed, "writes/s")
			b.ReportMetric(float64(len(slices.Concat(lats...)))/float64(s.batches.Load()-batches), "writes/commit")
		})
	}
}

// benchState opens a store holding 10,000 tap flows from 100 source
// ports into 10 services, all DOWN.
func benchState(b *testing.B) *Store {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "taas.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	err = s.Write(ctx, func(tx *Tx) error {
		for i := range benchPorts + benchServices {
			p := Port{ID: fmt.Sprint("p", i), ProjectID: "a", NetworkID: defaultNetwork, Interface: fmt.Sprint("cap", i%4),
				MACAddress: fmt.Sprintf("fa:16:3e:00:%02x:%02x", i/256, i%256), AdminStateUp: true}
			if err := tx.CreatePort(p); err != nil {
				return err
			}
		}
		for i := range benchServices {
			if err := tx.CreateTapService(TapService{ID: fmt.Sprint("s", i), ProjectID: "a", PortID: fmt.Sprint("p", benchPorts+i),
				Status: "DOWN"}, 0); err != nil {
				return err
			}
		}
		vf := "10-20"
		for i := range benchFlows {
			if err := tx.CreateTapFlow(TapFlow{ID: fmt.Sprint("f", i), ProjectID: "a", TapServiceID: fmt.Sprint("s", i%benchServices),
				SourcePort: fmt.Sprint("p", i%benchPorts), Direction: "IN", VLANFilter: &vf, Status: "DOWN"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

const benchPorts, benchServices, benchFlows = 100, 10, 10000

// BenchmarkDesired reads the desired state of benchState: the read of
// every reconciler pass, which a burst of creates repeats (issue 10).
//
//	go test -run '^$' -bench Desired ./control/store/
func BenchmarkDesired(b *testing.B) {
	s := benchState(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		d, err := s.Desired(context.Background())
		if err != nil || len(d.Flows) != benchFlows {
			b.Fatalf("Desired = %d flows, %v", len(d.Flows), err)
		}
	}
}

// BenchmarkSetStatuses writes the statuses a reconciler pass found
// changed under a burst of creates: 200 flows, each time to another
// status (the pass's write, which delays the API's writes of its batch).
//
//	go test -run '^$' -bench SetStatuses ./control/store/
func BenchmarkSetStatuses(b *testing.B) {
	s := benchState(b)
	b.ResetTimer()
	for i := range b.N {
		flows := map[string]Status{}
		for j := range 200 {
			flows[fmt.Sprint("f", (i*200+j)%benchFlows)] = Status{"DOWN", fmt.Sprint("reason ", i)}
		}
		if err := s.SetStatuses(context.Background(), nil, flows, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTunnelCheckAdmin is an admin's tap mirror create (scope "":
// every project's tunnel ids) among 10000 mirrors of 100 projects, two
// tunnel ids each, rolled back so that every iteration checks the same
// table. It reports the Write's mean latency.
//
//	go test -run '^$' -bench TunnelCheckAdmin ./control/store/
func BenchmarkTunnelCheckAdmin(b *testing.B) {
	const projects, mirrors = 100, 10000
	ctx := context.Background()
	s, err := openStore(ctx, filepath.Join(b.TempDir(), "taas.db"), defaultMaxBatch)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	err = s.Write(ctx, func(tx *Tx) error {
		for i := range projects {
			if err := tx.CreatePort(Port{ID: fmt.Sprint("port", i), ProjectID: fmt.Sprint("p", i), NetworkID: defaultNetwork,
				MACAddress: fmt.Sprintf("fa:16:3e:00:%02x:%02x", i/256, i%256)}); err != nil {
				return err
			}
		}
		_, err := tx.tx.ExecContext(tx.ctx, `WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x + 1 < ?2)
			INSERT INTO tap_mirrors (id, project_id, port_id, directions, remote_ip, mirror_type)
			SELECT 'm' || x, 'p' || (x % ?1), 'port' || (x % ?1), json_object('IN', x, 'OUT', CAST(x AS TEXT)), '192.0.2.1', 'gre'
			FROM n`, projects, mirrors)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	rollback := errors.New("roll back")
	b.ResetTimer()
	for i := range b.N {
		m := TapMirror{ID: "new", ProjectID: "p0", PortID: "port0", RemoteIP: "192.0.2.2", MirrorType: "gre",
			Directions: Directions{{Direction: "IN", ID: []byte(fmt.Sprint(mirrors + i))}}}
		if err := s.Write(ctx, func(tx *Tx) error {
			if err := tx.CreateTapMirror(m, ""); err != nil {
				return err
			}
			return rollback
		}); err != rollback {
			b.Fatal(err)
		}
	}
}
