// Package testutil holds what tests of two or more packages share: the root
// check, unique names, network namespaces and veth pairs that clean up
// after themselves, and real servers a test starts and stops itself
// (Keystone, PostgreSQL, taasd). Test-only; no production code imports it.
package testutil
