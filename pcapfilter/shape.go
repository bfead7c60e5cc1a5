package pcapfilter

import "fmt"

// Structural limits that keep Compile's time bounded. libpcap's optimizer
// is superlinear in the number of address and port primitives (a port
// expands to tests for TCP, UDP and SCTP over IPv4 and IPv6, source and
// destination; a host or net to tests over IPv4, ARP and RARP); measured
// with 1 KB expressions on a 2-core machine (best of three): 24
// portranges 23 ms, 24 portranges and 16 nets 32 ms, 60 nets 38 ms, 60
// hosts 21 ms, 24 ports 4 ms; within MaxTerms: 16 hosts or nets 1.2 ms,
// 8 portranges 1.7 ms, 16 ports 1.5 ms. Compile runs behind libpcap's one
// global lock, so its worst case is what every other compile waits. Other
// primitives stay in single milliseconds at MaxLen. A limit on structure,
// not a timer: libpcap's compiler cannot be interrupted, and the verdict
// must not depend on the machine's load.
const (
	// MaxTerms bounds the address and port primitives: host, net and
	// gateway (ether host included) count one, port one, portrange two,
	// counting those that inherit the qualifier ("port 80 or 443" has
	// two) and bare addresses (libpcap reads "198.51.100.1" as a host).
	MaxTerms = 16
	// maxBoolOps bounds and/or/not operators: far above what the
	// measured expressions need at MaxLen, a backstop for shapes not
	// measured.
	maxBoolOps = 160
)

// typeKeywords are the qualifiers an identifier or number inherits after
// and/or ("port 80 or 443").
var typeKeywords = map[string]bool{
	"host": true, "net": true, "port": true, "portrange": true, "proto": true, "protochain": true, "gateway": true,
}

// termCost is what one primitive of the qualifier counts against
// MaxTerms ("" is a bare address).
var termCost = map[string]int{"": 1, "host": 1, "net": 1, "gateway": 1, "port": 1, "portrange": 2}

// checkShape refuses expressions whose compilation could take long.
func checkShape(toks []token) error {
	terms, ops := 0, 0
	lastType := ""
	for i, tk := range toks {
		switch tk.class {
		case tokKeyword:
			switch tk.text {
			case "and", "or", "&&", "||", "not":
				ops++
			case "host", "net", "gateway", "port", "portrange":
				terms += termCost[tk.text]
			}
			if typeKeywords[tk.text] {
				lastType = tk.text
			}
		case tokOther:
			if tk.text == "!" {
				ops++
			}
		case tokNumber, tokID:
			if i == 0 || termStart(toks[i-1].text) {
				terms += termCost[lastType] // inherits the qualifier, or a bare address
			}
		}
	}
	if terms > MaxTerms {
		return &Error{Msg: fmt.Sprintf("filter expression has %d host, net, port or portrange terms "+
			"(a portrange counts two): the limit is %d", terms, MaxTerms)}
	}
	if ops > maxBoolOps {
		return &Error{Msg: fmt.Sprintf("filter expression has %d and/or/not operators: the limit is %d",
			ops, maxBoolOps)}
	}
	return nil
}

// termStart reports whether a primitive may start after the token text.
func termStart(text string) bool {
	switch text {
	case "and", "or", "&&", "||", "not", "!", "(":
		return true
	}
	return false
}
