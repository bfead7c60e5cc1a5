// Package testutil holds what tests of two or more packages share: the root
// check, unique names, and network namespaces and veth pairs that clean up
// after themselves. Test-only; no production code imports it.
package testutil
