// Package lab holds the lab (lab.sh): the appliance end to end in network
// namespaces, as `make run` starts it, and the test that brings it up,
// watches a ping reach the monitor namespace through taasd, and checks that
// it leaves nothing behind. There is no Go code to import here.
package lab
