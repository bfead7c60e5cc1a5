package pcapfilter

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The checks in this file run before libpcap sees an expression. libpcap
// resolves every identifier it does not know as a keyword: a host name by
// DNS (getaddrinfo), an Ethernet name through /etc/ethers, a network name
// through /etc/networks. A filter must never make taasd query a resolver
// (slow, and an expression an API user controls would choose what is
// looked up), so every identifier libpcap's scanner would return is
// refused, except where the grammar only looks it up in a local table: a
// port or service name after port/portrange (/etc/services), a protocol
// name after proto/protochain (from a fixed list here, so the verdict does
// not depend on the machine's /etc/protocols), the argument of llc and of
// the 802.11 and pflog keywords (built-in tables).
//
// To know what libpcap's scanner calls an identifier, scan mirrors its
// rules (libpcap 1.10 scanner.l): at each position the longest match wins,
// ties go to the rule listed first, and the identifier rules come after
// all keywords, numbers and addresses.

// keywords are the scanner's fixed words (both the grammar's keywords and
// the named numbers such as tcp-syn). A word missing here is only refused
// as a name; a word here that libpcap did not know would be resolved, so
// the list holds nothing libpcap 1.10 lacks.
var keywords = strings.Fields(`
	dst src link ether ppp slip fddi tr wlan arp rarp ip sctp tcp udp icmp igmp igrp pim vrrp
	carp radio ip6 icmp6 ah esp atalk aarp decnet lat sca moprc mopdl iso esis es-is isis is-is
	l1 l2 iih lsp snp csnp psnp clnp stp ipx netbeui host net mask port portrange proto
	protochain gateway type subtype direction dir address1 addr1 address2 addr2 address3 addr3
	address4 addr4 ra ta less greater byte broadcast multicast and && or || not len length
	inbound outbound ifindex vlan mpls pppoed pppoes geneve lane llc metac bcc oam oamf4
	oamf4ec oamf4sc sc ilmic vpi vci connectmsg metaconnect on ifname rset ruleset rnr rulenum
	srnr subrulenum reason action fisu lssu lsu msu hfisu hlssu hmsu sio opc dpc sls hsio hopc
	hdpc hsls
	icmptype icmpcode icmp-echoreply icmp-unreach icmp-sourcequench icmp-redirect icmp-echo
	icmp-routeradvert icmp-routersolicit icmp-timxceed icmp-paramprob icmp-tstamp
	icmp-tstampreply icmp-ireq icmp-ireqreply icmp-maskreq icmp-maskreply icmp6type icmp6code
	icmp6-destinationunreach icmp6-packettoobig icmp6-timeexceeded icmp6-parameterproblem
	icmp6-echo icmp6-echoreply icmp6-multicastlistenerquery icmp6-multicastlistenerreportv1
	icmp6-multicastlistenerdone icmp6-routersolicit icmp6-routeradvert icmp6-neighborsolicit
	icmp6-neighboradvert icmp6-redirect icmp6-routerrenum icmp6-nodeinformationquery
	icmp6-nodeinformationresponse icmp6-ineighbordiscoverysolicit
	icmp6-ineighbordiscoveryadvert icmp6-multicastlistenerreportv2
	icmp6-homeagentdiscoveryrequest icmp6-homeagentdiscoveryreply icmp6-mobileprefixsolicit
	icmp6-mobileprefixadvert icmp6-certpathsolicit icmp6-certpathadvert
	icmp6-multicastrouteradvert icmp6-multicastroutersolicit icmp6-multicastrouterterm
	tcpflags tcp-fin tcp-syn tcp-rst tcp-push tcp-ack tcp-urg tcp-ece tcp-cwr`)

// ipProtos are the IP protocol names accepted after proto and protochain,
// with their numbers (IANA, as /etc/protocols has them). Compile hands
// libpcap the number: libpcap would look the name up with getprotobyname
// (NSS), and the verdict must not depend on the machine.
var ipProtos = map[string]string{
	"icmp": "1", "igmp": "2", "ggp": "3", "ipencap": "4", "tcp": "6", "egp": "8", "udp": "17",
	"ipv6": "41", "ipv6-route": "43", "ipv6-frag": "44", "rsvp": "46", "gre": "47", "esp": "50",
	"ah": "51", "ipv6-icmp": "58", "ipv6-nonxt": "59", "ipv6-opts": "60", "ospf": "89", "ipip": "94",
	"etherip": "97", "pim": "103", "ipcomp": "108", "vrrp": "112", "l2tp": "115", "sctp": "132",
	"udplite": "136",
}

