package control

import (
	"sync"

	"github.com/taas-appliance/taas/control/store"
)

// The list cache (issue 10): listing 1,000 tap flows read, converted and
// encoded every row on every request (240 req/s with 8 clients). A list's
// rows depend only on the collection, the caller's scope and the
// database, so they are rendered once per store generation: each row's
// JSON and the whole plain answer, which a request without a query string
// gets as it is. Filters, sorting, paging and fields= work on the typed
// rows and reuse each row's JSON where they can.
//
// Staleness: store.Generation is read before the rows are, and every write
// bumps it after its commit and before it is acknowledged, so rows cached
// under a generation never outlive a write the caller has seen answered.
// Isolation: the key holds the scope the rows were read with (the
// project, or "" for admins); callers that may not read a collection never
// reach the cache.

// maxCachedLists bounds the lists cached per generation: one per
// collection and scope, so a few projects listing at once all hit, and a
// crowd of projects cannot grow the cache beyond about maxCachedLists
// times a large list.
const maxCachedLists = 64

type listKey struct{ plural, scope string }

// listCache holds the rendered lists of one store generation.
type listCache struct {
	mu   sync.Mutex
	gen  uint64
	rows map[listKey]any // *listRows[V] of the key's collection
	// epoch counts invalidate's calls: rows read before one are not
	// kept.
	epoch uint64
}

// invalidate drops every cached list: what the rows show changed without
// a write of this store (a fleet node's liveness, issue 14).
func (lc *listCache) invalidate() {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.rows = map[listKey]any{}
	lc.epoch++
}

func newListCache() *listCache { return &listCache{rows: map[listKey]any{}} }

// loadRows returns the cached rows of key, or reads them with fill and
// caches them under the generation read before fill ran.
func loadRows[V any](lc *listCache, st *store.Store, key listKey, fill func() (*listRows[V], error)) (*listRows[V], error) {
	gen := st.Generation()
	lc.mu.Lock()
	epoch := lc.epoch
	if lc.gen == gen {
		if r, ok := lc.rows[key].(*listRows[V]); ok {
			lc.mu.Unlock()
			return r, nil
		}
	}
	lc.mu.Unlock()
	r, err := fill()
	if err != nil {
		return nil, err
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.epoch != epoch {
		return r, nil // read before an invalidate: serve, do not keep
	}
	switch {
	case gen > lc.gen:
		lc.gen, lc.rows = gen, map[listKey]any{}
	case gen < lc.gen:
		return r, nil // older than what is cached: serve, do not keep
	}
	if len(lc.rows) < maxCachedLists {
		lc.rows[key] = r
	}
	return r, nil
}
