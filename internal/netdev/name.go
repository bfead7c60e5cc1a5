// Package netdev holds what two or more components need to know about Linux
// network device names. It never touches the network.
package netdev

import (
	"errors"
	"fmt"
	"strings"
)

// CheckName applies the kernel's rules for interface names (dev_valid_name
// in net/core/dev.c): 1 to 15 bytes, not "." or "..", no '/', ':', NUL or
// whitespace. The error says which rule name breaks.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("empty: an interface name such as eth1 is needed")
	case len(name) > 15:
		return fmt.Errorf("%q is longer than 15 bytes", name)
	case name == "." || name == "..":
		return fmt.Errorf("%q is not an interface name", name)
	case strings.ContainsAny(name, "/:\x00 \t\n\v\f\r"):
		return fmt.Errorf("%q must not contain '/', ':', NUL or whitespace", name)
	}
	return nil
}
