package pcapfilter

import "fmt"

// Structural limits that keep Compile's time bounded. libpcap's optimizer
// is superlinear in the number of port and portrange primitives (each
// expands to tests for TCP, UDP and SCTP over IPv4 and IPv6, source and
// destination); measured on the CI machine's class with 1 KB expressions:
// 24 portranges and 28 hosts 47 ms, 32 portranges 113 ms, 217 ports
// ("port 1 or 2 or ...") 950 ms. Other primitives stay in single
// milliseconds at MaxLen. A limit on structure, not a timer: libpcap's
// compiler cannot be interrupted, and the verdict must not depend on the
// machine's load.
const (
	// MaxPortTerms is the most port and portrange primitives, counting
	// those that inherit the qualifier ("port 80 or 443" has two).
	MaxPortTerms = 24
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

// checkShape refuses expressions whose compilation could take long.
func checkShape(toks []token) error {
	ports, ops := 0, 0
	lastType := ""
	for i, tk := range toks {
		switch tk.class {
		case tokKeyword:
			switch tk.text {
			case "and", "or", "&&", "||", "not":
				ops++
			case "port", "portrange":
				ports++
			}
			if typeKeywords[tk.text] {
				lastType = tk.text
			}
		case tokOther:
			if tk.text == "!" {
				ops++
			}
		case tokNumber, tokID:
			if i == 0 || lastType != "port" && lastType != "portrange" {
				break
			}
			switch p := toks[i-1]; p.text {
			case "and", "or", "&&", "||", "not", "!", "(":
				ports++ // inherits port/portrange
			}
		}
	}
	if ports > MaxPortTerms {
		return &Error{Msg: fmt.Sprintf("filter expression has %d port or portrange terms: the limit is %d",
			ports, MaxPortTerms)}
	}
	if ops > maxBoolOps {
		return &Error{Msg: fmt.Sprintf("filter expression has %d and/or/not operators: the limit is %d",
			ops, maxBoolOps)}
	}
	return nil
}