// linkProtos are the names libpcap's own tables know after "ether proto"
// (EtherTypes, then LLC SAPs), isoProtos those after "iso proto".
var (
	linkProtos = map[string]bool{
		"aarp": true, "arp": true, "atalk": true, "decnet": true, "ip": true, "ip6": true, "ipx": true,
		"lat": true, "loopback": true, "mopdl": true, "moprc": true, "rarp": true, "sca": true,
		"iso": true, "stp": true, "netbeui": true,
	}
	isoProtos = map[string]bool{"esis": true, "isis": true, "clnp": true}
	// linkKeywords qualify proto as an EtherType.
	linkKeywords = map[string]bool{
		"link": true, "ether": true, "ppp": true, "slip": true, "fddi": true, "tr": true, "wlan": true,
	}
)

// tableWords are keywords whose argument libpcap reads from a built-in
// table (never resolved): llc's frame types, 802.11 types and directions,
// pflog fields.
var tableWords = map[string]bool{
	"llc": true, "type": true, "subtype": true, "dir": true, "direction": true,
	"on": true, "ifname": true, "rset": true, "ruleset": true, "reason": true, "action": true,
}

// Token classes of scan.
const (
	tokKeyword = iota
	tokNumber  // a number, an address, a named number
	tokID      // an identifier libpcap would look up
	tokOther   // operators, and characters libpcap refuses itself
)

type token struct {
	class int
	text  string // for tokID without the escaping backslash
	pos   int    // where it starts in the expression
	n     int    // its length in the expression
}

// Scanner rules after the keywords, in scanner.l's order, each anchored
// and leftmost-longest.
var (
	reOps2  = regexp.MustCompile(`^(?:>=|<=|!=|==|<<|>>)`)
	reAID   = regexp.MustCompile(`^\$[0-9A-Fa-f][0-9A-Fa-f]?`)
	reMAC   = mustLongest(`^(?:B:B:B:B:B:B|B-B-B-B-B-B|B\.B\.B\.B\.B\.B|B2\.B2\.B2)`)
	reN     = mustLongest(`^N`)
	reHID   = mustLongest(`^(?:N\.N|N\.N\.N|N\.N\.N\.N)`)
	reV6    = mustLongest("^(?:" + v6Forms() + ")")
	reBogus = mustLongest(`^B:+(?:B:+)+`)
	reID    = mustLongest(`^[A-Za-z0-9](?:[-_.A-Za-z0-9]*[.A-Za-z0-9])?`)
	reBSID  = regexp.MustCompile(`^\\[^ !()\n\t]+`)
)

// mustLongest expands scanner.l's named patterns and compiles re for the
// longest match.
func mustLongest(re string) *regexp.Regexp {
	re = strings.NewReplacer(
		"B2", `[0-9A-Fa-f]{4}`,
		"B", `[0-9A-Fa-f][0-9A-Fa-f]?`,
		"N", `(?:[0-9]+|0[xX][0-9A-Fa-f]+)`,
		"W", `[0-9A-Fa-f]{1,4}`,
	).Replace(re)
	r := regexp.MustCompile(re)
	r.Longest()
	return r
}

// v6Forms are scanner.l's IPv6 address forms: 8 groups, or fewer with one
// "::" anywhere, optionally ending in a dotted IPv4 address in place of the
// last two groups.
func v6Forms() string {
	group := func(n int, sep string) string { // n groups, each followed by sep
		return strings.Repeat("W"+sep, n)
	}
	var forms []string
	forms = append(forms, "W"+strings.Repeat(":W", 7))
	v4 := `N\.N\.N\.N`
	forms = append(forms, group(6, ":")+v4)
	for g := 0; g <= 7; g++ { // explicit groups around "::"
		for left := 0; left <= g; left++ {
			l := ""
			if left > 0 {
				l = "W" + strings.Repeat(":W", left-1)
			}
			r := ""
			if right := g - left; right > 0 {
				r = "W" + strings.Repeat(":W", right-1)
			}
			forms = append(forms, l+"::"+r)
			if g <= 5 {
				forms = append(forms, l+"::"+group(g-left, ":")+v4)
			}
		}
	}
	return strings.Join(forms, "|")
}

// scan splits expr as libpcap's scanner would, classifying each token.
func scan(expr string) []token {
	var toks []token
	for i := 0; i < len(expr); {
		c := expr[i]
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			i++
			continue
		}
		rest := expr[i:]
		best, class := 0, tokOther
		try := func(n, cl int) {
			if n > best {
				best, class = n, cl
			}
		}
		for _, kw := range keywords {
			if strings.HasPrefix(rest, kw) {
				try(len(kw), tokKeyword)
			}
		}
		if strings.ContainsRune("+-*/%:[]!<>()&|^=", rune(c)) {
			try(1, tokOther)
		}
		try(len(reOps2.FindString(rest)), tokOther)
		for _, re := range []*regexp.Regexp{reAID, reMAC, reN, reHID, reV6, reBogus} {
			try(len(re.FindString(rest)), tokNumber)
		}
		try(len(reID.FindString(rest)), tokID)
		text := rest[:best]
		if n := len(reBSID.FindString(rest)); n > best {
			best, class, text = n, tokID, rest[1:n]
		}
		if best == 0 {
			best, text = 1, rest[:1] // a character libpcap refuses ("illegal character")
		}
		if class == tokKeyword && isNamedNumber(text) {
			class = tokNumber
		}
		toks = append(toks, token{class: class, text: text, pos: i, n: best})
		i += best
	}
	return toks
}

