// Package repocheck holds tests of the repository's non-Go files, so that
// `make test` checks them too: shellcheck on every shell script,
// systemd-analyze verify on the unit, vagrant validate on the Vagrantfile.
// It has no code; the tools it runs are Debian packages listed in
// .ci/apt-packages.txt.
package repocheck
