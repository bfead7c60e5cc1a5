package pcapfilter_test

import (
	"errors"
	"fmt"

	"github.com/taas-appliance/taas/pcapfilter"
)

func ExampleCompile() {
	f, err := pcapfilter.Compile("tcp port 443")
	if err != nil {
		panic(err)
	}
	// An 802.1Q-tagged IPv4/TCP frame to port 443: the filter sees it
	// without its tag.
	frame := []byte{
		0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, // MAC addresses
		0x81, 0x00, 0x00, 0x64, // 802.1Q, VID 100
		0x08, 0x00, // IPv4
		0x45, 0, 0, 40, 0, 1, 0, 0, 64, 6, 0, 0, 198, 51, 100, 1, 198, 51, 100, 2,
		0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
	}
	fmt.Println(f.Match(frame))

	_, err = pcapfilter.Compile("vlan 100")
	var e *pcapfilter.Error
	fmt.Println(errors.As(err, &e))
	// Output:
	// true
	// true
}