// isNamedNumber reports whether kw is one of the scanner's named numbers
// (tcp-syn, icmp-echo, tcpflags ...), which the grammar takes as numbers.
func isNamedNumber(kw string) bool {
	switch {
	case kw == "tcpflags", kw == "icmptype", kw == "icmpcode", kw == "icmp6type", kw == "icmp6code":
		return true
	case strings.HasPrefix(kw, "tcp-"), strings.HasPrefix(kw, "icmp-"), strings.HasPrefix(kw, "icmp6-"):
		return true
	}
	return false
}

// checkNames refuses what libpcap would resolve or what the data path
// cannot honour: identifiers outside the local tables, vlan, and the
// capture-only keywords. It returns the expression libpcap compiles: expr
// with IP protocol names replaced by their numbers.
func checkNames(expr string, toks []token) (string, error) {
	var out strings.Builder
	done := 0   // bytes of expr copied to out
	chain := "" // port or portrange, through "portrange 80-90 or 1024-2047"
	keyword := func(i int) string {
		if i >= 0 && toks[i].class == tokKeyword {
			return toks[i].text
		}
		return ""
	}
	for i, tk := range toks {
		prev := keyword(i - 1)
		switch tk.class {
		case tokKeyword:
			switch tk.text {
			case "vlan":
				return "", errVLAN("uses vlan")
			case "inbound", "outbound":
				return "", &Error{Msg: fmt.Sprintf("filter expression uses %s: a tap flow selects the direction "+
					"with its direction attribute", tk.text)}
			case "ifindex":
				return "", &Error{Msg: "filter expression uses ifindex: a tap flow selects its source with its source port"}
			case "port", "portrange":
				chain = tk.text
			case "and", "or", "&&", "||":
			default:
				chain = ""
			}
		case tokNumber:
			if prev == "proto" && linkKeywords[keyword(i-2)] && tagTypes[parseNumber(tk.text)] {
				return "", errVLAN("tests the EtherType " + tk.text)
			}
		case tokID:
			switch {
			case prev == "proto" || prev == "protochain":
				q := keyword(i - 2)
				switch {
				case linkKeywords[q] && linkProtos[tk.text], q == "iso" && isoProtos[tk.text]:
				case !linkKeywords[q] && q != "iso" && ipProtos[tk.text] != "":
					out.WriteString(expr[done:tk.pos])
					out.WriteString(ipProtos[tk.text])
					done = tk.pos + tk.n
				default:
					return "", &Error{Msg: fmt.Sprintf("filter expression names the unknown protocol %q: "+
						"use its number", tk.text)}
				}
			case chain != "":
				// libpcap parses a numeric range after portrange; after
				// port, and for names, it calls getaddrinfo.
				if chain != "portrange" || !portRange.MatchString(tk.text) {
					return "", &Error{Msg: fmt.Sprintf("filter expression names the port %q: service names "+
						"are not resolved: use a number", tk.text)}
				}
			case tableWords[prev]:
				// Built-in tables only.
			default:
				return "", &Error{Msg: fmt.Sprintf("filter expression names %q: host names are not resolved: "+
					"use an address (or, if %q was meant as a keyword, check its spelling: keywords are lower case)",
					tk.text, tk.text)}
			}
		default:
			chain = ""
		}
	}
	out.WriteString(expr[done:])
	return out.String(), nil
}

// portRange is the identifier form of a numeric port range (1024-2047),
// which libpcap parses without a lookup.
var portRange = regexp.MustCompile(`^[0-9]+-[0-9]+$`)

// tagTypes are the EtherTypes of the VLAN tags the filter never sees.
var tagTypes = map[uint64]bool{0x8100: true, 0x88a8: true}

// errVLAN is the refusal of an expression that would select on VLAN
// tags: what uses them.
func errVLAN(what string) *Error {
	return &Error{Msg: "filter expression " + what + ": the filter sees frames with their VLAN tags removed " +
		"(a test of the EtherType 0x8100 or 0x88a8 never matches either); select VLANs with vlan_filter"}
}

// parseNumber is the value of a libpcap number (decimal, 0x hex, 0 octal),
// or 0 when text is not one.
func parseNumber(text string) uint64 {
	n, err := strconv.ParseUint(text, 0, 32)
	if err != nil || strings.ContainsAny(text, "_oObB") {
		return 0
	}
	return n
}
