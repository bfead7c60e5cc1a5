package control

import (
	"container/list"
	"sync"

	"github.com/taas-appliance/taas/pcapfilter"
)

// Filter validation is a libpcap compile, and gopacket runs every libpcap
// compile behind one global lock: a request full of filters would hold
// every other request's compile (and, through the decode slots, every
// other project's writes). Two bounds keep that short: a request carries
// at most maxRequestFilters distinct expressions (decodeBody refuses more
// before compiling any), and each expression's verdict is cached, so a
// bulk that repeats expressions, or one sent again after a refusal,
// compiles each once. pcapfilter.MaxTerms keeps one compile near 2 ms.

// maxRequestFilters is the most distinct filter expressions one request
// may carry: as many as one capture interface's fast path holds
// (xdpprog.MaxFastFilters).
const maxRequestFilters = 64

// maxCachedVerdicts bounds the filter verdicts kept: at most MaxLen bytes
// of expression and a short reason each, about 1 MiB.
const maxCachedVerdicts = 1024

// verdictCache is a bounded LRU of expression -> refusal reason ("" when
// the expression compiles). pcapfilter.Compile is deterministic (it never
// resolves names), so a verdict never goes stale.
type verdictCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *verdict, most recently used first
	byKey map[string]*list.Element
}

type verdict struct{ expr, reason string }

func newVerdictCache(max int) *verdictCache {
	return &verdictCache{max: max, order: list.New(), byKey: map[string]*list.Element{}}
}

// filterVerdicts caches validFilter's compiles for the whole process.
var filterVerdicts = newVerdictCache(maxCachedVerdicts)

// check is the refusal reason of expr, from the cache or compiled (outside
// the lock: concurrent misses of one expression both compile, and agree).
func (c *verdictCache) check(expr string) string {
	c.mu.Lock()
	if e, ok := c.byKey[expr]; ok {
		c.order.MoveToFront(e)
		reason := e.Value.(*verdict).reason
		c.mu.Unlock()
		return reason
	}
	c.mu.Unlock()
	reason := ""
	if _, err := pcapfilter.Compile(expr); err != nil {
		reason = err.Error()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byKey[expr]; !ok {
		c.byKey[expr] = c.order.PushFront(&verdict{expr: expr, reason: reason})
		if c.order.Len() > c.max {
			old := c.order.Back()
			c.order.Remove(old)
			delete(c.byKey, old.Value.(*verdict).expr)
		}
	}
	return reason
}

// len is how many verdicts are cached.
func (c *verdictCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
